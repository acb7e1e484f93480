"""The agent end to end, over its real Unix socket: apply, diff, status, delete, history,
rollback and events as the CLI shows them; rejected specs; the socket's protection; a second
agent, a stale socket, clients of other versions, garbage on the wire; concurrent applies."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
import stat
import subprocess
import threading
from typing import Any

import pytest

from flashctl import __version__
from flashctl.client import AgentUnavailable, Client
from flashctl.home import AgentLock, lock_holder
from flashctl.protocol import encode, hello
from tests.agent.chains import ABC, CLASH, FAN_RULES, LB, LINEAR, fan
from tests.agent.harness import Agent, AgentHome, wait_for

WHO = f"{pwd.getpwuid(os.getuid()).pw_name} (pid {os.getpid()})"

LINEAR_APPLIED = [
    "sim: started linear/firewall (pid 4000)",
    "sim: started linear/router (pid 4001)",
    "chain linear rev 1: wrote 1 rule",
    "  [hitless] flash-id 0: -1 -> 1  firewall/0: set next to [router/0 (id 1, zero-copy)]",
]


def _apply_linear(home: AgentHome) -> None:
    result = home.cli("apply", home.write("linear.yaml", LINEAR))
    assert (result.code, result.out_lines) == (0, LINEAR_APPLIED)


# --- apply, diff, status ----------------------------------------------------------------------


def test_apply_prints_the_changes_then_reapply_is_unchanged(home: AgentHome, agent: Agent) -> None:
    result = home.cli("apply", home.write("linear.yaml", LINEAR))
    assert result == type(result)(0, "\n".join(LINEAR_APPLIED) + "\n", "")
    assert home.kernel() == {0: [1], 1: []}
    last = home.last_event_id()

    again = home.cli("apply", "linear.yaml")
    assert (again.code, again.out_lines, again.err) == (3, ["chain linear: unchanged"], "")
    assert home.events("write", "apply", after=last) == []
    assert home.history("linear") == [(1, "active")]
    assert home.kernel() == {0: [1], 1: []}


def test_apply_json_report(home: AgentHome, agent: Agent) -> None:
    result = home.cli("apply", "-o", "json", "-m", "first", home.write("linear.yaml", LINEAR))
    assert result.code == 0
    assert json.loads(result.out) == {
        "apiVersion": "flashctl/v1",
        "kind": "ApplyReport",
        "dryRun": False,
        "changed": True,
        "started": ["started linear/firewall (pid 4000)", "started linear/router (pid 4001)"],
        "warnings": [],
        "chains": [
            {
                "chain": "linear",
                "revision": 1,
                "specChanged": True,
                "writes": [
                    {
                        "flashId": 0,
                        "socket": "firewall/0",
                        "old": [],
                        "new": [1],
                        "text": "1\n",
                        "disruption": "hitless",
                        "reason": "firewall/0: set next to [router/0 (id 1, zero-copy)]",
                    }
                ],
                "pending": [],
            }
        ],
    }
    (revision,) = home.call("history", chain="linear")
    assert (revision["message"], revision["who"], revision["source"]) == (
        "first",
        WHO,
        "linear.yaml",
    )


def test_status_json(home: AgentHome, agent: Agent) -> None:
    _apply_linear(home)
    result = home.cli("status", "-o", "json")
    assert (result.code, result.err) == (0, "")
    data = json.loads(result.out)
    (chain,) = data.pop("chains")
    assert data == {
        "apiVersion": "flashctl/v1",
        "kind": "Status",
        "backend": {
            "name": "sim",
            "variant": "flash, table next, self-loop accepted",
            "chaining": True,
            "detail": "simulated FLASH kernel, 64 flash-ids",
        },
        "orphans": [],
        "sockets": 2,
        "xsks": [],  # real AF_XDP sockets: the simulator has none
    }
    assert isinstance(chain.pop("appliedAt"), float)
    for sock in chain["sockets"]:  # traffic counters of the simulated data plane, if any
        assert isinstance(sock.pop("counters", {}), dict)
    assert chain == {
        "name": "linear",
        "revision": 1,
        "appliedBy": WHO,
        "state": "in-sync",
        "sockets": [
            {
                "socket": "firewall/0",
                "nf": "firewall",
                "thread": 0,
                "interface": "eth0",
                "queue": 0,
                "flashId": 0,
                "next": [1],
                "desired": [1],
                "state": "in-sync",
                "reason": "-> router/0 (zero-copy)",
                "action": "",
            },
            {
                "socket": "router/0",
                "nf": "router",
                "thread": 0,
                "interface": "eth0",
                "queue": 1,
                "flashId": 1,
                "next": [],
                "desired": [],
                "state": "in-sync",
                "reason": "transmits to the NIC",
                "action": "",
            },
        ],
    }
    unknown = home.cli("status", "nope")
    assert (unknown.code, unknown.err_lines) == (
        2,
        ["error: no chain named 'nope' is applied", "hint: applied chains: linear"],
    )


def test_diff_exit_codes_and_dry_run(home: AgentHome, agent: Agent) -> None:
    # Before the first apply no NF runs (a diff starts none), so no rule can be planned yet.
    first = home.cli("diff", home.write("affine.yaml", fan("affine")))
    assert (first.code, first.out_lines) == (5, ["chain fan: spec changed, no rule changes"])
    assert home.call("sim", action="list") == []

    assert home.cli("apply", "affine.yaml").code == 0
    none = home.cli("diff", "affine.yaml")
    assert (none.code, none.out_lines) == (3, ["chain fan: unchanged"])
    assert home.cli("apply", "--dry-run", "affine.yaml").code == 3

    before = home.kernel(), home.last_event_id()
    spread = [
        "chain fan: would write 3 rules",
        "  [redirect-gap] flash-id 0: 3 -> 3 4 5  src/0: change next from [dst/0 (id 3)] to "
        "[dst/0 (id 3, copy), dst/1 (id 4, copy), dst/2 (id 5, copy)]",
        "  [index-reorder] flash-id 1: 4 -> 3 4 5  src/1: change next from [dst/1 (id 4)] to "
        "[dst/0 (id 3, copy), dst/1 (id 4, copy), dst/2 (id 5, copy)]; id 4 moves from index 0 "
        "to 1",
        "  [index-reorder] flash-id 2: 5 -> 3 4 5  src/2: change next from [dst/2 (id 5)] to "
        "[dst/0 (id 3, copy), dst/1 (id 4, copy), dst/2 (id 5, copy)]; id 5 moves from index 0 "
        "to 2",
    ]
    pending = home.cli("diff", home.write("spread.yaml", fan("spread")))
    assert (pending.code, pending.out_lines, pending.err) == (5, spread, "")
    dry = home.cli("apply", "--dry-run", "spread.yaml")
    assert (dry.code, dry.out_lines) == (5, spread)
    # Neither changed anything: same rules, no revision, no write.
    assert (home.kernel(), home.last_event_id()) == before
    assert home.history("fan") == [(1, "active")]


def test_two_chains_at_once(home: AgentHome, agent: Agent) -> None:
    result = home.cli("apply", home.write("linear.yaml", LINEAR), home.write("lb.yaml", LB))
    assert result.code == 0
    assert result.out_lines == [
        "sim: started linear/firewall (pid 4000)",
        "sim: started linear/router (pid 4001)",
        "sim: started lb/balancer (pid 4002)",
        "sim: started lb/web (pid 4003)",
        "sim: started lb/api (pid 4004)",
        "chain linear rev 1: wrote 1 rule",
        "  [hitless] flash-id 0: -1 -> 1  firewall/0: set next to [router/0 (id 1, zero-copy)]",
        "chain lb rev 1: wrote 1 rule",
        "  [hitless] flash-id 2: -1 -> 3 4  balancer/0: set next to "
        "[web/0 (id 3, zero-copy), api/0 (id 4, zero-copy)]",
    ]
    assert home.kernel() == {0: [1], 1: [], 2: [3, 4], 3: [], 4: []}
    states = {c["name"]: (c["revision"], c["state"]) for c in home.status()["chains"]}
    assert states == {"lb": (1, "in-sync"), "linear": (1, "in-sync")}
    info = home.call("agent", action="status")
    assert (info["chains"], info["pid"], info["protocol"]) == (["lb", "linear"], agent.pid, 1)


# --- rejected specs -----------------------------------------------------------------------------


def _untouched(home: AgentHome, before: tuple[Any, ...]) -> None:
    """The running chain is exactly as it was: rules, status, history, no new write."""
    kernel, status, history, last = before
    assert home.kernel() == kernel
    assert home.stable_status() == status
    assert home.call("history", chain="linear") == history
    assert home.events("write", "apply", after=last) == []


def _snapshot(home: AgentHome) -> tuple[Any, ...]:
    history = home.call("history", chain="linear")
    return home.kernel(), home.stable_status(), history, home.last_event_id()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "bad.yaml",
            "apiVersion: flashctl/v1\nkind: Chain\nmetadata: {name: linear\n",
            ["bad.yaml:4:1: error: invalid YAML: did not find expected ',' or '}'"],
        ),
        (
            "typo.yaml",
            LINEAR.replace("to: router}", "to: routr}"),
            [
                "typo.yaml:22:33: error: spec.links[1].to: unknown nf 'routr' "
                "(did you mean 'router'?)"
            ],
        ),
        (
            "clash.yaml",
            CLASH,
            [
                "clash.yaml:7:18: error: spec.nfs.x.queues[0]: queue 1 of eth0 is taken by "
                "router/0 of chain 'linear' and x/0 of chain 'clash' (give x/0 another queue: "
                "each queue of an interface takes one AF_XDP socket)"
            ],
        ),
    ],
    ids=["bad-yaml", "unknown-nf", "queue-of-running-chain"],
)
def test_rejected_spec_leaves_the_running_chain(
    home: AgentHome, agent: Agent, name: str, text: str, expected: list[str]
) -> None:
    _apply_linear(home)
    before = _snapshot(home)
    result = home.cli("apply", home.write(name, text))
    assert (result.code, result.out, result.err_lines) == (2, "", expected)
    _untouched(home, before)
    # Nothing was started for the rejected chain either.
    assert [p["nf"] for p in home.call("sim", action="list")] == ["firewall", "router"]
    assert home.call("history", chain="clash") == []


def test_two_new_chains_claiming_one_socket_are_both_rejected(
    home: AgentHome, agent: Agent
) -> None:
    _apply_linear(home)
    before = _snapshot(home)
    first = CLASH.replace("[1]", "[5]")
    second = first.replace("name: clash", "name: clash2").replace("x", "y")
    result = home.cli("apply", home.write("two.yaml", first + "---\n" + second))
    assert (result.code, result.err_lines) == (
        2,
        [
            "two.yaml:18:18: error: spec.nfs.y.queues[0]: queue 5 of eth0 is taken by "
            "x/0 of chain 'clash' and y/0 of chain 'clash2' (give y/0 another queue: "
            "each queue of an interface takes one AF_XDP socket)"
        ],
    )
    _untouched(home, before)
    assert home.call("history", chain="clash") == []


# --- delete, history, rollback, events ----------------------------------------------------------


def test_delete_clears_upstream_first_and_stops_the_nfs(home: AgentHome, agent: Agent) -> None:
    assert home.cli("apply", home.write("abc.yaml", ABC)).code == 0
    assert home.kernel() == {0: [1], 1: [2], 2: []}
    last = home.last_event_id()

    result = home.cli("delete", "abc")
    assert (result.code, result.err) == (0, "")
    assert result.out_lines == [
        "deleted abc (2 rules cleared)",
        "  [redirect-gap] flash-id 0: 1 -> -1  a/0: clear next (was [b/0 (id 1)]): removing",
        "  [redirect-gap] flash-id 1: 2 -> -1  b/0: clear next (was [c/0 (id 2)]): removing",
        "sim: stopped abc/a",
        "sim: stopped abc/b",
        "sim: stopped abc/c",
    ]
    # a (upstream) is cleared before b, so b never points at c while a still sends to b.
    writes = [(e["data"]["flashId"], e["data"]["new"]) for e in home.events("write", after=last)]
    assert writes == [(0, []), (1, [])]
    assert [e["message"] for e in home.events("delete")] == ["deleted abc (2 rules cleared)"]
    assert home.call("sim", action="list") == []
    assert home.kernel() == {}
    assert home.status()["chains"] == []
    assert home.history("abc") == [(2, "deleted"), (1, "superseded")]

    again = home.cli("delete", "abc")
    assert (again.code, again.err_lines) == (
        2,
        ["error: no chain named 'abc' is applied", "hint: applied chains: none"],
    )


def test_delete_by_file(home: AgentHome, agent: Agent) -> None:
    _apply_linear(home)
    result = home.cli("delete", "linear.yaml")
    assert result.code == 0
    assert result.out_lines[0] == "deleted linear (1 rules cleared)"
    assert home.status()["chains"] == []


def test_history_and_rollback(home: AgentHome, agent: Agent) -> None:
    for mapping in ("affine", "spread", "pinned-1"):
        assert home.cli("apply", home.write(f"{mapping}.yaml", fan(mapping))).code == 0
    assert home.history("fan") == [(3, "active"), (2, "superseded"), (1, "superseded")]

    back = home.cli("rollback", "fan")  # to the previous revision: 2 (spread)
    assert back.code == 0
    assert back.out_lines[0] == "chain fan rev 4: wrote 3 rules"
    assert home.kernel() == {**FAN_RULES["spread"], 3: [], 4: [], 5: []}

    to_first = home.cli("rollback", "fan", "--to", "1")
    assert (to_first.code, to_first.out_lines[0]) == (0, "chain fan rev 5: wrote 3 rules")
    assert home.kernel() == {**FAN_RULES["affine"], 3: [], 4: [], 5: []}
    assert home.wait_in_sync("fan")["revision"] == 5

    same = home.cli("rollback", "fan", "--to", "1")  # rev 1's spec is the running one
    assert (same.code, same.out_lines) == (3, ["chain fan: unchanged"])

    missing = home.cli("rollback", "fan", "--to", "9")
    assert (missing.code, missing.err_lines) == (
        2,
        ["error: fan has no applied revision 9", "hint: see `flashctl history fan`"],
    )
    result = home.cli("history", "fan", "-o", "json")
    assert result.code == 0
    items = json.loads(result.out)["items"]
    assert [(i["revision"], i["state"], i["message"], i["source"]) for i in items] == [
        (5, "active", "rollback to rev 1", "affine.yaml"),
        (4, "superseded", "rollback to rev 2", "spread.yaml"),
        (3, "superseded", None, "pinned-1.yaml"),
        (2, "superseded", None, "spread.yaml"),
        (1, "superseded", None, "affine.yaml"),
    ]
    assert items[0]["hash"] == items[4]["hash"]
    assert {i["who"] for i in items} == {WHO}

    nothing = home.cli("history", "nope")
    assert (nothing.code, nothing.err_lines) == (
        2,
        ["error: no revisions of chain 'nope'", "hint: see `flashctl status`"],
    )


def test_events_record_applies_writes_and_churn(home: AgentHome, agent: Agent) -> None:
    _apply_linear(home)
    wait_for(lambda: home.events("churn"), "the reconcile pass to note the new sockets")
    result = home.cli("events", "-o", "json")
    assert result.code == 0
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [(e["kind"], e["chain"], e["message"], e["data"]) for e in events] == [
        ("agent", None, f"agent {__version__} started (pid {agent.pid}, sim)", None),
        (
            "write",
            "linear",
            "1 -> flash-id 0: firewall/0: set next to [router/0 (id 1, zero-copy)]",
            {"flashId": 0, "old": [], "new": [1], "disruption": "hitless"},
        ),
        ("apply", "linear", "applied rev 1 of linear (1 writes)", {"rev": 1, "writes": 1}),
        (
            "churn",
            None,
            "sockets +0 (eth0 q0 pid 4000 'firewall'), +1 (eth0 q1 pid 4001 'router')",
            {"added": [0, 1], "removed": []},
        ),
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    only = home.cli("events", "--chain", "linear", "--limit", "1", "-o", "json")
    assert [json.loads(line)["kind"] for line in only.out.splitlines()] == ["apply"]


# --- the socket, the lock, other agents and clients ---------------------------------------------


def test_socket_and_directory_are_private(home: AgentHome) -> None:
    home.start_agent(umask=0)  # whatever the umask
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(home.home.socket.stat().st_mode)
    assert stat.S_IMODE(home.home.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.home.store.stat().st_mode) == 0o600


def test_a_second_agent_on_the_same_home_fails(home: AgentHome, agent: Agent) -> None:
    second = home.cli_process("agent", "run")
    assert (second.code, second.out, second.err_lines) == (
        1,
        "",
        [
            f"error: another agent (pid {agent.pid}) is already running for {home.root}",
            "hint: use it, or stop it with `flashctl agent stop`",
        ],
    )
    # The first one still serves, on the same socket.
    assert home.call("agent", action="status")["pid"] == agent.pid
    start = home.cli("agent", "start")
    assert (start.code, start.out) == (0, f"agent already running (pid {agent.pid}, {home.root})\n")


def test_cli_starts_an_agent_and_says_so(home: AgentHome) -> None:
    result = home.cli("status", "-o", "json")
    assert result.code == 0
    (line,) = result.err_lines
    pid = int(home.home.lock.read_text())
    assert line == f"started agent (pid {pid}, sim backend, {home.root})"
    assert json.loads(result.out)["chains"] == []
    assert home.cli("status", "-o", "json").err == ""  # the second command finds it running

    status = home.cli("agent", "status")
    assert status.code == 0
    assert status.out.startswith(f"agent pid {pid}, flashctl {__version__}, sim backend (")
    assert "FLASH monitor" not in status.out  # the simulator serves no monitor protocol
    stop = home.cli("agent", "stop")
    assert (stop.code, stop.out) == (0, f"stopped agent (pid {pid})\n")
    assert not home.home.socket.exists()
    stopped = home.cli("agent", "stop")
    assert (stopped.code, stopped.out) == (0, f"no agent is running for {home.root}\n")


def test_a_stale_socket_is_replaced_by_the_auto_started_agent(home: AgentHome) -> None:
    home.root.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(home.home.socket))  # bound, never listening: the file stays behind
    refused = home.cli("status", "-o", "json")
    assert refused.code == 0
    pid = int(home.home.lock.read_text())
    assert refused.err_lines == [
        f"started agent (pid {pid}, sim backend, {home.root}, replacing a stale socket)"
    ]
    assert home.call("agent", action="status")["pid"] == pid


def test_a_command_waits_for_an_agent_that_is_starting(home: AgentHome) -> None:
    """The lock is held but nothing listens yet (an agent another command just started):
    a command waits for it instead of failing, and goes on once the lock is free."""
    home.root.mkdir(mode=0o700)
    lock = AgentLock(home.home)
    lock.acquire()
    try:
        command = home.start_cli("status", "-o", "json")
        with pytest.raises(subprocess.TimeoutExpired):
            command.wait(1.0)  # still waiting, not failed
    finally:
        lock.release()  # the "starting agent" gave up: the command starts one itself
    out, err = command.communicate(timeout=30)
    assert (command.returncode, json.loads(out)["chains"]) == (0, [])
    pid = lock_holder(home.home)
    assert err.decode() == f"started agent (pid {pid}, sim backend, {home.root})\n"


def test_a_lock_held_without_a_socket_is_reported(home: AgentHome) -> None:
    home.root.mkdir(mode=0o700)
    lock = AgentLock(home.home)
    lock.acquire()  # an agent hung before it listens
    client = Client(home.home, say=lambda _text: None, start_timeout=0.2)
    try:
        with pytest.raises(AgentUnavailable) as raised:
            client.connect()
    finally:
        client.close()
        lock.release()
    assert (raised.value.message, raised.value.hint, raised.value.exit_code) == (
        f"the agent (pid {os.getpid()}) holds {home.home.lock} but does not answer on "
        f"{home.home.socket}",
        f"wait for it to start, or stop it: kill {os.getpid()}",
        1,
    )
    assert not home.home.socket.exists()  # and nothing was started behind its back


def test_a_client_of_another_protocol_version_is_refused(home: AgentHome, agent: Agent) -> None:
    with home.raw() as raw:
        assert raw.hello(protocol=2) == {
            "error": {
                "code": "version",
                "message": f"the agent speaks protocol 1 (flashctl {__version__}), "
                "the client protocol 2",
                "hint": "restart the agent with this flashctl: `flashctl agent stop`, then retry",
            }
        }
        assert raw.receive() == {}  # and hung up
    with home.raw() as raw:
        greeting = raw.hello()["hello"]
        assert (greeting["protocol"], greeting["role"], greeting["pid"]) == (1, "agent", agent.pid)


def test_the_client_refuses_an_agent_of_another_protocol_version(home: AgentHome) -> None:
    """A fake agent answering with protocol 99: the client says what to do."""
    home.root.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(home.home.socket))
    server.listen()

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1 << 16)
            connection.sendall(
                encode({"hello": {**hello("agent", "9.9")["hello"], "protocol": 99}})
            )
            connection.recv(1 << 16)

    thread = threading.Thread(target=serve)
    thread.start()
    client = Client(home.home, autostart=False)
    try:
        with pytest.raises(AgentUnavailable) as raised:
            client.connect()
    finally:
        client.close()
        thread.join(10)
        server.close()
    assert (raised.value.message, raised.value.hint) == (
        f"the agent at {home.home.socket} does not speak protocol 1",
        "restart it with this flashctl: `flashctl agent stop`, then retry",
    )


def _protocol_error(message: str, ident: int | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {} if ident is None else {"id": ident}
    return {**reply, "ok": False, "error": {"code": "protocol", "message": message, "hint": None}}


def test_garbage_from_a_client_gets_protocol_errors(home: AgentHome, agent: Agent) -> None:
    with home.raw() as raw:
        raw.send(b"garbage\n")
        assert raw.receive() == {
            "error": {"code": "protocol", "message": "expected a hello", "hint": None}
        }
        assert raw.receive() == {}
    with home.raw() as raw, home.raw() as other:
        raw.hello()
        other.hello()
        for line, message in [
            (b"garbage\n", "not JSON: Expecting value: line 1 column 1 (char 0)"),
            (b"[1, 2]\n", "a message must be a JSON object"),
            (b"[" * 100_000 + b"\n", "not JSON: nested too deeply"),
            (b'{"op": "reboot"}\n', "unknown op 'reboot'"),
            (b'{"op": "status", "args": [1]}\n', "unknown op 'status'"),
        ]:
            raw.send(line)
            assert raw.receive() == _protocol_error(message), line[:20]
        raw.send_json({"id": 7, "op": "history", "args": {}})
        assert raw.receive() == _protocol_error("bad arguments for history: 'chain'", 7)
        raw.send_json({"id": 8, "op": "apply", "args": {"sources": 5}})
        assert raw.receive() == _protocol_error(
            "bad arguments for apply: 'int' object is not iterable", 8
        )
        # The same connection, and any other, is still served.
        raw.send_json({"id": 9, "op": "agent", "args": {}})
        assert raw.receive()["result"]["pid"] == agent.pid
        other.send_json({"id": 1, "op": "status"})
        assert other.receive()["ok"] is True


def test_an_oversized_line_gets_a_protocol_error_and_the_agent_goes_on(
    home: AgentHome, agent: Agent
) -> None:
    with home.raw() as raw:
        raw.hello()

        def flood() -> None:
            with contextlib.suppress(OSError):  # the agent hangs up once the line is too long
                raw.send(b"x" * (17 << 20) + b"\n")

        sender = threading.Thread(target=flood)
        sender.start()
        reply = raw.receive()
        sender.join(30)
    assert reply == _protocol_error("message larger than 16 MiB")
    assert home.call("agent", action="status")["pid"] == agent.pid
    assert agent.process.poll() is None


# --- concurrency ----------------------------------------------------------------------------


def _check_serialised(home: AgentHome, reports: dict[str, dict[str, Any]]) -> None:
    """Every apply got its own revision, 1..n, each starting from the rules the one before
    left; the kernel holds the last one's rules."""
    order = sorted(reports, key=lambda m: reports[m]["chains"][0]["revision"])
    assert [reports[m]["chains"][0]["revision"] for m in order] == list(range(1, len(order) + 1))
    rules: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for mapping in order:
        for write in reports[mapping]["chains"][0]["writes"]:
            assert write["old"] == rules[write["flashId"]], (mapping, write)
            rules[write["flashId"]] = write["new"]
        assert rules == FAN_RULES[mapping]
    last = order[-1]
    assert home.kernel() == {**FAN_RULES[last], 3: [], 4: [], 5: []}
    history = home.call("history", chain="fan")
    assert [(r["revision"], r["state"], r["source"]) for r in history] == [
        (len(order) - i, "active" if i == 0 else "superseded", f"{m}.yaml")
        for i, m in enumerate(reversed(order))
    ]
    assert home.wait_in_sync("fan")["revision"] == len(order)


def test_concurrent_applies_from_threads_are_serialised(home: AgentHome, agent: Agent) -> None:
    mappings = list(FAN_RULES)
    sources = {m: [[f"{m}.yaml", fan(m)]] for m in mappings}
    barrier = threading.Barrier(len(mappings))
    reports: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def apply(mapping: str) -> None:
        try:
            with home.client() as client:
                barrier.wait(10)
                reports[mapping] = client.call("apply", sources=sources[mapping])
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=apply, args=(m,)) for m in mappings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert all(r["changed"] for r in reports.values())
    _check_serialised(home, reports)


def test_concurrent_applies_from_processes_are_serialised(home: AgentHome, agent: Agent) -> None:
    mappings = ["affine", "spread", "pinned-0", "pinned-2"]
    processes = {
        m: home.start_cli("apply", "-o", "json", home.write(f"{m}.yaml", fan(m))) for m in mappings
    }
    reports = {}
    for mapping, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert (process.returncode, err) == (0, b""), mapping
        reports[mapping] = json.loads(out)
    _check_serialised(home, reports)


def test_concurrent_first_commands_share_one_auto_started_agent(home: AgentHome) -> None:
    """Several commands find no agent at the same moment: each starts one, one wins the lock,
    and every command is served by the winner."""
    processes = [home.start_cli("status", "-o", "json") for _ in range(4)]
    results = [(p.communicate(timeout=60), p.returncode) for p in processes]
    pid = int(home.home.lock.read_text())
    for (out, err), code in results:
        assert code == 0, err
        assert json.loads(out)["chains"] == []
        note = err.decode()
        assert note in ("", f"started agent (pid {pid}, sim backend, {home.root})\n"), note
    assert home.call("agent", action="status")["pid"] == pid


def test_agent_start_passes_the_sysfs_root_on(home: AgentHome) -> None:
    """`agent start --backend native --sysfs-root PATH`: the detached agent drives PATH (no
    FLASH kernel there: standalone, and the status names the path)."""
    root = home.base / "kernel" / "flash"
    start = home.cli("agent", "start", "--backend", "native", "--sysfs-root", str(root))
    assert start.code == 0, start.err
    backend = home.status()["backend"]
    assert (backend["name"], backend["chaining"]) == ("native", False)
    assert backend["detail"] == f"{root} does not exist: AF_XDP works, chaining needs FLASH"
    # The sim backend: refused, before anything else.
    refused = home.cli("agent", "start", "--sysfs-root", str(root))
    assert (refused.code, refused.err_lines) == (
        2,
        [
            "error: --sysfs-root applies to the native backend only",
            "hint: add --backend native",
        ],
    )


def test_monitor_options_need_the_native_backend(home: AgentHome) -> None:
    refused = home.cli("agent", "start", "--monitor-socket", str(home.base / "m.sock"))
    assert (refused.code, refused.err_lines) == (
        2,
        [
            "error: --monitor-socket and --monitor-group apply to the native backend's monitor",
            "hint: add --backend native (and drop --no-monitor)",
        ],
    )
    long = "/tmp/" + "x" * 120
    refused = home.cli("agent", "run", "--backend", "native", "--monitor-socket", long)
    assert refused.code == 2
    assert refused.err_lines[0] == (
        f"error: the monitor socket path {long} is longer than the 107 bytes Unix sockets allow"
    )
