"""The agent as FLASH monitor, end to end on a real kernel.

A network namespace holds a veth pair; the agent runs inside it (`ip netns exec`) with the
native backend in standalone mode (no FLASH kernel here: a sysfs root that does not exist)
and serves the monitor protocol on a unique socket. The test NF (tests/linux/flashnf.py)
attaches the way FLASH's C NFs do, receives frames injected at the veth peer on its RX ring
and forwards them on TX (MACs swapped). What flashctl reports is compared with the NF's own
ground truth (its stats file), and everything is gone afterwards.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flashctl.backends.afxdp import RingSizes, Umem, XskSocket, map_rings
from flashctl.backends.flashsys import FLASH_TABLE
from tests.linux.flashfs import fuse_missing, mounted
from tests.linux.flashnf import Attachment, MonitorClient, Refused, attach_answers, handshake
from tests.linux.netns import ETH_TYPE, Link, frame, inside, veth_pair, wait_for

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


@dataclass
class Agent:
    link: Link
    home: Path
    monitor: Path
    process: subprocess.Popen[bytes]

    def flashctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, FLASHCTL_HOME=str(self.home))
        done = subprocess.run(
            [PY, "-m", "flashctl", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.flashctl("status", "-o", "json").stdout)
        return data

    def own_xsks(self) -> list[dict[str, Any]]:
        return [x for x in self.status()["xsks"] if x["owner"] == "flashctl"]


@contextmanager
def running_agent(
    link: Link,
    sysfs_root: Path | None = None,
    scratch: Path | None = None,
    extra: tuple[str, ...] = (),
) -> Iterator[Agent]:
    """The agent in the link's namespace (native backend, a unique monitor socket); without
    `sysfs_root` on a root that does not exist: standalone, as on a stock kernel. Given a
    `scratch` directory it reuses that home (a restarted agent) and leaves it in place."""
    keep = scratch is not None
    scratch = scratch or Path(tempfile.mkdtemp(prefix="fcm", dir="/tmp"))
    home, monitor = scratch / "h", scratch / "m.sock"
    root = sysfs_root or scratch / "no-flash"
    env = dict(os.environ, FLASHCTL_HOME=str(home))
    process = subprocess.Popen(
        [
            *("ip", "netns", "exec", link.netns, PY, "-m", "flashctl", "agent", "run"),
            *("--backend", "native", "--sysfs-root", str(root)),
            *("--monitor-socket", str(monitor)),
            *extra,
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(scratch / "agent.err", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        assert wait_for(lambda: (home / "agent.sock").exists() and monitor.exists(), 20), (
            scratch / "agent.err"
        ).read_text()
        yield Agent(link, home, monitor, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # our agent, by its pid
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not keep:
            subprocess.run(["rm", "-rf", str(scratch)], check=False)


@pytest.fixture
def agent(link: Link) -> Iterator[Agent]:
    with running_agent(link) as made:
        yield made


def chain_yaml(agent: Agent, stats: Path, *, run: bool = True, threads: int = 1) -> str:
    queues = list(range(threads))
    run_block = ""
    if run:
        command = [PY, "-m", "tests.linux.flashnf", "--socket", "{socket}"]
        command += ["--umem-id", "{umem_id}", "--nf-id", "{nf_id}", "--stats", str(stats)]
        run_block = (
            f"      run:\n        command: {json.dumps(command)}\n"
            f"        env: {{PYTHONPATH: {REPO}}}\n"
        )
    return (
        "apiVersion: flashctl/v1\nkind: Chain\nmetadata: {name: edge}\nspec:\n"
        f"  interface: {agent.link.xdp}\n"
        "  umems: [{name: pool, nfs: [fw], bind: auto}]\n"
        f"  nfs:\n    fw:\n      queues: {queues}\n      address: 10.1.0.1\n{run_block}"
        "  links:\n    - {from: nic, to: fw}\n    - {from: fw, to: nic}\n"
    )


def apply(agent: Agent, text: str) -> None:
    path = agent.home.parent / "chain.yaml"
    path.write_text(text)
    agent.flashctl("apply", str(path))


def stats_of(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def attached(path: Path) -> Callable[[], bool]:
    return lambda: stats_of(path).get("state") == "attached"


@pytest.fixture
def peer(link: Link) -> Iterator[socket.socket]:
    """An AF_PACKET socket on the veth peer: injects frames, sees what comes back."""
    with inside(link.netns):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_TYPE))
    raw.bind((link.peer, ETH_TYPE))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    raw.settimeout(0.2)
    try:
        yield raw
    finally:
        raw.close()


def drain(raw: socket.socket, want: int, timeout: float = 5.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            data, address = raw.recvfrom(4096)
        except TimeoutError:
            continue
        if address[2] != socket.PACKET_OUTGOING:
            got.append(data)
    return got


def held_by(pid: int) -> dict[str, int]:
    """What a process holds of the NF side: AF_XDP sockets and UMEM/POLLOUT memfds."""
    held = {"xdp": 0, "umem": 0, "pollout": 0}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            target = os.readlink(path)
            if target.startswith("socket:"):
                if os.getxattr(path, "system.sockprotoname").rstrip(b"\0") == b"XDP":
                    held["xdp"] += 1
            elif target.startswith("/memfd:flashctl-umem"):
                held["umem"] += 1
            elif target.startswith("/memfd:flashctl-pollout"):
                held["pollout"] += 1
        except OSError:
            continue  # closed meanwhile
    return held


def xdp_attached(link: Link) -> bool:
    shown = subprocess.run(
        ["ip", "-n", link.netns, "-d", "link", "show", link.xdp],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "prog/xdp" in shown


def test_supervised_nf_attaches_forwards_and_is_observed(agent: Agent, peer: socket.socket) -> None:
    stats = agent.home.parent / "fw.json"
    apply(agent, chain_yaml(agent, stats))
    assert wait_for(attached(stats), 20), agent.flashctl("logs", "edge/fw").stdout

    # What the NF was told, as FLASH's C NF asks it.
    answers = stats_of(stats)["answers"]
    assert answers["commands"] == [2, 6, 3, 7, 8, 9, 10, 12, 13, 16, 17]
    assert answers["thread_count"] == 1
    assert answers["umem_size"] == answers["umem_fd_size"] == 4096 * 4096
    assert answers["umem_offset"] == 0
    assert answers["sockets"][0]["queue_raw"] == 0
    assert answers["sockets"][0]["domain"] == 44  # AF_XDP, bound by the agent
    assert answers["bind_flags"] == 0x0A  # veth has no zero-copy: copy + need-wakeup
    assert answers["xdp_flags"] == 4  # the redirect program attached in driver mode
    assert answers["ifname"] == agent.link.xdp
    assert answers["next_size"] == 0  # fw sends to the NIC
    assert answers["pollout_size"] == 64
    assert xdp_attached(agent.link)

    sent = [frame(seq, 64 + seq) for seq in range(100)]
    for data in sent:
        peer.send(data)
    back = drain(peer, len(sent))
    assert back == [d[6:12] + d[0:6] + d[12:] for d in sent]  # l2fwd swapped the MACs

    def settled() -> bool:
        mine = stats_of(stats)["threads"][0]
        own = agent.own_xsks()
        return (
            mine["tx_packets"] == 100 and len(own) == 1 and own[0]["counters"]["tx_packets"] == 100
        )

    assert wait_for(settled, 10), (stats_of(stats)["threads"], agent.own_xsks())
    truth = stats_of(stats)["threads"][0]
    [own] = agent.own_xsks()
    assert (own["chain"], own["nf"], own["thread"]) == ("edge", "fw", 0)
    assert (own["interface"], own["queue"]) == (agent.link.xdp, 0)
    assert own["counters"]["rx_packets"] == truth["rx_packets"] == truth["rx_prod"] == 100
    assert own["counters"]["tx_packets"] == truth["tx_packets"] == 100
    assert own["counters"]["fill_posted"] == truth["fill_prod"]
    assert own["rings"]["rx"] == 0
    assert own["rings"]["rx_size"] == 2048
    assert own["rings"]["fill"] == (truth["fill_prod"] - truth["fill_cons"]) & 0xFFFFFFFF
    # The NF's own process is not reported a second time as a "foreign" socket.
    foreign = [x for x in agent.status()["xsks"] if x["owner"] == "foreign"]
    assert [x for x in foreign if stats_of(stats)["pid"] in x["pids"]] == []

    # Paused, the NF leaves frames on its RX ring: flashctl sees exactly that many.
    nf_pid = stats_of(stats)["pid"]
    os.kill(nf_pid, signal.SIGUSR1)
    assert wait_for(lambda: stats_of(stats).get("paused") is True)
    for data in sent[:37]:
        peer.send(data)
    assert wait_for(lambda: agent.own_xsks()[0]["rings"]["rx"] == 37, 10)
    truth = stats_of(stats)["threads"][0]
    assert (truth["rx_prod"] - truth["rx_cons"]) & 0xFFFFFFFF == 37
    os.kill(nf_pid, signal.SIGUSR2)
    assert len(drain(peer, 37)) == 37
    assert wait_for(lambda: agent.own_xsks()[0]["rings"]["rx"] == 0)

    [chain] = agent.status()["chains"]
    assert chain["state"] == "standalone"  # bound and forwarding; no FLASH kernel, no rules
    assert chain["sockets"][0]["reason"] == (
        f"bound by the agent for pid {nf_pid}; without the FLASH kernel it has no flash-id "
        "and no rules"
    )
    monitor = agent.status()["monitor"]
    [seat] = monitor["nfs"]
    assert seat["attached"] is True
    assert seat["pid"] == nf_pid
    assert seat["process"]["state"] == "running"
    assert seat["process"]["pid"] == nf_pid
    logs = agent.flashctl("logs", "fw").stdout
    assert f"started pid {nf_pid}" in logs
    shown = agent.flashctl("agent", "status").stdout
    assert shown.rstrip().endswith(f"chains: edge, FLASH monitor at {agent.monitor}")
    events = [json.loads(e) for e in agent.flashctl("events", "-o", "json").stdout.splitlines()]
    assert f"edge/fw: started (pid {nf_pid})" in [e["message"] for e in events]

    assert held_by(agent.process.pid) == {"xdp": 1, "umem": 1, "pollout": 1}

    # Delete: the NF is stopped, its socket and the redirect program are gone.
    agent.flashctl("delete", "edge")
    assert wait_for(lambda: not Path(f"/proc/{nf_pid}").exists(), 10)
    assert agent.status()["xsks"] == []
    assert not xdp_attached(agent.link)
    assert held_by(agent.process.pid) == {"xdp": 0, "umem": 0, "pollout": 0}
    assert stats_of(stats)["exit_reason"] == "monitor EOF"


def test_external_nf_crash_releases_its_socket_at_once(agent: Agent, link: Link) -> None:
    stats = agent.home.parent / "ext.json"
    apply(agent, chain_yaml(agent, stats, run=False))
    nf = subprocess.Popen(
        [
            *(PY, "-m", "tests.linux.flashnf", "--socket", str(agent.monitor)),
            *("--umem-id", "0", "--nf-id", "0", "--stats", str(stats)),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(attached(stats), 20)
        assert len(agent.own_xsks()) == 1
        seat = agent.status()["monitor"]["nfs"][0]
        assert seat["process"] is None  # started by someone else
        # A second NF for the same seat is refused, and the first one is untouched.
        with pytest.raises(Refused):
            attach_answers(str(agent.monitor), 0, 0)
        assert nf.poll() is None
        nf.kill()  # our process: a crash, no CLOSE_CONN
        nf.wait(10)
        assert wait_for(lambda: agent.own_xsks() == [], 5)
        assert not xdp_attached(link)
        assert held_by(agent.process.pid) == {"xdp": 0, "umem": 0, "pollout": 0}
        events = agent.flashctl("events", "-o", "json").stdout.splitlines()
        kinds = [json.loads(e)["kind"] for e in events]
        assert "nf-detached" in kinds
        detached = [json.loads(e) for e in events if json.loads(e)["kind"] == "nf-detached"]
        assert detached[-1]["data"]["reason"] == "it closed the connection without CLOSE_CONN"
        # The queue is free again: a new NF attaches to the same seat and socket queue.
        again = attach_answers(str(agent.monitor), 0, 0)
        assert again["sockets"][0]["queue_raw"] == 0
    finally:
        if nf.poll() is None:
            nf.kill()
            nf.wait()


def test_malformed_clients_never_disturb_an_attached_nf(agent: Agent, peer: socket.socket) -> None:
    stats = agent.home.parent / "fw.json"
    apply(agent, chain_yaml(agent, stats))
    assert wait_for(attached(stats), 20)
    path = str(agent.monitor)

    def client(payload: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # then EOF, as a client that gave up
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)

    assert client(struct.pack("=i", 99)) == b""  # unknown command: closed
    assert client(struct.pack("=i", 7)) == b""  # before GET_UMEM: closed
    assert client(struct.pack("=i", 2) + b"\x00\x00") == b""  # truncated payload then EOF
    # An unknown seat is refused with 'n' and zeros, then CLOSE_CONN ends it.
    refused = client(struct.pack("=iii", 2, 7, 7) + struct.pack("=i", 4))
    assert refused == b"n" + b"\0" * 12
    assert agent.process.poll() is None

    for data in [frame(seq) for seq in range(20)]:
        peer.send(data)
    assert len(drain(peer, 20)) == 20
    events = [json.loads(e) for e in agent.flashctl("events", "-o", "json").stdout.splitlines()]
    reasons = [e["data"]["reason"] for e in events if e["kind"] == "monitor-closed"]
    assert "unknown command 99 (0x00000063)" in reasons
    assert "GET_ROUTE_INFO before GET_UMEM: the NF has no seat yet" in reasons
    assert "it closed the connection in the middle of a message (2 of 8 bytes)" in reasons


def test_apply_refuses_a_run_command_that_cannot_start(agent: Agent) -> None:
    path = agent.home.parent / "bad.yaml"
    text = chain_yaml(agent, agent.home.parent / "x.json").replace(
        f"[{json.dumps(PY)}", '["fc-no-such-nf"'
    )
    path.write_text(text)
    done = agent.flashctl("apply", str(path), check=False)
    assert done.returncode == 2
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "fc-no-such-nf" in t)
    column = text.splitlines()[line - 1].index("[") + 1
    assert done.stderr.splitlines()[0] == (
        f"{path}:{line}:{column}: error: spec.nfs.fw.run.command: executable 'fc-no-such-nf' "
        "not found on PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) "
        "(install it, give its absolute path, or set PATH in the NF's env)"
    )
    assert agent.status()["chains"] == []  # nothing applied, nothing started
    user = path.read_text().replace('["fc-no-such-nf"', f"[{json.dumps(PY)}")
    user = user.replace("        env:", "        user: fc-nobody-here\n        env:")
    path.write_text(user)
    done = agent.flashctl("apply", str(path), check=False)
    assert done.returncode == 2
    assert "error: spec.nfs.fw.run.user: unknown user 'fc-nobody-here'" in done.stderr
    # A user who may not open the monitor socket (0600, root's) could never attach.
    path.write_text(user.replace("user: fc-nobody-here", "user: nobody"))
    done = agent.flashctl("apply", str(path), check=False)
    assert done.returncode == 2
    assert (
        f"error: spec.nfs.fw.run.user: user 'nobody' may not connect to the monitor socket "
        f"{agent.monitor} (mode 0600), so the NF could not attach (start the agent with "
        "--monitor-group GROUP for a group the user is in)"
    ) in done.stderr
    assert agent.status()["chains"] == []


def test_foreign_af_xdp_program_is_observed_and_released(agent: Agent, link: Link) -> None:
    """An AF_XDP program that binds its own sockets (no FLASH, no chain) shows up in
    `status`, with its ring state; when it exits the agent holds nothing of it: the queue
    can be bound again at once."""
    owner = subprocess.Popen(
        [
            *("ip", "netns", "exec", link.netns, PY, "-m", "tests.linux.xsk_owner", link.xdp),
            *("--queues", "1", "--frames", "100", "--name", "fcforeign"),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdin is not None
        hello = json.loads(owner.stdout.readline())
        assert hello["procname"] == "fcforeign"

        def found() -> list[dict[str, Any]]:
            return [x for x in agent.status()["xsks"] if x["procname"] == "fcforeign"]

        assert wait_for(lambda: len(found()) == 1, 10)
        [seen] = found()
        assert seen["owner"] == "foreign"
        assert seen["pids"] == [hello["pid"]]
        assert seen["inode"] == hello["sockets"][0]["inode"]
        assert seen["rings"]["fill"] == 100
        assert seen["counters"]["fill_posted"] == 100
        owner.stdin.write("exit\n")
        owner.stdin.flush()
        owner.wait(10)
        assert wait_for(lambda: found() == [], 5)
        # Nothing of it is kept alive by the agent: the queue binds again right away.
        with (
            inside(link.netns),
            Umem(64) as umem,
            XskSocket(umem, link.xdp, 0, bind_retry=2.0),
        ):
            pass
    finally:
        if owner.poll() is None:
            owner.kill()  # ours: the `ip netns exec` process we started
            owner.wait()


def test_rules_follow_the_flash_ids_the_kernel_gives_the_agents_sockets() -> None:
    """With a FLASH kernel (here the FUSE stand-in, which hands out flash-ids the way the
    kernel does when a socket binds), the agent writes the chain's rules for the sockets it
    created for its NFs, and `status` shows their real counters by flash-id."""
    reason = fuse_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the FUSE tests: {reason}")
        pytest.skip(reason)
    parent = Path(tempfile.mkdtemp(prefix="fcfs", dir="/tmp"))
    parent.chmod(0o755)
    try:
        with (
            veth_pair(queues=2) as link,
            mounted(parent, FLASH_TABLE) as kernel,
            running_agent(link, parent / "flash") as agent,
        ):
            scratch = agent.home.parent
            nfs = ""
            for name, queue in (("fw", 0), ("lb", 1)):
                command = [PY, "-m", "tests.linux.flashnf", "--socket", "{socket}"]
                command += ["--umem-id", "{umem_id}", "--nf-id", "{nf_id}"]
                command += ["--stats", str(scratch / f"{name}.json")]
                nfs += (
                    f"    {name}:\n      queues: [{queue}]\n"
                    f"      run: {{command: {json.dumps(command)}, "
                    f"env: {{PYTHONPATH: {REPO}}}}}\n"
                )
            apply(
                agent,
                "apiVersion: flashctl/v1\nkind: Chain\nmetadata: {name: pair}\nspec:\n"
                f"  interface: {link.xdp}\n  umems: [{{name: shared, nfs: [fw, lb]}}]\n"
                f"  nfs:\n{nfs}"
                "  links:\n    - {from: nic, to: fw}\n    - {from: fw, to: lb}\n"
                "    - {from: lb, to: nic}\n",
            )
            for name in ("fw", "lb"):
                assert wait_for(attached(scratch / f"{name}.json"), 20)
            lb = stats_of(scratch / "lb.json")["answers"]
            assert (lb["umem_offset"], lb["prev_nfs"]) == (1, [0])  # fw's partition comes first
            assert stats_of(scratch / "fw.json")["answers"]["next_size"] == 1
            # The kernel gives the agent's two sockets their flash-ids as they bind.
            with inside(link.netns):
                ifindex = socket.if_nametoindex(link.xdp)
            agent_pid = agent.process.pid
            fw_id = kernel.bind(pid=agent_pid, procname="flashctl", ifindex=ifindex, qid=0)
            lb_id = kernel.bind(pid=agent_pid, procname="flashctl", ifindex=ifindex, qid=1)

            def chain() -> dict[str, Any]:
                found: dict[str, Any] = agent.status()["chains"][0]
                return found

            assert wait_for(lambda: chain()["state"] == "in-sync", 15), chain()
            sockets = {s["socket"]: s for s in chain()["sockets"]}
            assert sockets["fw/0"]["flashId"] == fw_id
            assert sockets["fw/0"]["next"] == [lb_id]
            assert sockets["lb/0"]["next"] == []
            assert kernel.sysfs.targets_of(fw_id) == (lb_id,)
            # Counters by flash-id come from the agent's own mappings of those sockets.
            assert sockets["fw/0"]["counters"]["rx_packets"] == 0
            assert sockets["fw/0"]["counters"]["fill_posted"] == 4096
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=False)


def test_umem_ids_stay_with_their_groups_across_an_agent_restart(link: Link) -> None:
    """An NF started by someone else has its umem_id on its command line: a group keeps its
    id while it runs, whatever else is applied, and after the agent restarts."""
    scratch = Path(tempfile.mkdtemp(prefix="fcm", dir="/tmp"))
    try:
        with running_agent(link, scratch=scratch) as agent:
            apply(agent, chain_yaml(agent, scratch / "x.json", run=False))  # chain "edge"
            other = chain_yaml(agent, scratch / "y.json", run=False, threads=1)
            other = other.replace("name: edge", "name: aaa").replace("queues: [0]", "queues: [1]")
            (scratch / "aaa.yaml").write_text(other)
            agent.flashctl("apply", str(scratch / "aaa.yaml"))
            seats = {n["chain"]: n["umemId"] for n in agent.status()["monitor"]["nfs"]}
            assert seats == {"edge": 0, "aaa": 1}  # aaa sorts first, but edge had 0 already
        with running_agent(link, scratch=scratch) as agent:
            seats = {n["chain"]: n["umemId"] for n in agent.status()["monitor"]["nfs"]}
            assert seats == {"edge": 0, "aaa": 1}
            agent.flashctl("delete", "edge")
            (scratch / "b.yaml").write_text(other.replace("name: aaa", "name: bbb"))
            # bbb's NF has the same queue as aaa's: on another interface queue it would
            # clash, so it only reuses the freed id here once aaa is gone too.
            agent.flashctl("delete", "aaa")
            agent.flashctl("apply", str(scratch / "b.yaml"))
            seats = {n["chain"]: n["umemId"] for n in agent.status()["monitor"]["nfs"]}
            assert seats == {"bbb": 0}  # the lowest free id
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def test_an_unprivileged_nf_attaches_through_the_monitor_group(link: Link) -> None:
    """FLASH's NFs run unprivileged (as nobody): with --monitor-group the socket is 0660 for
    that group, and an NF process of user nobody gets its UMEM and a bound socket whose
    rings it maps and uses itself."""
    scratch = Path(tempfile.mkdtemp(prefix="fcm", dir="/tmp"))
    scratch.chmod(0o755)  # nobody must reach the monitor socket inside
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    try:
        with running_agent(link, scratch=scratch, extra=("--monitor-group", group)) as agent:
            shown = agent.monitor.stat()
            assert (stat.S_IMODE(shown.st_mode), shown.st_gid) == (0o660, nobody.pw_gid)
            apply(agent, chain_yaml(agent, scratch / "x.json", run=False))
            read_end, write_end = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child reports through the pipe
                report: dict[str, Any] = {}
                try:
                    os.setgroups([])
                    os.setgid(nobody.pw_gid)
                    os.setuid(nobody.pw_uid)
                    client = MonitorClient(str(agent.monitor), 10.0)
                    attachment = Attachment({})
                    handshake(client, 0, 0, attachment, ip_addrs=False)
                    [fd] = attachment.socket_fds
                    rings = map_rings(fd, RingSizes(2048, 2048, 4096, 2048))
                    assert rings.fill is not None
                    report["filled"] = rings.fill.produce([4096 * i for i in range(64)])
                    report["uid"] = os.getuid()
                    report["answers"] = attachment.answers
                    rings.close()
                    attachment.close()
                    client.close_conn()
                except BaseException as exc:
                    report["error"] = repr(exc)
                os.write(write_end, json.dumps(report).encode())
                os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                report = json.loads(pipe.read() or b"{}")
            os.waitpid(child, 0)
            assert "error" not in report, report["error"]
            assert report["uid"] == nobody.pw_uid
            assert report["filled"] == 64  # the NF's own mapping of its fill ring works
            assert report["answers"]["sockets"][0]["domain"] == 44
            events = agent.flashctl("events", "-o", "json").stdout.splitlines()
            attaches = [json.loads(e) for e in events if '"nf-attached"' in e]
            assert attaches[-1]["data"]["uid"] == nobody.pw_uid
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
