"""Crashes and bad state: kill -9 of the agent mid-apply, restarts that must flush nothing,
failed writes that must be undone (all or nothing), and state files that are corrupt or not
flashctl's at all."""

from __future__ import annotations

import errno
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flashctl import __version__
from flashctl.backends.base import read_rules, write_error
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.engine import Engine, RolledBack
from flashctl.errors import ExitCode
from flashctl.home import lock_holder
from flashctl.store import Store
from tests.agent.chains import LB, LINEAR, pipeline
from tests.agent.harness import AgentHome, wait_for

NFS = {"a": [10, 11], "b": [12, 13], "c": [14, 15]}
REV1 = pipeline("abc", NFS)  # a -> b -> c
REV2 = pipeline("abc", NFS, order=["a", "c", "b"])  # a -> c -> b: six writes from REV1
# flash-ids: a 0 1, b 2 3, c 4 5
REV1_RULES = {0: [2], 1: [3], 2: [4], 3: [5], 4: [], 5: []}
REV2_RULES = {0: [4], 1: [5], 2: [], 3: [], 4: [2], 5: [3]}
REV2_WRITES = [  # in the order the engine makes them (make-before-break)
    "  [hitless] flash-id 4: -1 -> 2  c/0: set next to [b/0 (id 2, copy)]",
    "  [redirect-gap] flash-id 0: 2 -> 4  a/0: change next from [b/0 (id 2)] to [c/0 (id 4, copy)]",
    "  [hitless] flash-id 5: -1 -> 3  c/1: set next to [b/1 (id 3, copy)]",
    "  [redirect-gap] flash-id 1: 3 -> 5  a/1: change next from [b/1 (id 3)] to [c/1 (id 5, copy)]",
    "  [redirect-gap] flash-id 2: 4 -> -1  b/0: clear next (was [c/0 (id 4)]): b sends to the NIC",
    "  [redirect-gap] flash-id 3: 5 -> -1  b/1: clear next (was [c/1 (id 5)]): b sends to the NIC",
]


def _apply_rev1(home: AgentHome) -> None:
    result = home.cli("apply", home.write("rev1.yaml", REV1))
    assert (result.code, result.out_lines[-5]) == (0, "chain abc rev 1: wrote 4 rules")
    assert home.kernel() == REV1_RULES


def _revisions(home: AgentHome) -> list[tuple[int, str, str | None]]:
    """(rev, state, error) of chain abc, read from the store directly (the agent may be down)."""
    with Store.open(home.home.store) as store:
        return [(r.rev, r.state, r.error) for r in store.history("abc")]


# --- kill -9 -------------------------------------------------------------------------------------


def test_kill_9_in_the_middle_of_an_apply_then_restart_converges(home: AgentHome) -> None:
    agent = home.start_agent()
    _apply_rev1(home)
    before = home.last_event_id()
    assert agent.stop() == 0
    # The same agent, but its third rule write hangs: kill -9 it there.
    stalling = home.start_agent(stall=3)
    apply = home.spawn([*home.cli_argv(), "apply", home.write("rev2.yaml", REV2)], "apply")
    wait_for(home.stall_marker.exists, "the agent to reach its third write")
    # Half applied: c/0 and a/0 were written, the other four were not.
    assert home.kernel() == {0: [4], 1: [3], 2: [4], 3: [5], 4: [2], 5: []}
    assert _revisions(home) == [(2, "pending", None), (1, "active", None)]
    stalling.kill()

    assert apply.wait(30) == 1
    assert (home.base / "apply.out").read_text().splitlines() == [
        "error: the agent closed the connection",
        "hint: see `flashctl events`",
    ]

    # The next command starts an agent, which takes up rev 1 and puts its rules back.
    status = home.cli("status", "-o", "json")
    pid = lock_holder(home.home)
    assert (status.code, status.err_lines) == (
        0,
        [f"started agent (pid {pid}, sim backend, {home.root}, replacing a stale socket)"],
    )
    wait_for(lambda: home.kernel() == REV1_RULES, f"rev 1's rules (now {home.kernel()})")
    assert home.wait_in_sync("abc")["revision"] == 1
    assert _revisions(home) == [
        (2, "interrupted", "the agent stopped before this revision was applied"),
        (1, "active", None),
    ]
    stalled = stalling.pid
    assert [(e["kind"], e["message"]) for e in home.events(after=before)] == [
        ("agent", f"agent stopped (pid {agent.pid})"),
        ("agent", f"agent {__version__} started (pid {stalled}, sim)"),
        ("write", "2 -> flash-id 4: c/0: set next to [b/0 (id 2, copy)]"),
        ("write", "4 -> flash-id 0: a/0: change next from [b/0 (id 2)] to [c/0 (id 4, copy)]"),
        # killed: no "agent stopped"; the next agent finds rev 2 pending
        (
            "interrupted",
            "rev 2 of abc was interrupted before it committed; reconciling to the last "
            "committed revision",
        ),
        ("agent", f"agent {__version__} started (pid {pid}, sim)"),
        ("write", "2 -> flash-id 0: a/0: change next from [c/0 (id 4)] to [b/0 (id 2, copy)]"),
        ("write", "-1 -> flash-id 4: c/0: clear next (was [b/0 (id 2)]): c sends to the NIC"),
    ]

    # Applying rev 2 again works from there, as a new revision.
    again = home.cli("apply", "rev2.yaml")
    assert (again.code, again.out_lines) == (0, ["chain abc rev 3: wrote 6 rules", *REV2_WRITES])
    assert home.kernel() == REV2_RULES
    assert [(r, s) for r, s, _ in _revisions(home)] == [
        (3, "active"),
        (2, "interrupted"),
        (1, "superseded"),
    ]


def test_kill_9_in_the_first_apply_of_a_chain_leaves_none_of_its_rules(home: AgentHome) -> None:
    """No committed revision to go back to: the rules the interrupted apply wrote go."""
    stalling = home.start_agent(stall=3)
    apply = home.spawn([*home.cli_argv(), "apply", home.write("rev1.yaml", REV1)], "apply")
    wait_for(home.stall_marker.exists, "the agent to reach its third write")
    assert home.kernel() == {0: [2], 1: [], 2: [4], 3: [], 4: [], 5: []}  # b/0, a/0 written
    stalling.kill()
    assert apply.wait(30) == 1

    again = home.start_agent()
    assert home.kernel() == {flash_id: [] for flash_id in range(6)}  # before it served
    assert _revisions(home) == [
        (1, "interrupted", "the agent stopped before this revision was applied")
    ]
    status = home.status()
    assert (status["chains"], status["orphans"]) == ([], [])
    assert [(e["kind"], e["message"]) for e in home.events("agent", "interrupted", "write")] == [
        ("agent", f"agent {__version__} started (pid {stalling.pid}, sim)"),
        ("write", "4 -> flash-id 2: b/0: set next to [c/0 (id 4, copy)]"),
        ("write", "2 -> flash-id 0: a/0: set next to [b/0 (id 2, copy)]"),
        (
            "interrupted",
            "rev 1 of abc was interrupted before it committed; reconciling to the last "
            "committed revision",
        ),
        ("write", "-1 -> flash-id 0: a/0: clear next (was [b/0 (id 2)]): removing"),
        ("write", "-1 -> flash-id 2: b/0: clear next (was [c/0 (id 4)]): removing"),
        ("agent", f"agent {__version__} started (pid {again.pid}, sim)"),
    ]
    # Applying it again works, as revision 2.
    result = home.cli("apply", "rev1.yaml")
    assert (result.code, result.out_lines[0]) == (0, "chain abc rev 2: wrote 4 rules")
    assert home.kernel() == REV1_RULES


@pytest.mark.parametrize("how", ["agent-stop", "kill-9"])
def test_a_restarted_agent_flushes_no_rule(home: AgentHome, how: str) -> None:
    agent = home.start_agent()
    result = home.cli("apply", home.write("linear.yaml", LINEAR), home.write("lb.yaml", LB))
    assert result.code == 0
    wait_for(lambda: home.events("churn"), "the first reconcile pass")
    rules = {0: [1], 1: [], 2: [3, 4], 3: [], 4: []}
    assert home.kernel() == rules
    status = home.stable_status()

    if how == "kill-9":
        agent.kill()
    else:
        stop = home.cli("agent", "stop")
        assert (stop.code, stop.out) == (0, f"stopped agent (pid {agent.pid})\n")
        assert agent.process.wait(10) == 0
    assert home.kernel() == rules  # the kernel outlives the agent

    again = home.start_agent()
    last = max(e["id"] for e in home.events("agent"))
    # A foreign socket wakes the reconcile loop; once its churn is noted, a full pass ran.
    assert (
        home.cli("sim", "add-socket", "--queue", "30").out
        == "pid 4005 'xdpsock' holds flash-id 5\n"
    )
    wait_for(lambda: home.events("churn", after=last), "a reconcile pass of the new agent")
    assert home.kernel() == {**rules, 5: []}
    assert home.events("write", "error", "rollback", "interrupted", after=last) == []
    assert home.history("linear") == [(1, "active")]
    assert home.history("lb") == [(1, "active")]
    assert home.stable_status()["chains"] == status["chains"]
    assert home.call("agent", action="status")["pid"] == again.pid


# --- a failed write: all or nothing ------------------------------------------------------------


def test_a_failed_write_rolls_the_apply_back_through_the_cli(home: AgentHome) -> None:
    agent = home.start_agent()
    _apply_rev1(home)
    assert agent.stop() == 0
    home.start_agent(fail=2)  # rev 2's second write (a/0) fails with EINVAL
    last = home.last_event_id()
    result = home.cli("apply", home.write("rev2.yaml", REV2))
    assert (result.code, result.out, result.err_lines) == (
        int(ExitCode.ROLLED_BACK),
        "",
        [
            "error: apply rolled back: writing '4' to flash-id 0's next failed with EINVAL: the "
            "kernel rejected the rule: an id is unknown (socket closed?) or the text is "
            "malformed; previous rules restored",
            "hint: re-read the inventory and plan again",
        ],
    )
    assert home.kernel() == REV1_RULES
    assert [(e["kind"], e["message"]) for e in home.events(after=last)] == [
        ("write", "2 -> flash-id 4: c/0: set next to [b/0 (id 2, copy)]"),
        (
            "error",
            "write to flash-id 0 failed: writing '4' to flash-id 0's next failed with EINVAL: "
            "the kernel rejected the rule: an id is unknown (socket closed?) or the text is "
            "malformed",
        ),
        ("rollback", "restored 1 of 1 rules"),
    ]
    assert home.history("abc") == [(2, "rolled-back"), (1, "active")]
    assert home.chain_status("abc")["revision"] == 1


class Crash(BaseException):
    """The agent's process dies here (nothing after it runs, nothing is undone)."""


class FaultyBackend(SimBackend):
    """A simulated backend whose chosen rule writes fail (nothing is written) or crash."""

    def __init__(self, host: SimHost) -> None:
        super().__init__(host)
        self.writes = 0
        self.failing: dict[int, int] = {}  # write number -> errno
        self.crash_at = 0

    def fail(self, *after: int, err: int = errno.EINVAL) -> None:
        """Fail the writes that come `after` writes from now (1 = the next one)."""
        self.failing = {self.writes + n: err for n in after}

    def write_rule_text(self, flash_id: int, text: str) -> None:
        self.writes += 1
        if self.writes == self.crash_at:
            raise Crash
        if self.writes in self.failing:
            raise write_error(flash_id, text, self.failing[self.writes])
        super().write_rule_text(flash_id, text)


def _open_engine(directory: Path) -> Engine:
    """An engine over the simulated host and store kept in `directory` (as an agent starts)."""
    backend = FaultyBackend(SimHost.load(directory / "sim-kernel.json"))
    engine = Engine(backend, Store.open(directory / "state.db"), prepare=backend.ensure_nfs)
    engine.load_active()
    return engine


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fc") as name:
        yield Path(name)


@pytest.fixture
def engine(directory: Path) -> Iterator[Engine]:
    engine = _open_engine(directory)
    engine.apply([("rev1.yaml", REV1)], who="test")
    yield engine
    engine.store.close()


def _faulty(engine: Engine) -> FaultyBackend:
    assert isinstance(engine.backend, FaultyBackend)
    return engine.backend


def _rules(engine: Engine) -> dict[int, list[int]]:
    return {flash_id: list(ids) for flash_id, ids in read_rules(engine.backend).items()}


def _history(engine: Engine, chain: str = "abc") -> list[tuple[int, str]]:
    return [(r.rev, r.state) for r in engine.store.history(chain)]


def test_a_failed_write_restores_the_previous_rules(engine: Engine) -> None:
    assert _rules(engine) == REV1_RULES
    _faulty(engine).fail(3)  # c/0 and a/0 are written, c/1 fails
    with pytest.raises(RolledBack) as raised:
        engine.apply([("rev2.yaml", REV2)], who="test")
    assert int(raised.value.exit_code) == 4
    assert raised.value.message == (
        "apply rolled back: writing '3' to flash-id 5's next failed with EINVAL: the kernel "
        "rejected the rule: an id is unknown (socket closed?) or the text is malformed; "
        "previous rules restored"
    )
    assert _rules(engine) == REV1_RULES
    assert _history(engine) == [(2, "rolled-back"), (1, "active")]
    assert engine.running["abc"].revision.rev == 1
    events = [(e.kind, e.message) for e in engine.store.events()][-4:]
    assert [kind for kind, _ in events] == ["write", "write", "error", "rollback"]
    assert events[-1] == ("rollback", "restored 2 of 2 rules")
    assert engine.reconcile() == []  # nothing left over for the reconcile loop


def test_a_failed_write_rolls_back_every_chain_of_the_apply(engine: Engine) -> None:
    xy = pipeline("xy", {"x": [40], "y": [41]})  # x, y take flash-ids 6, 7
    _faulty(engine).fail(7)  # abc's six writes succeed, xy's one write fails
    with pytest.raises(RolledBack):
        engine.apply([("rev2.yaml", REV2), ("xy.yaml", xy)], who="test")
    assert _rules(engine) == {**REV1_RULES, 6: [], 7: []}
    assert _history(engine) == [(2, "rolled-back"), (1, "active")]
    assert _history(engine, "xy") == [(1, "rolled-back")]
    assert sorted(engine.running) == ["abc"]
    assert engine.store.events()[-1].message == "restored 6 of 6 rules"


def test_an_undo_that_fails_too_is_left_to_the_reconcile_loop(engine: Engine) -> None:
    _faulty(engine).fail(3, 4)  # c/1 fails, then undoing a/0 fails as well
    with pytest.raises(RolledBack) as raised:
        engine.apply([("rev2.yaml", REV2)], who="test")
    assert raised.value.message.endswith(
        "; could not restore flash-ids [0]; the agent keeps reconciling"
    )
    assert _rules(engine) == {**REV1_RULES, 0: [4]}  # a/0 still on rev 2's target
    assert engine.store.events()[-1].message == "restored 1 of 2 rules"
    engine.reconcile()
    assert _rules(engine) == REV1_RULES
    assert _history(engine) == [(2, "rolled-back"), (1, "active")]


def test_a_crash_mid_apply_leaves_no_rule_on_sockets_only_the_crashed_revision_owned(
    engine: Engine, directory: Path
) -> None:
    """rev 2 adds d -> e behind c; the process dies after writing d's rule. On restart rev 1
    runs again: c's rule is its business (reconciled), d's socket is nobody's and is cleared."""
    longer = pipeline("abc", {**NFS, "d": [16], "e": [17]})  # d: flash-id 6, e: 7
    _faulty(engine).crash_at = _faulty(engine).writes + 2
    with pytest.raises(Crash):
        engine.apply([("rev2.yaml", longer)], who="test")
    assert _rules(engine) == {**REV1_RULES, 6: [7], 7: []}  # d's rule written, then death
    engine.store.close()

    restarted = _open_engine(directory)
    assert _rules(restarted) == {**REV1_RULES, 6: [], 7: []}
    assert _history(restarted) == [(2, "interrupted"), (1, "active")]
    assert restarted.reconcile() == []
    assert restarted.status()["orphans"] == []
    restarted.store.close()


def test_a_busy_socket_is_retried(engine: Engine) -> None:
    _faulty(engine).fail(1, err=errno.EBUSY)  # the first write is refused once, then works
    report = engine.apply([("rev2.yaml", REV2)], who="test")
    assert [c.revision for c in report.chains] == [2]
    assert _rules(engine) == REV2_RULES
    assert _history(engine) == [(2, "active"), (1, "superseded")]


# --- state files that are corrupt or not ours --------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 20)


def _foreign_tables(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()


def _foreign_application(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id = 305419896")  # 0x12345678
        db.execute("CREATE TABLE things (x)")
    db.close()


def _newer_schema(path: Path) -> None:
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            _garbage,
            "{store} is not a flashctl state store (file is not a database); move it aside "
            "and restart the agent",
        ),
        (
            _foreign_tables,
            "{store} is not a flashctl state store (SQLite database with other tables: "
            "users); use another FLASHCTL_HOME or move it aside",
        ),
        (
            _foreign_application,
            "{store} is not a flashctl state store (SQLite database with application_id "
            "0x12345678); use another FLASHCTL_HOME or move it aside",
        ),
        (
            _newer_schema,
            "{store} was written by a newer flashctl (schema 2 > 1); upgrade flashctl or use "
            "another FLASHCTL_HOME",
        ),
    ],
    ids=["garbage", "foreign-tables", "foreign-application", "newer-schema"],
)
def test_an_unusable_state_store_stops_the_agent_at_start(
    home: AgentHome, spoil: Callable[[Path], None], message: str
) -> None:
    home.root.mkdir(mode=0o700)
    spoil(home.home.store)
    expected = message.format(store=home.home.store)
    _refused(home, home.home.store, [f"error: {expected}"], expected)


@pytest.mark.parametrize(
    ("content", "message", "hint"),
    [
        (
            '{"sysfs": ',
            "{path}: the simulated kernel's state is unreadable (Expecting value: line 1 "
            "column 11 (char 10))",
            "move the file aside to start from an empty simulated host",
        ),
        (
            '{"sysfs": {}, "interfaces": {}}',
            "{path}: the simulated kernel's state is not in the expected format (snapshot "
            "field 'format' must be int, not None)",
            "move the file aside to start from an empty simulated host",
        ),
    ],
    ids=["not-json", "wrong-shape"],
)
def test_an_unreadable_simulated_kernel_stops_the_agent_at_start(
    home: AgentHome, content: str, message: str, hint: str
) -> None:
    home.root.mkdir(mode=0o700)
    home.home.sim_kernel.write_text(content)
    expected = message.format(path=home.home.sim_kernel)
    _refused(home, home.home.sim_kernel, [f"error: {expected}", f"hint: {hint}"], expected)


def _refused(home: AgentHome, spoiled: Path, lines: list[str], message: str) -> None:
    """`agent run` exits 1 with `lines`, touching nothing; a CLI command that starts the
    agent reports the same problem in one line."""
    before = spoiled.read_bytes()
    run = home.cli_process("agent", "run")
    assert (run.code, run.out, run.err_lines) == (1, "", lines)
    assert spoiled.read_bytes() == before
    assert not home.home.socket.exists()
    assert lock_holder(home.home) is None

    status = home.cli("status")
    assert (status.code, status.out, status.err_lines) == (
        1,
        "",
        [f"error: the agent exited at start: {message}", f"hint: see {home.home.log}"],
    )
    assert spoiled.read_bytes() == before
    assert lock_holder(home.home) is None
