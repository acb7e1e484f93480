"""The simulated host beyond the backend contract: processes, persistence, NFs of a chain, and
the simulator controls behind `flashctl sim ...`.

The contract (tests/backends/test_sim_contract.py) covers what the agent sees through the
Backend protocol; this module covers how sockets come and go on a simulated host.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.backends.base import BackendError
from flashctl.backends.flashsys import Variant
from flashctl.backends.sim import FIRST_PID, SimBackend, SimHost
from flashctl.chains.planner import LiveSocket
from flashctl.chains.spec import Chain
from flashctl.engine import Engine
from flashctl.errors import InputError
from flashctl.simcontrol import control
from flashctl.store import Store
from tests.backends.contract import OtherWriter, table

BIND_HINT = "free the queue or an id (stop another simulated process)"
STATE_HINT = "move the file aside to start from an empty simulated host"


def document(spec: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    return {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}, "spec": spec}


def chain(spec: dict[str, Any], name: str = "demo") -> Chain:
    return Chain.model_validate(document(spec, name))


def two_nfs(fw: dict[str, Any], rt: dict[str, Any], interface: str = "eth0") -> dict[str, Any]:
    """nic -> fw -> rt -> nic."""
    return {
        "interface": interface,
        "nfs": {"fw": fw, "rt": rt},
        "links": [
            {"from": "nic", "to": "fw"},
            {"from": "fw", "to": "rt"},
            {"from": "rt", "to": "nic"},
        ],
    }


DEMO = two_nfs({"queues": [0, 1]}, {"queues": [2]})


def sockets(host: SimHost) -> list[tuple[int, int, str, str, int]]:
    """(flash-id, pid, procname, interface, qid) of every live socket."""
    return [
        (s.flash_id, s.pid, s.procname, s.interface, s.qid)
        for s in SimBackend(host).inventory().sockets
    ]


def bind_error(call: Any, *args: Any) -> BackendError:
    with pytest.raises(BackendError) as caught:
        call(*args)
    return caught.value


# --- processes and their sockets ---------------------------------------------------------


def test_a_process_binds_one_socket_per_thread_in_thread_order() -> None:
    host = SimHost()
    process = host.spawn("l2fwd", [("eth0", 3), ("eth0", 1), ("eth1", 0)])
    assert process.pid == FIRST_PID == 4000
    assert process.sockets == [0, 1, 2]
    assert process.running is True
    assert process.restarts == 0
    assert SimBackend(host).inventory().sockets == (
        LiveSocket(0, 4000, "l2fwd", "eth0", 2, 3),
        LiveSocket(1, 4000, "l2fwd", "eth0", 2, 1),
        LiveSocket(2, 4000, "l2fwd", "eth1", 3, 0),
    )
    assert host.interfaces == {"eth0": 2, "eth1": 3}
    assert host.next_pid == 4001


def test_names_pids_and_interfaces() -> None:
    host = SimHost()
    long = host.spawn("a-very-long-process-name", [("eth0", 0)])
    nf = host.spawn("fw", [("eth0", 1)], chain="demo", nf="fw")
    assert (long.pid, nf.pid) == (4000, 4001)
    assert long.procname == "a-very-long-pro"
    assert (long.label(), nf.label()) == ("a-very-long-pro", "demo/fw")
    assert host.ifindex("eth0") == 2
    assert host.ifindex("ens1f0") == 3  # created on first use
    assert host.interface_name(3) == "ens1f0"
    assert host.interface_name(99) == "if99"
    assert host.find("demo", "fw") is nf
    assert host.find("demo", "rt") is None
    error = bind_error(host.process, 4999)
    assert error.message == "no simulated process with pid 4999"


def test_stop_start_restart_change_ids() -> None:
    host = SimHost()
    a = host.spawn("a", [("eth0", 0), ("eth0", 1)])
    b = host.spawn("b", [("eth0", 2)])
    assert (a.sockets, b.sockets) == ([0, 1], [2])
    host.stop(a.pid)
    assert (a.sockets, a.running) == ([], False)
    assert host.sysfs.ids() == [2]
    c = host.spawn("c", [("eth1", 0)])
    assert c.sockets == [0]  # a's old id, taken by the next bind anywhere
    host.start(a.pid)
    assert (a.sockets, a.running, a.restarts) == ([1, 3], True, 1)
    host.start(a.pid)  # already running: nothing happens
    assert (a.sockets, a.restarts) == ([1, 3], 1)
    host.stop(c.pid)
    host.restart(b.pid)  # b's id 2 is freed, then b takes the lowest free id: 0
    assert (b.sockets, b.restarts) == ([0], 1)
    assert sockets(host) == [
        (0, 4001, "b", "eth0", 2),
        (1, 4000, "a", "eth0", 0),
        (3, 4000, "a", "eth0", 1),
    ]
    host.remove(c.pid)
    host.remove(a.pid)  # a running process is stopped first
    assert sorted(host.processes) == [4001]
    assert host.sysfs.ids() == [0]
    assert bind_error(host.stop, a.pid).message == "no simulated process with pid 4000"


def test_listeners_hear_of_every_change_of_sockets() -> None:
    host = SimHost()
    calls: list[list[int]] = []
    host.listeners.append(lambda: calls.append(host.sysfs.ids()))
    a = host.spawn("a", [("eth0", 0)])
    b = host.spawn("b", [("eth0", 1)])
    host.stop(a.pid)
    host.start(a.pid)
    host.restart(b.pid)
    assert calls == [[0], [0, 1], [1], [0, 1], [0], [0, 1]]
    SimBackend(host).write_rule_text(0, "1\n")  # rules are not churn
    host.stop(b.pid)
    host.remove(b.pid)  # already stopped: no socket goes
    assert calls[6:] == [[0]]


def test_a_second_socket_on_a_busy_queue_is_ebusy_and_nothing_stays_bound(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sim-kernel.json"
    host = SimHost(path=path)
    host.spawn("a", [("eth0", 0)])
    saved = path.read_bytes()
    error = bind_error(host.spawn, "b", [("eth0", 1), ("eth0", 0)])
    assert error.errno == errno.EBUSY
    assert error.message == (
        "b cannot bind a socket on eth0 queue 0 (EBUSY): "
        "the queue is held by flash-id 0 (pid 4000 'a')"
    )
    assert error.hint == BIND_HINT
    assert sockets(host) == [(0, 4000, "a", "eth0", 0)]  # b's socket on queue 1 is gone
    assert sorted(host.processes) == [4000]
    assert host.next_pid == 4001  # no pid used up
    assert path.read_bytes() == saved  # nothing to save
    assert host.spawn("c", [("eth0", 1)]).sockets == [1]


def test_starting_onto_a_busy_queue_leaves_the_process_stopped() -> None:
    host = SimHost()
    fw = host.spawn("fw", [("eth0", 0), ("eth0", 1)], chain="demo", nf="fw")
    host.stop(fw.pid)
    host.spawn("xdpsock", [("eth0", 1)])
    error = bind_error(host.start, fw.pid)
    assert error.errno == errno.EBUSY
    assert error.message == (
        "demo/fw cannot bind a socket on eth0 queue 1 (EBUSY): "
        "the queue is held by flash-id 0 (pid 4001 'xdpsock')"
    )
    assert (fw.sockets, fw.running, fw.restarts) == ([], False, 0)
    assert host.sysfs.ids() == [0]


def test_a_full_id_table_is_einval_and_releases_the_threads_bound_so_far() -> None:
    host = SimHost(Variant(max_sockets=2))
    host.spawn("a", [("eth0", 0)])
    error = bind_error(host.spawn, "b", [("eth0", 1), ("eth0", 2)])
    assert error.errno == errno.EINVAL
    assert (
        error.message
        == "b cannot bind a socket on eth0 queue 2 (EINVAL): all 2 flash-ids are taken"
    )
    assert error.hint == BIND_HINT
    assert host.sysfs.ids() == [0]
    assert sorted(host.processes) == [4000]


# --- persistence -------------------------------------------------------------------------


def populated(path: Path) -> tuple[SimHost, SimBackend]:
    """fw (2 threads) -> rt, a stopped foreign socket, rules on fw's sockets."""
    host = SimHost.load(path)
    host.spawn("fw", [("eth0", 0), ("eth0", 1)], chain="demo", nf="fw")
    host.spawn("rt", [("eth1", 0)], chain="demo", nf="rt")
    foreign = host.spawn("xdpsock", [("eth0", 5)])
    backend = SimBackend(host)
    backend.write_rule_text(0, "2\n")
    backend.write_rule_text(1, "2 2\n")
    host.stop(foreign.pid)
    return host, backend


def test_state_survives_an_agent_restart(tmp_path: Path) -> None:
    path = tmp_path / "sim-kernel.json"
    host = SimHost.load(path)
    assert not path.exists()  # nothing saved until something changes
    host, backend = populated(path)
    restarted = SimHost.load(path)
    assert restarted.sysfs == host.sysfs
    assert restarted.interfaces == {"eth0": 2, "eth1": 3}
    assert restarted.processes == host.processes
    assert restarted.processes[4000].binds == [("eth0", 0), ("eth0", 1)]
    assert restarted.next_pid == 4003
    assert restarted.listeners == []
    again = SimBackend(restarted)
    assert again.inventory() == backend.inventory()
    assert again.read_rule_text(0) == table(2)
    assert again.read_rule_text(1) == table(2, 2)
    assert again.read_rule_text(2) == table()
    # It carries on where it stopped: next pid, lowest free id, stopped processes restart.
    late = restarted.spawn("late", [("eth0", 7)])
    assert (late.pid, late.sockets) == (4003, [3])
    restarted.start(4002)
    assert restarted.processes[4002].sockets == [4]
    assert SimHost.load(path).processes == restarted.processes


def test_a_torn_rewrite_is_saved_too(tmp_path: Path) -> None:
    """EBUSY after the old outflows were torn down: the kernel state persists as it is."""
    path = tmp_path / "sim-kernel.json"
    host, backend = populated(path)
    host.sysfs.set_ready(2, False)
    assert bind_error(backend.write_rule_text, 0, "2 1\n").errno == errno.EBUSY
    entry = SimHost.load(path).sysfs.entry(0)
    assert (entry.next, entry.outflows, entry.chained) == ((2,), (), True)


def test_save_replaces_the_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sim-kernel.json"
    host, _backend = populated(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim-kernel.json"]
    before = SimHost.load(path)

    def crash(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)  # what SimHost.save renames with
    with pytest.raises(BackendError) as caught:
        host.spawn("late", [("eth0", 7)])
    assert caught.value.message == (
        f"cannot save the simulated kernel to {path}: simulated crash before the rename"
    )
    # The old state is whole; the new one only ever existed in the temporary file.
    after = SimHost.load(path)
    assert after.sysfs == before.sysfs
    assert after.processes == before.processes
    assert after.next_pid == 4003
    temporary = tmp_path / f".sim-kernel.json.{os.getpid()}.tmp"
    assert json.loads(temporary.read_text())["next_pid"] == 4004


def valid_state(tmp_path: Path) -> dict[str, Any]:
    populated(tmp_path / "valid.json")
    data: dict[str, Any] = json.loads((tmp_path / "valid.json").read_text())
    return data


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"not json", "unreadable (Expecting value: line 1 column 1 (char 0))"),
        (b"", "unreadable (Expecting value: line 1 column 1 (char 0))"),
        (
            b"\xff\xfe",
            "unreadable ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)",
        ),
        (b"{}", "not in the expected format ('sysfs')"),
        (b'{"name": "some other program"}', "not in the expected format ('sysfs')"),
        (b"[]", "not in the expected format (list indices must be integers or slices, not str)"),
        (b"7", "not in the expected format ('int' object is not subscriptable)"),
        (
            b'{"sysfs": [], "interfaces": {}, "next_pid": 4000, "processes": []}',
            "not in the expected format ('list' object has no attribute 'get')",
        ),
    ],
)
def test_a_corrupt_or_foreign_state_file_is_refused(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "sim-kernel.json"
    path.write_bytes(content)
    error = bind_error(SimHost.load, path)
    assert error.message == f"{path}: the simulated kernel's state is {problem}"
    assert error.hint == STATE_HINT
    assert error.errno is None
    assert path.read_bytes() == content  # left alone for the user to look at


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["sysfs"].update(format=2), "unknown snapshot format 2"),
        (lambda d: d.update(interfaces=[]), "'list' object has no attribute 'items'"),
        (lambda d: d.pop("next_pid"), "'next_pid'"),
        (
            lambda d: d["processes"][0].update(color="red"),
            "SimProcess.__init__() got an unexpected keyword argument 'color'",
        ),
        (
            lambda d: d["processes"][0].update(sockets=[0, 9]),
            "pid 4000 holds flash-id 9, a socket the kernel does not list for it",
        ),
        (
            lambda d: d["processes"][1].update(sockets=[0]),
            "pid 4001 holds flash-id 0, a socket the kernel does not list for it",
        ),
    ],
)
def test_a_state_file_that_does_not_fit_together_is_refused(
    tmp_path: Path, change: Any, problem: str
) -> None:
    data = valid_state(tmp_path)
    change(data)
    path = tmp_path / "sim-kernel.json"
    path.write_text(json.dumps(data))
    error = bind_error(SimHost.load, path)
    assert error.message == (
        f"{path}: the simulated kernel's state is not in the expected format ({problem})"
    )
    assert error.hint == STATE_HINT


def test_a_directory_in_place_of_the_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim-kernel.json"
    path.mkdir()
    error = bind_error(SimHost.load, path)
    assert error.message == (
        f"{path}: the simulated kernel's state is unreadable ([Errno 21] Is a directory: '{path}')"
    )


@st.composite
def host_steps(draw: st.DrawFn) -> list[tuple[str, int]]:
    names = ["spawn", "stop", "start", "restart", "remove", "write"]
    return draw(
        st.lists(st.tuples(st.sampled_from(names), st.integers(0, 7)), min_size=1, max_size=20)
    )


@settings(max_examples=60, deadline=None)
@given(steps=host_steps())
def test_any_history_is_consistent_and_survives_a_restart(steps: list[tuple[str, int]]) -> None:
    """After each step: running processes hold exactly the live sockets, on their queues in
    thread order, new binds take the lowest free ids, and a reload gives the same host."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sim-kernel.json"
        host = SimHost.load(path)
        backend = SimBackend(host)
        for action, arg in steps:
            pids = sorted(host.processes)
            pid = pids[arg % len(pids)] if pids else None
            free_before = [i for i in range(64) if i not in host.sysfs.ids()]
            if action == "spawn":
                taken = {host.sysfs.entry(i).qid for i in host.sysfs.ids()}
                queues = [q for q in range(100) if q not in taken][: arg % 3 + 1]
                process = host.spawn(f"p{arg}", [("eth0", q) for q in queues])
                assert process.sockets == free_before[: len(queues)]
            elif pid is None:
                continue
            elif action == "stop":
                host.stop(pid)
            elif action in ("start", "restart"):
                process = host.processes[pid]
                was_running = process.running
                if action == "restart":
                    free_before = sorted(free_before + process.sockets)
                try:
                    getattr(host, action)(pid)
                except BackendError as exc:
                    assert exc.errno == errno.EBUSY  # another process took a queue meanwhile
                    assert (process.running, process.sockets) == (False, [])
                else:
                    if action == "restart" or not was_running:
                        assert process.sockets == free_before[: len(process.binds)]
            elif action == "remove":
                host.remove(pid)
            elif action == "write" and host.sysfs.ids():
                ids = host.sysfs.ids()
                backend.write_rule_text(ids[arg % len(ids)], f"{ids[-1]}\n")
            held = [i for p in host.processes.values() for i in p.sockets]
            assert sorted(held) == host.sysfs.ids()
            for process in host.processes.values():
                assert process.running == bool(process.sockets)
                where = [
                    (host.interface_name(host.sysfs.entry(i).ifindex), host.sysfs.entry(i).qid)
                    for i in process.sockets
                ]
                assert where == (process.binds if process.running else [])
                assert {host.sysfs.entry(i).pid for i in process.sockets} <= {process.pid}
            restarted = SimHost.load(path)
            if path.exists():
                assert restarted.sysfs == host.sysfs
                assert restarted.processes == host.processes
                assert restarted.next_pid == host.next_pid


# --- ensure_nfs: the NFs of a chain ------------------------------------------------------


def test_ensure_nfs_starts_a_chains_nfs_on_their_queues() -> None:
    backend = SimBackend(SimHost())
    assert backend.ensure_nfs(chain(DEMO)) == [
        "started demo/fw (pid 4000)",
        "started demo/rt (pid 4001)",
    ]
    assert sockets(backend.host) == [
        (0, 4000, "fw", "eth0", 0),
        (1, 4000, "fw", "eth0", 1),
        (2, 4001, "rt", "eth0", 2),
    ]
    fw = backend.host.find("demo", "fw")
    assert fw is not None
    assert (fw.chain, fw.nf, fw.binds) == ("demo", "fw", [("eth0", 0), ("eth0", 1)])


def test_ensure_nfs_is_idempotent() -> None:
    backend = SimBackend(SimHost())
    backend.ensure_nfs(chain(DEMO))
    before = sockets(backend.host)
    assert backend.ensure_nfs(chain(DEMO)) == []
    assert sockets(backend.host) == before
    assert [p.restarts for p in backend.host.processes.values()] == [0, 0]


def test_ensure_nfs_starts_a_stopped_nf_again() -> None:
    backend = SimBackend(SimHost())
    backend.ensure_nfs(chain(DEMO))
    backend.host.stop(4000)
    assert backend.ensure_nfs(chain(DEMO)) == ["started demo/fw (pid 4000)"]
    assert sockets(backend.host) == [
        (0, 4000, "fw", "eth0", 0),
        (1, 4000, "fw", "eth0", 1),
        (2, 4001, "rt", "eth0", 2),
    ]


def test_ensure_nfs_rebinds_an_nf_whose_queues_changed() -> None:
    backend = SimBackend(SimHost())
    backend.ensure_nfs(chain(DEMO))
    moved = chain(two_nfs({"queues": [4, 5, 6]}, {"queues": [2]}))
    assert backend.ensure_nfs(moved) == ["restarted demo/fw on new queues (pid 4000)"]
    fw = backend.host.processes[4000]
    assert (fw.binds, fw.sockets, fw.restarts) == (
        [("eth0", 4), ("eth0", 5), ("eth0", 6)],
        [0, 1, 3],
        1,
    )
    assert backend.ensure_nfs(moved) == []


def test_ensure_nfs_swaps_queues_between_nfs() -> None:
    backend = SimBackend(SimHost())
    backend.ensure_nfs(chain(two_nfs({"queues": [0]}, {"queues": [1]})))
    swapped = chain(two_nfs({"queues": [1]}, {"queues": [0]}))
    assert backend.ensure_nfs(swapped) == [
        "restarted demo/fw on new queues (pid 4000)",
        "restarted demo/rt on new queues (pid 4001)",
    ]
    assert sockets(backend.host) == [(0, 4000, "fw", "eth0", 1), (1, 4001, "rt", "eth0", 0)]


def test_ensure_nfs_gives_match_only_nfs_the_lowest_queues_no_nf_lists() -> None:
    spec = {
        "interface": "eth0",
        "nfs": {
            "mon": {"match": {"procname": "l2fwd"}, "threads": 2},
            "fw": {"queues": [0, 2]},
            "probe": {"match": {"pid": 4242}},
        },
        "links": [
            {"from": "nic", "to": "mon"},
            {"from": "mon", "to": "fw"},
            {"from": "fw", "to": "probe"},
            {"from": "probe", "to": "nic"},
        ],
    }
    backend = SimBackend(SimHost())
    assert backend.ensure_nfs(chain(spec)) == [
        "started demo/mon (pid 4000)",
        "started demo/fw (pid 4001)",
        "started demo/probe (pid 4002)",
    ]
    assert sockets(backend.host) == [
        (0, 4000, "l2fwd", "eth0", 1),  # procname from match
        (1, 4000, "l2fwd", "eth0", 3),
        (2, 4001, "fw", "eth0", 0),
        (3, 4001, "fw", "eth0", 2),
        (4, 4002, "probe", "eth0", 4),  # a pid-only match runs under the NF's name
    ]
    assert backend.ensure_nfs(chain(spec)) == []  # keeps the queues it was given


def test_ensure_nfs_match_only_nfs_avoid_queues_in_use() -> None:
    backend = SimBackend(SimHost())
    backend.host.spawn("xdpsock", [("eth1", 0)])
    spec = two_nfs({"match": {"procname": "fw"}, "threads": 2}, {"queues": [1]}, "eth1")
    backend.ensure_nfs(chain(spec))
    assert sockets(backend.host) == [
        (0, 4000, "xdpsock", "eth1", 0),
        (1, 4001, "fw", "eth1", 2),
        (2, 4001, "fw", "eth1", 3),
        (3, 4002, "rt", "eth1", 1),
    ]


def test_ensure_nfs_defaults_to_eth0_and_keeps_chains_apart() -> None:
    backend = SimBackend(SimHost())
    no_interface = {
        "nfs": {"fw": {"queues": [0]}},
        "links": [{"from": "nic", "to": "fw"}, {"from": "fw", "to": "nic"}],
    }
    other = {**no_interface, "nfs": {"fw": {"queues": [1]}}}
    backend.ensure_nfs(chain(no_interface, "one"))
    assert backend.ensure_nfs(chain(other, "two")) == ["started two/fw (pid 4001)"]
    assert sockets(backend.host) == [(0, 4000, "fw", "eth0", 0), (1, 4001, "fw", "eth0", 1)]


def test_ensure_nfs_reports_a_busy_queue() -> None:
    backend = SimBackend(SimHost())
    backend.host.spawn("xdpsock", [("eth0", 2)])
    error = bind_error(backend.ensure_nfs, chain(DEMO))
    assert error.message == (
        "demo/rt cannot bind a socket on eth0 queue 2 (EBUSY): "
        "the queue is held by flash-id 0 (pid 4000 'xdpsock')"
    )


# --- simcontrol: `flashctl sim ...` ------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """An engine over a simulated host with the DEMO chain applied: fw (0, 1) -> rt (2)."""
    backend = SimBackend(SimHost.load(tmp_path / "sim-kernel.json"))
    engine = Engine(backend, Store.open(tmp_path / "s.db"), prepare=backend.ensure_nfs)
    engine.apply([("demo.json", json.dumps(document(DEMO)))], who="test")
    return engine


def rules(engine: Engine) -> dict[int, str]:
    return {i: engine.backend.read_rule_text(i) for i in sorted(engine.backend.inventory().ids())}


def process_data(
    pid: int, procname: str, nf: str | None, sockets: list[int], binds: list[list[Any]], **kw: Any
) -> dict[str, Any]:
    data = {
        "pid": pid,
        "procname": procname,
        "chain": "demo" if nf else None,
        "nf": nf,
        "running": bool(sockets),
        "sockets": sockets,
        "binds": binds,
        "restarts": 0,
    }
    return {**data, **kw}


def test_control_lists_processes_by_pid(engine: Engine) -> None:
    assert rules(engine) == {0: table(2), 1: table(2), 2: table()}
    assert control(engine, "list", {}) == [
        process_data(4000, "fw", "fw", [0, 1], [["eth0", 0], ["eth0", 1]]),
        process_data(4001, "rt", "rt", [2], [["eth0", 2]]),
    ]


def test_control_add_socket_binds_a_foreign_user(engine: Engine) -> None:
    added = control(engine, "add-socket", {"interface": "eth1", "queue": 3})
    assert added == process_data(4002, "xdpsock", None, [3], [["eth1", 3]])
    named = control(engine, "add-socket", {"interface": "eth1", "queue": 4, "procname": "pktgen"})
    assert (named["pid"], named["procname"], named["sockets"]) == (4003, "pktgen", [4])
    with pytest.raises(InputError) as caught:
        control(engine, "add-socket", {"interface": "eth0", "queue": 0})
    assert caught.value.message == (
        "xdpsock cannot bind a socket on eth0 queue 0 (EBUSY): "
        "the queue is held by flash-id 0 (pid 4000 'fw')"
    )


def test_control_stop_clears_upstream_rules_first(engine: Engine) -> None:
    stopped = control(engine, "stop", {"nf": "rt"})
    assert stopped == process_data(4001, "rt", "rt", [], [["eth0", 2]])
    # fw no longer names id 2, so the next socket to take it receives nothing.
    assert rules(engine) == {0: table(), 1: table()}
    assert control(engine, "add-socket", {"interface": "eth1", "queue": 0})["sockets"] == [2]
    assert rules(engine)[0] == table()
    started = control(engine, "start", {"nf": "rt", "chain": "demo"})
    assert (started["sockets"], started["restarts"]) == ([3], 1)
    engine.reconcile()
    assert rules(engine) == {0: table(3), 1: table(3), 2: table(), 3: table()}


def test_control_kill_leaves_stale_rules(engine: Engine) -> None:
    killed = control(engine, "kill", {"pid": 4001})
    assert killed["running"] is False
    assert rules(engine) == {0: table(2), 1: table(2)}  # the crash case: rules name a dead id
    control(engine, "add-socket", {"interface": "eth1", "queue": 0})
    assert engine.backend.inventory().by_id()[2].procname == "xdpsock"  # ... now a stranger


def test_control_restart_gives_new_ids_and_reconcile_follows(engine: Engine) -> None:
    control(engine, "add-socket", {"interface": "eth1", "queue": 0})  # takes id 3
    control(engine, "stop", {"nf": "fw"})  # frees 0 and 1
    restarted = control(engine, "restart", {"nf": "rt"})  # rt: id 2 -> 0
    assert (restarted["sockets"], restarted["restarts"]) == ([0], 1)
    control(engine, "start", {"nf": "fw"})
    engine.reconcile()
    assert rules(engine) == {0: table(), 1: table(0), 2: table(0), 3: table()}


def test_control_remove_of_a_running_nf_clears_upstream_rules(engine: Engine) -> None:
    control(engine, "remove", {"nf": "rt"})
    assert rules(engine) == {0: table(), 1: table()}


def test_control_remove_forgets_the_process(engine: Engine) -> None:
    removed = control(engine, "remove", {"nf": "rt"})
    assert removed["pid"] == 4001
    assert [p["pid"] for p in control(engine, "list", {})] == [4000]


def test_control_start_onto_a_busy_queue_is_an_input_error(engine: Engine) -> None:
    control(engine, "stop", {"nf": "rt"})
    control(engine, "add-socket", {"interface": "eth0", "queue": 2})
    with pytest.raises(InputError) as caught:
        control(engine, "start", {"nf": "rt"})
    assert caught.value.message == (
        "demo/rt cannot bind a socket on eth0 queue 2 (EBUSY): "
        "the queue is held by flash-id 2 (pid 4002 'xdpsock')"
    )
    assert caught.value.hint == BIND_HINT


def test_control_unknown_nf(engine: Engine) -> None:
    with pytest.raises(InputError) as caught:
        control(engine, "stop", {"nf": "lb"})
    assert caught.value.message == "no simulated NF 'lb'"
    assert caught.value.hint == "simulated NFs: demo/fw, demo/rt"
    with pytest.raises(InputError) as caught:
        control(engine, "stop", {"nf": "fw", "chain": "other"})
    assert caught.value.message == "no simulated NF 'fw' in chain 'other'"
    assert caught.value.hint == "simulated NFs: demo/fw, demo/rt"


def test_control_unknown_nf_on_an_empty_host(tmp_path: Path) -> None:
    backend = SimBackend(SimHost())
    engine = Engine(backend, Store.open(tmp_path / "s.db"))
    control(engine, "add-socket", {"interface": "eth0", "queue": 0})  # not an NF
    with pytest.raises(InputError) as caught:
        control(engine, "restart", {"nf": "fw"})
    assert caught.value.message == "no simulated NF 'fw'"
    assert caught.value.hint == "simulated NFs: none (apply a chain first)"


def test_control_ambiguous_nf(engine: Engine) -> None:
    backend = engine.backend
    assert isinstance(backend, SimBackend)
    other = two_nfs({"queues": [4]}, {"queues": [5]})
    backend.ensure_nfs(chain(other, "other"))
    with pytest.raises(InputError) as caught:
        control(engine, "stop", {"nf": "fw"})
    assert caught.value.message == "NF 'fw' runs in several chains (demo, other)"
    assert caught.value.hint == "pick one with --chain"
    stopped = control(engine, "stop", {"nf": "fw", "chain": "other"})
    assert (stopped["chain"], stopped["running"]) == ("other", False)


def test_control_unknown_pid_and_action(engine: Engine) -> None:
    with pytest.raises(InputError) as caught:
        control(engine, "stop", {"pid": 9999})
    assert caught.value.message == "no simulated process with pid 9999"
    with pytest.raises(InputError) as caught:
        control(engine, "explode", {})
    assert caught.value.message == "unknown simulator action 'explode'"
    assert caught.value.hint == "one of: list, add-socket, start, stop, restart, kill, remove"
    assert rules(engine)[0] == table(2)  # nothing was done


def test_control_needs_the_simulated_backend(tmp_path: Path) -> None:
    backend = SimBackend(SimHost())
    engine = Engine(OtherWriter(backend, "-1\n"), Store.open(tmp_path / "s.db"))
    with pytest.raises(InputError) as caught:
        control(engine, "list", {})
    assert caught.value.message == "simulator controls need the simulated backend"
    assert caught.value.hint == "start the agent with `--backend sim`"
