"""The agent's state store on real SQLite files: revisions, events, and every error message."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashctl.errors import ExitCode
from flashctl.store import (
    APPLICATION_ID,
    Revision,
    Store,
    StoreError,
    _sqlite_error,
)

ROOT = Path(__file__).resolve().parent.parent
PLAN = {"ops": [{"op": "add-nf", "name": "fw"}], "changes": 1}


class Clock:
    """A clock that ticks one second per reading, so every `at` is predictable."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    with Store.open(path, clock=Clock()) as opened:
        yield opened


def _begin(store: Store, chain: str, text: str = "spec", who: str = "alice") -> Revision:
    return store.begin_revision(chain, text, f"sha256:{text}", PLAN, who, "msg", f"{chain}.yaml")


def _apply(store: Store, chain: str, text: str = "spec") -> Revision:
    return store.commit_revision(chain, _begin(store, chain, text).rev)


def _error(path: Path) -> str:
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    assert caught.value.exit_code == ExitCode.FAILURE
    assert caught.value.lines() == [f"error: {caught.value.message}"]
    return caught.value.message


# -- revisions ---------------------------------------------------------------------------


def test_revisions_are_numbered_per_chain(store: Store) -> None:
    numbers = [_begin(store, chain).rev for chain in ("a", "a", "b", "a", "b")]
    assert numbers == [1, 2, 1, 3, 2]


def test_begin_records_a_pending_revision(store: Store) -> None:
    begun = _begin(store, "lb", "text")
    assert begun == Revision(
        chain="lb",
        rev=1,
        state="pending",
        spec_hash="sha256:text",
        spec_text="text",
        plan=PLAN,
        who="alice",
        at=1001.0,
        message="msg",
        source="lb.yaml",
        error=None,
    )
    assert store.revision("lb", 1) == begun
    assert store.active("lb") is None


def test_commit_supersedes_the_active_revision(store: Store) -> None:
    first = _apply(store, "lb", "one")
    assert first.state == "active"
    second = _apply(store, "lb", "two")
    assert store.active("lb") == second
    assert [(r.rev, r.state) for r in store.history("lb")] == [(2, "active"), (1, "superseded")]


@pytest.mark.parametrize("state", ["rejected", "rolled-back"])
def test_failed_revisions_never_become_active(store: Store, state: str) -> None:
    running = _apply(store, "lb", "good")
    bad = _begin(store, "lb", "bad")
    failed = store.fail_revision("lb", bad.rev, state, "nf 'fw' has no socket")  # type: ignore[arg-type]
    assert (failed.state, failed.error) == (state, "nf 'fw' has no socket")
    assert store.active("lb") == running
    with pytest.raises(StoreError) as caught:
        store.commit_revision("lb", bad.rev)
    assert caught.value.message == (
        f"cannot commit revision 2 of chain 'lb': it is {state}, not pending"
    )
    assert store.active("lb") == running


def test_only_pending_revisions_can_fail(store: Store) -> None:
    _apply(store, "lb")
    with pytest.raises(StoreError) as caught:
        store.fail_revision("lb", 1, "rejected", "late")
    assert caught.value.message == (
        "cannot mark rejected revision 1 of chain 'lb': it is active, not pending"
    )
    with pytest.raises(StoreError) as missing:
        store.commit_revision("lb", 7)
    assert missing.value.message == "cannot commit revision 7 of chain 'lb': no such revision"
    with pytest.raises(ValueError, match="'rejected' or 'rolled-back', not 'active'"):
        store.fail_revision("lb", 1, "active", "no")  # type: ignore[arg-type]


def test_history_is_newest_first_and_empty_for_unknown_chains(store: Store) -> None:
    _apply(store, "lb", "one")
    store.fail_revision("lb", _begin(store, "lb", "two").rev, "rejected", "bad")
    _apply(store, "lb", "three")
    _apply(store, "other")
    history = store.history("lb")
    assert [(r.rev, r.state, r.spec_text) for r in history] == [
        (3, "active", "three"),
        (2, "rejected", "two"),
        (1, "superseded", "one"),
    ]
    assert [r.at for r in history] == sorted((r.at for r in history), reverse=True)
    assert store.history("nope") == []
    assert store.revision("nope", 1) is None


def test_active_all_lists_chains_with_an_active_revision_by_name(store: Store) -> None:
    _apply(store, "zeta")
    _apply(store, "alpha")
    _begin(store, "pending-only")
    _apply(store, "alpha", "v2")
    assert [(r.chain, r.rev) for r in store.active_all()] == [("alpha", 2), ("zeta", 1)]


def test_deleted_chain_keeps_its_history(store: Store) -> None:
    _apply(store, "lb")
    tombstone = store.mark_deleted("lb", "bob")
    assert tombstone is not None
    assert (tombstone.rev, tombstone.state, tombstone.who) == (2, "deleted", "bob")
    assert store.active("lb") is None
    assert store.active_all() == []
    assert [(r.rev, r.state) for r in store.history("lb")] == [(2, "deleted"), (1, "superseded")]
    assert store.mark_deleted("lb", "bob") is None  # deleting twice writes nothing
    assert store.mark_deleted("never-applied", "bob") is None
    assert _apply(store, "lb").rev == 3  # applying again continues the numbering


def test_pending_revisions_of_a_closed_store_are_interrupted_on_reopen(path: Path) -> None:
    with Store.open(path) as first:
        _apply(first, "lb")
        _begin(first, "lb", "never committed")
    with Store.open(path) as second:
        assert [(r.chain, r.rev, r.state) for r in second.pending()] == [("lb", 2, "pending")]
        interrupted = second.interrupt_pending()
        assert [(r.rev, r.state) for r in interrupted] == [(2, "interrupted")]
        assert interrupted[0].error == "the agent stopped before this revision was applied"
        assert second.pending() == []
        assert second.revision("lb", 2) == interrupted[0]
        assert second.active("lb") == second.revision("lb", 1)


def test_a_killed_process_leaves_its_revision_pending(path: Path) -> None:
    # os._exit skips close(): the WAL is left un-checkpointed, as after a crash or kill -9.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from flashctl.store import Store\n"
        "s = Store.open(Path(sys.argv[1]))\n"
        "s.commit_revision('lb', s.begin_revision('lb', 'a', 'h', {}, 'me', None, None).rev)\n"
        "s.begin_revision('lb', 'b', 'h', {}, 'me', None, None)\n"
        "os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=False)
    assert done.returncode == 9
    with Store.open(path) as store:
        assert [(r.rev, r.state) for r in store.interrupt_pending()] == [(2, "interrupted")]
        assert [(r.rev, r.state) for r in store.history("lb")] == [
            (2, "interrupted"),
            (1, "active"),
        ]


def test_the_database_refuses_two_active_revisions(path: Path, store: Store) -> None:
    _apply(store, "lb")
    _begin(store, "lb")
    raw = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("UPDATE revisions SET state = 'active' WHERE rev = 2")
    raw.close()


# -- events ------------------------------------------------------------------------------


def test_events_are_returned_oldest_first_with_filters(store: Store) -> None:
    assert store.last_event_id() == 0
    assert store.events() == []
    added = [
        store.add_event("applied", "lb rev 1 applied", chain="lb", data={"rev": 1}),
        store.add_event("agent", "agent started"),
        store.add_event("socket", "fw socket up", chain="fw"),
        store.add_event("applied", "lb rev 2 applied", chain="lb", data={"rev": 2}),
    ]
    assert [e.id for e in added] == [1, 2, 3, 4]
    assert [e.at for e in added] == [1001.0, 1002.0, 1003.0, 1004.0]
    assert store.events() == added
    assert store.events(after_id=2) == added[2:]
    assert store.events(limit=2) == added[:2]
    assert store.events(chain="lb") == [added[0], added[3]]
    assert store.events(after_id=1, chain="lb") == [added[3]]
    assert store.events(after_id=4) == []
    assert store.last_event_id() == 4
    assert added[1].chain is None
    assert added[1].data is None


def test_event_log_is_pruned_to_its_limit(path: Path) -> None:
    with Store.open(path, event_limit=10) as store:
        for n in range(25):
            store.add_event("tick", f"tick {n}")
        ids = [e.id for e in store.events()]
        assert ids == list(range(16, 26))
        # Pruning never reuses ids, so a reader's cursor stays meaningful.
        assert store.last_event_id() == 25
        assert store.add_event("tick", "next").id == 26


def test_event_log_stays_within_one_percent_of_its_limit(path: Path) -> None:
    with Store.open(path, event_limit=500) as store:
        for n in range(1234):
            store.add_event("tick", f"tick {n}")
        kept = store.events(limit=10_000)
        assert 500 <= len(kept) < 505
        assert kept[-1].id == 1234


# -- files and concurrency ---------------------------------------------------------------


def test_files_are_private(path: Path, store: Store) -> None:
    store.add_event("agent", "started")  # the -wal and -shm files exist while it is open
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        assert oct((path.parent / name).stat().st_mode & 0o777) == "0o600", name
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"


def test_a_new_store_is_marked_as_ours(path: Path, store: Store) -> None:
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert raw.execute("PRAGMA user_version").fetchone() == (1,)
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert dict(raw.execute("SELECT key, value FROM meta").fetchall()) == {
        "application_id": "0x464c5348",
        "user_version": "1",
    }
    raw.close()


def test_two_stores_share_one_file(path: Path) -> None:
    with Store.open(path) as agent, Store.open(path) as reader:
        committed = _apply(agent, "lb")
        assert reader.active("lb") == committed
        assert _begin(reader, "lb").rev == 2  # numbering is shared, not per connection
        event = reader.add_event("cli", "hello")
        assert agent.events() == [event]
        assert agent.last_event_id() == 1


def test_a_locked_store_says_who_to_stop(path: Path) -> None:
    with Store.open(path, busy_timeout=0.05) as store:
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError) as caught:
                store.add_event("agent", "blocked")
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        assert caught.value.message == (
            f"{path} is locked by another process (waited 0.05 s); "
            "stop the other flashctl agent or use another FLASHCTL_HOME"
        )
        assert store.add_event("agent", "unblocked").id == 1  # the failed write left no trace


def test_one_thread_at_a_time_is_safe(store: Store) -> None:
    def work() -> None:
        for n in range(50):
            store.add_event("tick", str(n))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [e.id for e in store.events()] == list(range(1, 201))


def test_a_closed_store_refuses_work(path: Path) -> None:
    store = Store.open(path)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StoreError) as caught:
        store.events()
    assert caught.value.message == f"state store {path} is closed"


# -- errors: one line, naming the file and what to do ------------------------------------


def test_garbage_file_is_not_a_store(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"these bytes are not SQLite\n" * 200)
    assert _error(path) == (
        f"{path} is not a flashctl state store (file is not a database); "
        "move it aside and restart the agent"
    )
    assert path.read_bytes() == b"these bytes are not SQLite\n" * 200


def test_corrupt_store(path: Path) -> None:
    Store.open(path).close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xa5" * 3996  # page 1 holds the schema; the 100-byte header survives
    path.write_bytes(bytes(data))
    assert _error(path) == (
        f"{path} is corrupt (database disk image is malformed); move it aside and restart the agent"
    )


def test_store_missing_its_tables_is_corrupt(path: Path) -> None:
    Store.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE events")
    raw.commit()
    raw.close()
    assert _error(path) == (
        f"{path} is corrupt (tables missing: events); move it aside and restart the agent"
    )


def test_another_applications_tables(path: Path) -> None:
    path.parent.mkdir()
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.execute("CREATE TABLE orders (id INTEGER)")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    assert _error(path) == (
        f"{path} is not a flashctl state store (SQLite database with other tables: "
        "orders, users); use another FLASHCTL_HOME or move it aside"
    )
    assert path.read_bytes() == before  # not switched to WAL, not touched at all
    assert not Path(f"{path}-wal").exists()


def test_another_applications_id(path: Path) -> None:
    path.parent.mkdir()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA application_id = 305419896")  # 0x12345678
    raw.commit()
    raw.close()
    assert _error(path) == (
        f"{path} is not a flashctl state store (SQLite database with application_id "
        "0x12345678); use another FLASHCTL_HOME or move it aside"
    )


def test_newer_schema(path: Path) -> None:
    Store.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.commit()
    raw.close()
    assert _error(path) == (
        f"{path} was written by a newer flashctl (schema 99 > 1); "
        "upgrade flashctl or use another FLASHCTL_HOME"
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads and writes a chmod-000 file: no permission error"
)
def test_unreadable_file(path: Path) -> None:
    Store.open(path).close()
    path.chmod(0)
    assert _error(path) == (
        f"cannot open {path} (permission denied); run flashctl as the file's owner, "
        "fix its permissions, or use another FLASHCTL_HOME"
    )


def test_directory_in_place_of_the_file(path: Path) -> None:
    path.mkdir(parents=True)
    assert _error(path) == (
        f"cannot open {path} (is a directory); move it aside or use another FLASHCTL_HOME"
    )


def _sqlite_failure(tmp_path: Path, uri: str, *statements: str) -> sqlite3.Error:
    """Run statements until SQLite fails for real, and return its exception."""
    setup = sqlite3.connect(tmp_path / "scratch.db")
    setup.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    setup.commit()
    setup.close()
    conn = sqlite3.connect(f"file:{tmp_path / 'scratch.db'}{uri}", uri=True)
    try:
        for statement in statements:
            for _ in range(100):
                conn.execute(statement)
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError("SQLite did not fail")


# Disk full and a read-only filesystem cannot be staged for root without mounting; these
# tests feed the translation genuine SQLite exceptions raised by the same result codes.
def test_disk_full_message(tmp_path: Path, path: Path) -> None:
    error = _sqlite_failure(
        tmp_path, "", "PRAGMA max_page_count = 3", "INSERT INTO t VALUES (zeroblob(3000))"
    )
    assert error.sqlite_errorname == "SQLITE_FULL"
    assert _sqlite_error(error, path, 5.0).message == (
        f"cannot write {path} (disk full); free space on its filesystem and retry"
    )


def test_read_only_message(tmp_path: Path, path: Path) -> None:
    error = _sqlite_failure(tmp_path, "?mode=ro", "INSERT INTO t VALUES (1)")
    assert error.sqlite_errorname == "SQLITE_READONLY"
    assert _sqlite_error(error, path, 5.0).message == (
        f"cannot write {path} (read-only file or filesystem); "
        "make it writable or use another FLASHCTL_HOME"
    )


def test_agent_settings_persist_and_are_replaced(path: Path) -> None:
    with Store.open(path, clock=Clock()) as opened:
        assert opened.setting("monitor.umem_ids") is None
        opened.set_setting("monitor.umem_ids", '[["edge", "pool", 0]]')
        opened.set_setting("monitor.umem_ids", '[["edge", "pool", 3]]')
    with Store.open(path, clock=Clock()) as reopened:
        assert reopened.setting("monitor.umem_ids") == '[["edge", "pool", 3]]'
