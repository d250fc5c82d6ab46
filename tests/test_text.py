"""Text from outside: control characters become spaces, line breaks where allowed stay."""

import pytest

from listkit.text import lines, one_line


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("Ann\nSmith", "Ann Smith"),
        ("Ann \r\n\t Smith", "Ann Smith"),
        ("  Ann  Lee ", "Ann  Lee"),
        ("\x1b[31mRed\x7f", "[31mRed"),
        ("Zoë\u2028Müller\x85", "Zoë Müller"),
        ("Jean\xa0Luc", "Jean\xa0Luc"),
    ],
)
def test_one_line_turns_each_run_of_control_characters_into_one_space(given, kept):
    assert one_line(given) == kept


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("first\r\nsecond\rthird\nfourth", "first\nsecond\nthird\nfourth"),
        ("tab\there\x1b[0m\x00", "tab here [0m"),
        (" plain ", "plain"),
    ],
)
def test_lines_keeps_line_breaks_as_lf_and_turns_other_controls_into_spaces(given, kept):
    assert lines(given) == kept
