"""Socket churn: NFs that crash, stop, restart, and flash-ids reused by other sockets.

Through the agent (the reconcile loop, woken by the simulated kernel) and in-process (one
`Engine.reconcile()` pass must repair everything it finds, and never leave a rule aimed at a
socket that is not one of its targets).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.backends.base import read_rules
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.engine import Engine
from flashctl.simcontrol import control
from flashctl.store import Store
from tests.agent.chains import pipeline
from tests.agent.harness import Agent, AgentHome, wait_for

# a (q10, q11) -> b (q12, q13) -> c (q14, q15): flash-ids a 0 1, b 2 3, c 4 5 on an idle host.
CHURN = pipeline("churn", {"a": [10, 11], "b": [12, 13], "c": [14, 15]})
APPLIED = {0: [2], 1: [3], 2: [4], 3: [5], 4: [], 5: []}


def _applied(home: AgentHome) -> None:
    assert home.cli("apply", home.write("churn.yaml", CHURN)).code == 0
    assert home.kernel() == APPLIED


def _settled(home: AgentHome, kernel: dict[int, list[int]], what: str) -> None:
    """Wait (bounded) until the simulated kernel holds exactly `kernel`."""
    wait_for(lambda: home.kernel() == kernel, f"{what}: rules {kernel} (now {home.kernel()})")


def _no_foreign_targets(home: AgentHome) -> None:
    """No rule of the chain points at a live socket held by anything but the chain's NFs."""
    holders = home.holders()
    for flash_id, targets in home.kernel().items():
        for target in targets:
            if target in holders:
                assert holders[target] in ("a", "b", "c"), (flash_id, targets, holders)


def _messages(home: AgentHome, after: int, *kinds: str) -> list[str]:
    return [f"{e['kind']}: {e['message']}" for e in home.events(*kinds, after=after)]


def test_a_killed_nf_is_rebound_and_rules_follow(home: AgentHome, agent: Agent) -> None:
    _applied(home)
    killed = home.cli("sim", "kill", "b")
    assert (killed.code, killed.out) == (0, "killed churn/b (pid 4001, flash-ids none)\n")
    # A crash clears nothing: a's rules point at ids nobody holds (harmless until reused).
    assert home.kernel() == {0: [2], 1: [3], 4: [], 5: []}
    chain = home.chain_status("churn")
    assert chain["state"] == "pending"
    assert [(s["socket"], s["state"]) for s in chain["sockets"]] == [
        ("a/0", "pending"),
        ("a/1", "pending"),
        ("b/0", "pending"),
        ("b/1", "pending"),
        ("c/0", "in-sync"),
        ("c/1", "in-sync"),
    ]

    last = home.last_event_id()
    started = home.cli("sim", "start", "b")
    assert (started.code, started.out) == (0, "started churn/b (pid 4001, flash-ids 2 3)\n")
    _settled(home, APPLIED, "b's new sockets programmed")
    assert home.wait_in_sync("churn")["revision"] == 1
    assert _messages(home, last, "write") == [
        "write: 4 -> flash-id 2: b/0: set next to [c/0 (id 4, copy)]",
        "write: 5 -> flash-id 3: b/1: set next to [c/1 (id 5, copy)]",
    ]


def test_a_restarted_nf_on_new_ids_is_re_pointed(home: AgentHome, agent: Agent) -> None:
    _applied(home)
    assert home.cli("sim", "kill", "b").code == 0
    assert home.cli("sim", "kill", "c").code == 0
    # c comes back first and takes the ids b had: a's rules now name c's sockets.
    assert home.cli("sim", "start", "c").out == "started churn/c (pid 4002, flash-ids 2 3)\n"
    _settled(home, {0: [], 1: [], 2: [], 3: []}, "a's rules cleared (ids 2 and 3 are c's now)")
    _no_foreign_targets(home)
    assert home.cli("sim", "start", "b").out == "started churn/b (pid 4001, flash-ids 4 5)\n"
    _settled(home, {0: [4], 1: [5], 2: [], 3: [], 4: [2], 5: [3]}, "a -> b -> c on the new ids")
    assert home.wait_in_sync("churn")["revision"] == 1


def test_ids_reused_by_a_foreign_socket_are_never_left_as_targets(
    home: AgentHome, agent: Agent
) -> None:
    _applied(home)
    assert home.cli("sim", "kill", "b").code == 0
    last = home.last_event_id()
    foreign = home.cli("sim", "add-socket", "--queue", "30")
    assert (foreign.code, foreign.out) == (0, "pid 4003 'xdpsock' holds flash-id 2\n")
    _settled(home, {0: [], 1: [3], 2: [], 4: [], 5: []}, "a/0 cleared (id 2 is xdpsock's)")
    other = home.cli("sim", "add-socket", "--queue", "31", "--procname", "other")
    assert other.out == "pid 4004 'other' holds flash-id 3\n"
    _settled(home, {0: [], 1: [], 2: [], 3: [], 4: [], 5: []}, "a/1 cleared (id 3 is other's)")
    assert _messages(home, last, "write") == [
        "write: -1 -> flash-id 0: a/0: clear next (was [id 2]): id 2 now belongs to another "
        "socket, not a target of a/0; keep -1 until b/0 is bound",
        "write: -1 -> flash-id 1: a/1: clear next (was [id 3]): id 3 now belongs to another "
        "socket, not a target of a/1; keep -1 until b/1 is bound",
    ]
    assert home.status()["orphans"] == []  # the foreign sockets have no rules of their own

    # b returns on the next free ids; a is re-pointed at it, never at the foreign sockets.
    assert home.cli("sim", "start", "b").out == "started churn/b (pid 4001, flash-ids 6 7)\n"
    final = {0: [6], 1: [7], 2: [], 3: [], 4: [], 5: [], 6: [4], 7: [5]}
    _settled(home, final, "a -> b (ids 6, 7) -> c")
    _no_foreign_targets(home)
    assert home.holders() == {
        0: "a",
        1: "a",
        2: "xdpsock",
        3: "other",
        4: "c",
        5: "c",
        6: "b",
        7: "b",
    }
    assert home.wait_in_sync("churn")["revision"] == 1


def test_graceful_stop_clears_upstream_rules_before_the_sockets_close(
    home: AgentHome, agent: Agent
) -> None:
    _applied(home)
    wait_for(lambda: home.events("churn"), "the first reconcile pass")
    last = home.last_event_id()
    stopped = home.cli("sim", "stop", "b")
    assert (stopped.code, stopped.out) == (0, "stopped churn/b (pid 4001, flash-ids none)\n")
    # When `sim stop` returns, nothing points at b's old ids any more.
    assert home.kernel() == {0: [], 1: [], 4: [], 5: []}
    wait_for(lambda: home.events("churn", after=last), "the churn to be noted")
    assert _messages(home, last) == [
        "write: -1 -> flash-id 0: a/0: clear next (was [b/0 (id 2)]): removing",
        "write: -1 -> flash-id 1: a/1: clear next (was [b/1 (id 3)]): removing",
        "churn: sockets -2, -3",
    ]
    # So a socket that takes the id at once receives nothing from the chain.
    assert home.cli("sim", "add-socket", "--queue", "30").out == (
        "pid 4003 'xdpsock' holds flash-id 2\n"
    )
    assert home.kernel() == {0: [], 1: [], 2: [], 4: [], 5: []}

    assert home.cli("sim", "start", "b").out == "started churn/b (pid 4001, flash-ids 3 6)\n"
    _settled(home, {0: [3], 1: [6], 2: [], 3: [4], 4: [], 5: [], 6: [5]}, "a -> b (3, 6) -> c")
    _no_foreign_targets(home)


def test_graceful_restart_re_points_upstream(home: AgentHome, agent: Agent) -> None:
    _applied(home)
    last = home.last_event_id()
    restarted = home.cli("sim", "restart", "c")
    assert (restarted.code, restarted.out) == (
        0,
        "restarted churn/c (pid 4002, flash-ids 4 5)\n",
    )
    _settled(home, APPLIED, "b re-pointed at c's new sockets")
    assert _messages(home, last, "write") == [
        "write: -1 -> flash-id 2: b/0: clear next (was [c/0 (id 4)]): removing",
        "write: -1 -> flash-id 3: b/1: clear next (was [c/1 (id 5)]): removing",
        "write: 4 -> flash-id 2: b/0: set next to [c/0 (id 4, copy)]",
        "write: 5 -> flash-id 3: b/1: set next to [c/1 (id 5, copy)]",
    ]
    assert [p["restarts"] for p in home.call("sim", action="list")] == [0, 0, 1]


def test_sim_errors(home: AgentHome, agent: Agent) -> None:
    _applied(home)
    unknown = home.cli("sim", "kill", "nope")
    assert (unknown.code, unknown.err_lines) == (
        2,
        ["error: no simulated NF 'nope'", "hint: simulated NFs: churn/a, churn/b, churn/c"],
    )
    busy = home.cli("sim", "add-socket", "--queue", "10")
    assert (busy.code, busy.err_lines) == (
        2,
        [
            "error: xdpsock cannot bind a socket on eth0 queue 10 (EBUSY): the queue is held by "
            "flash-id 0 (pid 4000 'a')",
            "hint: free the queue or an id (stop another simulated process)",
        ],
    )
    assert home.kernel() == APPLIED


# --- one reconcile pass, in-process -------------------------------------------------------------

XY = pipeline("xy", {"x": [40], "y": [41]})
NFS = {"a": "churn", "b": "churn", "c": "churn", "x": "xy", "y": "xy"}


@pytest.fixture
def engine() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory(prefix="fc") as directory:
        yield _engine(Path(directory))


def _engine(directory: Path) -> Engine:
    host = SimHost.load(directory / "sim-kernel.json")
    backend = SimBackend(host)
    engine = Engine(backend, Store.open(directory / "state.db"), prepare=backend.ensure_nfs)
    engine.apply([("churn.yaml", CHURN), ("xy.yaml", XY)], who="test")
    return engine


def _rules(engine: Engine) -> dict[int, list[int]]:
    return {flash_id: list(ids) for flash_id, ids in read_rules(engine.backend).items()}


def _host(engine: Engine) -> SimHost:
    assert isinstance(engine.backend, SimBackend)
    return engine.backend.host


def _check_converged(engine: Engine) -> None:
    """Every bound rule is the plan's; a pending rule names no live socket that is not one of
    its targets; and a second pass has nothing left to do."""
    inventory, observed = engine.observe()
    for planned in engine.plans(inventory).values():
        for rule in planned.rules:
            current = observed.get(rule.flash_id, ())
            if rule.next is not None:
                assert current == rule.next, (rule.socket, current, rule.next)
            else:
                strays = [i for i in current if i in planned.live_ids and i not in rule.intended]
                assert strays == [], (rule.socket, current)
    assert engine.reconcile() == []


def test_one_reconcile_pass_repairs_ids_reused_by_another_nf_and_a_foreign_socket(
    engine: Engine,
) -> None:
    host = _host(engine)
    assert _rules(engine) == {**APPLIED, 6: [7], 7: []}
    b, c = host.find("churn", "b"), host.find("churn", "c")
    assert b is not None
    assert c is not None
    host.stop(b.pid)  # crash: ids 2, 3 free, a still points at them
    host.stop(c.pid)
    host.start(c.pid)  # c takes 2, 3
    control(engine, "add-socket", {"interface": "eth0", "queue": 30})  # takes 4
    host.start(b.pid)  # b takes 5, 8
    assert _rules(engine) == {
        0: [2],
        1: [3],
        2: [],
        3: [],
        4: [],
        5: [],
        6: [7],
        7: [],
        8: [],
    }
    performed = engine.reconcile()
    assert _rules(engine) == {
        0: [5],
        1: [8],
        2: [],
        3: [],
        4: [],
        5: [2],
        6: [7],
        7: [],
        8: [3],
    }
    assert [(w.flash_id, w.new) for w in performed] == [(5, (2,)), (0, (5,)), (8, (3,)), (1, (8,))]
    _check_converged(engine)


ACTIONS = st.sampled_from(["kill", "stop", "start", "restart", "add-socket", "remove-foreign"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(ACTIONS, st.sampled_from(sorted(NFS))), min_size=1, max_size=12))
def test_any_churn_is_repaired_in_one_pass(steps: list[tuple[str, str]]) -> None:
    """Whatever NFs crash, stop, restart or come back, and whatever foreign sockets take or
    free ids in between, one reconcile pass after each step leaves every chain converged."""
    with tempfile.TemporaryDirectory(prefix="fc") as directory:
        engine = _engine(Path(directory))
        host = _host(engine)
        foreign: list[int] = []
        for step, (action, nf) in enumerate(steps):
            _step(engine, host, foreign, action, nf, queue=50 + step)
            engine.reconcile()
            _check_converged(engine)
        for nf, chain in NFS.items():  # everything back: both chains in sync again
            control(engine, "start", {"nf": nf, "chain": chain})
        engine.reconcile()
        _check_converged(engine)
        for chain in engine.status()["chains"]:
            assert chain["state"] == "in-sync", chain
        engine.store.close()


def _step(
    engine: Engine, host: SimHost, foreign: list[int], action: str, nf: str, queue: int
) -> Any:
    if action == "add-socket":
        foreign.append(control(engine, "add-socket", {"interface": "eth0", "queue": queue})["pid"])
    elif action == "remove-foreign":
        if foreign:
            host.remove(foreign.pop(0))
    else:
        control(engine, action, {"nf": nf, "chain": NFS[nf]})
