"""Data-plane model speed: an 8-NF linear chain at 100 GbE line rate, as fast as possible.

    python benchmarks/dataplane_speed.py [--seconds S] [--raw-ms MS] [--runs R]

The chain is nic -> nf0 -> ... -> nf7 -> nic in one UMEM, default NFs (`flashctl.backends.
dataplane.Calibration`: ~20 Mpps a thread), offered 100 Gbit/s of 64 B frames = 148.8 Mpps.
Two shapes: one thread per NF (8 sockets; the chain carries ~19 Mpps and the NIC drops the
rest at nf0) and eight threads per NF (64 sockets, the kernel's limit; RSS spreads the load
and the chain carries line rate).

For each shape and resolution (the default 10 us, and 1 us) it reports:

- `run`: `DataPlane.run(S)` as a simulator would call it - steady states that repeat exactly
  are applied as whole cycles (counters identical to stepping, see the tests); the wall time,
  the modeled packets (offered by the NIC) per wall-second, the ratio to real time, and how
  many steps were computed;
- `raw`: every step computed (`fast_forward=False`) for `--raw-ms` of model time: the cost of
  one step, what a transient (a ramp, a burst, a rule change) runs at.

Then ring occupancy at both resolutions: when nf0's RX ring first fills at line rate (a
2,048-entry ring fills in ~14 us: 148.8 Mpps in, ~19 Mpps out), and the steady-state mean
occupancy of each NF's rings (time integrals of the per-step occupancy, over the `run`).

Figures are medians of `--runs` runs (imports and chain construction not timed).
The target (issue): >= 150 Mpps of modeled traffic per wall-second, i.e. ratio >= 1.

Then the fast forward on long cycles and waits (`--long S`, default 30 s of model time, one
run each, timed in segments so that the initial transient shows apart from the steady state):
a saturated 8-NF chain (single threads, nf4 capped at 5 Mpps, offered 10 Mpps; smart and busy
polling; target: 10 s of model time in <= 2 s of wall time), examples/load-balancer.yaml
(bursty traffic) and examples/multi-thread.yaml (a ramp, then constant traffic through
thread mappings; target: >= 1x real time once past the initial transient). `--long 0` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, TextIO

import yaml
from _common import record, section_head

from flashctl.backends.dataplane import (
    DEFAULT_RESOLUTION,
    FINE_RESOLUTION,
    PS_PER_S,
    DataPlane,
)
from flashctl.chains.spec import Chain
from flashctl.chains.units import bits_to_pps

NFS = 8
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LONG_TARGET = 2.0  # wall seconds for the first 10 s of a saturated 8-NF chain
LINE_RATE = bits_to_pps(100e9, 64)
TARGET = 1.0  # ratio to real time at line rate


def chain(threads: int) -> Chain:
    nfs = {f"nf{i}": {"queues": list(range(i * threads, (i + 1) * threads))} for i in range(NFS)}
    return linear("speed", nfs, "100Gbps")


def saturated(poll: str) -> Chain:
    """nic -> nf0 -> ... -> nf7 -> nic, one thread each, nf4 capped at 5 Mpps, 10 Mpps in."""
    nfs: dict[str, Any] = {f"nf{i}": {"queues": [i], "sim": {"poll": poll}} for i in range(NFS)}
    nfs[f"nf{NFS // 2}"]["sim"]["capacity"] = "5Mpps"
    return linear("saturated", nfs, "10Mpps")


def linear(name: str, nfs: dict[str, Any], rate: str) -> Chain:
    """nic -> the NFs in order -> nic, all in one UMEM, 64 B packets at `rate` into the first."""
    names = list(nfs)
    links = [{"from": "nic", "to": names[0]}]
    links += [{"from": a, "to": b} for a, b in pairwise(names)]
    links.append({"from": names[-1], "to": "nic"})
    spec = {
        "interface": "eth0",
        "umems": [{"name": "chain", "nfs": names}],
        "nfs": nfs,
        "links": links,
        "traffic": [{"into": names[0], "rate": rate, "size": 64}],
    }
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return Chain.model_validate({**document, "spec": spec})


def example(name: str) -> Chain:
    return Chain.model_validate(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()))


def long_runs(seconds: float) -> None:
    """One run per case, timed in segments of model time: wall, ratio, steps computed."""
    cases = {
        "8-NF saturated, smart": saturated("smart"),
        "8-NF saturated, busy": saturated("busy"),
        "load-balancer.yaml": example("load-balancer"),
        "multi-thread.yaml": example("multi-thread"),
    }
    edges = sorted({0.0, *(x for x in (1.0, 10.0, 20.0) if x < seconds), seconds})
    print(f"\nlong runs (fast forward): {seconds:g} s of model time, one run each, in segments")
    print(f"target: 8-NF saturated, first 10 s in <= {LONG_TARGET:g} s wall; examples >= 1x\n")
    header = ["case", "model s", "wall s", "ratio", "computed steps", "cumulative wall s"]
    print(row(header))
    print(row(["---"] * len(header)))
    for label, document in cases.items():
        plane = DataPlane.from_chain(document)
        total = 0.0
        for a, b in pairwise(edges):
            computed = plane.steps - plane.skipped_steps
            start = time.perf_counter()
            plane.run(b)
            wall = time.perf_counter() - start
            total += wall
            done = plane.steps - plane.skipped_steps - computed
            ratio = (b - a) / wall if wall else float("inf")
            print(
                row(
                    [
                        label,
                        f"{a:g}-{b:g}",
                        f"{wall:.3f}",
                        f"{ratio:,.2f}",
                        f"{done:,} of {round((b - a) / plane.resolution):,}",
                        f"{total:.2f}",
                    ]
                )
            )


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    model: float  # seconds of model time
    offered: int  # packets the NIC offered in that time
    carried: int  # packets that left on the wire
    computed: int  # steps computed (the rest were skipped as repeated cycles)
    steps: int

    @property
    def ratio(self) -> float:
        return self.model / self.wall

    @property
    def modeled_pps(self) -> float:
        return self.offered / self.wall


def timed(make: Callable[[], DataPlane], seconds: float, runs: int) -> tuple[Timing, DataPlane]:
    results: list[tuple[Timing, DataPlane]] = []
    for _ in range(runs):
        plane = make()
        start = time.perf_counter()
        plane.run(seconds)
        wall = time.perf_counter() - start
        totals = plane.conservation()
        timing = Timing(
            wall=wall,
            model=plane.now,
            offered=totals.offered,
            carried=totals.egress,
            computed=plane.steps - plane.skipped_steps,
            steps=plane.steps,
        )
        results.append((timing, plane))
    results.sort(key=lambda r: r[0].wall)
    return results[len(results) // 2]


def first_full(threads: int, resolution: float) -> float | None:
    """Model time by which nf0 thread 0's RX ring was first full: the end of the first step
    in which the NIC found no room (the ring fills mid-step, before the thread's turn)."""
    plane = DataPlane.from_chain(chain(threads), resolution=resolution, fast_forward=False)
    fid = plane.flash_ids[0]
    while plane.now < 1e-3:
        plane.step()
        if plane.counters(fid)["rx_ring_full"]:
            return plane.now
    return None


def mean_occupancy(plane: DataPlane, threads: int) -> list[tuple[float, float]]:
    """Per NF, mean RX and TX occupancy of its threads over the run (from the time integrals
    of the per-step occupancy)."""
    span = plane.now_ps
    rows = []
    for i in range(NFS):
        ids = plane.flash_ids[i * threads : (i + 1) * threads]
        rx = statistics.fmean(plane.counters(fid)["rx_wait_ps"] / span for fid in ids)
        tx = statistics.fmean(plane.counters(fid)["tx_wait_ps"] / span for fid in ids)
        rows.append((rx, tx))
    return rows


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="model time of `run`")
    parser.add_argument("--raw-ms", type=float, default=20.0, help="model time stepped raw")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--long", type=float, default=30.0, help="model time of the long runs")
    parser.add_argument("--record", action="store_true", help="record in RESULTS.md")
    args = parser.parse_args()
    output = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, output)):
        report(args)
    if args.record:
        title = "## dataplane_speed: the simulated data plane against real time"
        section = [
            *section_head(title, from_root=False),
            "",
            "```",
            output.getvalue().rstrip(),
            "```",
        ]
        print(f"recorded in {record('dataplane_speed', chr(10).join(section))}")


class Tee(io.TextIOBase):
    """Print and keep: the report goes to the terminal and, verbatim, into RESULTS.md."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)


def report(args: argparse.Namespace) -> None:

    resolutions = {"10 us (default)": DEFAULT_RESOLUTION, "1 us (fine)": FINE_RESOLUTION}
    print(f"offered: {LINE_RATE / 1e6:.1f} Mpps (100 GbE, 64 B); model time {args.seconds} s")
    print(f"median of {args.runs} runs; target ratio >= {TARGET} (>= 150 Mpps modeled/wall-s)\n")
    header = [
        "sockets",
        "resolution",
        "mode",
        "model s",
        "wall s",
        "ratio",
        "modeled Mpps/wall-s",
        "carried Mpps",
        "computed steps",
        "us/step",
    ]
    print(row(header))
    print(row(["---"] * len(header)))
    planes: dict[tuple[int, str], DataPlane] = {}
    for threads in (1, NFS):
        for label, resolution in resolutions.items():
            document = chain(threads)
            for mode, fast, seconds in (
                ("run", True, args.seconds),
                ("raw", False, args.raw_ms / 1e3 / (10 if resolution < 5e-6 else 1)),
            ):
                make = partial(
                    DataPlane.from_chain, document, resolution=resolution, fast_forward=fast
                )
                timing, plane = timed(make, seconds, args.runs)
                if fast:
                    planes[threads, label] = plane
                verdict = "PASS" if timing.ratio >= TARGET else "below"
                print(
                    row(
                        [
                            threads * NFS,
                            label,
                            mode,
                            f"{timing.model:g}",
                            f"{timing.wall:.3f}",
                            f"{timing.ratio:.2f} {verdict}",
                            f"{timing.modeled_pps / 1e6:,.0f}",
                            f"{timing.carried / timing.model / 1e6:.2f}",
                            f"{timing.computed:,} of {timing.steps:,}",
                            f"{timing.wall / max(timing.computed, 1) * 1e6:.1f}",
                        ]
                    )
                )

    print("\nnf0 thread 0 RX ring (2,048 entries) first full, model time from an empty chain:")
    for threads in (1, NFS):
        for label, resolution in resolutions.items():
            at = first_full(threads, resolution)
            shown = f"{at * 1e6:5.1f} us" if at is not None else "never (the threads keep up)"
            print(f"  {threads * NFS:>2} sockets, {label:>15}: {shown}")

    print("\nmean ring occupancy per NF over the run (entries, averaged over its threads):")
    labels = list(resolutions)
    for threads in (1, NFS):
        print(f"\n{threads * NFS} sockets")
        print(row(["NF", *(f"RX @ {x}" for x in labels), *(f"TX @ {x}" for x in labels)]))
        print(row(["---"] * 5))
        occupancy = [mean_occupancy(planes[threads, x], threads) for x in labels]
        for i in range(NFS):
            rx = [f"{occ[i][0]:.0f}" for occ in occupancy]
            tx = [f"{occ[i][1]:.0f}" for occ in occupancy]
            print(row([f"nf{i}", *rx, *tx]))
    latency = {x: planes[1, x].latency() for x in labels}
    print(
        "\nmean queueing delay, 8 sockets: "
        + ", ".join(f"{x}: {v * 1e6:.1f} us" for x, v in latency.items() if v is not None)
    )
    print(f"(1 s of model time = {PS_PER_S:,} ps; costs: flashctl.backends.dataplane)")
    if args.long > 0:
        long_runs(args.long)


if __name__ == "__main__":
    main()
