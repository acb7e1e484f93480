"""The native driver over the FUSE stand-in: rule writes per second, and churn -> repaired.

    python benchmarks/native_sysfs.py [--rounds R] [--batch B] [--poll INTERVAL:N ...]
                                      [--uevents N] [--seed S] [--record]

Needs root, /dev/fuse, fusermount3 and mfusepy, as tests/linux does. The stand-in
(tests/linux/flashfs.py, one `FlashSysfs` behind FUSE) runs in a child process, as the
kernel is outside the driver's process: its FUSE loop does not compete for our GIL. The
child obeys a pipe (bind, close, churn); the benchmark unmounts it and removes every
directory it made, whatever happens.

Rule writes. Sockets 0, 1, 2 bound; each round times B operations of each mode, in an
order rotated by one each round, each write alternating between `1` and `2` for flash-id 0:

- `tmpfs raw`: os.open / os.write / os.close of the same text to a regular file on /dev/shm
  (the syscall floor: no FUSE, no driver);
- `FUSE raw`: the same three calls on `<mount>/0/next` (the stand-in, no driver);
- `write_rule_text`: `NativeBackend.write_rule_text` (open, one write, close);
- `write_rule`: `base.write_rule`, i.e. the write plus its read-back (what the engine does).

Churn -> repaired. The chain nic -> fw -> rt -> nic (fw on eth0 queue 0, rt on queue 1) is
applied by an Engine over a NativeBackend. Each churn, one atomic change in the stand-in
alternates between (a) rt's socket closes, an outside AF_XDP user binds on another queue and
takes rt's id, and rt binds again on the next free id, and (b) both close and rt binds on
the lowest id again; either way rt's flash-id changes and fw's rule points at the wrong
socket until repaired. Measured from the moment the change is visible: the driver's
listener is called (`noticed`), then one Engine reconcile pass repairs fw's rule (as the
agent's loop does when woken), checked by reading fw's `next` back (untimed).

- polling path: `uevents=None`; the change lands at a random phase of the poll interval.
- uevent path: the child announces each socket directory as the FLASH kernel's kobject
  add/del would ("add@/kernel/flash/N", "remove@..."), by injecting the message into the
  kernel (NETLINK_KOBJECT_UEVENT, Linux >= 4.18, CAP_SYS_ADMIN): the kernel broadcasts it
  on group 1 with portid 0 and a SEQNUM, exactly the delivery path of its own uevents. The
  whole benchmark runs in a private network namespace so no udevd on the host sees them.
  The driver runs as the agent configures it: uevent socket plus the default poll.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import add_record_args, finish, import_path, median, percentile, section_head, table

import_path()  # flashctl and the stand-in, from this checkout even when it is not installed

from flashctl.backends.base import write_rule  # noqa: E402
from flashctl.backends.flashsys import FLASH_TABLE  # noqa: E402
from flashctl.backends.native import (  # noqa: E402
    NETLINK_KOBJECT_UEVENT,
    POLL_INTERVAL,
    NativeBackend,
    open_uevent_socket,
)
from flashctl.engine import Engine  # noqa: E402
from flashctl.store import Store  # noqa: E402
from tests.linux.flashfs import FlashFS, fuse_missing, mounted  # noqa: E402

CLONE_NEWNET = 0x40000000
NLMSG_MIN_TYPE = 0x10  # netlink_rcv_skb skips control messages below this type
NLM_F_REQUEST = 0x1  # ... and messages that are not requests
ETH0, OTHER = 2, 3  # ifindexes of the stand-in's sockets
FW_Q, RT_Q, FOREIGN_Q = 0, 1, 60
WRITE_MODES = ("tmpfs raw", "FUSE raw", "write_rule_text", "write_rule")
CHAIN = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: bench}
spec:
  interface: eth0
  nfs:
    fw: {queues: [0]}
    rt: {queues: [1]}
  links:
    - {from: nic, to: fw}
    - {from: fw, to: rt}
    - {from: rt, to: nic}
"""


def private_netns() -> str | None:
    """Move this process into a new network namespace; None, or why not."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return os.strerror(ctypes.get_errno())
    return None


# --- the stand-in, in a child process ------------------------------------------------------


def _inject(sock: socket.socket, action: str, flash_id: int) -> None:
    devpath = f"/kernel/flash/{flash_id}"
    payload = f"{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=flash\0"
    data = payload.encode()
    header = struct.pack("=IHHII", 16 + len(data), NLMSG_MIN_TYPE, NLM_F_REQUEST, 0, 0)
    sock.sendto(header + data, (0, 0))


def _churn(fs: FlashFS, args: dict[str, Any], injector: socket.socket | None) -> Any:
    with fs.lock:
        for flash_id in args["close"]:
            fs.sysfs.close(flash_id)
        bound = [fs.sysfs.bind(**kwargs) for kwargs in args["bind"]]
    changed = time.monotonic()
    if injector is not None and args["uevents"]:
        for flash_id in args["close"]:
            _inject(injector, "remove", flash_id)
        for flash_id in bound:
            _inject(injector, "add", flash_id)
    return bound, changed


def serve(parent: Path, conn: Connection) -> None:
    """The child: mount the stand-in, obey the pipe until "stop" (or the parent is gone)."""
    try:
        with mounted(parent, FLASH_TABLE) as fs:
            injector = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
            injector.bind((0, 0))
            conn.send(("ok", None))
            while True:
                try:
                    op, args = conn.recv()
                except EOFError:
                    break
                if op == "stop":
                    break
                try:
                    if op == "bind":
                        result: Any = fs.bind(**args)
                    elif op == "close":
                        fs.close(args)
                        result = None
                    elif op == "churn":
                        result = _churn(fs, args, injector)
                    else:
                        raise ValueError(f"unknown op {op!r}")
                except Exception as exc:
                    conn.send(("error", repr(exc)))
                else:
                    conn.send(("ok", result))
            injector.close()
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", repr(exc)))
    finally:
        conn.close()


class Standin:
    """The parent's handle on the child serving the stand-in."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def call(self, op: str, args: Any = None) -> Any:
        self.conn.send((op, args))
        status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"stand-in: {op} failed: {result}")
        return result


@contextlib.contextmanager
def standin() -> Iterator[tuple[Standin, Path]]:
    parent = Path(tempfile.mkdtemp(prefix="flashfs-"))
    parent.chmod(0o755)
    mount = parent / "flash"
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve, args=(parent, theirs), name="flashfs-bench"
    )
    child.start()
    theirs.close()
    try:
        if not ours.poll(15):
            raise RuntimeError("the stand-in did not mount within 15 s")
        status, detail = ours.recv()
        if status != "ok":
            raise RuntimeError(f"the stand-in did not mount: {detail}")
        yield Standin(ours), mount
    finally:
        with contextlib.suppress(OSError):
            ours.send(("stop", None))
        child.join(15)
        if child.is_alive():
            child.kill()
            child.join(5)
        if os.path.ismount(mount):
            done = subprocess.run(["fusermount3", "-u", str(mount)], check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], check=False)
        ours.close()
        shutil.rmtree(parent, ignore_errors=True)


# --- rule writes -------------------------------------------------------------------------


def raw_write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def measure_writes(mount: Path, rounds: int, batch: int) -> dict[str, list[float]]:
    backend = NativeBackend(mount, uevents=None)
    backend.info()  # the probe, once, as the agent does at start
    floor_dir = Path(tempfile.mkdtemp(prefix="flashctl-bench-", dir="/dev/shm"))
    try:
        floor = floor_dir / "next"
        floor.write_bytes(b"-1\n")
        texts = ("1\n", "2\n")
        ops: dict[str, Callable[[int], None]] = {
            "tmpfs raw": lambda i: raw_write(str(floor), texts[i % 2].encode()),
            "FUSE raw": lambda i: raw_write(str(mount / "0" / "next"), texts[i % 2].encode()),
            "write_rule_text": lambda i: backend.write_rule_text(0, texts[i % 2]),
            "write_rule": lambda i: write_rule(backend, 0, [1 + i % 2]),
        }
        times: dict[str, list[float]] = {mode: [] for mode in WRITE_MODES}
        for warm in WRITE_MODES:
            for i in range(20):
                ops[warm](i)
        for index in range(rounds):
            shift = index % len(WRITE_MODES)
            for mode in WRITE_MODES[shift:] + WRITE_MODES[:shift]:
                op, sink = ops[mode], times[mode]
                for i in range(batch):
                    started = time.perf_counter()
                    op(i)
                    sink.append(time.perf_counter() - started)
        assert backend.read_rule_text(0) in ("index\tflash_id\n0\t1\n", "index\tflash_id\n0\t2\n")
        return times
    finally:
        backend.close()
        shutil.rmtree(floor_dir, ignore_errors=True)


# --- churn -> repaired -------------------------------------------------------------------


@dataclass
class ChurnFacts:
    label: str
    interval: float
    noticed: list[float] = field(default_factory=list)  # change visible -> listener called
    repaired: list[float] = field(default_factory=list)  # change visible -> pass done
    passes: list[float] = field(default_factory=list)  # the reconcile pass alone
    idle_scan: list[float] = field(default_factory=list)  # one scan with nothing new
    idle_pass: list[float] = field(default_factory=list)  # one pass with nothing to repair
    extra_calls: int = 0  # listener calls beyond one per churn


def measure_churn(
    host: Standin, mount: Path, *, uevents: bool, interval: float, count: int, seed: int
) -> ChurnFacts:
    rng = random.Random(seed)
    label = "uevent" if uevents else "polling"
    facts = ChurnFacts(label, interval)
    folder = Path(tempfile.mkdtemp(prefix="flashctl-bench-"))
    backend = NativeBackend(
        mount,
        ifname=lambda index: "eth0" if index == ETH0 else f"if{index}",
        poll_interval=interval,
        uevents=open_uevent_socket if uevents else None,
    )
    store = Store.open(folder / "state.db")
    try:
        fw = host.call("bind", {"pid": 100, "procname": "fw", "ifindex": ETH0, "qid": FW_Q})
        rt = host.call("bind", {"pid": 101, "procname": "rt", "ifindex": ETH0, "qid": RT_Q})
        engine = Engine(backend, store)
        engine.apply([("bench.yaml", CHAIN)], who="bench")
        assert backend.read_rule_text(fw) == f"index\tflash_id\n0\t{rt}\n"
        heard = threading.Event()
        heard_at: list[float] = []

        def listener() -> None:
            heard_at.append(time.monotonic())
            heard.set()

        backend.subscribe(listener)
        foreign: int | None = None
        for index in range(count):
            backend.rescan()  # absorbs a straggling scan of the last round
            started = time.perf_counter()
            backend.rescan()
            facts.idle_scan.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.reconcile()
            facts.idle_pass.append(time.perf_counter() - started)
            time.sleep(rng.uniform(0, interval if not uevents else 0.01))
            heard.clear()
            calls = len(heard_at)
            rt_bind = {"pid": 101, "procname": "rt", "ifindex": ETH0, "qid": RT_Q}
            if foreign is None:  # (a) an outsider takes rt's id, rt binds on the next
                outsider = {"pid": 900, "procname": "xdpsock", "ifindex": OTHER, "qid": FOREIGN_Q}
                change = {"close": [rt], "bind": [outsider, rt_bind], "uevents": uevents}
                (foreign, rt), changed = host.call("churn", change)
            else:  # (b) both close, rt binds on the lowest id again
                change = {"close": [rt, foreign], "bind": [rt_bind], "uevents": uevents}
                (rt,), changed = host.call("churn", change)
                foreign = None
            if not heard.wait(interval * 3 + 5):
                raise RuntimeError(f"{label}: churn {index} was not noticed")
            started = time.perf_counter()
            engine.reconcile()
            done = time.monotonic()
            facts.passes.append(time.perf_counter() - started)
            facts.noticed.append(heard_at[calls] - changed)
            facts.repaired.append(done - changed)
            facts.extra_calls += len(heard_at) - calls - 1
            shown = backend.read_rule_text(fw)
            if shown != f"index\tflash_id\n0\t{rt}\n":
                raise RuntimeError(f"{label}: churn {index} not repaired: fw reads {shown!r}")
        return facts
    finally:
        backend.close()
        store.close()
        shutil.rmtree(folder, ignore_errors=True)
        # Leave the stand-in empty for the next measurement.
        for flash_id in range(8):
            with contextlib.suppress(RuntimeError):
                host.call("close", flash_id)


# --- report ------------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def ms3(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def report(args: argparse.Namespace) -> str:
    title = "## Native driver over the FUSE stand-in (benchmarks/native_sysfs.py)"
    lines = [*section_head(title, from_root=False), ""]
    netns = private_netns()
    started = time.monotonic()
    with standin() as (host, mount):
        for qid in range(3):
            host.call("bind", {"pid": 10 + qid, "procname": "nf", "ifindex": ETH0, "qid": qid})
        writes = measure_writes(mount, args.rounds, args.batch)
        for flash_id in range(3):
            host.call("close", flash_id)
        churns = [
            measure_churn(host, mount, uevents=False, interval=p, count=n, seed=args.seed)
            for p, n in args.poll
        ]
        if netns is None and args.uevents > 0:
            churns.append(
                measure_churn(
                    host,
                    mount,
                    uevents=True,
                    interval=POLL_INTERVAL,
                    count=args.uevents,
                    seed=args.seed,
                )
            )
    elapsed = time.monotonic() - started

    total = len(writes["tmpfs raw"])
    lines += [
        f"Rule writes to flash-id 0 (`1` and `2` alternating), {args.rounds} interleaved "
        f"rounds x {args.batch} = {total} per mode; per-operation latency in microseconds:",
        "",
    ]
    fuse_raw = median(writes["FUSE raw"])
    tmpfs = median(writes["tmpfs raw"])
    rows = []
    for mode in WRITE_MODES:
        values = writes[mode]
        rows.append(
            [
                f"`{mode}`",
                us(median(values)),
                us(percentile(values, 0.99)),
                f"{len(values) / sum(values):,.0f}",
                f"{median(values) / tmpfs:.1f}x",
                f"{median(values) / fuse_raw:.2f}x",
            ]
        )
    lines += table(["operation", "p50 us", "p99 us", "ops/s", "vs tmpfs raw", "vs FUSE raw"], rows)
    lines += [
        "",
        "`ops/s` is count / total time of that mode. The FUSE floor is the stand-in's cost "
        "(a Python FUSE server, one request at a time: open, write, flush, release); a real "
        "sysfs store is a kernel function call, so on a FLASH kernel the driver's cost is "
        "nearer the tmpfs floor than these figures.",
        "",
        "Socket churn -> rule repaired (an Engine reconcile pass woken by the driver's "
        "listener), from the moment the change is visible in the stand-in; milliseconds:",
        "",
    ]
    header = ["path (interval)", "n", "noticed p50", "noticed p99", "repaired p50"]
    header += ["repaired p99", "pass p50", "idle scan p50", "idle pass p50"]
    rows = []
    for facts in churns:
        rows.append(
            [
                f"{facts.label} ({facts.interval:g} s poll)",
                str(len(facts.repaired)),
                ms3(median(facts.noticed)),
                ms3(percentile(facts.noticed, 0.99)),
                ms3(median(facts.repaired)),
                ms3(percentile(facts.repaired, 0.99)),
                ms3(median(facts.passes)),
                ms3(median(facts.idle_scan)),
                ms3(median(facts.idle_pass)),
            ]
        )
    lines += table(header, rows)
    lines += [
        "",
        "`noticed`: change visible -> the driver calls its listener (polling: up to one "
        "interval plus a scan; uevent: kernel broadcast, wake-up, parse, scan). `repaired`: "
        "change visible -> the reconcile pass has rewritten fw's rule (read back, untimed). "
        "`pass`: that pass alone. Baselines measured in the same rounds: `idle scan` (one "
        "directory scan, nothing new: the cost of every poll tick) and `idle pass` (a "
        "reconcile pass with nothing to repair).",
    ]
    extra = sum(f.extra_calls for f in churns)
    lines += [
        "",
        f"Listener calls beyond one per churn: {extra} (a scan racing the change could see "
        "half of it and call again; the engine re-reads the host either way).",
    ]
    for facts in churns:
        if facts.label == "polling":
            cost = median(facts.idle_scan) / facts.interval
            lines.append(
                f"Polling every {facts.interval:g} s costs {cost * 100:.2f} % of a core in "
                "idle scans through the stand-in (2 sockets)."
            )
    if netns is not None:
        lines.append(
            f"The uevent path was not measured: no private network namespace ({netns}), and "
            "injecting uevents into the host's would reach its udevd."
        )
    else:
        lines.append(
            "Uevents: injected into the kernel by the stand-in's process right after each "
            "change (remove/add of /kernel/flash/N), delivered by the kernel's broadcast in "
            "a private network namespace; the driver keeps its default poll as well, which "
            "could win only inside the microseconds between change and uevent."
        )
    lines += ["", f"Whole run: {elapsed:.1f} s (stand-in mounted, measured, unmounted)."]
    return "\n".join(lines) + "\n"


def poll_spec(text: str) -> tuple[float, int]:
    interval, _, count = text.partition(":")
    try:
        parsed = float(interval), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INTERVAL:N, got {text!r}") from None
    if parsed[0] <= 0 or parsed[1] < 1:
        raise argparse.ArgumentTypeError("INTERVAL must be > 0 and N >= 1")
    return parsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved write rounds")
    parser.add_argument("--batch", type=int, default=250, help="writes per mode and round")
    parser.add_argument(
        "--poll",
        type=poll_spec,
        action="append",
        metavar="INTERVAL:N",
        help=f"polling path: N churns at INTERVAL s (repeatable; default "
        f"{POLL_INTERVAL:g}:30 and 0.05:200)",
    )
    parser.add_argument("--uevents", type=int, default=300, help="uevent path churns (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    add_record_args(parser, check=None)
    args = parser.parse_args()
    args.poll = args.poll or [(POLL_INTERVAL, 30), (0.05, 200)]
    if min(args.rounds, args.batch) < 1 or args.uevents < 0:
        parser.error("--rounds and --batch must be >= 1, --uevents >= 0")
    reason = fuse_missing()
    if reason is not None:
        print(f"native_sysfs: {reason}", file=sys.stderr)
        return 2
    section = report(args)
    return finish(args, "native_sysfs", section)


if __name__ == "__main__":
    sys.exit(main())
