from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic.base import RedirectView

from wizweb import metrics, views

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(extra_context={"signup_allowed": settings.WIZ_ALLOW_SIGNUP}),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("accounts/signup/", views.signup, name="signup"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    # Browsers ask for /favicon.ico where a page names no icon (a JSON answer, a download).
    path(
        "favicon.ico",
        login_not_required(RedirectView.as_view(url=static("wizweb/favicon.svg"), permanent=True)),
    ),
    path("account/keys/", views.api_keys, name="api-keys"),
    path("account/theme/", views.account_theme, name="account-theme"),
    path("admin/", admin.site.urls),
    path("", include("models_admin.urls")),
    path("", include("usage.urls")),
    path("", include("documents.urls")),
    path("", include("chat.urls")),
]
