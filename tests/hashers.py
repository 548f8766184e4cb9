"""A password hasher for the tests' own process."""

from __future__ import annotations

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's own PBKDF2 with 1,000 rounds instead of a million: a test user costs a
    millisecond instead of about 0.3 s on a 2-core box (most tests make two or three). Each
    hash names its rounds, so the daphne and workers the tests start check these hashes with
    Django's stock hasher (which strengthens one at its first login there)."""

    iterations = 1000
