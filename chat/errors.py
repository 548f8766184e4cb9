"""The refusals of chat requests: what the client is told, as a code and a sentence."""

from __future__ import annotations


class ChatError(Exception):
    """A request that cannot be served; `code` and the message go to the client as they are."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        self.code = code
        # Seconds until the request could succeed, when that is known (quota_exceeded).
        self.retry_after = retry_after
        super().__init__(message)
