"""The text side of a generation, with no model behind it: token bytes in, safe text out.

A token is a few bytes, not always a whole UTF-8 character, and the answer must end before
the first stop string without ever showing a part of one. `TextAssembler` takes the bytes of
each sampled token and says what text may be shown now; `finish()` releases what was held
back. Kept apart from the model so that it is tested on its own and shared by every engine.
"""

from __future__ import annotations


def partial_stop_len(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextAssembler:
    """The answer's text as tokens arrive: whole characters only, cut before a stop string.

    `prefix` (a forced start of the answer) is part of the text and shown at once."""

    def __init__(self, *, stops: tuple[str, ...] = (), prefix: str = "") -> None:
        self.stops = stops
        self.text = prefix
        self.stopped = False  # a stop string ended the answer
        self._sent = 0  # characters of `text` already given out
        self._pending = b""  # bytes of a character split across tokens
        self._longest_stop = max((len(s) for s in stops), default=0)

    def start(self) -> str:
        """What is shown before the first token: the prefix."""
        return self._release(len(self.text))

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; the text that may be shown now (often "")."""
        if self.stopped:
            return ""
        self._pending += piece
        try:
            decoded = self._pending.decode("utf-8")
        except UnicodeDecodeError:
            if len(self._pending) < 4:
                return ""  # wait for the rest of the character
            decoded = self._pending.decode("utf-8", errors="replace")
        self._pending = b""
        search_from = max(0, len(self.text) - self._longest_stop)
        self.text += decoded
        if self.stops:
            found = [i for s in self.stops if (i := self.text.find(s, search_from)) != -1]
            if found:
                self.text = self.text[: min(found)]
                self.stopped = True
                return self._release(len(self.text))
            return self._release(len(self.text) - partial_stop_len(self.text, self.stops))
        return self._release(len(self.text))

    def finish(self) -> str:
        """The end of the answer: a split character is replaced, held-back text released."""
        if self._pending and not self.stopped:
            self.text += self._pending.decode("utf-8", errors="replace")
        self._pending = b""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self._sent:
            return ""
        shown = self.text[self._sent : end]
        self._sent = end
        return shown
