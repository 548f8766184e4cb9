"""A user's page preferences (today the colour theme): reading them for a request, saving them."""

from __future__ import annotations

from django.http import HttpRequest

from wizweb.models import Preferences

THEMES = ("light", "dark")
THEME_COOKIE = "wiz_theme"


def preferences_theme_set(*, user_id: int | None, theme: str) -> None:
    if user_id is None or theme not in THEMES:
        raise ValueError(f"The theme must be one of {', '.join(THEMES)}.")
    Preferences.objects.update_or_create(user_id=user_id, defaults={"theme": theme})


def theme_for(request: HttpRequest) -> str:
    """The theme a page is rendered in: the account's choice when logged in, else the browser's
    cookie; "" means the system's setting decides (in CSS)."""
    if request.user.is_authenticated:
        theme = (
            Preferences.objects.filter(user_id=request.user.pk)
            .values_list("theme", flat=True)
            .first()
        )
        return theme or ""
    theme = request.COOKIES.get(THEME_COOKIE, "")
    return theme if theme in THEMES else ""


def theme(request: HttpRequest) -> dict[str, str]:
    """Template context processor: `theme` for base.html's <html data-theme>."""
    return {"theme": theme_for(request)}
