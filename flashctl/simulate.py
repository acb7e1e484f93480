"""`flashctl simulate`: a chain's data plane run as fast as possible, sampled, summarised.

The chain gets the flash-ids `flashctl plan` shows (`projected_inventory`), its rules as the
plan writes them, and its own `spec.traffic` (scaled by `--rate`). `simulate` advances the
model (`flashctl.backends.dataplane`) for `duration` of model time, taking a snapshot every
`interval`; the per-interval rates make the time series that `flashctl.simviews` plots, and
the rates between the first and the last snapshot make the summary, so its packet counts are
the model's own counters. `sweep` runs the chain at several offered loads and finds where it
saturates: the first load at which less than 99% of the offered packets are delivered,
refined by bisection.

No I/O here: rendering and files are `flashctl.simviews`' and the CLI's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final

from flashctl.analysis import (
    RING_FIELDS,
    Bottleneck,
    ChainSummary,
    Snapshot,
    SocketRates,
    SocketView,
    find_bottlenecks,
    rates,
    summarize,
)
from flashctl.backends.base import Rings, Sample
from flashctl.backends.dataplane import DEFAULT_RESOLUTION, Conservation, DataPlane
from flashctl.chains.planner import Plan, plan, projected_inventory
from flashctl.chains.spec import Chain
from flashctl.chains.topology import expand
from flashctl.chains.units import WIRE_OVERHEAD_BYTES, Rate
from flashctl.errors import InputError
from flashctl.serialize import envelope

DEFAULT_DURATION: Final = 10.0  # seconds of model time
TARGET_POINTS: Final = 300  # samples the default interval aims for (plots: 200-500 points)
SATURATED: Final = 0.99  # delivered / offered below this: the chain is saturated
BISECTIONS: Final = 6  # refinement steps between the last good and first saturated load

Progress = Callable[[float], None]  # called with the fraction of the work done


# --- snapshots of a planned chain ------------------------------------------------------------


def snapshot_of(
    sample: Sample, plans: Sequence[Plan], rules: Mapping[int, Sequence[int]] | None = None
) -> Snapshot:
    """A backend sample with each socket placed in its chain (sockets no plan binds are left
    out). `rules` are the `next` lists the kernel has, when they may differ from the plans'."""
    placed = {b.flash_id: (p, b) for p in plans for b in p.bindings if b.flash_id is not None}
    views = []
    for socket in sample.sockets:
        found = placed.get(socket.flash_id)
        if found is None:
            continue
        owner, binding = found
        rule = owner.rule_for(socket.flash_id)
        targets = rules.get(socket.flash_id) if rules is not None else None
        if targets is None:
            targets = rule.next if rule is not None and rule.next is not None else ()
        views.append(
            SocketView(
                flash_id=socket.flash_id,
                chain=owner.chain,
                nf=binding.socket.nf,
                thread=binding.socket.thread,
                interface=binding.interface,
                queue=binding.queue,
                mode=_mode(owner, binding.socket.nf, rule.modes if rule is not None else ()),
                targets=tuple(targets),
                rings=_rings(socket.rings),
                counters=dict(socket.counters),
            )
        )
    return Snapshot(sample.at, tuple(views))


def _mode(owner: Plan, nf: str, modes: Sequence[str]) -> str:
    if modes:
        return modes[0] if len(set(modes)) == 1 else "mixed"
    return "egress" if nf in owner.topology.egress else "sink"


def _rings(rings: Rings) -> dict[str, int]:
    return {name: int(getattr(rings, name)) for name in RING_FIELDS}


# --- offered load ----------------------------------------------------------------------------


def offered_pps(chain: Chain) -> float:
    """The chain's offered load: the sum of its traffic sources' packet rates."""
    return sum(t.pps for t in chain.spec.traffic)


def require_traffic(chain: Chain) -> None:
    if chain.spec.traffic:
        return
    ingress = expand(chain).ingress
    into = ingress[0] if ingress else next(iter(chain.spec.nfs))
    raise InputError(
        f"chain {chain.name!r} has no traffic to simulate",
        f"add spec.traffic, e.g. `traffic: [{{into: {into}, rate: 5Mpps, size: 64B}}]`",
    )


def scaled(chain: Chain, factor: float) -> Chain:
    """The chain with every traffic source's rate multiplied by `factor`."""
    traffic = [
        t.model_copy(update={"rate": Rate(t.rate.value * factor, t.rate.per_bit)})
        for t in chain.spec.traffic
    ]
    spec = chain.spec.model_copy(update={"traffic": traffic})
    return chain.model_copy(update={"spec": spec})


def load_factor(chain: Chain, load: Rate) -> float:
    """The factor that makes the chain's total offered load `load` (a packet or a bit rate;
    a bit rate counts each source's frames with their wire overhead)."""
    if load.per_bit:
        bits = sum(t.pps * (t.size + WIRE_OVERHEAD_BYTES) * 8 for t in chain.spec.traffic)
        return load.value / bits
    return load.value / offered_pps(chain)


def load_pps(chain: Chain, load: Rate) -> float:
    """`load` as the chain's total packet rate."""
    return offered_pps(chain) * load_factor(chain, load)


# --- a run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Per-interval values, one per sample after the first; NFs in chain order."""

    times: tuple[float, ...]  # end of each interval, model seconds
    offered: tuple[float, ...]  # pps
    delivered: tuple[float, ...]  # pps
    throughput: dict[str, tuple[float, ...]]  # NF -> processed pps
    rx: dict[str, tuple[float, ...]]  # NF -> mean RX occupancy of its fullest thread (0..1)
    tx: dict[str, tuple[float, ...]]

    def to_data(self) -> dict[str, Any]:
        return {
            "times": list(self.times),
            "offeredPps": list(self.offered),
            "deliveredPps": list(self.delivered),
            "throughputPps": {k: list(v) for k, v in self.throughput.items()},
            "rxOccupancy": {k: list(v) for k, v in self.rx.items()},
            "txOccupancy": {k: list(v) for k, v in self.tx.items()},
        }


@dataclass(frozen=True)
class CpuByPoll:
    """CPU of the threads of one polling mode, in cores."""

    poll: str
    threads: int
    cores: float


@dataclass(frozen=True)
class Simulation:
    chain: str
    duration: float
    resolution: float
    interval: float
    summary: ChainSummary  # between the first and the last snapshot: the whole run
    bottleneck: Bottleneck
    cpu: tuple[CpuByPoll, ...]
    latency: float | None  # mean queueing delay, seconds
    conservation: Conservation
    series: Series
    wall: float  # seconds the model took to run
    steps: int
    computed_steps: int
    plots: tuple[str, ...] = field(default=())

    def to_data(self) -> dict[str, Any]:
        c = self.conservation
        return {
            "chain": self.chain,
            "durationSeconds": self.duration,
            "resolutionSeconds": self.resolution,
            "intervalSeconds": self.interval,
            "summary": self.summary.to_data(),
            "bottleneck": self.bottleneck.to_data(),
            "cpuByPoll": [
                {"poll": x.poll, "threads": x.threads, "cores": x.cores} for x in self.cpu
            ],
            "latencySeconds": self.latency,
            "conservation": {
                "offered": c.offered,
                "droppedRingFull": c.dropped_ring_full,
                "droppedNoFrame": c.dropped_no_frame,
                "egress": c.egress,
                "sunk": c.sunk,
                "queued": c.queued,
                "balanced": c.balanced,
            },
            "steps": self.steps,
            "computedSteps": self.computed_steps,
            "wallSeconds": self.wall,
            "plots": list(self.plots),
            "series": self.series.to_data(),
        }


def default_interval(duration: float, resolution: float) -> float:
    """About `TARGET_POINTS` samples, each a whole number of steps."""
    steps = max(1, round(duration / TARGET_POINTS / resolution))
    return steps * resolution


def sample_times(duration: float, interval: float, resolution: float) -> list[float]:
    """When to sample: every whole number of steps closest to `interval`, then at `duration`.
    A sample between step boundaries would cut a step short and change the run (the model is
    exact per step), so samples fall on boundaries and the run equals one `run(duration)`."""
    every = max(1, round(interval / resolution))
    count = max(1, round(duration / resolution)) // every
    times = [k * every * resolution for k in range(1, count + 1)]
    if not times or times[-1] < duration * (1 - 1e-12):
        times.append(duration)
    else:
        times[-1] = duration
    return times


def planned(chain: Chain, taken: Sequence[int] = ()) -> Plan:
    """The chain planned on the flash-ids `flashctl plan` projects for it."""
    topology = expand(chain)
    return plan(chain, projected_inventory(chain, taken, topology), topology)


def simulate(
    chain: Chain,
    *,
    duration: float = DEFAULT_DURATION,
    interval: float | None = None,
    resolution: float = DEFAULT_RESOLUTION,
    taken: Sequence[int] = (),
    progress: Progress | None = None,
) -> Simulation:
    """Run the chain's data plane for `duration` seconds of model time, as fast as possible."""
    require_traffic(chain)
    interval = interval if interval is not None else default_interval(duration, resolution)
    chain_plan = planned(chain, taken)
    plane = DataPlane.from_plan(chain, chain_plan, resolution=resolution)
    cost = _costs(plane)
    started = time.perf_counter()
    snapshots = [snapshot_of(plane.sample(), [chain_plan])]
    times = sample_times(duration, interval, plane.resolution)
    for at in times:
        plane.run(at)
        snapshots.append(snapshot_of(plane.sample(), [chain_plan]))
        if progress is not None:
            progress(at / duration)
    wall = time.perf_counter() - started
    whole = rates(snapshots[0], snapshots[-1], **cost)
    (summary,) = summarize(snapshots[-1], whole)
    (bottleneck,) = find_bottlenecks(snapshots[-1], whole)
    return Simulation(
        chain=chain.name,
        duration=duration,
        resolution=plane.resolution,
        interval=times[0],
        summary=summary,
        bottleneck=bottleneck,
        cpu=_cpu_by_poll(chain, snapshots[-1], whole),
        latency=plane.latency(),
        conservation=plane.conservation(),
        series=_series(snapshots, [nf.nf for nf in summary.nfs], cost),
        wall=wall,
        steps=plane.steps,
        computed_steps=plane.steps - plane.skipped_steps,
    )


def _costs(plane: DataPlane) -> dict[str, float]:
    """The model's costs of an empty poll and a wake-up, for the busy-time estimate."""
    cal = plane.calibration
    return {"poll_seconds": cal.poll_ns * 1e-9, "wake_seconds": cal.wake_cpu_ns * 1e-9}


def _series(snapshots: Sequence[Snapshot], nfs: Sequence[str], cost: Mapping[str, float]) -> Series:
    times: list[float] = []
    offered: list[float] = []
    delivered: list[float] = []
    throughput: dict[str, list[float]] = {nf: [] for nf in nfs}
    rx: dict[str, list[float]] = {nf: [] for nf in nfs}
    tx: dict[str, list[float]] = {nf: [] for nf in nfs}
    for before, after in pairwise(snapshots):
        (summary,) = summarize(after, rates(before, after, **cost))
        times.append(after.at)
        offered.append(summary.offered_pps)
        delivered.append(summary.delivered_pps)
        for nf in summary.nfs:
            throughput[nf.nf].append(nf.processed_pps)
            rx[nf.nf].append(nf.rx_occupancy)
            tx[nf.nf].append(nf.tx_occupancy)

    def frozen(values: dict[str, list[float]]) -> dict[str, tuple[float, ...]]:
        return {k: tuple(v) for k, v in values.items()}

    return Series(
        tuple(times), tuple(offered), tuple(delivered), frozen(throughput), frozen(rx), frozen(tx)
    )


def _cpu_by_poll(
    chain: Chain, snapshot: Snapshot, known: Mapping[int, SocketRates]
) -> tuple[CpuByPoll, ...]:
    totals: dict[str, list[float]] = {}
    for socket in snapshot.sockets:
        poll = chain.spec.nfs[socket.nf].sim.poll or chain.spec.sim.poll
        found = known.get(socket.flash_id)
        totals.setdefault(poll, []).append(found.cpu if found is not None else 0.0)
    return tuple(CpuByPoll(poll, len(v), sum(v)) for poll, v in sorted(totals.items()))


def simulations_data(runs: Sequence[Simulation]) -> dict[str, Any]:
    return envelope("SimulationList", items=[r.to_data() for r in runs])


# --- sweeps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepPoint:
    """The chain in steady state (the second half of a run) at one offered load."""

    load: float  # the load asked for, pps
    offered_pps: float  # measured at the NIC
    delivered_pps: float
    drops_pps: dict[str, float]
    bottleneck: Bottleneck
    refined: bool = False  # a bisection point rather than a point of the grid

    @property
    def saturated(self) -> bool:
        return self.delivered_pps < SATURATED * self.offered_pps

    def to_data(self) -> dict[str, Any]:
        return {
            "loadPps": self.load,
            "offeredPps": self.offered_pps,
            "deliveredPps": self.delivered_pps,
            "dropsPps": dict(self.drops_pps),
            "saturated": self.saturated,
            "refined": self.refined,
            "bottleneck": self.bottleneck.to_data(),
        }


@dataclass(frozen=True)
class Sweep:
    """Points by load. `saturation`: the lowest load found saturated after bisection (None:
    none of the loads saturates the chain), `below` the highest load found not saturated."""

    chain: str
    duration: float
    points: tuple[SweepPoint, ...]
    saturation: float | None
    below: float | None
    plots: tuple[str, ...] = ()

    @property
    def capacity(self) -> float:
        """The most the chain delivered at any load."""
        return max((p.delivered_pps for p in self.points), default=0.0)

    def to_data(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "durationSeconds": self.duration,
            "saturationPps": self.saturation,
            "highestUnsaturatedPps": self.below,
            "capacityPps": self.capacity,
            "plots": list(self.plots),
            "points": [p.to_data() for p in self.points],
        }


def sweeps_data(sweeps: Sequence[Sweep]) -> dict[str, Any]:
    return envelope("SweepList", items=[s.to_data() for s in sweeps])


def grid(start: float, stop: float, steps: int) -> list[float]:
    """`steps` loads from `start` to `stop`, evenly spaced, both included."""
    if steps == 1:
        return [start]
    return [start + (stop - start) * i / (steps - 1) for i in range(steps)]


def sweep(
    chain: Chain,
    loads: Sequence[float],
    *,
    duration: float = DEFAULT_DURATION,
    resolution: float = DEFAULT_RESOLUTION,
    taken: Sequence[int] = (),
    progress: Progress | None = None,
) -> Sweep:
    """Run the chain at each total offered load (pps, ascending), then bisect between the last
    unsaturated and the first saturated one."""
    require_traffic(chain)
    base = offered_pps(chain)
    chain_plan = planned(chain, taken)
    work = len(loads) + BISECTIONS
    done = 0

    def measure(load: float, refined: bool = False) -> SweepPoint:
        nonlocal done
        point = _steady(scaled(chain, load / base), chain_plan, load, duration, resolution, refined)
        done += 1
        if progress is not None:
            progress(min(done / work, 1.0))
        return point

    points = [measure(load) for load in loads]
    first = next((i for i, p in enumerate(points) if p.saturated), None)
    if first is None:
        below, saturation = (loads[-1] if loads else None), None
    elif first == 0:
        below, saturation = None, loads[0]
    else:
        below, saturation = loads[first - 1], loads[first]
        for _ in range(BISECTIONS):
            middle = measure((below + saturation) / 2, refined=True)
            points.append(middle)
            if middle.saturated:
                saturation = middle.load
            else:
                below = middle.load
    if progress is not None:
        progress(1.0)
    ordered = tuple(sorted(points, key=lambda p: p.load))
    return Sweep(chain.name, duration, ordered, saturation, below)


def _steady(
    chain: Chain,
    chain_plan: Plan,
    load: float,
    duration: float,
    resolution: float,
    refined: bool,
) -> SweepPoint:
    """Rates over the second half of a run: the rings have filled (or not) by then, so
    delivered packets are not confused with packets still queued."""
    plane = DataPlane.from_plan(chain, chain_plan, resolution=resolution)
    cost = _costs(plane)
    plane.run(duration / 2)
    middle = snapshot_of(plane.sample(), [chain_plan])
    plane.run(duration)
    end = snapshot_of(plane.sample(), [chain_plan])
    known = rates(middle, end, **cost)
    (summary,) = summarize(end, known)
    (bottleneck,) = find_bottlenecks(end, known)
    return SweepPoint(
        load, summary.offered_pps, summary.delivered_pps, summary.drops_pps, bottleneck, refined
    )
