# Titles written by the model (chat.titles) must never replace one the user chose.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0007_message_reasoning'),
    ]

    operations = [
        # Which of the conversations from before this one were renamed is not known: they all
        # keep their titles (True), and new ones start unrenamed (False).
        migrations.AddField(
            model_name='conversation',
            name='title_by_user',
            field=models.BooleanField(default=True),
        ),
        migrations.AlterField(
            model_name='conversation',
            name='title_by_user',
            field=models.BooleanField(default=False),
        ),
    ]
