from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0009_message_parsed_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="attachments",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="message",
            name="citations",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
