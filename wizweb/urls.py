from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from wizweb import views

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
    path("account/keys/", views.api_keys, name="api-keys"),
    path("admin/", admin.site.urls),
    path("", include("models_admin.urls")),
    path("", include("chat.urls")),
]
