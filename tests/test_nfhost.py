"""The agent's NF host: how the UMEM numbering is kept across restarts (pure parts)."""

from __future__ import annotations

import pytest

from flashctl.nfhost import _decode_ids, _encode_ids, process_text


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


@pytest.mark.parametrize(
    ("kind", "data", "text"),
    [
        ("nf-started", {"key": "e/fw", "pid": 12}, "started (pid 12)"),
        (
            "nf-exited",
            {"key": "e/fw", "pid": 12, "status": "exited 1", "ran_for": 0.31, "restart_in": 1.0},
            "pid 12 exited 1 after 0.3 s; restarting in 1.0 s",
        ),
        (
            "nf-failed",
            {"key": "e/fw", "error": "No such file or directory: '/opt/x'", "restart_in": 2.0},
            "cannot start: No such file or directory: '/opt/x'; retrying in 2.0 s",
        ),
        (
            "nf-stopped",
            {"key": "e/fw", "pid": 12, "status": "killed by SIGTERM"},
            "stopped (pid 12, killed by SIGTERM)",
        ),
        (
            "nf-stopped",
            {"key": "e/fw", "pid": None, "status": None},
            "stopped (it was waiting to restart)",
        ),
    ],
)
def test_process_events_read_as_one_line(kind: str, data: dict[str, object], text: str) -> None:
    assert process_text(kind, data) == text
