"""Rates, chain summaries and bottlenecks from two snapshots of a host's FLASH sockets.

Standard library only: `flashctl top` runs it in the thin client (no pydantic, networkx,
numpy or rich), and `flashctl simulate` runs it on the simulated data plane. Pure: values in,
values out.

A `Snapshot` is what a backend sample looks like once each socket is placed in its chain:
cumulative counters (the data plane's `COUNTERS` names, times in seconds: `cpu_seconds`,
`rx_wait_seconds`, `tx_wait_seconds`) and ring occupancy at one instant. `rates(before,
after)` turns two snapshots into per-socket rates; `summarize` and `find_bottlenecks` read
them per chain.

Sockets are matched between snapshots by flash-id *and* identity (chain, NF, thread,
interface, queue), since the kernel reuses a flash-id as soon as its socket closes. A socket
that is new in `after` (or restarted: a counter went down) gets no rates: its counters did not
start at `before`, so a rate from zero would be too high by everything it counted before it
appeared in `before`. Sockets gone by `after` get none either. Callers treat a socket without
rates as "no data for this interval".

The bottleneck rule (one per chain): walking the chain's NFs from the NIC (topological order
of the NF graph, ties in snapshot order), the first NF whose inputs are backpressured while
its outputs are not. Inputs are backpressured when, at any of the NF's sockets, the NIC drops
packets, kicks are refused (`rx_ring_full`) or short of fill frames
(`rx_fill_ring_empty_descs`), the RX ring is near full on average, or a sender whose every
target is this NF sleeps in poll(POLLOUT). Outputs are backpressured when its targets' inputs
are, or its own threads sleep in POLLOUT or hold a near-full TX ring. An NF that sends to the
NIC or consumes its packets has outputs that never push back. If no NF is backpressured, the
busiest NF is named instead (the highest share of a core spent processing, over its threads);
so is an NF that has only just fallen behind, its RX ring still filling (headroom 0).

Headroom is how much more an NF could carry, as a fraction of what it carries now: from the
share of a core its busiest thread spends processing (`busy`), `1 / busy - 1`, since a thread
that is busy a fraction `b` of the time at rate `r` tops out near `r / b` (batch overhead is
amortised less at lower load, so this slightly underestimates). A backpressured bottleneck
carries no more at this configuration: headroom 0. No packets processed: unknown (None).

`busy` is estimated from counters: CPU time less the empty polls and the poll(POLLIN) calls
that put the thread to sleep (`rx_empty_polls` + `idle_sleeps`, x the cost of one poll) and
the wake-ups (`wakeups` x the CPU of a wake-up). Both costs default to the data plane's
calibration; pass the right ones for another backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MODES: Final = ("zero-copy", "copy", "egress", "sink", "mixed")
RING_NAMES: Final = ("rx", "tx", "fill", "completion")
RING_FIELDS: Final = (*RING_NAMES, *(f"{r}_size" for r in RING_NAMES))
DROP_CAUSES: Final = ("ring_full", "no_frame")
# Counter names (dataplane.COUNTERS, with `_ps` times as `_seconds`) this module reads.
_DROP_COUNTERS: Final = {"ring_full": "nic_drop_ring_full", "no_frame": "nic_drop_no_frame"}
# The data plane's default costs (flashctl.backends.dataplane.Calibration: poll_ns,
# wake_cpu_ns); a test keeps them equal. Not imported: that module needs pydantic.
DEFAULT_POLL_SECONDS: Final = 250e-9
DEFAULT_WAKE_SECONDS: Final = 2e-6
# Mean RX (or TX) occupancy from which a ring counts as "near full". A backpressured ring in
# the model reads `size - rate x step` at step boundaries, and a smart-poll sender that sleeps
# until its receiver's RX is half free leaves it oscillating between half and full.
NEAR_FULL: Final = 0.75


# --- snapshots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SocketView:
    """One socket as `top` and `simulate` see it: where it sits in its chain, and its state.

    `mode` is how it sends: over zero-copy or copy hops (`mixed`: both), to the wire
    (`egress`), or not at all (`sink`). `targets` is its `next` list (flash-ids). `rings` has
    the occupancy of the four rings and their sizes (`rx`, `rx_size`, ...); `counters` the
    cumulative counters.
    """

    flash_id: int
    chain: str
    nf: str
    thread: int
    interface: str | None
    queue: int | None
    mode: str
    targets: tuple[int, ...] = ()
    rings: dict[str, int] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str, int, str | None, int | None]:
        """What stays the same while the socket lives (its flash-id may be reused later)."""
        return (self.chain, self.nf, self.thread, self.interface, self.queue)

    def to_data(self) -> dict[str, Any]:
        return {
            "flashId": self.flash_id,
            "chain": self.chain,
            "nf": self.nf,
            "thread": self.thread,
            "interface": self.interface,
            "queue": self.queue,
            "mode": self.mode,
            "targets": list(self.targets),
            "rings": dict(self.rings),
            "counters": dict(self.counters),
        }


@dataclass(frozen=True)
class Snapshot:
    """The sockets of a host's chains at model or wall time `at` (seconds)."""

    at: float
    sockets: tuple[SocketView, ...] = ()

    def to_data(self) -> dict[str, Any]:
        """Plain JSON data: `{"at": s, "sockets": [{"flashId", "chain", "nf", "thread",
        "interface", "queue", "mode", "targets", "rings", "counters"}, ...]}`."""
        return {"at": self.at, "sockets": [s.to_data() for s in self.sockets]}

    @classmethod
    def from_data(cls, data: object) -> Snapshot:
        """The inverse of `to_data`; ValueError naming the first malformed field."""
        top = _mapping(data, "snapshot")
        at = _number(top.get("at"), "snapshot.at")
        raw = top.get("sockets")
        if not isinstance(raw, list):
            raise ValueError(f"snapshot.sockets: expected a list, got {_kind(raw)}")
        sockets = tuple(
            _socket_from_data(item, f"snapshot.sockets[{i}]") for i, item in enumerate(raw)
        )
        seen: set[int] = set()
        for i, socket in enumerate(sockets):
            if socket.flash_id in seen:
                raise ValueError(
                    f"snapshot.sockets[{i}].flashId: flash-id {socket.flash_id} is listed twice"
                )
            seen.add(socket.flash_id)
        return cls(at, sockets)


def _socket_from_data(data: object, where: str) -> SocketView:
    item = _mapping(data, where)
    mode = _string(item.get("mode"), f"{where}.mode")
    if mode not in MODES:
        raise ValueError(f"{where}.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    targets = item.get("targets", [])
    if not isinstance(targets, list):
        raise ValueError(f"{where}.targets: expected a list of flash-ids, got {_kind(targets)}")
    rings = _mapping(item.get("rings", {}), f"{where}.rings")
    counters = _mapping(item.get("counters", {}), f"{where}.counters")
    return SocketView(
        flash_id=_integer(item.get("flashId"), f"{where}.flashId"),
        chain=_string(item.get("chain"), f"{where}.chain"),
        nf=_string(item.get("nf"), f"{where}.nf"),
        thread=_integer(item.get("thread"), f"{where}.thread"),
        interface=_optional_string(item.get("interface"), f"{where}.interface"),
        queue=_optional_integer(item.get("queue"), f"{where}.queue"),
        mode=mode,
        targets=tuple(_integer(t, f"{where}.targets[{i}]") for i, t in enumerate(targets)),
        rings={str(k): _integer(v, f"{where}.rings.{k}") for k, v in rings.items()},
        counters={str(k): _number(v, f"{where}.counters.{k}") for k, v in counters.items()},
    )


def _kind(value: object) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:60]


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {_kind(value)}")
    return value


def _integer(value: object, where: str) -> int:
    # bool is an int in Python but never a count or an id in a snapshot.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: expected an integer, got {_kind(value)}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{where}: expected a number, got {_kind(value)}")
    return float(value)


def _optional_string(value: object, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _optional_integer(value: object, where: str) -> int | None:
    return None if value is None else _integer(value, where)


# --- rates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SocketRates:
    """What one socket did per second between two snapshots.

    `pps_in`: packets placed in its RX (by the NIC or upstream kicks); `pps_out`: packets that
    left it (to a target, to the wire, or consumed by a sink). `nic_drops_pps` by cause
    (`ring_full`, `no_frame`). `backpressure_events_ps`: `rx_ring_full` of this socket, the
    deliveries to it that were refused something (upstream kicks, NIC bursts);
    `bp_sleeps_ps`: its own poll(POLLOUT) sleeps. `cpu`: a fraction of one core; `busy`: the
    part of it spent processing (see the module docstring). `occupancy`: each ring's fraction
    in use, the mean over the interval for `rx` and `tx` when the snapshot has
    `rx_wait_seconds` / `tx_wait_seconds`, else the value at `after`. `per_second`: every
    counter's rate.
    """

    flash_id: int
    pps_in: float
    pps_out: float
    nic_drops_pps: dict[str, float]
    backpressure_events_ps: float
    bp_sleeps_ps: float
    cpu: float
    occupancy: dict[str, float]
    busy: float | None = None  # None: unknown, read `cpu`
    per_second: dict[str, float] = field(default_factory=dict)

    @property
    def processed_pps(self) -> float:
        return self.per_second.get("processed", 0.0)

    @property
    def processing(self) -> float:
        """Share of a core spent processing (`busy`, else `cpu`)."""
        return self.cpu if self.busy is None else self.busy

    def to_data(self) -> dict[str, Any]:
        return {
            "flashId": self.flash_id,
            "ppsIn": self.pps_in,
            "ppsOut": self.pps_out,
            "nicDropsPps": dict(self.nic_drops_pps),
            "backpressureEventsPs": self.backpressure_events_ps,
            "bpSleepsPs": self.bp_sleeps_ps,
            "cpu": self.cpu,
            "busy": self.busy,
            "occupancy": dict(self.occupancy),
        }


def rates(
    before: Snapshot,
    after: Snapshot,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    wake_seconds: float = DEFAULT_WAKE_SECONDS,
) -> dict[int, SocketRates]:
    """Per flash-id, the rates of the sockets alive (as the same socket) in both snapshots.

    New, restarted (a counter went down) and vanished sockets get no entry; see the module
    docstring. `poll_seconds` and `wake_seconds` are the backend's costs of an empty poll and
    of a wake-up, used to estimate `busy`.
    """
    span = after.at - before.at
    if not span > 0:
        raise ValueError(
            f"the second snapshot must be later than the first (at {before.at:g} s, "
            f"then {after.at:g} s)"
        )
    earlier = {s.flash_id: s for s in before.sockets}
    found: dict[int, SocketRates] = {}
    for socket in after.sockets:
        old = earlier.get(socket.flash_id)
        if old is None or old.identity != socket.identity:
            continue
        delta = {k: v - old.counters.get(k, 0.0) for k, v in socket.counters.items()}
        if any(d < 0 for d in delta.values()):
            continue
        per_second = {k: d / span for k, d in delta.items()}
        found[socket.flash_id] = _socket_rates(socket, per_second, poll_seconds, wake_seconds)
    return found


def _socket_rates(
    socket: SocketView, per_second: dict[str, float], poll_seconds: float, wake_seconds: float
) -> SocketRates:
    def rate(name: str) -> float:
        return per_second.get(name, 0.0)

    cpu = rate("cpu_seconds")
    busy: float | None = None
    if "rx_empty_polls" in per_second:
        # Polls that found RX empty, the poll(POLLIN) call of each sleep, and wake-ups.
        polls = rate("rx_empty_polls") + rate("idle_sleeps")
        idle = polls * poll_seconds + rate("wakeups") * wake_seconds
        busy = min(max(cpu - idle, 0.0), cpu)
    return SocketRates(
        flash_id=socket.flash_id,
        pps_in=rate("rx_packets"),
        pps_out=rate("tx_packets") + rate("sunk"),
        nic_drops_pps={cause: rate(name) for cause, name in _DROP_COUNTERS.items()},
        backpressure_events_ps=rate("rx_ring_full"),
        bp_sleeps_ps=rate("backpressure_sleeps"),
        cpu=cpu,
        occupancy=_occupancy(socket, per_second),
        busy=busy,
        per_second=per_second,
    )


def _occupancy(socket: SocketView, per_second: Mapping[str, float]) -> dict[str, float]:
    """Fraction of each ring in use; RX and TX as interval means where the counters allow
    (packet-seconds queued per second is the mean number queued: Little's law)."""
    shares: dict[str, float] = {}
    for ring in RING_NAMES:
        size = socket.rings.get(f"{ring}_size", 0)
        if size <= 0:
            shares[ring] = 0.0
            continue
        waited = per_second.get(f"{ring}_wait_seconds")
        used = waited if waited is not None else float(socket.rings.get(ring, 0))
        shares[ring] = min(max(used / size, 0.0), 1.0)
    return shares


# --- chains ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NFRates:
    """One NF of a chain over an interval, summed over its threads that have rates.

    `busy` and `rx_occupancy`/`tx_occupancy` are of its busiest / fullest thread: with RSS
    and affine mapping spreading load evenly, that thread saturates first.
    """

    chain: str
    nf: str
    threads: int
    processed_pps: float
    pps_in: float
    pps_out: float
    nic_drops_pps: dict[str, float]
    cpu: float  # cores
    busy: float  # share of a core, busiest thread
    rx_occupancy: float
    tx_occupancy: float
    headroom: float | None

    def to_data(self) -> dict[str, Any]:
        return {
            "nf": self.nf,
            "threads": self.threads,
            "processedPps": self.processed_pps,
            "ppsIn": self.pps_in,
            "ppsOut": self.pps_out,
            "nicDropsPps": dict(self.nic_drops_pps),
            "cpu": self.cpu,
            "busy": self.busy,
            "rxOccupancy": self.rx_occupancy,
            "txOccupancy": self.tx_occupancy,
            "headroom": self.headroom,
        }


@dataclass(frozen=True)
class ChainSummary:
    """A chain over an interval: NIC packets offered, delivered (to the wire or consumed by
    a sink), dropped at ingress by cause, and its NFs from the NIC outwards."""

    chain: str
    offered_pps: float
    delivered_pps: float
    drops_pps: dict[str, float]
    nfs: tuple[NFRates, ...] = ()

    def to_data(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "offeredPps": self.offered_pps,
            "deliveredPps": self.delivered_pps,
            "dropsPps": dict(self.drops_pps),
            "nfs": [n.to_data() for n in self.nfs],
        }


# Busy share from which a thread counts as saturated (headroom 0): a saturated thread in the
# model keeps crumbs of under one packet per step, so it never reads exactly 1.
SATURATED: Final = 0.99


def headroom(processed_pps: float, busy: float) -> float | None:
    """How much more a thread busy `busy` of the time at `processed_pps` could carry, as a
    fraction of that rate; None when it processes nothing (no basis for an estimate)."""
    if processed_pps <= 0 or busy <= 0:
        return None
    if busy >= SATURATED:
        return 0.0
    return 1.0 / busy - 1.0


class _Chain:
    """The sockets of one chain grouped by NF, NFs from the NIC outwards."""

    def __init__(self, name: str, sockets: Sequence[SocketView]) -> None:
        self.name = name
        self.sockets_of: dict[str, list[SocketView]] = {}
        for socket in sockets:
            self.sockets_of.setdefault(socket.nf, []).append(socket)
        self.nf_of = {s.flash_id: s.nf for s in sockets}
        self.order = self._from_the_nic()

    def targets(self, nf: str) -> list[str]:
        """The NFs `nf` sends to, in index order of its first socket that has each."""
        found: dict[str, None] = {}
        for socket in self.sockets_of[nf]:
            for target in socket.targets:
                name = self.nf_of.get(target)
                if name is not None and name != nf:
                    found[name] = None
        return list(found)

    def _from_the_nic(self) -> list[str]:
        """Topological order of the NF graph (Kahn), ties in snapshot order; NFs on a cycle
        (which chain checks forbid) keep snapshot order at the end."""
        names = list(self.sockets_of)
        indegree = dict.fromkeys(names, 0)
        for nf in names:
            for target in self.targets(nf):
                indegree[target] += 1
        ready = [nf for nf in names if indegree[nf] == 0]
        order: list[str] = []
        while ready:
            nf = ready.pop(0)
            order.append(nf)
            for target in self.targets(nf):
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
            ready.sort(key=names.index)
        return order + [nf for nf in names if nf not in order]


def _chains(snapshot: Snapshot) -> list[_Chain]:
    grouped: dict[str, list[SocketView]] = {}
    for socket in snapshot.sockets:
        grouped.setdefault(socket.chain, []).append(socket)
    return [_Chain(name, sockets) for name, sockets in grouped.items()]


def _nf_rates(chain: _Chain, nf: str, known: Mapping[int, SocketRates]) -> NFRates:
    measured = [known[s.flash_id] for s in chain.sockets_of[nf] if s.flash_id in known]
    processed = sum(r.processed_pps for r in measured)
    busiest = max(measured, key=lambda r: r.processing, default=None)
    busy = busiest.processing if busiest is not None else 0.0
    return NFRates(
        chain=chain.name,
        nf=nf,
        threads=len(measured),
        processed_pps=processed,
        pps_in=sum(r.pps_in for r in measured),
        pps_out=sum(r.pps_out for r in measured),
        nic_drops_pps={c: sum(r.nic_drops_pps.get(c, 0.0) for r in measured) for c in DROP_CAUSES},
        cpu=sum(r.cpu for r in measured),
        busy=busy,
        rx_occupancy=max((r.occupancy.get("rx", 0.0) for r in measured), default=0.0),
        tx_occupancy=max((r.occupancy.get("tx", 0.0) for r in measured), default=0.0),
        headroom=headroom(busiest.processed_pps, busy) if busiest is not None else None,
    )


def summarize(after: Snapshot, rates: Mapping[int, SocketRates]) -> list[ChainSummary]:
    """Per chain (in snapshot order): offered, delivered and dropped packets per second, and
    its NFs from the NIC outwards. Sockets without rates count as nothing."""
    return [_summary(chain, rates) for chain in _chains(after)]


def _summary(chain: _Chain, known: Mapping[int, SocketRates]) -> ChainSummary:
    measured = [
        known[s.flash_id] for nf in chain.order for s in chain.sockets_of[nf] if s.flash_id in known
    ]

    def total(name: str) -> float:
        return sum(r.per_second.get(name, 0.0) for r in measured)

    return ChainSummary(
        chain=chain.name,
        offered_pps=total("nic_rx_packets"),
        delivered_pps=total("nic_tx_packets") + total("sunk"),
        drops_pps={c: sum(r.nic_drops_pps.get(c, 0.0) for r in measured) for c in DROP_CAUSES},
        nfs=tuple(_nf_rates(chain, nf, known) for nf in chain.order),
    )


# --- bottlenecks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bottleneck:
    """What limits a chain, in one line. `nf` is None when the chain processed nothing in
    the interval; `backpressured` tells the backpressure rule from the busiest-NF fallback."""

    chain: str
    nf: str | None
    explanation: str
    headroom: float | None
    backpressured: bool = False

    def to_data(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "nf": self.nf,
            "explanation": self.explanation,
            "headroom": self.headroom,
            "backpressured": self.backpressured,
        }


def find_bottlenecks(after: Snapshot, rates: Mapping[int, SocketRates]) -> list[Bottleneck]:
    """One per chain, in snapshot order (see the module docstring for the rule)."""
    return [_Pressure(chain, rates).bottleneck() for chain in _chains(after)]


_DROP_TEXT: Final = {"ring_full": "RX ring full", "no_frame": "no fill-ring frame"}


class _Pressure:
    """Backpressure evidence for the NFs of one chain over one interval."""

    def __init__(self, chain: _Chain, known: Mapping[int, SocketRates]) -> None:
        self.chain = chain
        self.known = known
        self.nfs = {nf: _nf_rates(chain, nf, known) for nf in chain.order}
        self._inputs: dict[str, list[str]] = {}

    def rates_of(self, nf: str) -> list[SocketRates]:
        return [
            self.known[s.flash_id] for s in self.chain.sockets_of[nf] if s.flash_id in self.known
        ]

    def senders(self, nf: str) -> list[SocketView]:
        """Sockets of other NFs of the chain whose `next` list reaches `nf`."""
        ids = {s.flash_id for s in self.chain.sockets_of[nf]}
        return [
            s
            for other in self.chain.order
            if other != nf
            for s in self.chain.sockets_of[other]
            if ids.intersection(s.targets)
        ]

    def inputs(self, nf: str) -> list[str]:
        """Why `nf`'s inputs are backpressured, strongest evidence first (empty: they are not)."""
        if nf not in self._inputs:
            self._inputs[nf] = self._evidence(nf)
        return self._inputs[nf]

    def _evidence(self, nf: str) -> list[str]:
        measured = self.rates_of(nf)
        found: list[str] = []
        drops = {c: sum(r.nic_drops_pps.get(c, 0.0) for r in measured) for c in DROP_CAUSES}
        for cause, pps in drops.items():
            if pps > 0:
                found.append(f"the NIC drops {format_pps(pps)} at it ({_DROP_TEXT[cause]})")
        senders = self.senders(nf)
        names = ", ".join(dict.fromkeys(s.nf for s in senders))
        refused = sum(r.backpressure_events_ps for r in measured)
        if refused > 0 and senders:
            found.append(f"{names}'s kicks to it are refused {_events(refused)} (rx_ring_full)")
        starved = sum(r.per_second.get("rx_fill_ring_empty_descs", 0.0) for r in measured)
        if starved > 0 and not drops["no_frame"]:
            found.append(f"it is short of fill-ring frames {_events(starved)}")
        fullest = self.nfs[nf].rx_occupancy
        if fullest >= NEAR_FULL:
            found.append(f"its RX ring is {fullest:.0%} full on average")
        sleeps = sum(self._sleeps(s) for s in senders if self._only_to(s, nf))
        if sleeps > 0:
            found.append(f"{names} sleeps on POLLOUT {_events(sleeps)}")
        return found

    def _sleeps(self, socket: SocketView) -> float:
        known = self.known.get(socket.flash_id)
        return known.bp_sleeps_ps if known is not None else 0.0

    def _only_to(self, socket: SocketView, nf: str) -> bool:
        """Whether every target of `socket` is a thread of `nf` (so its sleeps are nf's)."""
        return all(self.chain.nf_of.get(t) == nf for t in socket.targets)

    def outputs(self, nf: str) -> str | None:
        """Why `nf`'s outputs are backpressured, or None when nothing downstream pushes back."""
        if sum(r.bp_sleeps_ps for r in self.rates_of(nf)) > 0:
            return "it sleeps on POLLOUT"
        if self.nfs[nf].tx_occupancy >= NEAR_FULL:
            return f"its TX ring is {self.nfs[nf].tx_occupancy:.0%} full on average"
        for target in self.chain.targets(nf):
            if self.inputs(target):
                return f"{target} pushes back"
        return None

    def bottleneck(self) -> Bottleneck:
        name = self.chain.name
        if not any(n.threads for n in self.nfs.values()):
            why = "no rates yet: the chain's sockets are new since the previous sample"
            return Bottleneck(name, None, why, None)
        pressed = [(nf, self.inputs(nf)) for nf in self.chain.order]
        pressed = [(nf, evidence) for nf, evidence in pressed if evidence]
        for nf, evidence in pressed:
            if self.outputs(nf) is None:
                return self._limited(nf, evidence, "nothing downstream pushes back")
        if pressed:  # every backpressured NF is pushed back on too: name the last of them
            nf, evidence = pressed[-1]
            return self._limited(nf, evidence, f"its outputs push back too ({self.outputs(nf)})")
        return self._busiest()

    def _limited(self, nf: str, evidence: list[str], downstream: str) -> Bottleneck:
        rates = self.nfs[nf]
        parts = [f"{nf} cannot keep up: " + ", ".join(evidence[:2]), downstream]
        if rates.processed_pps > 0:
            parts.append(f"{rates.busy:.0%} busy at {format_pps(rates.processed_pps)}, no headroom")
            if rates.busy < SATURATED:
                parts.append("not CPU-bound: look at its fill ring and wake-ups")
        else:
            parts.append("it processes nothing")
        parts.extend(self._head_of_line(nf))
        room = 0.0 if rates.processed_pps > 0 else None
        return Bottleneck(self.chain.name, nf, "; ".join(parts), room, backpressured=True)

    def _head_of_line(self, nf: str) -> list[str]:
        """Other NFs fed by the same senders, held back while `nf` refuses its share."""
        notes = []
        for sender in dict.fromkeys(s.nf for s in self.senders(nf)):
            others = [t for t in self.chain.targets(sender) if t != nf and not self.inputs(t)]
            if others:
                held = ", ".join(others)
                notes.append(f"head-of-line blocking at {sender} also holds back {held}")
        return notes

    def _busiest(self) -> Bottleneck:
        active = [n for n in self.nfs.values() if n.processed_pps > 0]
        if not active:
            return Bottleneck(self.chain.name, None, "no packets processed in this interval", None)
        top = max(active, key=lambda n: n.busy)  # max keeps the first of equals: NIC side
        text = (
            f"nothing is backpressured; busiest NF {top.nf}: {top.busy:.0%} of a core "
            f"at {format_pps(top.processed_pps)}"
        )
        if top.headroom is not None:
            most = top.processed_pps * (1 + top.headroom)
            text += f", headroom {top.headroom:.0%} (about {format_pps(most)})"
        return Bottleneck(self.chain.name, top.nf, text, top.headroom)


def _si(value: float) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.3g} "


def format_pps(value: float) -> str:
    """4950000.0 -> `4.95 Mpps`."""
    return _si(value) + "pps"


def _events(value: float) -> str:
    """12300.0 -> `12.3 k/s`."""
    return _si(value) + "/s" if value >= 1e3 else f"{value:.3g}/s"


def chain_order(snapshot: Snapshot) -> dict[str, list[str]]:
    """Per chain (snapshot order), its NFs from the NIC outwards, as the bottleneck walk goes."""
    return {chain.name: chain.order for chain in _chains(snapshot)}


def socket_ids(snapshot: Snapshot, chain: str, nf: str) -> list[int]:
    """The flash-ids of an NF's sockets, in snapshot (thread) order."""
    return [s.flash_id for s in snapshot.sockets if s.chain == chain and s.nf == nf]


def by_chain(items: Iterable[Bottleneck]) -> dict[str, Bottleneck]:
    return {b.chain: b for b in items}
