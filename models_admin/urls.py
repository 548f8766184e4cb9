from __future__ import annotations

from django.urls import path

from models_admin import views

urlpatterns = [
    path("models/", views.models_page, name="models-admin"),
    path("models/<int:model_id>/", views.model_action, name="model-action"),
]
