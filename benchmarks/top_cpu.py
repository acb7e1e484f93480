"""`flashctl top`'s own CPU: a 64-socket chain refreshed at 10 Hz.

    python benchmarks/top_cpu.py [--seconds S] [--rounds R] [--record] [--check]

The chain is nic -> nf0 -> ... -> nf7 -> nic, eight threads per NF (64 sockets, the kernel's
limit), one UMEM, offered 20 Mpps of 64 B frames. Target (issue): the view itself uses at
most 5 % of one core refreshing at 10 Hz. Two measurements, each with its baseline in the
same run:

1. In process, no agent: replies of the agent's `top` op (built from the data-plane model at
   successive instants, JSON-encoded as the agent sends them) fed to `topview.live` at
   10 Hz, drawing full screen on a pseudo-terminal of 160 x 80 (a thread drains it). CPU is
   the drawing thread's CPU time over the wall time. Baselines: the same loop decoding the
   replies without analysing or drawing them (the floor of any view of this data), and the
   loop alone. Per frame, the cost of each stage (median of all frames).
2. End to end: `flashctl top --interval 0.1` as its own process on a pseudo-terminal, with a
   real agent (sim backend) running the chain; its CPU from /proc/<pid>/stat (utime + stime)
   over `--seconds`, after a warm-up that leaves out its start-up; then `q` is typed and it
   must exit 0. Baseline: a client process calling the `top` op at 10 Hz and decoding the
   replies (no view). The agent's CPU in the same windows is shown for information (its
   data-plane model, capped at a share of a core, plus serving `top`).

Rounds interleave the cases; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from _common import (
    REPO,
    AgentProcess,
    add_record_args,
    finish,
    median,
    running_agent,
    section_head,
    table,
)
from _common import verdict as word
from cold_start import child_env, find_launcher
from rich.console import Console

from flashctl import topview
from flashctl.analysis import Snapshot, SocketView
from flashctl.backends.dataplane import DataPlane
from flashctl.chains.spec import Chain
from flashctl.chains.topology import expand

NFS = 8
THREADS = 8
RATE = "20Mpps"
HZ = 10.0
LIMIT = 0.05  # of one core
COLUMNS, ROWS = 160, 80
REPLY_SPACING = 0.002  # model seconds between the in-process replies

# A client with no view: the `top` op at 10 Hz, replies decoded (Client.call does that).
_BASELINE_CHILD = """
import sys, time
from flashctl.client import Client
from flashctl.home import resolve_home
with Client(resolve_home(), autostart=False, say=lambda _t: None) as client:
    due = time.monotonic()
    while True:
        client.call("top")
        due += 1 / float(sys.argv[1])
        time.sleep(max(0.0, due - time.monotonic()))
"""

# The agent's data-plane model state (lag, speed), as `top` reports it.
_MODEL_CHILD = """
import json
from flashctl.client import Client
from flashctl.home import resolve_home
with Client(resolve_home(), autostart=False, say=lambda _t: None) as client:
    print(json.dumps(client.call("top")["model"]))
"""


def chain_document() -> dict[str, Any]:
    names = [f"nf{i}" for i in range(NFS)]
    hops = ["nic", *names, "nic"]
    return {
        "apiVersion": "flashctl/v1",
        "kind": "Chain",
        "metadata": {"name": "big"},
        "spec": {
            "interface": "eth0",
            "umems": [{"name": "all", "nfs": names}],
            "nfs": {
                name: {"queues": list(range(i * THREADS, (i + 1) * THREADS))}
                for i, name in enumerate(names)
            },
            "links": [{"from": a, "to": b} for a, b in pairwise(hops)],
            "traffic": [{"into": names[0], "rate": RATE, "size": 64}],
        },
    }


# --- in process ------------------------------------------------------------------------------


def replies(count: int) -> list[bytes]:
    """`count` agent replies for the chain, REPLY_SPACING of model time apart, as JSON."""
    chain = Chain.model_validate(chain_document())
    topology = expand(chain)
    ids = {s.key: i for i, s in enumerate(topology.sockets)}
    plane = DataPlane.from_chain(chain, ids=ids)
    found = []
    for k in range(count):
        plane.run(0.05 + k * REPLY_SPACING)  # past the start-up transient
        sampled = {s.flash_id: s for s in plane.sample().sockets}
        views = []
        for spec in topology.sockets:
            fid = ids[spec.key]
            targets = tuple(ids[t] for t in topology.next_of(spec.key))
            views.append(
                SocketView(
                    fid,
                    "big",
                    spec.key.nf,
                    spec.key.thread,
                    spec.interface,
                    spec.queue,
                    "zero-copy" if targets else "egress",
                    targets,
                    asdict(sampled[fid].rings),
                    sampled[fid].counters,
                )
            )
        data = {
            "backend": "sim",
            "counters": True,
            "snapshot": Snapshot(plane.now, tuple(views)).to_data(),
            "model": {"time": plane.now, "lag": 0.0, "speed": 1.0, "chains": {}},
        }
        found.append(json.dumps(data).encode())
    return found


@contextlib.contextmanager
def terminal() -> Iterator[Console]:
    """A rich console on a pseudo-terminal of COLUMNS x ROWS, drained by a thread."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                os.read(master, 1 << 16)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = os.fdopen(slave, "w", encoding="utf-8", closefd=False)
    try:
        yield Console(file=out, width=COLUMNS, height=ROWS, color_system="256")
    finally:
        stop.set()
        out.close()
        os.close(slave)  # the drain thread's read fails and it ends
        reader.join(5)
        os.close(master)


class Feed:
    """The agent stand-in: the next reply on every call, decoded as the client does."""

    def __init__(self, data: list[bytes]) -> None:
        self.data = data
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        raw = self.data[min(self.calls, len(self.data) - 1)]
        self.calls += 1
        decoded: dict[str, Any] = json.loads(raw)
        return decoded


@dataclass(frozen=True)
class Share:
    cpu: float  # seconds
    wall: float  # seconds

    @property
    def core(self) -> float:
        return self.cpu / self.wall


def timed_loop(step: Callable[[], object], seconds: float) -> Share:
    """`step` at HZ for `seconds`, sleeping between: this thread's CPU over the wall time."""
    frames = round(seconds * HZ)
    start_cpu, start = time.thread_time(), time.monotonic()
    due = start
    for _ in range(frames):
        step()
        due += 1 / HZ
        time.sleep(max(0.0, due - time.monotonic()))
    return Share(time.thread_time() - start_cpu, time.monotonic() - start)


def view_share(data: list[bytes], seconds: float) -> Share:
    """`topview.live` itself, full screen, no keys."""
    with terminal() as console:
        start_cpu, start = time.thread_time(), time.monotonic()
        topview.live(
            Feed(data),
            interval=1 / HZ,
            chain=None,
            console=console,
            keys=topview.NoKeys(),
            frames=round(seconds * HZ),
        )
        return Share(time.thread_time() - start_cpu, time.monotonic() - start)


def stage_costs(data: list[bytes]) -> dict[str, float]:
    """Median seconds per frame of each stage, drawing on the pseudo-terminal."""
    costs: dict[str, list[float]] = {"decode": [], "analyse": [], "build": [], "draw": []}
    state = topview.ViewState()
    previous: topview.TopSample | None = None
    with terminal() as console, topview.display(console, screen=True) as show:
        for raw in data:
            t0 = time.thread_time()
            sample = topview.TopSample.from_data(json.loads(raw))
            t1 = time.thread_time()
            analysis = topview.analyse(previous, sample)
            t2 = time.thread_time()
            frame = topview.render(analysis, state, interval=1 / HZ)
            t3 = time.thread_time()
            show(frame)
            t4 = time.thread_time()
            previous = sample
            for key, value in zip(costs, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                costs[key].append(value)
    return {key: median(values[1:]) for key, values in costs.items()}  # the first has no rates


# --- end to end ------------------------------------------------------------------------------


_W = TypeVar("_W")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Window:
    process: Share
    agent: Share


def measured(pid: int, agent: AgentProcess, warmup: float, seconds: float) -> Window:
    time.sleep(warmup)
    own, theirs, start = cpu_seconds(pid), cpu_seconds(agent.pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    return Window(Share(cpu_seconds(pid) - own, wall), Share(cpu_seconds(agent.pid) - theirs, wall))


def top_process(
    prefix: tuple[str, ...], env: dict[str, str], agent: AgentProcess, warmup: float, seconds: float
) -> Window:
    """`flashctl top --interval 0.1` on a pseudo-terminal; `q` ends it (it must exit 0)."""
    return top_on_pty(
        prefix, env, lambda pid: measured(pid, agent, warmup, seconds), expect=b"bottleneck"
    )


def top_on_pty(
    prefix: tuple[str, ...], env: dict[str, str], measure: Callable[[int], _W], *, expect: bytes
) -> _W:
    """Run `flashctl top --interval 1/HZ` on a pseudo-terminal of COLUMNS x ROWS (a thread
    drains it), `measure(pid)` it, then type `q`: it must exit 0 having drawn `expect`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    process = subprocess.Popen(
        [*prefix, "top", "--interval", str(1 / HZ)],
        cwd=REPO,
        env={**env, "TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(ROWS)},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    drained = io.BytesIO()
    reader = threading.Thread(target=_drain, args=(master, drained), daemon=True)
    reader.start()
    try:
        window = measure(process.pid)
        os.write(master, b"q")
        code = process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(5)
        os.close(master)
    if code != 0:
        tail = drained.getvalue()[-2000:].decode(errors="replace")
        raise SystemExit(f"flashctl top exited {code} after q:\n{tail}")
    if expect not in drained.getvalue():
        raise SystemExit(f"flashctl top never drew {expect.decode()!r}")
    return window


def _drain(fd: int, into: io.BytesIO) -> None:
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        into.write(chunk)


def baseline_process(
    env: dict[str, str], agent: AgentProcess, warmup: float, seconds: float
) -> Window:
    return top_op_client(env, lambda pid: measured(pid, agent, warmup, seconds))


def top_op_client(env: dict[str, str], measure: Callable[[int], _W]) -> _W:
    """The baseline of any view: a client calling the agent's `top` op at HZ and decoding
    the replies, nothing drawn; `measure(pid)` it, then end it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _BASELINE_CHILD, str(HZ)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        return measure(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def apply_chain(prefix: tuple[str, ...], env: dict[str, str], agent: AgentProcess) -> None:
    path = agent.home / "big.json"  # JSON is YAML
    path.write_text(json.dumps(chain_document()))
    done = subprocess.run(
        [*prefix, "apply", str(path), "--wait"], cwd=REPO, env=env, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"apply failed ({done.returncode}):\n{done.stderr.decode()}")


# --- report ----------------------------------------------------------------------------------


def pct(share: float) -> str:
    return f"{share * 100:.2f} %"


def report(args: argparse.Namespace) -> tuple[str, bool]:
    launcher = find_launcher()
    frames = round(args.seconds * HZ)
    print(f"building {frames + 1} replies of the 64-socket chain from the model ...")
    data = replies(frames + 1)
    size = median([len(d) for d in data])
    in_process: dict[str, list[float]] = {"view": [], "decode": [], "idle": []}
    for number in range(args.rounds):
        print(f"in-process round {number + 1}/{args.rounds} ...")
        in_process["view"].append(view_share(data, args.seconds).core)
        feed = Feed(data)
        in_process["decode"].append(timed_loop(feed, args.seconds).core)
        in_process["idle"].append(timed_loop(lambda: None, args.seconds).core)
    stages = stage_costs(data)

    base_env = child_env()
    ends: dict[str, list[Window]] = {"top": [], "baseline": []}
    with running_agent(launcher.prefix, base_env) as agent:
        env = agent.env(base_env)
        apply_chain(launcher.prefix, env, agent)
        for number in range(args.rounds):
            print(f"end-to-end round {number + 1}/{args.rounds} ...")
            ends["top"].append(top_process(launcher.prefix, env, agent, args.warmup, args.seconds))
            ends["baseline"].append(baseline_process(env, agent, args.warmup, args.seconds))
        model = json.loads(
            subprocess.run(
                [sys.executable, "-c", _MODEL_CHILD], cwd=REPO, env=env, capture_output=True
            ).stdout
        )

    view = median(in_process["view"])
    top = median([w.process.core for w in ends["top"]])
    lines = [
        *section_head("## top_cpu: `flashctl top` at 10 Hz on a 64-socket chain"),
        f"- flashctl started as: {launcher.description}",
        f"- chain: nic -> nf0 -> ... -> nf7 -> nic, {THREADS} threads per NF (64 sockets), one "
        f"UMEM, {RATE} of 64 B frames; a `top` reply is {size / 1024:.0f} KiB of JSON",
        f"- {args.rounds} interleaved rounds of {args.seconds:g} s per case; medians over rounds",
        f"- terminal: pseudo-terminal {COLUMNS} x {ROWS}, 256 colours, full screen",
        "",
        "In process (no agent; replies from the data-plane model, decoded as the client does; "
        "the drawing thread's CPU time over wall time):",
        "",
    ]
    rows = [
        ["`topview.live` at 10 Hz (fetch, decode, analyse, draw)", pct(view)],
        ["baseline: fetch and decode only, at 10 Hz", pct(median(in_process["decode"]))],
        ["baseline: the 10 Hz loop alone", pct(median(in_process["idle"]))],
    ]
    lines += table(["case", "share of one core"], rows)
    lines += ["", "Per frame (median over the frames of one run):", ""]
    lines += table(
        ["stage", "ms"],
        [
            ["decode the JSON reply, build the snapshot", f"{stages['decode'] * 1e3:.2f}"],
            ["analysis: rates, summaries, bottlenecks", f"{stages['analyse'] * 1e3:.2f}"],
            ["build the frame", f"{stages['build'] * 1e3:.2f}"],
            ["draw it (rich Live, full screen, to the terminal)", f"{stages['draw'] * 1e3:.2f}"],
        ],
    )
    lines += [
        "",
        f"End to end (a real agent, sim backend, the chain applied; CPU from /proc/<pid>/stat "
        f"over {args.seconds:g} s after a {args.warmup:g} s warm-up):",
        "",
    ]
    lines += table(
        ["process", "its CPU, share of one core", "agent meanwhile"],
        [
            [
                "`flashctl top --interval 0.1`",
                pct(top),
                pct(median([w.agent.core for w in ends["top"]])),
            ],
            [
                "baseline: a client calling `top` at 10 Hz, no view",
                pct(median([w.process.core for w in ends["baseline"]])),
                pct(median([w.agent.core for w in ends["baseline"]])),
            ],
        ],
    )
    behind = model["lag"] > 0.5
    lines += [
        "",
        f"The agent's data-plane model at the end: lag {model['lag']:.2f} s, "
        f"speed {model['speed'] or 0.0:.2f}x real time, capped at {model['share']:.0%} of a core"
        + (" (it cannot keep up with this chain; `top` says so)." if behind else "."),
    ]
    checks = [
        ("`topview.live` at 10 Hz, in process: <= 5 % of one core", pct(view), view <= LIMIT),
        ("`flashctl top --interval 0.1` process: <= 5 % of one core", pct(top), top <= LIMIT),
    ]
    lines += ["", "Verdicts (medians):", ""]
    lines += table(["target", "measured", "verdict"], [[t, m, word(ok)] for t, m, ok in checks])
    return "\n".join(lines) + "\n", all(ok for _, _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="end to end: seconds first")
    parser.add_argument("-n", "--rounds", type=int, default=3, help="interleaved rounds")
    add_record_args(parser, check="exit 1 if a target fails")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1 or args.warmup < 0:
        parser.error("--seconds must be > 0, --rounds >= 1, --warmup >= 0")
    section, passed = report(args)
    return finish(args, "top_cpu", section, passed)


if __name__ == "__main__":
    sys.exit(main())
