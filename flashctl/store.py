"""The agent's state store: applied revisions of every chain, and an event log, in SQLite.

One agent process owns the store, but a second opener (a CLI reading history, a test) may
share the file: WAL mode lets readers run beside the writer, and writes take the lock up
front (`BEGIN IMMEDIATE`) so two writers queue instead of failing halfway.

Every SQLite or OS failure becomes a one-line `StoreError` naming the file and what to do;
no sqlite3 traceback reaches a user. Only the standard library is imported: the agent loads
this module at start-up and it must stay light.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast, get_args

from flashctl.errors import ExitCode, FlashctlError

# "FLSH": marks the file as ours in the SQLite header, so another program's database is
# recognised before we touch it (and `file(1)` can tell what it is).
APPLICATION_ID = 0x464C5348
SCHEMA_VERSION = 1
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a second opener waits for the writer's lock
DEFAULT_EVENT_LIMIT = 100_000

RevisionState = Literal[
    "pending",  # begun, being applied to the backend
    "active",  # applied; the one the agent keeps the kernel matching (at most one per chain)
    "superseded",  # was active, replaced by a newer revision or a deletion
    "rejected",  # refused before touching the kernel; the running revision stays
    "rolled-back",  # failed while applying and was undone
    "interrupted",  # left pending by an agent that stopped (crash, kill) mid-apply
    "deleted",  # tombstone: the chain was deleted; its history stays
]
FailedState = Literal["rejected", "rolled-back"]
_STATES: tuple[str, ...] = get_args(RevisionState)
_INTERRUPTED_ERROR = "the agent stopped before this revision was applied"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    chain TEXT NOT NULL,
    rev INTEGER NOT NULL CHECK (rev >= 1),
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s}'" for s in _STATES)})),
    spec_hash TEXT NOT NULL,
    spec_text TEXT NOT NULL,
    plan TEXT NOT NULL,
    who TEXT NOT NULL,
    at REAL NOT NULL,
    message TEXT,
    source TEXT,
    error TEXT,
    UNIQUE (chain, rev)
);
-- The database itself refuses a second active revision of a chain, whatever the caller does.
CREATE UNIQUE INDEX IF NOT EXISTS revisions_one_active ON revisions (chain)
    WHERE state = 'active';
CREATE INDEX IF NOT EXISTS revisions_pending ON revisions (chain, rev)
    WHERE state = 'pending';
-- AUTOINCREMENT: ids are never reused after pruning, so a reader's `after_id` stays valid.
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    chain TEXT,
    message TEXT NOT NULL,
    data TEXT
);
CREATE INDEX IF NOT EXISTS events_by_chain ON events (chain, id);
"""
_OUR_TABLES = frozenset({"meta", "revisions", "events"})
_SQLITE_TABLES = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4"})

_REVISION_COLUMNS = "chain, rev, state, spec_hash, spec_text, plan, who, at, message, source, error"
_SELECT_REVISION = f"SELECT {_REVISION_COLUMNS} FROM revisions"
_INSERT_REVISION = f"INSERT INTO revisions ({_REVISION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_SELECT_EVENT = "SELECT id, at, kind, chain, message, data FROM events"


class StoreError(FlashctlError):
    """The state store cannot be opened, read or written; the message says what to do."""

    exit_code = ExitCode.FAILURE


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of one chain, as applied (or attempted) by the agent."""

    chain: str
    rev: int
    state: RevisionState
    spec_hash: str
    spec_text: str
    plan: dict[str, Any]
    who: str
    at: float  # epoch seconds when the revision was begun
    message: str | None
    source: str | None  # the file name the spec came from, when known
    error: str | None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the agent's event log."""

    id: int
    at: float
    kind: str
    chain: str | None
    message: str
    data: dict[str, Any] | None


class Store:
    """A SQLite state store; use `Store.open`, then `close()` or a `with` block."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        clock: Callable[[], float],
        busy_timeout: float,
        event_limit: int,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._event_limit = event_limit
        # Pruning every 1% of the limit keeps each prune small (one index range delete) and
        # the log within 101% of its limit.
        self._prune_every = max(1, event_limit // 100)
        # The agent may hand the store to a worker thread; one caller at a time is enough.
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        event_limit: int = DEFAULT_EVENT_LIMIT,
    ) -> Store:
        """Create or open the store at `path` (its directory is created, mode 0700)."""
        if event_limit < 1:
            raise ValueError(f"event_limit must be at least 1, not {event_limit}")
        _precreate(path)
        conn = _connect(path, busy_timeout)
        try:
            _prepare(conn, path)
        except BaseException as error:
            conn.close()  # a failed open leaves no connection (and no lock) behind
            if isinstance(error, sqlite3.Error):
                raise _sqlite_error(error, path, busy_timeout) from error
            raise
        return cls(conn, path, clock, busy_timeout, event_limit)

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL if this was the last one."""
        with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- revisions ---------------------------------------------------------------------

    def begin_revision(
        self,
        chain: str,
        spec_text: str,
        spec_hash: str,
        plan: dict[str, Any],
        who: str,
        message: str | None,
        source: str | None,
    ) -> Revision:
        """Record a new 'pending' revision numbered one past the chain's last."""
        plan_json = _dump(plan)
        with self._write() as conn:
            revision = Revision(
                chain=chain,
                rev=_next_rev(conn, chain),
                state="pending",
                spec_hash=spec_hash,
                spec_text=spec_text,
                plan=plan,
                who=who,
                at=self._clock(),
                message=message,
                source=source,
                error=None,
            )
            conn.execute(_INSERT_REVISION, _revision_row(revision, plan_json))
        return revision

    def commit_revision(self, chain: str, rev: int) -> Revision:
        """Make a pending revision active and supersede the active one, in one transaction."""
        with self._write() as conn:
            _require_pending(conn, chain, rev, "commit")
            conn.execute(
                "UPDATE revisions SET state = 'superseded' WHERE chain = ? AND state = 'active'",
                (chain,),
            )
            conn.execute(
                "UPDATE revisions SET state = 'active' WHERE chain = ? AND rev = ?", (chain, rev)
            )
            return _fetch_revision(conn, chain, rev)

    def fail_revision(self, chain: str, rev: int, state: FailedState, error: str) -> Revision:
        """Mark a pending revision rejected or rolled back; the active one stays active."""
        if state not in get_args(FailedState):
            raise ValueError(f"a failed revision is 'rejected' or 'rolled-back', not {state!r}")
        with self._write() as conn:
            _require_pending(conn, chain, rev, f"mark {state}")
            conn.execute(
                "UPDATE revisions SET state = ?, error = ? WHERE chain = ? AND rev = ?",
                (state, error, chain, rev),
            )
            return _fetch_revision(conn, chain, rev)

    def mark_deleted(self, chain: str, who: str) -> Revision | None:
        """Record that `chain` was deleted: a 'deleted' tombstone supersedes its active revision.

        Returns the tombstone, or None (and writes nothing) when the chain has no active
        revision, so deleting twice is harmless.
        """
        with self._write() as conn:
            if _query_one(conn, "AND state = 'active'", (chain,)) is None:
                return None
            conn.execute(
                "UPDATE revisions SET state = 'superseded' WHERE chain = ? AND state = 'active'",
                (chain,),
            )
            tombstone = Revision(
                chain=chain,
                rev=_next_rev(conn, chain),
                state="deleted",
                spec_hash="",
                spec_text="",
                plan={},
                who=who,
                at=self._clock(),
                message=None,
                source=None,
                error=None,
            )
            conn.execute(_INSERT_REVISION, _revision_row(tombstone, _dump({})))
        return tombstone

    def active(self, chain: str) -> Revision | None:
        with self._read() as conn:
            return _query_one(conn, "AND state = 'active'", (chain,))

    def active_all(self) -> list[Revision]:
        """The active revision of every chain that has one, sorted by chain name."""
        with self._read() as conn:
            rows = conn.execute(f"{_SELECT_REVISION} WHERE state = 'active' ORDER BY chain")
            return [_to_revision(row) for row in rows]

    def revision(self, chain: str, rev: int) -> Revision | None:
        with self._read() as conn:
            return _query_one(conn, "AND rev = ?", (chain, rev))

    def history(self, chain: str) -> list[Revision]:
        """Every revision of `chain`, newest first (empty for an unknown chain)."""
        with self._read() as conn:
            rows = conn.execute(f"{_SELECT_REVISION} WHERE chain = ? ORDER BY rev DESC", (chain,))
            return [_to_revision(row) for row in rows]

    def setting(self, key: str) -> str | None:
        """A value the agent keeps across restarts (the `meta` table), or None."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"agent.{key}",)).fetchone()
            return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"agent.{key}", value),
            )

    def pending(self) -> list[Revision]:
        """Revisions still 'pending', sorted by chain and number."""
        with self._read() as conn:
            return _pending(conn)

    def interrupt_pending(self) -> list[Revision]:
        """Mark every pending revision 'interrupted' (call on agent start); returns them."""
        with self._write() as conn:
            stale = _pending(conn)
            conn.execute(
                "UPDATE revisions SET state = 'interrupted', error = ? WHERE state = 'pending'",
                (_INTERRUPTED_ERROR,),
            )
        return [_interrupted(r) for r in stale]

    # -- events ------------------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        chain: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Append an event; every so often, drop the oldest beyond the limit."""
        data_json = None if data is None else _dump(data)
        at = self._clock()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO events (at, kind, chain, message, data) VALUES (?, ?, ?, ?, ?)",
                (at, kind, chain, message, data_json),
            )
            event_id = cast(int, cursor.lastrowid)
            if event_id % self._prune_every == 0:
                # Ids are dense, so "the newest N" is an id range: no count, no sort.
                conn.execute("DELETE FROM events WHERE id <= ?", (event_id - self._event_limit,))
        return Event(id=event_id, at=at, kind=kind, chain=chain, message=message, data=data)

    def events(self, after_id: int = 0, limit: int = 1000, chain: str | None = None) -> list[Event]:
        """Events with id > `after_id`, oldest first, at most `limit`, optionally of one chain."""
        with self._read() as conn:
            if chain is None:
                rows = conn.execute(
                    f"{_SELECT_EVENT} WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
                )
            else:
                rows = conn.execute(
                    f"{_SELECT_EVENT} WHERE chain = ? AND id > ? ORDER BY id LIMIT ?",
                    (chain, after_id, limit),
                )
            return [_to_event(row) for row in rows]

    def last_event_id(self) -> int:
        """The id of the newest event ever added (0 if none); survives pruning."""
        with self._read() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            return int(row[0]) if row else 0

    # -- transactions ------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One caller at a time; any SQLite failure becomes a StoreError."""
        with self._lock:
            if self._conn is None:
                raise StoreError(f"state store {self._path} is closed")
            try:
                yield self._conn
            except sqlite3.Error as error:
                raise _sqlite_error(error, self._path, self._busy_timeout) from error

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all or nothing, holding the write lock from the start."""
        with self._read() as conn:
            # IMMEDIATE: a reader that later wants to write could meet a newer snapshot in
            # WAL mode and fail with SQLITE_BUSY_SNAPSHOT; taking the lock first avoids it.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


# -- opening ---------------------------------------------------------------------------


def _precreate(path: Path) -> None:
    """Create the file 0600 ourselves: SQLite gives -wal and -shm the main file's mode."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)  # the umask may have cleared bits; set exactly 0600
        except FileExistsError:
            # Opening for writing here turns "permission denied" into our message instead
            # of SQLite's vaguer "unable to open database file".
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
    except OSError as error:
        raise _os_error(error, path) from error


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
        # the lock in Store makes handing the store between threads safe.
        return sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as error:
        raise _sqlite_error(error, path, busy_timeout) from error


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours (or empty) before changing anything, then set it up."""
    fresh = _check_ownership(conn, path)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(
            f"cannot use {path} (its filesystem does not support WAL mode); "
            "put FLASHCTL_HOME on a local filesystem"
        )
    # NORMAL in WAL mode: a power loss may lose the last commits but never corrupts.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if fresh:
        _initialise(conn)


def _check_ownership(conn: sqlite3.Connection, path: Path) -> bool:
    """True for an empty database; raises unless the file is a flashctl store we can read."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = _tables(conn)
    if app_id not in (0, APPLICATION_ID):
        raise _foreign(path, f"SQLite database with application_id 0x{app_id & 0xFFFFFFFF:08x}")
    if app_id == 0:
        if tables:
            raise _foreign(path, f"SQLite database with other tables: {_name_list(tables)}")
        return True
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer flashctl (schema {version} > {SCHEMA_VERSION}); "
            "upgrade flashctl or use another FLASHCTL_HOME"
        )
    missing = _OUR_TABLES - tables
    if missing:
        raise _corrupt(path, f"tables missing: {_name_list(missing)}")
    return False


def _initialise(conn: sqlite3.Connection) -> None:
    """Create the schema; a concurrent opener may have done it first, so re-check inside."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if int(conn.execute("PRAGMA application_id").fetchone()[0]) == 0:
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            # Header fields are part of the transaction: a crash leaves an empty file.
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("application_id", f"0x{APPLICATION_ID:08x}"),
                    ("user_version", str(SCHEMA_VERSION)),
                ],
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split the schema script: `executescript` would commit our open transaction."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(row[0]) for row in rows} - _SQLITE_TABLES


def _name_list(names: set[str] | frozenset[str]) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:5])
    return shown + (", ..." if len(ordered) > 5 else "")


# -- errors ----------------------------------------------------------------------------


def _foreign(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} is not a flashctl state store ({why}); use another FLASHCTL_HOME or move it aside"
    )


def _corrupt(path: Path, why: str) -> StoreError:
    return StoreError(f"{path} is corrupt ({why}); move it aside and restart the agent")


_OS_ADVICE = {
    errno.EACCES: (
        "permission denied",
        "run flashctl as the file's owner, fix its permissions, or use another FLASHCTL_HOME",
    ),
    errno.EPERM: (
        "permission denied",
        "run flashctl as the file's owner, fix its permissions, or use another FLASHCTL_HOME",
    ),
    errno.EROFS: ("read-only filesystem", "make it writable or use another FLASHCTL_HOME"),
    errno.ENOSPC: ("disk full", "free space on its filesystem and restart the agent"),
    errno.EISDIR: ("is a directory", "move it aside or use another FLASHCTL_HOME"),
}


def _os_error(error: OSError, path: Path) -> StoreError:
    reason, advice = _OS_ADVICE.get(
        error.errno or 0,
        ((error.strerror or str(error)).lower(), "use another FLASHCTL_HOME"),
    )
    return StoreError(f"cannot open {path} ({reason}); {advice}")


def _sqlite_error(error: sqlite3.Error, path: Path, busy_timeout: float) -> StoreError:
    """Translate by SQLite's primary result code, which is stable across versions."""
    code = int(getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return StoreError(
            f"{path} is not a flashctl state store (file is not a database); "
            "move it aside and restart the agent"
        )
    if code == sqlite3.SQLITE_CORRUPT:
        return _corrupt(path, "database disk image is malformed")
    if code == sqlite3.SQLITE_READONLY:
        return StoreError(
            f"cannot write {path} (read-only file or filesystem); "
            "make it writable or use another FLASHCTL_HOME"
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(
            f"cannot write {path} (disk full); free space on its filesystem and retry"
        )
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(
            f"cannot read or write {path} (disk I/O error); "
            "check the disk and its free space, then retry"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"{path} is locked by another process (waited {busy_timeout:g} s); "
            "stop the other flashctl agent or use another FLASHCTL_HOME"
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return StoreError(
            f"cannot open {path} (unable to open the database or its -wal/-shm files); "
            "make it and its directory writable, or use another FLASHCTL_HOME"
        )
    return StoreError(f"state store {path} failed ({_one_line(str(error))}); restart the agent")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- rows ------------------------------------------------------------------------------


def _dump(value: dict[str, Any]) -> str:
    # Sorted and compact: the same plan always stores the same text.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _next_rev(conn: sqlite3.Connection, chain: str) -> int:
    # Inside the caller's IMMEDIATE transaction, so two writers cannot pick the same number.
    row = conn.execute("SELECT MAX(rev) FROM revisions WHERE chain = ?", (chain,)).fetchone()
    return int(row[0] or 0) + 1


def _revision_row(r: Revision, plan_json: str) -> tuple[Any, ...]:
    return (
        r.chain,
        r.rev,
        r.state,
        r.spec_hash,
        r.spec_text,
        plan_json,
        r.who,
        r.at,
        r.message,
        r.source,
        r.error,
    )


def _to_revision(row: tuple[Any, ...]) -> Revision:
    chain, rev, state, spec_hash, spec_text, plan, who, at, message, source, error = row
    return Revision(
        chain=chain,
        rev=rev,
        state=state,
        spec_hash=spec_hash,
        spec_text=spec_text,
        plan=json.loads(plan),
        who=who,
        at=at,
        message=message,
        source=source,
        error=error,
    )


def _to_event(row: tuple[Any, ...]) -> Event:
    event_id, at, kind, chain, message, data = row
    return Event(
        id=event_id,
        at=at,
        kind=kind,
        chain=chain,
        message=message,
        data=None if data is None else json.loads(data),
    )


def _query_one(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> Revision | None:
    row = conn.execute(f"{_SELECT_REVISION} WHERE chain = ? {where}", params).fetchone()
    return None if row is None else _to_revision(row)


def _fetch_revision(conn: sqlite3.Connection, chain: str, rev: int) -> Revision:
    found = _query_one(conn, "AND rev = ?", (chain, rev))
    assert found is not None  # checked by _require_pending in the same transaction
    return found


def _require_pending(conn: sqlite3.Connection, chain: str, rev: int, action: str) -> None:
    found = _query_one(conn, "AND rev = ?", (chain, rev))
    if found is None:
        raise StoreError(f"cannot {action} revision {rev} of chain '{chain}': no such revision")
    if found.state != "pending":
        raise StoreError(
            f"cannot {action} revision {rev} of chain '{chain}': it is {found.state}, not pending"
        )


def _pending(conn: sqlite3.Connection) -> list[Revision]:
    rows = conn.execute(f"{_SELECT_REVISION} WHERE state = 'pending' ORDER BY chain, rev")
    return [_to_revision(row) for row in rows]


def _interrupted(r: Revision) -> Revision:
    return replace(r, state="interrupted", error=_INTERRUPTED_ERROR)
