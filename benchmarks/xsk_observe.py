"""Observing foreign AF_XDP sockets (flashctl.backends.xskwatch): the cost of one sweep over N
sockets, holding nothing between sweeps, against reading N sockets of one's own.

    python benchmarks/xsk_observe.py [--sockets N] [--rounds R] [--batch B] [--record]

Needs root and iproute2, as tests/linux does. A network namespace of its own (unique name,
deleted at the end) holds a veth pair with N queues per end. One owner process
(tests/linux/xsk_owner.py under `ip netns exec`) binds N sockets on one end, one per queue
over one shared UMEM, rings 2048/2048/4096/2048 (RX/TX/fill/completion, libxdp-like), with
the redirect program attached. This process binds N sockets of its own on the other end.

Per sweep of N sockets (R interleaved rounds of B sweeps per mode; median and p90 of the
per-round mean, microseconds):

- `own: ring indices (baseline)`: producer and consumer of the four rings of N own sockets,
  read through their mappings with the watcher's struct reads: the floor;
- `own: ring indices + XDP_STATISTICS`: the same plus one getsockopt per own socket, what
  reading one's own sockets fully costs;
- `foreign: ring indices (process_vm_readv)`: the watcher's ring read, one syscall per owner
  process at the owner's own mapping addresses;
- `foreign: XDP_STATISTICS (transient copies)`: per socket pidfd_getfd, fstat (still that
  socket?), getsockopt, close: what the watcher does;
- `foreign: sample()`: the whole default sweep (rings, statistics, exit poll, observations
  with u32 counters extended; no scan): nothing is held before or after;
- `foreign: XDP_STATISTICS (held copies)`: for reference, the design given up (copies kept
  between samples, a hazard for the owner): the price of holding nothing is the difference.

Once per run: a survey of the whole host (what every rescan reads: every process's fd links;
no socket is copied by it), a scan scoped to the owner, the first scan (N transient copies
for XDP_MMAP_OFFSETS); then the owner closes and rebinds its last queue's socket R times,
sampled continuously by a watcher in a thread and once without: the time its bind waited
for the queue (the kernel frees a queue asynchronously); then the owner is killed by its pid
and the next sample timed. Last, the cost of a close that is a socket's last reference (what
a sample pays when the owner lets go while the watcher's copy is open), against N such closes
one after another. The watchers are scoped (`exclude`) to the owner: other AF_XDP users on
the host are left alone.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from secrets import token_hex
from typing import Any

from _common import (
    REPO,
    add_record_args,
    finish,
    import_path,
    median,
    percentile,
    section_head,
    table,
)

import_path()  # flashctl and the test helpers, from this checkout

from flashctl.backends import xskwatch  # noqa: E402
from flashctl.backends.afxdp import (  # noqa: E402
    STAT_NAMES,
    Umem,
    XskSocket,
    _syscall,
    mmap_offsets,
)
from flashctl.backends.xskwatch import (  # noqa: E402
    SYS_PIDFD_GETFD,
    SYS_PIDFD_OPEN,
    XskWatcher,
)
from tests.linux.netns import inside, setup_missing  # noqa: E402

NETNS_EXEC = ("ip", "netns", "exec")
RINGS = {"rx": 2048, "tx": 2048, "fill": 4096, "completion": 2048}
BASELINE = "own: ring indices (baseline)"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def veth(queues: int) -> Iterator[tuple[str, str, str]]:
    """(netns, owner end, own end): a namespace with a veth pair of `queues` queues."""
    tag = token_hex(4)
    netns, left, right = f"fcx{tag}", f"fcx{tag}a", f"fcx{tag}b"
    ip("netns", "add", netns)
    try:
        count = str(queues)
        multi = ["numtxqueues", count, "numrxqueues", count]
        ip("-n", netns, "link", "add", left, *multi, "type", "veth", "peer", "name", right, *multi)
        for name in (left, right):
            ip("-n", netns, "link", "set", name, "up")
        yield netns, left, right
    finally:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


class Owner:
    """tests/linux/xsk_owner.py binding `queues` sockets on `ifname` in `netns`."""

    def __init__(self, netns: str, ifname: str, queues: int) -> None:
        command = [*NETNS_EXEC, netns, sys.executable, "-m", "tests.linux.xsk_owner", ifname]
        command += ["--queues", str(queues), "--frames", "32"]
        command += [f"--{ring}={size}" for ring, size in RINGS.items()]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._line("the owner failed to start")
        self.pid: int = ready["pid"]
        self.fds: list[int] = [s["fd"] for s in ready["sockets"]]

    def _line(self, failed: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise SystemExit(f"{failed} (exit {self.process.returncode})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._line(f"the owner did not answer {command!r}")

    def kill(self) -> None:
        """SIGKILL by the pid we started, and reap."""
        self.process.kill()
        self.process.wait(10)

    def end(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def only(pid: int) -> Callable[[], set[int]]:
    """An `exclude` leaving the watcher nothing but `pid`."""
    return lambda: {int(n) for n in os.listdir("/proc") if n.isdigit()} - {pid}


def host_fds() -> tuple[int, int]:
    """(processes, fds) on the host now: what a survey reads."""
    processes = fds = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fds += len(os.listdir(f"/proc/{name}/fd"))
                processes += 1
            except OSError:
                continue
    return processes, fds


def own_sweep(sockets: list[XskSocket], *, statistics: bool) -> Callable[[], object]:
    """Read prod/cons of every ring of own sockets with the watcher's struct reads (and, if
    `statistics`, XDP_STATISTICS of each the watcher's way)."""
    readers = []
    for xsk in sockets:
        offsets = mmap_offsets(xsk.fd)
        for name in RINGS:
            ring = getattr(xsk, name)
            first, span, unpack = xskwatch._pair_reader(
                offsets[name].producer, offsets[name].consumer
            )
            readers.append((unpack, (ctypes.c_char * (first + span)).from_address(ring.address)))
    fds = [xsk.fd for xsk in sockets] if statistics else []
    buffer = ctypes.create_string_buffer(8 * len(STAT_NAMES))

    def sweep() -> object:
        rings = [unpack(view, 0) for unpack, view in readers]
        return rings, [xskwatch._read_statistics(fd, buffer) for fd in fds]

    return sweep


def transient_statistics(watcher: XskWatcher) -> Callable[[], object]:
    socks = list(watcher._sockets.values())

    def sweep() -> object:
        return [watcher._statistics(sock) for sock in socks]

    return sweep


def held_statistics(copies: list[int]) -> Callable[[], object]:
    buffer = ctypes.create_string_buffer(8 * len(STAT_NAMES))

    def sweep() -> object:
        return [xskwatch._read_statistics(copy, buffer) for copy in copies]

    return sweep


def timed_rounds(
    modes: dict[str, Callable[[], object]], rounds: int, batch: int
) -> dict[str, list[float]]:
    """Per-sweep seconds of each mode: `rounds` rounds, modes in an order rotated each round."""
    names = list(modes)
    found: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            sweep = modes[name]
            sweep()
            started = time.perf_counter()
            for _ in range(batch):
                sweep()
            found[name].append((time.perf_counter() - started) / batch)
    return found


def rebind_waits(owner: Owner, queue: int, rounds: int, watcher: XskWatcher | None) -> list[float]:
    """Seconds the owner's bind waited for its queue over `rounds` close-and-rebind rounds,
    with `watcher` (if any) sampling all the while in a thread."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def sampler() -> None:
        assert watcher is not None
        while not stop.is_set():
            try:
                watcher.sample()
            except BaseException as exc:
                failed.append(exc)
                return

    thread = threading.Thread(target=sampler) if watcher is not None else None
    if thread is not None:
        thread.start()
    waits = []
    try:
        for _ in range(rounds):
            answer = owner.ask(f"rebind {queue}")
            if answer.get("rebound") != queue:
                raise SystemExit(f"the owner could not bind its queue again: {answer}")
            waits.append(answer["waited"])
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    if failed:
        raise SystemExit(f"sampling failed: {failed[0]}")
    return waits


def last_closes(netns: str, ifname: str, queues: int) -> tuple[float, float]:
    """(one, all): seconds to close one copy that is a socket's last reference (its owner
    dead), and `queues` of them one after another."""
    owner = Owner(netns, ifname, queues)
    try:
        pidfd = _syscall(SYS_PIDFD_OPEN, owner.pid, 0)
        copies = [_syscall(SYS_PIDFD_GETFD, pidfd, fd, 0) for fd in owner.fds]
        os.close(pidfd)
        owner.kill()
        started = time.perf_counter()
        os.close(copies[0])
        one = time.perf_counter() - started
        for copy in copies[1:]:
            os.close(copy)
        return one, time.perf_counter() - started
    finally:
        owner.end()


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def report(args: argparse.Namespace) -> str:
    n = args.sockets
    title = "## Observing foreign AF_XDP sockets (benchmarks/xsk_observe.py)"
    lines = [*section_head(title), ""]
    started = time.monotonic()
    with veth(n) as (netns, left, right), Umem(64 * n) as umem:
        with inside(netns):
            own = []
            sizes = {f"{ring}_size": size for ring, size in RINGS.items()}
            try:
                for queue in range(n):
                    own.append(XskSocket(umem, right, queue, **sizes))  # type: ignore[arg-type]
            except BaseException:
                for xsk in own:
                    xsk.close()
                raise
        owner = Owner(netns, left, n)
        pidfd = _syscall(SYS_PIDFD_OPEN, owner.pid, 0)
        copies: list[int] = []
        watchers: list[XskWatcher] = []
        try:
            watcher = XskWatcher(exclude=only(owner.pid), rescan=1e9)
            watchers.append(watcher)
            first = time.perf_counter()
            watcher.scan()
            attach = time.perf_counter() - first
            assert watcher.held() == 0, watcher.held()
            observed = watcher.sample()
            assert len(observed) == n, len(observed)
            assert observed[0].rings.rx_size == RINGS["rx"], observed[0].rings
            assert watcher.held() == 0, watcher.held()
            watcher._make_plan()
            copies = [_syscall(SYS_PIDFD_GETFD, pidfd, fd, 0) for fd in owner.fds]
            assert min(copies) >= 0
            modes = {
                BASELINE: own_sweep(own, statistics=False),
                "own: ring indices + XDP_STATISTICS": own_sweep(own, statistics=True),
                "foreign: ring indices (process_vm_readv)": watcher._read_rings,
                "foreign: XDP_STATISTICS (transient copies)": transient_statistics(watcher),
                "foreign: sample()": watcher.sample,
                "foreign: XDP_STATISTICS (held copies, given up)": held_statistics(copies),
            }
            figures = timed_rounds(modes, args.rounds, args.batch)
            for copy in copies:
                os.close(copy)
            copies = []
            assert watcher.held() == 0, watcher.held()
            survey = XskWatcher()  # the whole host, read only: _survey copies nothing
            watchers.append(survey)
            survey._survey()  # classify every socket once (cached after)
            surveys = []
            for _ in range(args.rounds):
                first = time.perf_counter()
                survey._survey()
                surveys.append(time.perf_counter() - first)
            processes, fds = host_fds()
            scoped = []
            for _ in range(args.rounds):
                first = time.perf_counter()
                watcher.scan()
                scoped.append(time.perf_counter() - first)
            sampled = XskWatcher(exclude=only(owner.pid), rescan=0.05)
            watchers.append(sampled)
            alone = rebind_waits(owner, n - 1, args.rounds, None)
            watched = rebind_waits(owner, n - 1, args.rounds, sampled)
            sampled.close()
            watcher.sample()
            owner.kill()
            assert watcher.held() == 0, watcher.held()
            first = time.perf_counter()
            after = watcher.sample()
            dead = time.perf_counter() - first
            assert after == [], after
        finally:
            for copy in copies:
                os.close(copy)
            for each in watchers:
                each.close()
            if pidfd >= 0:
                os.close(pidfd)
            owner.end()
            for xsk in own:
                xsk.close()
        one, sequential = last_closes(netns, left, n)
    elapsed = time.monotonic() - started

    floor = median(figures[BASELINE])
    lines += [
        f"One owner process with {n} AF_XDP sockets (one per queue of a {n}-queue veth, one "
        f"UMEM, rings {RINGS['rx']}/{RINGS['tx']}/{RINGS['fill']}/{RINGS['completion']}); "
        f"{args.rounds} interleaved rounds x {args.batch} sweeps per mode; microseconds per "
        f"sweep over all {n} sockets:",
        "",
    ]
    rows = []
    for name, values in figures.items():
        rows.append(
            [
                f"`{name}`",
                us(median(values)),
                us(percentile(values, 0.9)),
                us(median(values) / n),
                f"{median(values) / floor:.1f}x",
            ]
        )
    lines += table(["sweep", "p50 us", "p90 us", "us per socket", "vs own ring indices"], rows)
    lines += [
        "",
        "Ring reads are producer and consumer of all four rings (one struct call per ring). "
        "`sample()` is the watcher's default and only sweep: it holds no copy and no mapping "
        "of a foreign socket before or after (at most one copy, for microseconds, within). "
        "The held copies are the design given up: a copy kept between samples keeps a socket "
        "its owner closed alive, its queue busy.",
        "",
        f"- survey of the whole host (every process's fd links, maps of AF_XDP owners only; "
        f"{processes} processes, {fds} fds): p50 {ms(median(surveys))} ms, p90 "
        f"{ms(percentile(surveys, 0.9))} ms (read-only; the cost of each rescan)",
        f"- scan scoped to the owner, nothing new: p50 {ms(median(scoped))} ms",
        f"- first scan, {n} sockets attached (a transient copy each for XDP_MMAP_OFFSETS): "
        f"{ms(attach)} ms",
        f"- the owner closes its queue {n - 1} socket and binds the queue again, "
        f"{args.rounds} times: its bind waited p50 {ms(median(watched))} ms, max "
        f"{ms(max(watched))} ms while a watcher sampled all the while (rescan 50 ms); "
        f"unwatched p50 {ms(median(alone))} ms, max {ms(max(alone))} ms (the kernel frees a "
        f"queue asynchronously)",
        f"- owner killed: held() == 0 at once; the next sample() {ms(dead)} ms (returns "
        f"nothing: the exit is seen through the pidfd)",
        f"- a close that is a socket's last reference (what a sample pays if the owner lets go "
        f"while the watcher's copy is open; it waits for an RCU grace period): {ms(one)} ms "
        f"for the first; {n} one after another {sequential * 1e3:.0f} ms, "
        f"{ms(sequential / n)} ms each (why copies are taken one at a time)",
        "",
        f"Whole run: {elapsed:.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=64, help="foreign (and own) sockets")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--batch", type=int, default=200, help="sweeps per mode and round")
    add_record_args(parser, check=None)
    args = parser.parse_args()
    if min(args.sockets, args.rounds, args.batch) < 1:
        parser.error("--sockets, --rounds and --batch must be >= 1")
    if args.sockets < 2:
        parser.error("--sockets must be >= 2 (the last queue is rebound)")
    reason = setup_missing()
    if reason is not None:
        print(f"xsk_observe: {reason}", file=sys.stderr)
        return 2
    return finish(args, "xsk_observe", report(args))


if __name__ == "__main__":
    sys.exit(main())
