from __future__ import annotations

from django.urls import path

from models_admin import views

urlpatterns = [
    path("models/", views.models_page, name="models-admin"),
    path("models/<int:model_id>/", views.model_action, name="model-action"),
    path("models/downloads/", views.download_create, name="download-create"),
    path(
        "models/downloads/<int:download_id>/cancel/",
        views.download_cancel_view,
        name="download-cancel",
    ),
    path("models/scan/", views.models_scan, name="models-scan"),
    path("models/groups/", views.group_create, name="group-create"),
    path("models/groups/<int:group_id>/", views.group_members, name="group-members"),
]
