"""The observer of other processes' AF_XDP sockets (flashctl.backends.xskwatch), for real.

Each test makes a namespace with a veth pair (`link`, unique names) and starts
tests/linux/xsk_owner.py in it as a separate process (`ip netns exec`), which binds AF_XDP
sockets on link.xdp, attaches the redirect program and answers commands on stdin with its
own view of its rings: the ground truth the watcher's readings must equal exactly. Frames
are injected from link.peer through AF_PACKET. Owners (and a child one of them forks) are
ended by their pids, which the test started or was told; the fixture ends whatever is left.

The watcher must never keep another process's socket alive: between samples it holds
nothing (`held() == 0`), so an owner that closes a socket or dies can bind its queue again
at once, as if nobody watched.

Needs root and `ip` (iproute2). Without them the tests skip and say why, except under
CI=true, where a skip would hide a broken setup: there they fail.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flashctl.backends.afxdp import STAT_NAMES, Umem, XskSocket, _syscall
from flashctl.backends.base import BackendError
from flashctl.backends.xskwatch import (
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    SYS_PIDFD_GETFD,
    SYS_PIDFD_OPEN,
    XskObservation,
    XskWatcher,
    parse_diag,
    proven_size,
)
from tests.linux.netns import ETH_TYPE, WAIT, Link, frame, inside, ip, wait_for

NETNS_EXEC = ("ip", "netns", "exec")
REPO = Path(__file__).resolve().parents[2]
QUEUES = 16  # sockets of the owner that binds many
SLOW_SAMPLE = 0.1  # s: a 16-socket sample ~0.2 ms, +12 ms per last close (16 in a row: 0.2 s)
REBINDS = 20  # close-and-rebind rounds of an owner sampled all the while


class Owner:
    """A running tests/linux/xsk_owner.py: its pid, sockets, and a command channel."""

    def __init__(self, link: Link, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                *NETNS_EXEC,
                link.netns,
                sys.executable,
                "-m",
                "tests.linux.xsk_owner",
                link.xdp,
                *args,
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.children: dict[int, int] = {}  # pid -> pidfd of each child it forked
        ready = self._line()
        self.pid: int = ready["pid"]
        self.procname: str = ready["procname"]
        self.sockets: list[dict[str, int]] = ready["sockets"]
        # `ip netns exec` execs the command: the owner is the process we started.
        assert self.pid == self.process.pid

    @property
    def inode(self) -> int:
        return self.sockets[0]["inode"]

    def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        line = self.process.stdout.readline() if ready else ""
        assert line, f"the owner said nothing (exit status {self.process.poll()})"
        answer: dict[str, Any] = json.loads(line)
        assert "error" not in answer, answer
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = self._line()
        if "child" in answer:
            # The child lives until killed (or 5 s after this owner): its pid is still its
            # own now, and the pidfd keeps it so (a reused pid can never be signalled).
            self.children[answer["child"]] = os.pidfd_open(answer["child"])
        return answer

    def kill_child(self, pid: int) -> None:
        signal.pidfd_send_signal(self.children[pid], signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL by pid (the process we started), and reap it."""
        self.process.kill()
        self.process.wait(WAIT)

    def end(self) -> None:
        for pidfd in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        self.children.clear()
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # the owner leaves when stdin closes
                self.process.wait(WAIT)
            except (subprocess.TimeoutExpired, OSError):
                self.kill()


@pytest.fixture
def start(link: Link) -> Iterator[Callable[..., Owner]]:
    """start(*args) -> a running owner on link.xdp; every one is ended afterwards."""
    owners: list[Owner] = []

    def starter(*args: str) -> Owner:
        owners.append(Owner(link, *args))
        return owners[-1]

    try:
        yield starter
    finally:
        for owner in owners:
            owner.end()


@pytest.fixture
def wide(link: Link) -> Iterator[Link]:
    """A second veth pair with QUEUES queues per end, in `link`'s namespace."""
    tag = link.netns[2:]
    made = Link(netns=link.netns, xdp=f"fw{tag}a", peer=f"fw{tag}b")
    queues = ["numtxqueues", str(QUEUES), "numrxqueues", str(QUEUES)]
    ip("-n", made.netns, "link", "add", made.xdp, *queues, "type", "veth", "peer", made.peer)
    try:
        ip("-n", made.netns, "link", "set", made.xdp, "up")
        yield made
    finally:
        subprocess.run(["ip", "-n", made.netns, "link", "del", made.xdp], capture_output=True)


@pytest.fixture
def peer(link: Link) -> Iterator[socket.socket]:
    """An AF_PACKET socket on link.peer, to inject frames towards the owner's queue 0."""
    with inside(link.netns):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_TYPE))
    try:
        raw.bind((link.peer, ETH_TYPE))
        yield raw
    finally:
        raw.close()


def scope(*keep: Owner | int) -> Callable[[], set[int]]:
    """An `exclude` leaving the watcher only the given owners (and their forked children)
    and pids: other AF_XDP users on this host are none of the tests' business, and holding
    copies of their sockets could disturb them."""

    def exclude() -> set[int]:
        kept = {k for k in keep if isinstance(k, int)}
        for owner in keep:
            if isinstance(owner, Owner):
                kept |= {owner.pid, *owner.children}
        return {int(name) for name in os.listdir("/proc") if name.isdigit()} - kept

    return exclude


def only(found: list[XskObservation], pid: int) -> XskObservation:
    """The one observation `pid` owns (other AF_XDP users on the host are not ours)."""
    mine = [o for o in found if pid in o.pids]
    assert len(mine) == 1, mine
    return mine[0]


def truth(owner: Owner) -> dict[str, Any]:
    return owner.ask("stats")


def agrees(seen: XskObservation, told: dict[str, Any]) -> None:
    """The watcher's reading equals the owner's own view, exactly."""
    idx = told["indices"]
    used = {name: (p - c) & 0xFFFFFFFF for name, (p, c) in idx.items()}
    rings = seen.rings
    assert (rings.rx, rings.tx, rings.fill, rings.completion) == (
        used["rx"],
        used["tx"],
        used["fill"],
        used["completion"],
    )
    assert seen.counters["rx_packets"] == idx["rx"][0]
    assert seen.counters["tx_packets"] == idx["tx"][1]
    assert seen.counters["fill_posted"] == idx["fill"][0]
    assert seen.counters["completions"] == idx["completion"][0]
    assert {k: seen.counters[k] for k in STAT_NAMES} == told["statistics"]


def bindable(link: Link, retry: float = 5.0) -> bool:
    """A new socket can take link.xdp's queue 0. The kernel frees a queue asynchronously
    after the socket's release (a work item that takes the RTNL lock: ~10-40 ms here, but
    namespaces being deleted elsewhere on the host hold that lock too), hence the retry."""
    with inside(link.netns), Umem(16) as umem:
        try:
            XskSocket(umem, link.xdp, 0, fill_size=64, completion_size=64, bind_retry=retry).close()
        except BackendError as exc:
            assert exc.errno == errno.EBUSY, exc
            return False
    return True


def test_finds_the_owners_socket_with_pid_name_and_ring_sizes(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start("--rx", "512", "--tx", "256", "--fill", "1024", "--completion", "512")
    with XskWatcher(exclude=scope(owner)) as watcher:
        seen = only(watcher.sample(), owner.pid)
        assert seen.inode == owner.inode
        assert seen.pids == (owner.pid,)
        assert seen.procname == owner.procname == "xskowner"
        assert (
            seen.rings.rx_size,
            seen.rings.tx_size,
            seen.rings.fill_size,
            seen.rings.completion_size,
        ) == (512, 256, 1024, 512)
        if seen.ifindex is not None:  # sock_diag for AF_XDP is there (not on every kernel)
            with inside(link.netns):
                assert seen.ifindex == socket.if_nametoindex(link.xdp)
            assert seen.queue == 0
        else:
            assert seen.queue is None
        assert set(seen.counters) == {
            "rx_packets",
            "tx_packets",
            "fill_posted",
            "completions",
            *STAT_NAMES,
        }
        assert watcher.held() == 0  # between samples: nothing


def test_rings_and_counters_equal_the_owners_view(
    link: Link, start: Callable[..., Owner], peer: socket.socket
) -> None:
    owner = start("--frames", "32")
    with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:
        first = only(watcher.sample(), owner.pid)
        agrees(first, truth(owner))
        assert first.rings.fill == 32
        for seq in range(10):
            peer.send(frame(seq))
        assert wait_for(lambda: only(watcher.sample(), owner.pid).rings.rx == 10)
        agrees(only(watcher.sample(), owner.pid), truth(owner))
        assert owner.ask("recv 4") == {"received": 4}
        seen = only(watcher.sample(), owner.pid)
        agrees(seen, truth(owner))
        assert (seen.rings.rx, seen.rings.fill, seen.counters["rx_packets"]) == (6, 22, 10)
        assert owner.ask("fill 4") == {"filled": 4}
        agrees(only(watcher.sample(), owner.pid), truth(owner))
        # Run the fill ring dry: 26 frames left, 40 more sent; the rest are counted.
        for seq in range(40):
            peer.send(frame(100 + seq))
        assert wait_for(lambda: owner_dropped(owner) == 14), truth(owner)
        seen = only(watcher.sample(), owner.pid)
        agrees(seen, truth(owner))
        assert seen.rings.fill == 0
        assert seen.counters["rx_packets"] == 36
        assert seen.counters["rx_fill_ring_empty_descs"] == 14
        assert seen.counters["rx_dropped"] == 14
        assert watcher.held() == 0


def delivered(owner: Owner, count: int) -> bool:
    """The owner's RX producer has reached `count`."""
    produced: int = truth(owner)["indices"]["rx"][0]
    return produced == count


def owner_dropped(owner: Owner) -> int:
    dropped: int = truth(owner)["statistics"]["rx_dropped"]
    return dropped


def test_a_socket_its_owner_closed_leaves_the_next_sample_and_its_queue_is_free(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start()
    with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:  # no scan in between
        only(watcher.sample(), owner.pid)
        assert watcher.held() == 0
        assert owner.ask("close") == {"closed": 0}
        assert all(owner.inode != o.inode for o in watcher.sample())
        # Right after that sample the owner binds its queue again. (A copy held until the
        # next scan, 60 s away, would keep it busy: the control test below shows that.)
        rebound = owner.ask("rebind")
        assert rebound["rebound"] == 0, rebound
        assert watcher.held() == 0
        seen = only(watcher.sample(), owner.pid)  # the sample that missed a socket rescans
        assert seen.inode == rebound["inode"] != owner.inode
        agrees(seen, truth(owner))
        assert watcher.held() == 0


def test_a_reused_fd_number_is_not_taken_for_the_old_socket(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start()
    with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:
        only(watcher.sample(), owner.pid)
        # Closed and bound anew between two samples: the new socket gets the lowest free fd
        # number, the old one's.
        rebound = owner.ask("rebind")
        assert rebound["rebound"] == 0, rebound
        assert rebound["fd"] == owner.sockets[0]["fd"]
        assert all(o.inode != owner.inode for o in watcher.sample())
        assert watcher.held() == 0
        seen = only(watcher.sample(), owner.pid)
        assert seen.inode == rebound["inode"]
        agrees(seen, truth(owner))


def test_an_owner_sampled_all_the_while_always_binds_its_queue_again(
    link: Link, start: Callable[..., Owner]
) -> None:
    """A program restarting its queue again and again while the watcher samples as fast as
    it can: a transient copy may be the last reference for a moment, never for longer than
    its close, so every rebind succeeds."""
    owner = start()
    with XskWatcher(rescan=0, exclude=scope(owner)) as watcher:
        stop = threading.Event()
        sizes: list[int] = []
        errors: list[BaseException] = []

        def sampler() -> None:
            while not stop.is_set():
                try:
                    sizes.append(len(watcher.sample()))
                except BaseException as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=sampler, name="sampler")
        thread.start()
        try:
            for _ in range(REBINDS):
                rebound = owner.ask("rebind")
                assert rebound["rebound"] == 0, rebound
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        assert 1 in sizes  # it did observe the socket meanwhile
        assert watcher.held() == 0
        assert only(watcher.sample(), owner.pid).inode == rebound["inode"]


def test_nothing_is_held_when_the_owner_dies_and_its_queue_is_free_again(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start()
    with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:
        only(watcher.sample(), owner.pid)
        assert watcher.held() == 0
        owner.kill()  # abruptly, as a crash would: no goodbye
        assert watcher.held() == 0  # nothing to let go, no thread needed
        assert bindable(link)  # nothing of ours keeps the dead owner's socket alive
        assert all(owner.pid not in o.pids for o in watcher.sample())
        assert watcher.held() == 0


def test_a_sweep_over_many_sockets_holds_one_copy_at_a_time(wide: Link) -> None:
    owner = Owner(wide, "--queues", str(QUEUES))
    try:
        assert len(owner.sockets) == QUEUES
        with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:
            assert len(watcher.sample()) == QUEUES
            assert watcher.held() == 0
            stop = threading.Event()
            samples: list[tuple[float, float, int]] = []  # (start, end, sockets seen)
            errors: list[BaseException] = []
            peak = [0]

            def sampler() -> None:
                while not stop.is_set():
                    began = time.monotonic()
                    try:
                        count = len(watcher.sample())
                    except BaseException as exc:
                        errors.append(exc)
                        return
                    samples.append((began, time.monotonic(), count))

            def monitor() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], watcher.held())
                    time.sleep(0.0001)  # not to starve the sampler of the GIL

            threads = [threading.Thread(target=sampler), threading.Thread(target=monitor)]
            for thread in threads:
                thread.start()
            try:
                assert wait_for(lambda: len(samples) >= 20 or bool(errors)), errors
                owner.kill()  # mid-sweep, likely: at most one copy to let go then
                gone = time.monotonic()
                assert wait_for(lambda: any(s[0] > gone for s in samples) or bool(errors))
            finally:
                stop.set()
                for thread in threads:
                    thread.join()
            assert not errors, errors
            assert peak[0] <= 1
            assert max(end - began for began, end, _ in samples) < SLOW_SAMPLE
            assert all(count == 0 for began, _, count in samples if began > gone)
            assert watcher.held() == 0
    finally:
        owner.end()


def test_a_held_copy_keeps_a_closed_or_dead_owners_queue_busy(
    link: Link, start: Callable[..., Owner]
) -> None:
    """The hazard the transient copies avoid (the control for the tests above): a copy
    taken by hand and kept keeps the socket, and so its queue, after its owner closed it,
    and after its owner died."""
    owner = start()
    pidfd = _syscall(SYS_PIDFD_OPEN, owner.pid, 0)
    assert pidfd >= 0
    try:
        copy = _syscall(SYS_PIDFD_GETFD, pidfd, owner.sockets[0]["fd"], 0)
        assert copy >= 0
        try:
            busy = owner.ask("rebind 0 200")
            assert busy["rebound"] is None, busy
            assert "EBUSY" in busy["busy"]
        finally:
            os.close(copy)
        rebound = owner.ask("rebind")
        assert rebound["rebound"] == 0, rebound
        copy = _syscall(SYS_PIDFD_GETFD, pidfd, rebound["fd"], 0)
        assert copy >= 0
    finally:
        os.close(pidfd)
    try:
        owner.kill()
        assert not bindable(link, retry=0.2)
    finally:
        os.close(copy)
    assert bindable(link)


def test_two_fds_in_one_process_are_one_observation(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start()
    second = owner.ask("dup")["fd"]
    assert second != owner.sockets[0]["fd"]
    with XskWatcher(exclude=scope(owner)) as watcher:
        seen = only(watcher.sample(), owner.pid)
        assert (seen.inode, seen.pids) == (owner.inode, (owner.pid,))
        assert watcher.held() == 0


def test_a_socket_shared_by_two_processes_is_observed_until_both_exit(
    link: Link, start: Callable[..., Owner]
) -> None:
    owner = start()
    child = owner.ask("fork")["child"]
    with XskWatcher(rescan=60, exclude=scope(owner)) as watcher:
        seen = only(watcher.sample(), owner.pid)
        assert seen.pids == tuple(sorted((owner.pid, child)))
        owner.kill()
        # No scan: the owner's exit is seen through its pidfd, the child read instead.
        again = only(watcher.sample(), child)
        assert (again.inode, again.pids) == (seen.inode, (child,))
        assert again.counters["fill_posted"] == seen.counters["fill_posted"]
        assert watcher.held() == 0
        owner.kill_child(child)
        assert wait_for(lambda: all(child not in o.pids for o in watcher.sample()))
        assert watcher.held() == 0
    assert bindable(link)


def test_own_and_excluded_sockets_are_left_alone(link: Link, start: Callable[..., Owner]) -> None:
    owner = start()
    with Umem(64) as umem:
        with inside(link.netns):
            mine = XskSocket(umem, link.peer, 0, fill_size=64, completion_size=64)
        try:
            own = os.fstat(mine.fd).st_ino
            # This process is not excluded by the scope, yet skipped: only the owner's socket.
            with XskWatcher(exclude=scope(owner, os.getpid())) as watcher:
                found = watcher.sample()
                assert [(o.inode, o.pids) for o in found] == [(owner.inode, (owner.pid,))]
                assert own != owner.inode
            with XskWatcher(exclude=scope()) as watcher:
                assert watcher.sample() == []
        finally:
            mine.close()


def test_single_page_ring_sizes_are_proven_by_traffic(
    link: Link, start: Callable[..., Owner], peer: socket.socket
) -> None:
    # 64 RX descriptors and 128 fill addresses each fit in one page, where 128 and 256
    # would fit too: the mapping alone cannot tell.
    owner = start("--rx", "64", "--fill", "128", "--frames", "32")
    with XskWatcher(rescan=0, exclude=scope(owner)) as watcher:
        seen = only(watcher.sample(), owner.pid)
        if seen.ifindex is None:  # no sock_diag: the page's capacity, an upper bound
            assert (seen.rings.rx_size, seen.rings.fill_size) == (128, 256)
        for sent in range(20, 220, 20):
            for seq in range(sent - 20, sent):
                peer.send(frame(seq))
            assert wait_for(functools.partial(delivered, owner, sent))
            assert owner.ask("recv 20") == {"received": 20}
            assert owner.ask("fill 20") == {"filled": 20}
        seen = only(watcher.sample(), owner.pid)
        assert (seen.rings.rx_size, seen.rings.fill_size) == (64, 128)
        agrees(seen, truth(owner))


def test_proven_size_needs_more_entries_than_the_bound() -> None:
    slots = b"".join(struct.pack("=QII", 256 + 4096 * i, 60, 0) for i in range(64))
    page = slots + bytes(16 * 128 - len(slots))
    assert proven_size(page, 16, produced=64, used=0, addresses=False) == 0  # never wrapped
    assert proven_size(page, 16, produced=65, used=3, addresses=False) == 64
    fill = b"".join(struct.pack("=Q", 4096 * i) for i in range(32)) + bytes(8 * 224)
    assert proven_size(fill, 8, produced=33, used=0, addresses=True) == 0  # slack for addr 0
    assert proven_size(fill, 8, produced=40, used=8, addresses=True) == 32


def test_a_broken_proc_is_one_line_backend_error(tmp_path: Path) -> None:
    with XskWatcher(proc=tmp_path / "missing") as watcher, pytest.raises(BackendError) as gone:
        watcher.scan()
    assert "cannot list processes in" in str(gone.value)
    assert "\n" not in str(gone.value)
    with XskWatcher(proc=tmp_path) as watcher, pytest.raises(BackendError) as empty:
        watcher.sample()
    assert str(empty.value) == f"{tmp_path} lists no processes: is procfs mounted there?"


def test_sock_diag_answers_are_parsed() -> None:
    def attr(kind: int, payload: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(payload), kind) + payload

    body = struct.pack("=BBHIII", 44, 3, 0, 4242, 0, 0)
    body += attr(1, struct.pack("=II", 7, 3))  # XDP_DIAG_INFO: ifindex, queue
    body += attr(3, struct.pack("=I", 2048))  # RX ring
    body += attr(6, struct.pack("=I", 4096))  # fill ring
    message = struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body
    done = struct.pack("=IHHII", 20, NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)
    found, finished, err = parse_diag(message + done)
    assert finished
    assert err == 0
    assert found[4242].ifindex == 7
    assert found[4242].queue == 3
    assert found[4242].rings == {"rx": 2048, "fill": 4096}
    error = struct.pack("=IHHII", 36, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -errno.ENOENT)
    assert parse_diag(error + bytes(16)) == ({}, True, errno.ENOENT)
