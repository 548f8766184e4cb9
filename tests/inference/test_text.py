"""The text side of a generation, fed token bytes by hand: no model needed."""

from __future__ import annotations

from inference.text import TextAssembler, partial_stop_len


def shown(assembler: TextAssembler, pieces: list[bytes]) -> list[str]:
    out = [assembler.start()]
    for piece in pieces:
        out.append(assembler.feed(piece))
        if assembler.stopped:
            break
    out.append(assembler.finish())
    return [text for text in out if text]


def test_it_shows_text_as_it_comes() -> None:
    assembler = TextAssembler()
    assert shown(assembler, [b"Hel", b"lo", b" there"]) == ["Hel", "lo", " there"]
    assert assembler.text == "Hello there"
    assert not assembler.stopped


def test_it_waits_for_a_character_split_across_tokens() -> None:
    snowman = "☃".encode()
    assembler = TextAssembler()
    assert assembler.feed(snowman[:1]) == ""
    assert assembler.feed(snowman[1:2]) == ""
    assert assembler.feed(snowman[2:] + b"!") == "☃!"


def test_it_replaces_bytes_that_never_make_a_character() -> None:
    assembler = TextAssembler()
    assert assembler.feed(b"\xff\xfe\xfd\xfc") == "\ufffd" * 4
    assembler = TextAssembler()
    assert assembler.feed("é".encode()[:1]) == ""
    assert assembler.finish() == "\ufffd"


def test_it_cuts_before_a_stop_string_and_never_shows_part_of_one() -> None:
    assembler = TextAssembler(stops=("END",))
    parts = shown(assembler, [b"one E", b"N", b"D two"])
    assert parts == ["one "]
    assert assembler.text == "one "
    assert assembler.stopped


def test_it_releases_held_back_text_that_was_not_a_stop_after_all() -> None:
    assembler = TextAssembler(stops=("END",))
    assert assembler.feed(b"an E") == "an "
    assert assembler.feed(b"N") == ""
    assert assembler.feed(b"O") == "ENO"
    assert assembler.feed(b"EN") == ""
    assert assembler.finish() == "EN"
    assert assembler.text == "an ENOEN"
    assert not assembler.stopped


def test_it_finds_a_stop_string_spanning_tokens_and_the_earliest_of_several() -> None:
    assembler = TextAssembler(stops=("\n\n", "User:"))
    parts = shown(assembler, [b"Hi.", b"\n", b"\nUser: more"])
    assert "".join(parts) == "Hi."
    assert assembler.stopped


def test_it_shows_the_prefix_first_and_keeps_it_in_the_text() -> None:
    assembler = TextAssembler(prefix="Sure:", stops=("!",))
    assert shown(assembler, [b" yes", b"! no"]) == ["Sure:", " yes"]
    assert assembler.text == "Sure: yes"


def test_partial_stop_len_is_the_longest_stop_start_at_the_end() -> None:
    assert partial_stop_len("abc", ("cde",)) == 1
    assert partial_stop_len("abcd", ("cde", "bcdx")) == 3
    assert partial_stop_len("abc", ("xyz",)) == 0
    assert partial_stop_len("", ("x",)) == 0
