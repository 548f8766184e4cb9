"""The project package as an app, so that its management commands (serve, apikey) are found."""

from __future__ import annotations

from django.apps import AppConfig


class WizwebConfig(AppConfig):
    name = "wizweb"
    verbose_name = "Wiz Web"
