"""The one truncation helper (models/text.py): within the limit, and a cut says so."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plumber_agent.models.text import ELLIPSIS, truncate


@given(text=st.text(max_size=40), limit=st.integers(len(ELLIPSIS), 30))
def test_a_cut_text_fits_and_ends_with_the_marker(text, limit):
    cut = truncate(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text
    else:
        assert cut.endswith(ELLIPSIS) and text.startswith(cut[:-len(ELLIPSIS)])
        assert len(cut) == limit


def test_a_limit_below_the_marker_gives_the_marker():
    assert truncate("abcdef", 2) == ELLIPSIS
    assert truncate("abcdef", 4, marker="") == "abcd"
