"""The agent's NF host: how the UMEM numbering is kept across restarts (pure parts)."""

from __future__ import annotations

import pytest

from flashctl.nfhost import _decode_ids, _encode_ids


def test_umem_ids_round_trip_in_a_stable_text() -> None:
    ids = {("edge", "pool"): 0, ("aaa", "fw(private)"): 1}
    text = _encode_ids(ids)
    assert text == '[["aaa", "fw(private)", 1], ["edge", "pool", 0]]'
    assert _decode_ids(text) == ids


@pytest.mark.parametrize(
    "text", [None, "", "not json", '[["a", "b"]]', '{"a": 1}', "[[1, 2, 3, 4]]"]
)
def test_an_unreadable_numbering_starts_afresh(text: str | None) -> None:
    assert _decode_ids(text) == {}
