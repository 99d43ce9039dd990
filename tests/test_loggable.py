"""files.loggable: a file name as one line of log text that cannot forge another."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inboxsort.files import display_path, loggable


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("cat.jpg", "cat.jpg"),
        ("café 🐱 (1).jpg", "café 🐱 (1).jpg"),
        ("a\nINFO forged.jpg", "a\\nINFO forged.jpg"),
        ("a\r\nb\tc.jpg", "a\\r\\nb\\tc.jpg"),
        ("\x1b[2Jclear.jpg", "\\x1b[2Jclear.jpg"),
        ("nul\x00\x7f\x85.jpg", "nul\\x00\\x7f\\x85.jpg"),
        ("line\u2028sep\u2029.jpg", "line\\u2028sep\\u2029.jpg"),
        ("back\\slash.jpg", "back\\\\slash.jpg"),
        # Text that looks like an escape stays tellable from one: its backslash is doubled.
        ("a\\nb.jpg", "a\\\\nb.jpg"),
    ],
)
def test_control_characters_and_the_backslash_are_escaped(name, shown):
    assert loggable(name) == shown
    assert loggable(Path("/inbox") / name) == f"/inbox/{shown}"
    assert loggable(shown).isprintable()


def test_a_name_that_is_not_utf8_reads_as_its_database_text_escaped():
    path = Path(os.fsdecode(b"/inbox/caf\xe9\n.jpg"))
    assert display_path(path) == "/inbox/caf\\xe9\n.jpg"  # what the row says
    # The row's text and the path on disk log alike: the same text, escaped the same way.
    assert loggable(path) == loggable(display_path(path)) == "/inbox/caf\\\\xe9\\n.jpg"
