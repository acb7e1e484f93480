"""The simulated FLASH data plane: rings, NF threads and in-kernel redirect, as a pure model.

No I/O and no clock: time is a parameter. `DataPlane.step()` advances one time step,
`run(until)` advances to an instant (as fast as possible, skipping exactly repeating
steady states), so the same model serves a real-time runner (the agent calls `run(now)`
from its own clock) and an as-fast-as-possible `simulate`. `sample()` returns the
`flashctl.backends.base.Sample` the agent's `status`/`top` read.

Model (what is simulated, at batch granularity)
------------------------------------------------

Every socket (one NF thread) has the four AF_XDP rings as counters, `occupancy = prod - cons`:
RX, TX, fill and completion, sized `spec.sim.rings` x the UMEM's scale, plus the frames its
application holds (`pool`). Each step of length `dt`:

1. NIC ingress. Each traffic source yields its packets for the step (constant: the rate;
   bursty: `burst` packets every `burst / rate`; ramp: a linear ramp to the rate) and RSS
   spreads them evenly over the ingress NF's threads. A packet needs a fill-ring frame
   (none: the NIC drops it; `rx_fill_ring_empty_descs` +1 per packet, zero-copy RX never
   reached the socket) and a free RX entry (none: lost; `rx_ring_full` +1 per delivery that
   did not fit, `rx_dropped` + the packets). These are the only places packets are lost.
2. Every socket takes its turn, upstream first (topological order of the rules). A thread
   runs from `max(step start, ready_at)` to the step's end on its own core: it reaps its
   completion ring and refills its fill ring from the frames it holds (unless refilling is
   switched off, `set_refill`), kicks its TX backlog, then processes RX in batches of
   `batch` descriptors, writes the results to TX (never more than TX has room for), and
   kicks TX again. A packet costs the NF's work (`cost`, default `Calibration.nf_ns`) plus
   the data path's (library ring work, the redirect or NIC transmit, its share of a kick);
   a batch costs one poll (`batchCost` replaces it). `capacity` instead sets the rate the
   thread tops out at, the NF's work being what the data path leaves of `1 / capacity`.
   A batch still unfinished when the step ends (RX not empty) goes on in the next step
   without a new poll, and a saturated thread carries its leftover time (in 10 ns quanta),
   so saturated throughput does not depend on the resolution. What is left of the step
   depends on the polling mode:

   - busy: polls on (`polls`, `rx_empty_polls`): a full core at any load;
   - interrupt: sleeps in poll(POLLIN) as soon as RX and TX are empty, and pays
     `wake_latency` (and `wake_cpu` of CPU) when RX becomes non-empty;
   - smart (FLASH's adaptive poll, `flash_txrx.c`): busy while traffic flows; sleeps in
     poll(POLLIN) after `idle_timeout` without packets; when TX is blocked and more than
     half full (POLLOUT not ready) it sleeps in poll(POLLOUT) until a downstream receiver
     that drained its RX signals it (`recvfrom(MSG_MORE)`; the library's condition,
     `__try_kick_rx`: the receiver's RX more than half free, its fill ring at least half
     full) or the 1000 ms poll timeout expires. Busy and interrupt senders retry sendto
     instead (every retry is a kick: `kicks`, `rx_ring_full` of the full target).

   NFs with no outgoing link are sinks: they consume packets and recycle the frames.

3. Redirect, as `xsk_tx_release` in the FLASH kernel does it (net/xdp/xsk.c, flash-linux
   2ed83241): TX moves only when kicked. A kick peeks a window of at most `txBudget`
   descriptors (fewer if the sender's completion ring is short of room), groups them by
   target (`options >> 16` indexes the `next` list; one target takes all), and for each
   target in index order borrows frames from the target's fill ring (topping up frames
   left buffered by the previous kick), reserves RX entries, and moves
   `min(frames, free RX)` descriptors. A completion is posted for every moved descriptor
   (zero-copy: the sender gets the target's fill frame; copy: its own frame back after a
   memcpy), and the completion ring must have room for the window before it is peeked.
   What did not fit goes back to the head of the sender's TX ring, the last
   target's leftovers first, and `rx_ring_full` of the target counts +1 per kick that was
   refused something (events, not packets). So backpressure is lossless, a target that
   stops refilling its fill ring stalls its senders, and a slow target's descriptors pile
   up at the head of a shared TX ring until a whole window is theirs: head-of-line
   blocking of every other target. A socket with no rules sends to the NIC; a chained
   socket with no outflows (`flashsys` "stalled") or a descriptor whose index is past the
   end of the list moves nothing (`tx_invalid_descs` +1 per kick) and holds its TX.

   Inside a step the NF emits its output grouped by index (a split by the configured
   shares, equal by default, deterministic by cumulative rounding): the TX ring is a list
   of runs `[index, count]`, and kicks work run by run, window by window where it matters.

Counters: the six XDP_STATISTICS fields, and rx/tx/processed/egress/sunk packets, NIC drops
by cause, polls, kicks, backpressure (POLLOUT) and idle (POLLIN) sleeps, wake-ups received
and sent, CPU time, and per-packet queueing time; per edge (socket, index) the packets
handed over and the descriptors held back (refused, per kick: a retried descriptor counts
again). `rx_invalid_descs` stays 0: the model's NFs only post valid frames.

Invariants (tested): every packet offered by the NIC is dropped at ingress for a named cause,
sent to the wire, consumed by a sink, or sits in an RX or TX ring; every socket keeps its
frames (fill + RX + TX + completion + held + borrowed by upstream kicks); rings stay within
their sizes.

Time resolution
---------------

Integer picoseconds inside; a step is 10 us by default (`DEFAULT_RESOLUTION`). Within a step
the model is sequential (a ring only accepts what fits at that moment, and a receiver drains
its RX after its senders' turn), so a step must move less than a ring holds: at 100 GbE line
rate (148.8 Mpps of 64 B frames) a 2,048-entry ring fills in 13.8 us, and a 10 us step
carries 1,488 packets. Coarser steps cap throughput at `ring size / dt`; finer steps (1 us,
`FINE_RESOLUTION`) resolve wake-up latency and bursts better. Occupancy is read at step
boundaries, so it differs from a finer step's by up to one step's flow per ring (a
backpressured ring reads "size - rate x dt" rather than "full"). Wake-ups are at most one
per thread per step, and a packet's queueing time is known to the step (see `latency()`).

Arrival rates are rounded to a fraction a/b pps with b <= 1,000 (an error below 0.001 pps,
relative 1e-6 at 1 kpps, 1e-9 at 1 Mpps); costs are rounded to 1 ps. With
integer state and a periodic input, a run settles into an exactly repeating cycle of steps;
`run` detects it (the whole state, the input's phase included, repeats: any period up to a
window of some 10^5-10^6 steps) and applies whole cycles at once, and it applies at once the
steps of a wait in which nothing changes but a thread's clock (POLLOUT or idle timeout).
Neither changes a counter: `fast_forward=False` gives identical results, slower. A chain
whose cycle is longer than the window (or that has not settled yet) is computed step by step.

Cost model and calibration (`Calibration`; every cost is CPU time of the thread that pays it)
-----------------------------------------------------------------------------------------------

=====================  ==========  ==========================================================
cost                   default     basis
=====================  ==========  ==========================================================
zero-copy hop          10 ns/pkt   FLASH moves a 16-byte descriptor TX -> RX and a frame
                                   address fill -> completion, CAS amortised over a window of
                                   32 (FOSDEM '26, "batched redirections"): a few L2/L3
                                   accesses at 4.3 / 7.9 ns, an atomic at 8.2 ns (Brouer, "The
                                   calculations: 10Gbit/s wirespeed", 2014).
copy hop               20 ns/pkt   the same plus a memcpy into a borrowed frame of the other
                       + 0.05      UMEM: ~20 ns of frame allocation and cache misses on the
                       ns/byte     two frames (a miss is 32 ns, partly hidden by DDIO), and
                                   20 GB/s cache-resident memcpy (estimate). 64 B: 23 ns (2.3x
                                   a zero-copy hop); 1,500 B: 95 ns (9.5x).
NIC egress             15 ns/pkt   a driver TX descriptor + doorbell share (estimate).
library ring work      5 ns/pkt    RX read, TX write, completion reap, fill refill.
NF work (default)      20 ns/pkt   when the chain gives neither `cost` nor `capacity`
                                   (an l2fwd-like NF touching one cache line; estimate).
poll / kick            250 ns      one recvfrom()/poll() or sendto() system call (with
                                   mitigations, estimate); `batchCost` replaces the poll.
wake-up                5 us        latency from "RX non-empty" (or a MSG_MORE signal) to the
                       + 2 us CPU  thread running; CPU of a sleep/wake cycle (estimate; the
                                   best AF_XDP round trip is 6.5 us with busy polling,
                                   du Perron et al., arXiv:2402.10513, 2024).
smart idle timeout     100 ms      FLASH library default (`flash_params.c`: idle_timeout).
POLLOUT timeout        1000 ms     FLASH library (`poll(..., 1000)` under backpressure).
TX budget              32          kernel TX_BATCH_SIZE / MAX_PER_SOCKET_BUDGET (xsk.c);
                                   `spec.sim.txBudget`.
=====================  ==========  ==========================================================

With these defaults a default NF thread forwards at ~21 Mpps zero-copy (47 ns/packet), in
line with AF_XDP zero-copy at ~20 Mpps per core (Hoiland-Jorgensen et al., "The eXpress Data
Path", CoNEXT 2018) and faster than AF_XDP copy mode, whose cost is per-packet skb work
rather than bytes (mlx5, 64 B: 16.5 Mpps zero-copy vs 1.7 Mpps copy; xdp-project/bpf-examples
issue 61) - FLASH's copy path is a bare memcpy, hence the small copy penalty at 64 B. The
FOSDEM '26 claims (zero-copy inside a UMEM, one copy across, FLASH-ZC 1.1x-2.5x the
throughput of SR-IOV chaining, lowest latency) are qualitative checks: a chain is bound by
its NFs, and a copy hop costs its sender ~13 ns at 64 B and ~85 ns at 1,500 B more than a
zero-copy hop. The ratio a test checks is derived from these constants, not from a
measurement.

Limits: the redirect cost is charged to the sender when it produces a packet (not when the
packet moves); NIC egress has no rate limit and no NIC RX ring sits in front of the fill
ring; a thread that sleeps in POLLIN is woken as if its first packet arrived at the start of
the step, so at light load interrupt mode counts fewer wake-ups than a real thread would;
queueing time is counted from ring occupancy at the end of the thread's turn; copy costs
use the sources' rate-weighted mean packet size; `tx_ring_empty_descs` counts busy polls
that found TX empty (a busy poll drives the TX path), not driver NAPI polls.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from itertools import chain as _chain
from math import lcm
from operator import attrgetter
from typing import Final, Literal

from flashctl.backends.base import Rings, Sample, SocketSample
from flashctl.chains.planner import Plan
from flashctl.chains.spec import Chain as ChainDoc
from flashctl.chains.spec import NFSim, PollMode, SimSpec
from flashctl.chains.topology import SocketKey, Topology, expand

PS_PER_NS: Final = 1_000
PS_PER_S: Final = 10**12
DEFAULT_RESOLUTION: Final = 10e-6  # seconds per step
FINE_RESOLUTION: Final = 1e-6
FRAMES_PER_SOCKET: Final = 4096  # frames per socket (x umem scale), FLASH library / monitor
DEFAULT_BURST: Final = 64
_RATE_DENOMINATOR: Final = 1000  # arrival rates are fractions a/b pps with b <= this
# Looking for a repeating cycle (see "fast forward" in `DataPlane`): short cycles through the
# hashes of the last `_RECENT` steps and the states kept every `_KEEP_EVERY` steps among them;
# long ones through the states whose hash is a multiple of `_POINT_EVERY`, at most
# `_POINT_BUDGET / sockets` of them (~700 bytes a socket each: ~25 MB; a window of about
# 1,000,000 steps for 4 sockets, 500,000 for 8, 65,000 for 64).
_RECENT: Final = 4096
_KEEP_EVERY: Final = 16
_POINT_EVERY: Final = 128
_POINT_BUDGET: Final = 32_768
_MAX_CANDIDATES: Final = 8  # periods proposed by recent hashes and awaiting verification
# Leftover time a saturated thread carries into the next step, in these units: at most 10 ns
# a step is lost (1% at 1 us), and the carried values stay few, so steady states repeat soon.
_SPARE_QUANTUM: Final = 10 * PS_PER_NS

Pattern = Literal["constant", "bursty", "ramp"]
Kicker = Callable[["_Socket", int], tuple[int, bool]]
_Key = tuple[tuple[int, ...], tuple[int, ...]]  # a state, as `DataPlane._key` reads it

# Counter slots of a socket, in `COUNTERS` order. Values ending in `_ps` are picoseconds.
COUNTERS: Final = (
    "rx_dropped",
    "rx_invalid_descs",
    "tx_invalid_descs",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
    "tx_ring_empty_descs",
    "nic_rx_packets",  # offered by the NIC to this socket
    "nic_drop_ring_full",  # of those, lost: RX ring full
    "nic_drop_no_frame",  # of those, lost: no fill-ring frame
    "rx_packets",  # placed in RX, by the NIC or by upstream kicks
    "processed",  # taken from RX by the NF
    "tx_packets",  # left TX: into a target's RX or onto the wire
    "nic_tx_packets",  # of those, onto the wire
    "sunk",  # consumed by a sink NF
    "polls",
    "rx_empty_polls",
    "kicks",  # sendto() calls, each one TX window
    "backpressure_sleeps",  # poll(POLLOUT) sleeps
    "idle_sleeps",  # poll(POLLIN) sleeps
    "wakeups",  # times this thread was woken
    "wakeups_sent",  # MSG_MORE signals that woke an upstream sender
    "cpu_ps",
    "rx_wait_ps",  # packet-picoseconds spent in RX
    "tx_wait_ps",  # packet-picoseconds spent in TX
)
(
    RX_DROPPED,
    RX_INVALID,
    TX_INVALID,
    RX_RING_FULL,
    FILL_EMPTY,
    TX_EMPTY,
    NIC_RX,
    DROP_FULL,
    DROP_NO_FRAME,
    RX_PKTS,
    PROCESSED,
    TX_PKTS,
    NIC_TX,
    SUNK,
    POLLS,
    EMPTY_POLLS,
    KICKS,
    BP_SLEEPS,
    IDLE_SLEEPS,
    WAKEUPS,
    WAKEUPS_SENT,
    CPU,
    RX_WAIT,
    TX_WAIT,
) = range(len(COUNTERS))

_RUN, _SLEEP_IN, _SLEEP_OUT = 0, 1, 2  # thread states
# A socket's state as `DataPlane._key` reads it (and `_restore` writes it back, in order).
_flat: Final = _chain.from_iterable
_STATE_FIELDS: Final = attrgetter(
    "rx", "tx", "fill", "cq", "pool", "state", "carry", "spare", "split_r"
)
_BUSY, _INTERRUPT, _SMART = 0, 1, 2  # polling modes
_MODES: Final = {"busy": _BUSY, "interrupt": _INTERRUPT, "smart": _SMART}


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Calibration:
    """Costs in nanoseconds of CPU time (see the module docstring for their basis)."""

    zero_copy_ns: float = 10.0
    copy_ns: float = 20.0
    copy_ns_per_byte: float = 0.05
    nic_tx_ns: float = 15.0
    ring_ns: float = 5.0
    nf_ns: float = 20.0
    poll_ns: float = 250.0
    kick_ns: float = 250.0
    wake_latency_ns: float = 5_000.0
    wake_cpu_ns: float = 2_000.0
    idle_timeout_ns: float = 100e6
    pollout_timeout_ns: float = 1e9

    def hop_ns(self, zero_copy: bool, size: int) -> float:
        """What the sender pays the kernel to redirect one packet of `size` bytes."""
        if zero_copy:
            return self.zero_copy_ns
        return self.copy_ns + self.copy_ns_per_byte * size


@dataclass(frozen=True, slots=True)
class RingSizes:
    rx: int = 2048
    tx: int = 2048
    fill: int = 4096
    completion: int = 2048


@dataclass(frozen=True, slots=True)
class Service:
    """An NF thread: its work per packet, batch size and overhead, polling mode.

    `nf_ns` is the NF's own work, on top of the data path's costs (ring work, redirect,
    kicks, polls). `capacity_pps`, when given, is instead the rate the thread tops out at:
    its NF work is whatever that leaves after the data path's costs (none if they already
    exceed it), so a chain's `capacity: 1Mpps` NF forwards 1 Mpps whatever its hops cost.
    """

    nf_ns: float = 0.0
    batch: int = 64
    batch_ns: float | None = None  # per poll-loop iteration; None: one poll syscall
    poll: PollMode = "smart"
    capacity_pps: float | None = None


@dataclass(frozen=True, slots=True)
class SocketConfig:
    """One AF_XDP socket of the data plane, named by its flash-id."""

    flash_id: int
    name: str
    umem: str
    service: Service
    rings: RingSizes = field(default_factory=RingSizes)
    frames: int = FRAMES_PER_SOCKET
    targets: tuple[int, ...] = ()  # the `next` list as the data path uses it (flash-ids)
    chained: bool | None = None  # None: chained iff it has targets
    sink: bool = False  # the NF consumes what it receives and sends nothing
    tx_budget: int = 32
    shares: tuple[float, ...] | None = None  # output share per index; None: equal


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Packets arriving from the NIC, spread over `sockets` (the ingress NF's threads)."""

    name: str
    sockets: tuple[int, ...]
    pps: float
    size: int = 64
    pattern: Pattern = "constant"
    burst: int = DEFAULT_BURST
    ramp_s: float = 0.0


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeCounters:
    """One entry of a socket's `next` list: what it handed over, and what it holds for it."""

    source: int
    index: int
    target: int
    mode: Literal["zero-copy", "copy"]
    handed: int
    held_back: int  # descriptors refused by kicks (a retried descriptor counts again)
    queued: int  # descriptors for this index now in the source's TX ring
    buffered: int  # target fill frames borrowed and not yet used


@dataclass(frozen=True, slots=True)
class Conservation:
    """Where every packet the NIC offered went."""

    offered: int
    dropped_ring_full: int
    dropped_no_frame: int
    egress: int
    sunk: int
    queued: int

    @property
    def balanced(self) -> bool:
        accounted = self.dropped_ring_full + self.dropped_no_frame + self.egress + self.sunk
        return self.offered == accounted + self.queued


# --- internal state ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Costs:
    """Calibration in integer picoseconds."""

    zero_copy: int
    copy: int
    copy_per_kb: int  # picoseconds per 1,000 bytes, so that sub-ps per-byte costs survive
    nic_tx: int
    ring: int
    poll: int
    kick: int
    wake_latency: int
    wake_cpu: int
    idle_timeout: int
    pollout_timeout: int

    @classmethod
    def of(cls, cal: Calibration) -> _Costs:
        def ps(ns: float) -> int:
            return max(0, round(ns * PS_PER_NS))

        return cls(
            zero_copy=ps(cal.zero_copy_ns),
            copy=ps(cal.copy_ns),
            copy_per_kb=ps(cal.copy_ns_per_byte * 1000),
            nic_tx=ps(cal.nic_tx_ns),
            ring=ps(cal.ring_ns),
            poll=max(1, ps(cal.poll_ns)),
            kick=max(1, ps(cal.kick_ns)),
            wake_latency=ps(cal.wake_latency_ns),
            wake_cpu=ps(cal.wake_cpu_ns),
            idle_timeout=ps(cal.idle_timeout_ns),
            pollout_timeout=ps(cal.pollout_timeout_ns),
        )

    def hop(self, zero_copy: bool, size: int) -> int:
        return self.zero_copy if zero_copy else self.copy + self.copy_per_kb * size // 1000


class _Edge:
    """Entry `index` of a socket's `next` list."""

    __slots__ = ("buffered", "handed", "held_back", "hop_ps", "index", "target", "target_id")

    def __init__(self, index: int, target_id: int, target: _Socket | None) -> None:
        self.index = index
        self.target_id = target_id
        self.target = target  # None: a flash-id the model does not know (closed socket)
        self.buffered = 0  # fill frames borrowed from the target, kept for the next kick
        self.handed = 0
        self.held_back = 0
        self.hop_ps = 0


class _Socket:
    """Mutable state of one socket and its thread; counters in `c` (see COUNTERS)."""

    __slots__ = (
        "batch",
        "batch_ps",
        "budget",
        "c",
        "carry",
        "cfg",
        "chained",
        "cq",
        "cq_size",
        "edges",
        "egress",
        "est_ps",
        "fid",
        "fill",
        "fill_size",
        "idle_ps",
        "kicker",
        "mode",
        "multi",
        "pkt_ps",
        "pool",
        "prefix",
        "ready_at",
        "refill",
        "runs",
        "rx",
        "rx_size",
        "senders",
        "sink",
        "slept_at",
        "spare",
        "split_r",
        "state",
        "tx",
        "tx_size",
        "weights",
    )

    def __init__(self, cfg: SocketConfig) -> None:
        self.cfg = cfg
        self.fid = cfg.flash_id
        rings = cfg.rings
        self.rx_size, self.tx_size = rings.rx, rings.tx
        self.fill_size, self.cq_size = rings.fill, rings.completion
        self.rx = self.tx = self.cq = 0
        self.fill = min(rings.fill, cfg.frames)
        self.pool = cfg.frames - self.fill
        self.runs: list[list[int]] = []  # TX contents of a multi-target socket: [index, count]
        self.edges: list[_Edge] = []
        self.senders: list[_Socket] = []
        self.chained = False
        self.egress = False
        self.multi = False
        self.sink = cfg.sink
        self.refill = True
        self.budget = max(1, cfg.tx_budget)
        self.batch = max(1, cfg.service.batch)
        self.mode = _MODES[cfg.service.poll]
        self.state = _RUN
        self.ready_at = 0
        self.slept_at = 0
        self.idle_ps = 0
        self.carry = 0  # packets left in a poll-loop batch already paid for
        self.spare = 0  # ps left over by a saturated step, carried to the next
        self.kicker: Kicker = _kick_nic  # how a kick moves TX: set by the wiring
        self.weights: tuple[int, ...] = ()
        self.prefix: tuple[int, ...] = ()
        self.split_r = 0
        self.pkt_ps = self.batch_ps = self.est_ps = 0
        self.c = [0] * len(COUNTERS)

    def fits(self, avail: int) -> int:
        """How many packets the thread can process in `avail` ps: the rest of an unfinished
        batch, then batches (overhead + per packet, kicks amortised)."""
        est = self.est_ps
        carry = self.carry
        if carry:
            if carry * est >= avail:
                return avail // est
            avail -= carry * est
        per_batch = self.batch * est + self.batch_ps
        full = avail // per_batch
        rest = avail - full * per_batch - self.batch_ps
        n = carry + full * self.batch
        if rest > 0:
            n += min(self.batch - 1, rest // est)
        return n

    def frames(self) -> int:
        """Frames this socket owns: in its rings, in its hands, or borrowed by upstream kicks."""
        borrowed = sum(e.buffered for s in self.senders for e in s.edges if e.target is self)
        return self.fill + self.rx + self.tx + self.cq + self.pool + borrowed


class _Source:
    """A traffic generator: cumulative arrivals as exact integer arithmetic."""

    __slots__ = ("acc", "burst", "cfg", "den", "num", "ramp_ps", "ramping", "rr", "targets")

    def __init__(self, cfg: SourceConfig, targets: list[_Socket]) -> None:
        self.cfg = cfg
        rate = Fraction(cfg.pps).limit_denominator(_RATE_DENOMINATOR)
        self.num = rate.numerator  # packets per ps = num / den
        self.den = rate.denominator * PS_PER_S
        self.targets = targets
        self.rr = 0  # RSS: the thread the next remainder packet goes to
        self.burst = max(1, cfg.burst) if cfg.pattern == "bursty" else 1
        self.ramp_ps = round(cfg.ramp_s * PS_PER_S) if cfg.pattern == "ramp" else 0
        self.ramping = self.ramp_ps > 0
        # A bursty source starts with a burst; the others accumulate from zero.
        self.acc = self.den * self.burst - 1 if cfg.pattern == "bursty" else 0

    def arrivals(self, t0: int, length: int) -> int:
        if self.ramping:
            return self._ramp(t0, length)
        self.acc += self.num * length
        unit = self.den * self.burst
        bursts = self.acc // unit
        self.acc -= bursts * unit
        return bursts * self.burst

    def _ramp(self, t0: int, length: int) -> int:
        t1 = t0 + length
        n = self._cumulative(t1) - self._cumulative(t0)
        if t1 >= self.ramp_ps:
            # Past the ramp the cumulative count is num * (2t - ramp) / (2 den): carry on as a
            # constant source of rate 2num / 2den from that exact remainder.
            self.ramping = False
            self.acc = self.num * (2 * t1 - self.ramp_ps) % (2 * self.den)
            self.num, self.den = 2 * self.num, 2 * self.den
        return n

    def _cumulative(self, t: int) -> int:
        """Packets arrived by `t`: rate * t^2 / (2 ramp) on the ramp, rate * (t - ramp/2) after."""
        if t <= self.ramp_ps:
            return self.num * t * t // (2 * self.den * self.ramp_ps)
        return self.num * (2 * t - self.ramp_ps) // (2 * self.den)


@dataclass(frozen=True, slots=True)
class _Cycle:
    """A verified cycle: from step `anchor` on, the state repeats every `period` steps, and
    the counters grow by `delta` a cycle. `table` holds the kept states of one cycle, by
    offset from the anchor (offset 0 first): the `_key` and the counters at that step."""

    anchor: int
    period: int
    delta: list[list[int]]
    table: list[tuple[int, tuple[_Key, list[list[int]]]]]


# --- the model -----------------------------------------------------------------------------


class DataPlane:
    """The FLASH data plane of one host's chains: build it, advance it, read it."""

    def __init__(
        self,
        sockets: Sequence[SocketConfig],
        sources: Sequence[SourceConfig] = (),
        *,
        calibration: Calibration | None = None,
        resolution: float = DEFAULT_RESOLUTION,
        fast_forward: bool = True,
    ) -> None:
        ids = [cfg.flash_id for cfg in sockets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"flash-ids must be unique, got {ids}")
        self.calibration = calibration or Calibration()
        self._k = _Costs.of(self.calibration)
        self._dt = round(resolution * PS_PER_S)
        if self._dt <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self._fast_forward = fast_forward
        self._now = 0
        self._steps = 0
        self._skipped = 0  # steps applied as whole repeated cycles rather than computed
        self._sockets = [_Socket(cfg) for cfg in sockets]
        self._by_id = {s.fid: s for s in self._sockets}
        self._size = _mean_size(sources)
        self._sources = [self._source(cfg) for cfg in sources]
        self._order: list[_Socket] = []
        self._hashes: dict[int, int] = {}  # state hash -> step, recent steps
        self._old_hashes: dict[int, int] = {}  # the ones before those
        self._marks: dict[int, tuple[_Key, list[list[int]]]] = {}  # step -> state, recent
        self._points: dict[int, tuple[int, _Key, list[list[int]]]] = {}  # hash -> step, state
        self._max_points = _POINT_BUDGET // max(4, len(self._sockets))
        self._candidates: set[int] = set()
        self._cycle: _Cycle | None = None
        # The last state read: step, `_key`, and the counters if it is the second of two
        # that differ only in clocks (see `_coast`).
        self._last: tuple[int, _Key, list[list[int]] | None] | None = None
        self._sleepers = 0  # threads in poll(POLLOUT): only then do receivers signal
        for s in self._sockets:
            self._wire(s, s.cfg.targets, s.cfg.chained, s.cfg.shares)
        self._rewired()

    @classmethod
    def from_chain(
        cls,
        chain: ChainDoc,
        *,
        ids: Mapping[SocketKey, int] | None = None,
        rules: Mapping[int, Sequence[int]] | None = None,
        stalled: Collection[int] = (),
        shares: Mapping[int, Sequence[float]] | None = None,
        calibration: Calibration | None = None,
        resolution: float = DEFAULT_RESOLUTION,
        fast_forward: bool = True,
    ) -> DataPlane:
        """The data plane of a chain.

        `ids` maps each NF thread to its flash-id (default: 0, 1, ... in topology order, as
        `projected_inventory` numbers an empty host); threads without an id are left out.
        `rules` is the kernel's data-path view, flash-id -> target ids (`FlashSysfs.targets_of`);
        by default the chain's own rules, or none (`-1`, the socket sends to the NIC) for a
        socket whose targets are not all bound. `stalled` lists chained sockets without
        outflows (`SocketEntry.stalled`). `shares` gives a socket's output share per index.
        """
        cal = calibration or Calibration()
        topology = expand(chain)
        id_of = dict(ids) if ids is not None else {s.key: i for i, s in enumerate(topology.sockets)}
        configs = _socket_configs(chain, topology, id_of, rules, stalled, shares or {}, cal)
        sources = _source_configs(chain, id_of)
        return cls(
            configs,
            sources,
            calibration=cal,
            resolution=resolution,
            fast_forward=fast_forward,
        )

    @classmethod
    def from_plan(
        cls,
        chain: ChainDoc,
        plan: Plan,
        *,
        stalled: Collection[int] = (),
        calibration: Calibration | None = None,
        resolution: float = DEFAULT_RESOLUTION,
        fast_forward: bool = True,
    ) -> DataPlane:
        """The data plane of a planned chain once its rules are written: the plan's bound
        sockets with their flash-ids, each with its resolved `next` list (pending: none)."""
        ids = {b.socket: b.flash_id for b in plan.bindings if b.flash_id is not None}
        return cls.from_chain(
            chain,
            ids=ids,
            rules=plan.desired(),
            stalled=stalled,
            calibration=calibration,
            resolution=resolution,
            fast_forward=fast_forward,
        )

    # --- time ------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Model time in seconds since construction."""
        return self._now / PS_PER_S

    @property
    def now_ps(self) -> int:
        return self._now

    @property
    def resolution(self) -> float:
        return self._dt / PS_PER_S

    @property
    def steps(self) -> int:
        """Steps advanced so far, computed or skipped."""
        return self._steps

    @property
    def skipped_steps(self) -> int:
        """Steps applied as whole repeated cycles by `run` (fast forward) instead of computed."""
        return self._skipped

    def step(self, dt: float | None = None) -> None:
        """Advance by one step of `dt` seconds (default: the resolution)."""
        length = self._dt if dt is None else round(dt * PS_PER_S)
        if length <= 0:
            raise ValueError(f"a step must be positive, got {dt}")
        self._step(length)

    def run(self, until: float) -> None:
        """Advance to `until` seconds in steps of the resolution (a shorter last step)."""
        self._run(round(until * PS_PER_S))

    def advance(self, duration: float) -> None:
        self._run(self._now + round(duration * PS_PER_S))

    def run_ps(self, until: int) -> None:
        """`run` to an instant in integer picoseconds: a caller that runs for hours (the
        agent's real-time runner) keeps its step boundaries exact, which float seconds lose."""
        self._run(until)

    # --- control ---------------------------------------------------------------------------

    def set_rules(
        self, flash_id: int, targets: Sequence[int], *, chained: bool | None = None
    ) -> None:
        """Change a socket's outflows, as a `next` write does (`chained=True` with no targets:
        the torn state of a failed rewrite)."""
        s = self._socket(flash_id)
        self._wire(s, tuple(targets), chained, s.cfg.shares)
        self._rewired()

    def set_shares(self, flash_id: int, shares: Sequence[float] | None) -> None:
        s = self._socket(flash_id)
        self._wire(s, tuple(e.target_id for e in s.edges), s.chained, shares)
        self._rewired()

    def set_refill(self, flash_id: int, enabled: bool) -> None:
        """Whether the NF refills its fill ring (off: a stuck NF that starves its senders)."""
        self._socket(flash_id).refill = enabled
        self._reset_cycles()

    def set_service(self, flash_id: int, service: Service) -> None:
        s = self._socket(flash_id)
        s.cfg = replace(s.cfg, service=service)
        s.batch = max(1, service.batch)
        s.mode = _MODES[service.poll]
        if s.mode != _SMART:
            s.idle_ps = 0
        self._costs(s)
        self._reset_cycles()

    # --- observation -----------------------------------------------------------------------

    @property
    def flash_ids(self) -> tuple[int, ...]:
        return tuple(s.fid for s in self._sockets)

    def name(self, flash_id: int) -> str:
        return self._socket(flash_id).cfg.name

    def counters(self, flash_id: int) -> dict[str, int]:
        return dict(zip(COUNTERS, self._socket(flash_id).c, strict=True))

    def rings(self, flash_id: int) -> Rings:
        s = self._socket(flash_id)
        return Rings(s.rx, s.tx, s.fill, s.cq, s.rx_size, s.tx_size, s.fill_size, s.cq_size)

    def frames(self, flash_id: int) -> int:
        return self._socket(flash_id).frames()

    def edges(self) -> tuple[EdgeCounters, ...]:
        found: list[EdgeCounters] = []
        for s in self._sockets:
            queued = _queued_by_index(s)
            for e in s.edges:
                zero_copy = e.target is not None and e.target.cfg.umem == s.cfg.umem
                found.append(
                    EdgeCounters(
                        source=s.fid,
                        index=e.index,
                        target=e.target_id,
                        mode="zero-copy" if zero_copy else "copy",
                        handed=e.handed,
                        held_back=e.held_back,
                        queued=queued.get(e.index, 0),
                        buffered=e.buffered,
                    )
                )
        return tuple(found)

    def conservation(self) -> Conservation:
        def total(slot: int) -> int:
            return sum(s.c[slot] for s in self._sockets)

        return Conservation(
            offered=total(NIC_RX),
            dropped_ring_full=total(DROP_FULL),
            dropped_no_frame=total(DROP_NO_FRAME),
            egress=total(NIC_TX),
            sunk=total(SUNK),
            queued=sum(s.rx + s.tx for s in self._sockets),
        )

    def latency(self) -> float | None:
        """Mean time a delivered packet spent queued in rings, in seconds (Little's law over
        the per-step occupancy; processing time excluded), or None before any delivery."""
        done = sum(s.c[NIC_TX] + s.c[SUNK] for s in self._sockets)
        if not done:
            return None
        waited = sum(s.c[RX_WAIT] + s.c[TX_WAIT] for s in self._sockets)
        return waited / done / PS_PER_S

    def sample(self) -> Sample:
        return Sample(at=self.now, sockets=tuple(self._sample(s) for s in self._sockets))

    # --- stepping --------------------------------------------------------------------------

    def _run(self, until: int) -> None:
        dt = self._dt
        if self._fast_forward:
            while self._now + dt <= until:
                if self._cycle is None:
                    self._observe(until)
                if self._cycle is not None:
                    self._follow(until)
                    break
                if self._now + dt <= until:  # (unless the state coasted to `until`)
                    self._step(dt)
            while self._now + dt <= until:  # on a cycle: the rest of it, coasting
                self._observe(until)
                if self._now + dt <= until:
                    self._step(dt)
        while self._now + dt <= until:
            self._step(dt)
        if until > self._now:
            self._step(until - self._now)

    def _step(self, length: int) -> None:
        if length != self._dt:  # off the grid: what was seen of the run no longer applies
            self._reset_cycles()
        t0 = self._now
        for src in self._sources:
            n = src.arrivals(t0, length)
            if n:
                self._ingress(src, n)
        end = t0 + length
        for s in self._order:
            self._turn(s, t0, end)
        self._now = end
        self._steps += 1

    def _ingress(self, src: _Source, n: int) -> None:
        """RSS: `n` packets spread evenly over the source's sockets, remainders round-robin."""
        targets = src.targets
        count = len(targets)
        if count == 1:
            self._nic_rx(targets[0], n)
            return
        base, extra = divmod(n, count)
        rr = src.rr
        for j, s in enumerate(targets):
            m = base + 1 if (j - rr) % count < extra else base
            if m:
                self._nic_rx(s, m)
        src.rr = (rr + extra) % count

    @staticmethod
    def _nic_rx(s: _Socket, n: int) -> None:
        """The driver places `n` packets: each needs a fill frame and an RX entry, or is lost."""
        c = s.c
        c[NIC_RX] += n
        frames = n if n <= s.fill else s.fill
        if frames < n:
            c[FILL_EMPTY] += n - frames
            c[DROP_NO_FRAME] += n - frames
        room = s.rx_size - s.rx
        got = frames if frames <= room else room
        if got < frames:  # the frames of lost packets are recycled by the driver
            c[RX_RING_FULL] += 1
            c[RX_DROPPED] += frames - got
            c[DROP_FULL] += frames - got
        s.fill -= got
        s.rx += got
        c[RX_PKTS] += got

    def _turn(self, s: _Socket, t0: int, end: int) -> None:
        """One thread's share of a step: wake, recycle frames, kick, process, then idle."""
        c = s.c
        if s.state and not self._wake(s, t0):
            _wait(s, end - t0)
            return
        start = s.ready_at if s.ready_at > t0 else t0
        if start >= end:  # still waking up
            _wait(s, end - t0)
            return
        # Time left over by the previous step, less than a packet: the thread was mid-packet.
        avail = end - start + s.spare
        s.spare = 0
        if s.cq:
            s.pool += s.cq
            s.cq = 0
        if s.refill and s.pool and s.fill < s.fill_size:
            r = s.fill_size - s.fill
            if r > s.pool:
                r = s.pool
            s.fill += r
            s.pool -= r
        kick = self._k.kick
        used = 0
        blocked = False
        if s.tx:
            sent, blocked = s.kicker(s, avail // kick or 1)
            used = sent * kick // s.budget + (kick if blocked else 0)
        n = 0
        if s.rx and used < avail:
            n = s.fits(avail - used)
            if n > s.rx:
                n = s.rx
            if not s.sink and n > s.tx_size - s.tx:
                n = s.tx_size - s.tx
            if n:
                used += self._process(s, n, start - t0)
                if not s.sink:
                    sent, blocked = s.kicker(s, (avail - used) // kick or 1)
                    used += sent * kick // s.budget + (kick if blocked else 0)
        if not s.rx:
            s.carry = 0  # the poll loop found RX dry: the next packet starts a new batch
        if used > avail:
            used = avail
        c[CPU] += self._idle(s, avail, used, blocked, start, end - start)
        step = end - t0
        c[RX_WAIT] += s.rx * step
        c[TX_WAIT] += s.tx * step
        if n and self._sleepers and s.senders:
            self._signal(s, start + used)

    def _process(self, s: _Socket, n: int, waited: int) -> int:
        """The NF takes `n` packets from RX into TX (or consumes them); returns its CPU time.
        A batch left unfinished by the previous step goes on without a new poll."""
        c = s.c
        fresh = n - s.carry
        if fresh > 0:
            batches = -(-fresh // s.batch)
            s.carry = batches * s.batch - fresh
        else:
            batches = 0
            s.carry = -fresh
        s.rx -= n
        c[PROCESSED] += n
        c[POLLS] += batches
        c[RX_WAIT] += n * waited  # they sat in RX while the thread was waking up
        s.idle_ps = 0
        if s.sink:
            s.pool += n
            c[SUNK] += n
        else:
            s.tx += n
            if s.multi:
                self._emit(s, n)
        return batches * s.batch_ps + n * s.pkt_ps

    def _idle(self, s: _Socket, avail: int, used: int, blocked: bool, start: int, span: int) -> int:
        """What the thread does with the rest of its step; returns its CPU time in the step
        (`span` long)."""
        c = s.c
        k = self._k
        rest = avail - used
        if blocked and s.tx:  # backpressure: POLLOUT wait (smart) or sendto retries
            if s.mode == _SMART and s.tx > s.tx_size >> 1:
                s.state = _SLEEP_OUT
                self._sleepers += 1
                s.slept_at = start + used
                c[BP_SLEEPS] += 1
                return min(used, span)
            spins = rest // k.kick
            if spins:
                c[KICKS] += spins
                self._spin(s, spins)
            return span
        if s.rx or s.tx:  # out of time with work left: keep the crumbs for the next step
            if s.rx:  # in coarse quanta, so that a saturated thread's steps still repeat
                s.spare = min(rest, s.est_ps + s.batch_ps) // _SPARE_QUANTUM * _SPARE_QUANTUM
            return span
        if s.mode == _INTERRUPT:
            s.state = _SLEEP_IN
            c[IDLE_SLEEPS] += 1
            c[POLLS] += 1
            return min(used + min(rest, k.poll), span)
        spent = rest
        if s.mode == _SMART:
            idle = s.idle_ps + rest
            if idle >= k.idle_timeout:  # FLASH's smart poll gives up the core
                spent = k.idle_timeout - s.idle_ps
                s.idle_ps = 0
                s.state = _SLEEP_IN
                c[IDLE_SLEEPS] += 1
            else:
                s.idle_ps = idle
        polls = spent // k.poll
        c[POLLS] += polls
        c[EMPTY_POLLS] += polls
        c[TX_EMPTY] += polls  # a busy poll drives the TX path too, and finds it empty
        return min(used + spent, span)

    def _wake(self, s: _Socket, t0: int) -> bool:
        """Whether a sleeping thread wakes at this step (RX non-empty, or POLLOUT timeout)."""
        k = self._k
        if s.state == _SLEEP_IN:
            if not s.rx:
                return False
            s.ready_at = t0 + k.wake_latency
        else:
            if t0 - s.slept_at < k.pollout_timeout:
                return False
            s.ready_at = t0
            self._sleepers -= 1
        s.state = _RUN
        s.c[WAKEUPS] += 1
        s.c[CPU] += k.wake_cpu
        return True

    def _signal(self, t: _Socket, at: int) -> None:
        """recvfrom(MSG_MORE) of a receiver with room wakes its senders sleeping in POLLOUT."""
        if t.rx_size - t.rx <= t.rx_size >> 1 or t.fill < t.fill_size >> 1:
            return  # flash_txrx.c __try_kick_rx: fill >= size/2 and RX free > size/2
        k = self._k
        for s in t.senders:
            if s.state == _SLEEP_OUT:
                s.state = _RUN
                self._sleepers -= 1
                s.ready_at = at + k.wake_latency
                s.c[WAKEUPS] += 1
                s.c[CPU] += k.wake_cpu
                t.c[WAKEUPS_SENT] += 1

    # --- redirect --------------------------------------------------------------------------

    def _spin(self, s: _Socket, spins: int) -> None:
        """`spins` more sendto() retries on a blocked TX: the head window fails each time."""
        if s.egress:
            return  # completion ring full: nothing is peeked, nothing counted
        if not s.edges:
            s.c[TX_INVALID] += spins
            return
        if not s.multi:
            _refuse(s.edges[0], min(s.budget, s.tx, s.cq_size - s.cq), spins)
            return
        w = min(s.budget, s.tx, s.cq_size - s.cq)
        peeked: dict[int, int] = {}
        for index, count in s.runs:
            if w <= 0:
                break
            if index >= len(s.edges):
                s.c[TX_INVALID] += spins
                break
            x = min(count, w)
            peeked[index] = peeked.get(index, 0) + x
            w -= x
        for index, want in peeked.items():
            _refuse(s.edges[index], want, spins)

    def _emit(self, s: _Socket, n: int) -> None:
        """Split `n` processed packets over the indices by share (cumulative rounding, so the
        split is exact over time) and append them to TX as runs."""
        total = s.prefix[-1]
        r0 = s.split_r
        r1 = r0 + n
        lo0 = lo1 = 0
        runs = s.runs
        for index, p in enumerate(s.prefix):
            hi0 = r0 * p // total
            hi1 = r1 * p // total
            a = (hi1 - lo1) - (hi0 - lo0)
            lo0, lo1 = hi0, hi1
            if a:
                if runs and runs[-1][0] == index:
                    runs[-1][1] += a
                else:
                    runs.append([index, a])
        s.split_r = r1 % total

    # --- wiring ----------------------------------------------------------------------------

    def _source(self, cfg: SourceConfig) -> _Source:
        targets = [self._socket(fid) for fid in cfg.sockets]
        if not targets:
            raise ValueError(f"traffic {cfg.name!r} reaches no socket")
        return _Source(cfg, targets)

    def _socket(self, flash_id: int) -> _Socket:
        try:
            return self._by_id[flash_id]
        except KeyError:
            raise KeyError(f"no socket with flash-id {flash_id} in the data plane") from None

    def _wire(
        self,
        s: _Socket,
        targets: tuple[int, ...],
        chained: bool | None,
        shares: Sequence[float] | None,
    ) -> None:
        """Set a socket's outflows; frames borrowed by the old ones go back to their owners."""
        for e in s.edges:
            if e.target is not None:
                e.target.pool += e.buffered
        old_multi = s.multi
        s.edges = [_Edge(i, fid, self._by_id.get(fid)) for i, fid in enumerate(targets)]
        s.chained = bool(targets) if chained is None else chained or bool(targets)
        s.egress = not s.chained and not s.sink
        s.multi = len(s.edges) > 1
        if s.egress or s.sink:
            s.kicker = _kick_nic
        elif not s.edges:
            s.kicker = _kick_stalled
        else:
            s.kicker = _kick_multi if s.multi else _kick_one
        if s.multi and not old_multi:
            s.runs = [[0, s.tx]] if s.tx else []  # single-target descriptors carry index 0
        elif not s.multi:
            s.runs = []
        weights = _weights(shares, len(s.edges))
        s.weights = weights
        s.prefix = tuple(sum(weights[: i + 1]) for i in range(len(weights)))
        s.split_r = 0
        s.cfg = replace(
            s.cfg,
            targets=targets,
            chained=s.chained,
            shares=tuple(shares) if shares is not None else None,
        )
        self._costs(s)

    def _costs(self, s: _Socket) -> None:
        """Per-packet and per-batch picoseconds of a socket, from its service and outflows."""
        k = self._k
        service = s.cfg.service
        for e in s.edges:
            zero_copy = e.target is not None and e.target.cfg.umem == s.cfg.umem
            e.hop_ps = k.hop(zero_copy, self._size)
        if s.sink:
            hop = 0
        elif s.egress:
            hop = k.nic_tx
        elif s.edges:
            total = sum(s.weights)
            hop = sum(w * e.hop_ps for w, e in zip(s.weights, s.edges, strict=True)) // total
        else:
            hop = k.zero_copy
        s.batch_ps = k.poll if service.batch_ns is None else round(service.batch_ns * PS_PER_NS)
        kick = 0 if s.sink else k.kick // s.budget
        if service.capacity_pps:
            per_packet = round(PS_PER_S / service.capacity_pps)
            work = max(0, per_packet - k.ring - hop - kick - s.batch_ps // s.batch)
        else:
            work = round(service.nf_ns * PS_PER_NS)
        s.pkt_ps = work + k.ring + hop
        # At least 1 ps a packet: a thread never does unbounded work in a finite step.
        s.est_ps = max(1, s.pkt_ps + kick)

    def _rewired(self) -> None:
        """Recompute senders and the upstream-first order after a rule change."""
        for s in self._sockets:
            s.senders = []
        for s in self._sockets:
            for e in s.edges:
                if e.target is not None and s not in e.target.senders:
                    e.target.senders.append(s)
        self._order = _topological(self._sockets)
        self._reset_cycles()

    # --- fast forward ----------------------------------------------------------------------
    #
    # Every step `run` computes, it reads the state (`_key`: everything that decides the
    # future, times relative to now, the traffic's phase included).
    #
    # Cycles, short: the step is remembered by the state's hash for the last `_RECENT` steps,
    # and every `_KEEP_EVERY`-th step the state itself is kept with the counters. A hash seen
    # before proposes a period p; it is verified exactly, by comparing the whole state with
    # the one kept p steps earlier (at most `_KEEP_EVERY` steps later, when that step is a
    # kept one). Long: a state whose hash is a multiple of `_POINT_EVERY` (a "distinguished
    # point", one step in so many, at random) is kept with the counters, by hash; a cycle
    # through it brings the very same state back, compared whole. Either way, from then on
    # the run is periodic: any instant is reached by restoring the kept state at the same
    # position of the cycle (the counters being the kept ones plus whole cycles of deltas)
    # and computing the few steps from there (`_follow`). Nothing is approximated: a state
    # is only ever replaced by one it equals, at a step where it occurs.
    #
    # Waiting: a state whose step leaves it unchanged but for its clocks (a thread asleep in
    # POLLOUT until its timeout, a smart thread's idle timer) repeats that step, counters
    # included, until a clock reaches its threshold: the steps up to then are applied at once
    # (`_coast`). This is what a cycle spends most of its steps on when a thread sleeps for
    # the 1 s POLLOUT timeout.

    def _reset_cycles(self) -> None:
        self._hashes.clear()
        self._old_hashes.clear()
        self._marks.clear()
        self._points.clear()
        self._candidates.clear()
        self._cycle = None
        self._last = None

    def _observe(self, until: int) -> None:
        """Look at the current state: coast through a wait, remember it, verify a proposed
        period (sets `_cycle`)."""
        for src in self._sources:
            if src.ramping:  # the input is not periodic yet
                return
        key = self._key()
        n = self._steps
        last = self._last
        if last is not None and last[0] == n - 1 and last[1][0] == key[0]:
            if last[2] is None:
                self._last = (n, key, self._snapshot())
                return
            if self._coast(last[1][1], key[1], last[2], until):
                self._last = None
                return
        self._last = (n, key, None)
        if self._cycle is not None:
            return
        marks = self._marks
        if self._candidates:
            for period in list(self._candidates):
                if (n - period) % _KEEP_EVERY:
                    continue
                self._candidates.discard(period)
                mark = marks.get(n - period)
                if mark is not None and mark[0] == key:
                    self._found(n - period, period, mark)
                    return
        h = hash(key)
        if h % _POINT_EVERY == 0:
            points = self._points
            point = points.pop(h, None)
            if point is not None and point[1] == key:
                self._found(point[0], n - point[0], (key, point[2]))
                return
            points[h] = (n, key, self._snapshot())
            if len(points) > self._max_points:
                del points[next(iter(points))]
        seen = self._hashes.get(h)
        if seen is None:
            seen = self._old_hashes.get(h)
        if seen is not None and len(self._candidates) < _MAX_CANDIDATES:
            self._candidates.add(n - seen)
        hashes = self._hashes
        hashes[h] = n
        if len(hashes) >= _RECENT:
            self._old_hashes = hashes
            self._hashes = {}
        if n % _KEEP_EVERY == 0:
            marks[n] = (key, self._snapshot())
            while next(iter(marks)) < n - 2 * _RECENT:
                del marks[next(iter(marks))]

    def _coast(
        self,
        before: tuple[int, ...],
        clocks: tuple[int, ...],
        counters: list[list[int]],
        until: int,
    ) -> bool:
        """The last step changed nothing but clocks (`before` -> `clocks`, per socket the time
        asleep in POLLOUT and the idle timer) and the counters (from `counters`): apply that
        step again as many times as no clock can reach its threshold. Whether time advanced."""
        dt = self._dt
        k = self._k
        most = (until - self._now) // dt
        for i, s in enumerate(self._sockets):
            slept, idle = clocks[2 * i], clocks[2 * i + 1]
            if s.state == _SLEEP_OUT:
                # Unchanged since the sleep began (else the wait restarted): the thread wakes
                # at the first step that starts `pollout_timeout` after it.
                if slept - before[2 * i] != dt:
                    return False
                most = min(most, (k.pollout_timeout - slept - 1) // dt)
            grown = idle - before[2 * i + 1]
            if grown:  # idle the whole step: times out once idle + grown reaches the limit
                if grown < 0 or s.mode != _SMART:
                    return False
                most = min(most, (k.idle_timeout - idle - 1) // grown)
        steps = most - 1  # a margin: the steps up to the threshold are computed
        if steps < 1:
            return False
        delta = self._delta(counters)
        self._add(delta, steps)
        for i, s in enumerate(self._sockets):
            s.idle_ps += steps * (clocks[2 * i + 1] - before[2 * i + 1])
            if s.ready_at > self._now:
                s.ready_at += steps * dt
        self._now += steps * dt
        self._steps += steps
        self._skipped += steps
        return True

    def _found(self, anchor: int, period: int, start: tuple[_Key, list[list[int]]]) -> None:
        """The state now equals the one kept at step `anchor` (`start`, with the counters
        then): a cycle of `period` steps. Every state kept in it makes the cycle's table."""
        end = anchor + period
        kept = {step - anchor: mark for step, mark in self._marks.items() if anchor <= step < end}
        for step, key, counters in self._points.values():
            if anchor <= step < end:
                kept[step - anchor] = (key, counters)
        kept[0] = start
        table = sorted(kept.items(), key=lambda item: item[0])
        self._cycle = _Cycle(anchor, period, self._delta(start[1]), table)
        self._hashes.clear()
        self._old_hashes.clear()
        self._marks.clear()
        self._points.clear()
        self._candidates.clear()

    def _follow(self, until: int) -> None:
        """On a verified cycle: go to the last kept position of the cycle at or before the
        last full step before `until`, if that is ahead (`_run` computes the rest)."""
        cycle = self._cycle
        assert cycle is not None
        dt = self._dt
        here = self._steps - cycle.anchor
        cycles, offset = divmod(here + (until - self._now) // dt, cycle.period)
        lo, hi = 0, len(cycle.table)
        while hi - lo > 1:  # the last kept offset <= offset
            mid = (lo + hi) // 2
            if cycle.table[mid][0] <= offset:
                lo = mid
            else:
                hi = mid
        kept, (key, counters) = cycle.table[lo]
        target = cycles * cycle.period + kept
        if target <= here:
            return
        skip = target - here
        self._now += skip * dt
        self._steps += skip
        self._skipped += skip
        self._last = None
        self._restore(key)
        for s, row in zip(self._sockets, counters, strict=False):
            s.c = list(row)
        edges = iter(counters[-1])
        for s in self._sockets:
            for e in s.edges:
                e.handed = next(edges)
                e.held_back = next(edges)
        self._add(cycle.delta, cycles)

    def _key(self) -> _Key:
        """Everything that decides the future, flat, with times relative to now: the phase of
        each source, then per socket its rings, thread and split state, runs (count first) and
        the frames its edges borrowed; and apart, the clocks: per socket the time asleep in
        POLLOUT (0 if not) and the idle timer. `_restore` reads it back."""
        now = self._now
        cap = self._k.pollout_timeout
        parts: list[int] = []
        clocks: list[int] = []
        add = parts.append
        for src in self._sources:
            add(src.acc)
            add(src.rr)
        fields = _STATE_FIELDS
        for s in self._sockets:
            parts += fields(s)
            ready = s.ready_at
            add(ready - now if ready > now else 0)
            if s.multi:
                add(len(s.runs))
                parts += _flat(s.runs)
            if s.edges:
                parts += [e.buffered for e in s.edges]
            if s.state == _SLEEP_OUT:
                slept = now - s.slept_at
                clocks += (slept if slept < cap else cap, s.idle_ps)
            else:
                clocks += (0, s.idle_ps)
        return tuple(parts), tuple(clocks)

    def _restore(self, key: _Key) -> None:
        """Set the state `_key` describes, at the current time."""
        now = self._now
        it = iter(key[0])
        clocks = iter(key[1])
        for src in self._sources:
            src.acc = next(it)
            src.rr = next(it)
        sleepers = 0
        for s in self._sockets:
            s.rx = next(it)
            s.tx = next(it)
            s.fill = next(it)
            s.cq = next(it)
            s.pool = next(it)
            s.state = next(it)
            s.carry = next(it)
            s.spare = next(it)
            s.split_r = next(it)
            s.ready_at = now + next(it)
            if s.multi:
                s.runs = [[next(it), next(it)] for _ in range(next(it))]
            for e in s.edges:
                e.buffered = next(it)
            s.slept_at = now - next(clocks)
            s.idle_ps = next(clocks)
            if s.state == _SLEEP_OUT:
                sleepers += 1
        self._sleepers = sleepers

    def _snapshot(self) -> list[list[int]]:
        rows = [list(s.c) for s in self._sockets]
        rows.append([x for s in self._sockets for e in s.edges for x in (e.handed, e.held_back)])
        return rows

    def _delta(self, before: list[list[int]]) -> list[list[int]]:
        return [
            [b - a for a, b in zip(r0, r1, strict=True)]
            for r0, r1 in zip(before, self._snapshot(), strict=True)
        ]

    def _add(self, delta: list[list[int]], times: int) -> None:
        """Counters grow by `times` x `delta` (a `_snapshot` difference)."""
        for s, d in zip(self._sockets, delta, strict=False):
            c = s.c
            for i, x in enumerate(d):
                if x:
                    c[i] += x * times
        edges = iter(delta[-1])
        for s in self._sockets:
            for e in s.edges:
                e.handed += next(edges) * times
                e.held_back += next(edges) * times

    # --- sampling --------------------------------------------------------------------------

    def _sample(self, s: _Socket) -> SocketSample:
        counters: dict[str, float] = {}
        for name, value in zip(COUNTERS, s.c, strict=True):
            if name.endswith("_ps"):
                counters[name[:-3] + "_seconds"] = value / PS_PER_S
            else:
                counters[name] = float(value)
        return SocketSample(flash_id=s.fid, rings=self.rings(s.fid), counters=counters)


# --- helpers -------------------------------------------------------------------------------


def _kick_stalled(s: _Socket, windows: int) -> tuple[int, bool]:
    """Chained without outflows: the head descriptor has nowhere to go (tx_invalid_descs)."""
    s.c[TX_INVALID] += 1
    s.c[KICKS] += 1
    return 0, True


def _kick_nic(s: _Socket, windows: int) -> tuple[int, bool]:
    """NIC egress: windows of `budget` descriptors, as long as the completion ring has room."""
    b = s.budget
    most = windows * b
    m = s.cq_size - s.cq
    if s.tx < m:
        m = s.tx
    if most < m:
        m = most
    kicks = -(-m // b)
    blocked = m < s.tx and m < most  # completion ring full
    if blocked and kicks < windows:
        kicks += 1
    s.tx -= m
    s.cq += m
    c = s.c
    c[TX_PKTS] += m
    c[NIC_TX] += m
    c[KICKS] += kicks
    return m, blocked


def _kick_one(s: _Socket, windows: int) -> tuple[int, bool]:
    """One target. When everything fits, all of TX moves at once; otherwise whole windows
    move in bulk while they fit, then one kernel window (`_offer`) meets the limit."""
    e = s.edges[0]
    t = e.target
    b = s.budget
    tx = s.tx
    cq_free = s.cq_size - s.cq
    if t is not None:
        room = t.rx_size - t.rx
        frames = t.fill + e.buffered
        if tx <= cq_free and tx <= room and tx <= frames and tx <= windows * b:
            _move(e, t, tx)
            s.tx = 0
            s.cq += tx
            s.c[TX_PKTS] += tx
            s.c[KICKS] += -(-tx // b)
            return tx, False
    kicks = sent = 0
    blocked = False
    while kicks < windows and tx > sent:
        if t is not None:
            k = min(tx - sent, cq_free, t.rx_size - t.rx, t.fill + e.buffered) // b
            if k > windows - kicks:
                k = windows - kicks
            if k:
                _move(e, t, k * b)
                sent += k * b
                cq_free -= k * b
                kicks += k
                continue
        w = min(b, tx - sent, cq_free)
        kicks += 1
        got = _offer(e, w) if w else 0
        sent += got
        cq_free -= got
        if got < w or not w:
            e.held_back += w - got
            blocked = True
            break
    s.tx -= sent
    s.cq += sent
    s.c[TX_PKTS] += sent
    s.c[KICKS] += kicks
    return sent, blocked


def _kick_multi(s: _Socket, windows: int) -> tuple[int, bool]:
    """Several targets: bulk while the head run's target takes whole windows, else one kernel
    window at a time (`_window`: refused descriptors go back to the head)."""
    b = s.budget
    runs = s.runs
    edges = s.edges
    kicks = sent = 0
    blocked = False
    cq_free = s.cq_size - s.cq
    while kicks < windows and runs:
        index, count = runs[0]
        if index < len(edges) and count >= b:
            e = edges[index]
            t = e.target
            if t is not None:
                k = min(count, cq_free, t.rx_size - t.rx, t.fill + e.buffered) // b
                if k > windows - kicks:
                    k = windows - kicks
                if k:
                    _move(e, t, k * b)
                    if k * b == count:
                        runs.pop(0)
                    else:
                        runs[0][1] = count - k * b
                    sent += k * b
                    cq_free -= k * b
                    kicks += k
                    continue
        w = min(b, s.tx - sent, cq_free)
        kicks += 1
        got = _window(s, w) if w else 0
        sent += got
        cq_free -= got
        if not got:
            blocked = True
            break
    s.tx -= sent
    s.cq += sent
    s.c[TX_PKTS] += sent
    s.c[KICKS] += kicks
    return sent, blocked


def _window(s: _Socket, w: int) -> int:
    """One kick as xsk_tx_peek_desc + xsk_tx_release: peek up to `w` descriptors (stop at an
    index past the list), deliver per target in index order, put leftovers back at the
    head, the last target's first. Returns the descriptors delivered."""
    runs = s.runs
    edges = s.edges
    peeked: dict[int, int] = {}
    taken = 0
    while taken < w and runs:
        index, count = runs[0]
        if index >= len(edges):
            s.c[TX_INVALID] += 1
            break
        x = min(count, w - taken)
        peeked[index] = peeked.get(index, 0) + x
        taken += x
        if x == count:
            runs.pop(0)
        else:
            runs[0][1] = count - x
    got = 0
    for index in sorted(peeked):
        want = peeked[index]
        e = edges[index]
        r = _offer(e, want)
        got += r
        if r < want:
            e.held_back += want - r
            _push_head(runs, index, want - r)
    return got


def _move(e: _Edge, t: _Socket, n: int) -> None:
    """Deliver `n` descriptors that fit: buffered frames first, then the target's fill ring."""
    from_buffer = e.buffered if e.buffered < n else n
    e.buffered -= from_buffer
    t.fill -= n - from_buffer
    t.rx += n
    t.c[RX_PKTS] += n
    e.handed += n


def _offer(e: _Edge, want: int) -> int:
    """One outflow of one kick, as xsk_tx_release: borrow fill frames up to `want` (keeping
    spares), reserve RX, deliver `min(frames, free RX)`. Returns what was delivered."""
    t = e.target
    if t is None:  # the flash-id is not a live socket: held in TX, nothing counted
        return 0
    short = want - e.buffered
    if short > 0:
        take = short if short <= t.fill else t.fill
        if take < short:
            t.c[FILL_EMPTY] += 1
        t.fill -= take
        e.buffered += take
    frames = e.buffered if e.buffered < want else want
    if not frames:
        return 0
    room = t.rx_size - t.rx
    got = frames if frames <= room else room
    if got < frames:
        t.c[RX_RING_FULL] += 1
    e.buffered -= got
    t.rx += got
    t.c[RX_PKTS] += got
    e.handed += got
    return got


def _refuse(e: _Edge, want: int, kicks: int) -> None:
    """The counters of `kicks` more kicks offering `want` descriptors to `e` and moving none:
    what `_offer` would count on the blocked state, times `kicks`."""
    if want <= 0:
        return
    e.held_back += want * kicks
    t = e.target
    if t is None:
        return
    short = want - e.buffered
    if short > 0 and t.fill < short:
        t.c[FILL_EMPTY] += kicks
    frames = min(e.buffered + t.fill, want)
    if frames and t.rx_size - t.rx < frames:
        t.c[RX_RING_FULL] += kicks


def _wait(s: _Socket, step: int) -> None:
    """Packet-time queued in a socket's rings over a step it did not run."""
    s.c[RX_WAIT] += s.rx * step
    s.c[TX_WAIT] += s.tx * step


def _push_head(runs: list[list[int]], index: int, count: int) -> None:
    if runs and runs[0][0] == index:
        runs[0][1] += count
    else:
        runs.insert(0, [index, count])


def _queued_by_index(s: _Socket) -> dict[int, int]:
    if s.multi:
        queued: dict[int, int] = {}
        for index, count in s.runs:
            queued[index] = queued.get(index, 0) + count
        return queued
    return {0: s.tx} if s.edges else {}


def _weights(shares: Sequence[float] | None, count: int) -> tuple[int, ...]:
    """Integer weights for the split: equal by default, else the shares as exact fractions."""
    if count == 0:
        return ()
    if shares is None:
        return (1,) * count
    if len(shares) != count or any(x < 0 for x in shares) or not any(shares):
        raise ValueError(f"need {count} non-negative shares, not all zero, got {list(shares)}")
    fractions = [Fraction(x).limit_denominator(1000) for x in shares]
    scale = lcm(*(f.denominator for f in fractions))
    return tuple(int(f * scale) for f in fractions)


def _topological(sockets: Sequence[_Socket]) -> list[_Socket]:
    """Senders before their targets (Kahn, ties in construction order); cycles keep order."""
    position = {s.fid: i for i, s in enumerate(sockets)}
    indegree = {s.fid: 0 for s in sockets}
    for s in sockets:
        for e in s.edges:
            if e.target is not None and e.target is not s:
                indegree[e.target.fid] += 1
    ready = [s for s in sockets if indegree[s.fid] == 0]
    order: list[_Socket] = []
    placed: set[int] = set()
    while ready:
        ready.sort(key=lambda x: position[x.fid])
        s = ready.pop(0)
        order.append(s)
        placed.add(s.fid)
        for e in s.edges:
            t = e.target
            if t is not None and t is not s:
                indegree[t.fid] -= 1
                if indegree[t.fid] == 0:
                    ready.append(t)
    order.extend(s for s in sockets if s.fid not in placed)
    return order


def _mean_size(sources: Iterable[SourceConfig]) -> int:
    """The packet size copy costs use: the rate-weighted mean of the sources (64 B if none)."""
    total = weighted = 0.0
    for src in sources:
        total += src.pps
        weighted += src.pps * src.size
    return round(weighted / total) if total else 64


def _socket_configs(
    chain: ChainDoc,
    topology: Topology,
    id_of: Mapping[SocketKey, int],
    rules: Mapping[int, Sequence[int]] | None,
    stalled: Collection[int],
    shares: Mapping[int, Sequence[float]],
    cal: Calibration,
) -> list[SocketConfig]:
    """One config per bound NF thread, with its rings, frames, service and `next` list."""
    spec = chain.spec
    scale_of = {u.name: u.scale for u in spec.umems}
    senders = {h.source.nf for h in topology.hops}
    configs: list[SocketConfig] = []
    for sock in topology.sockets:
        fid = id_of.get(sock.key)
        if fid is None:
            continue
        scale = scale_of.get(sock.umem, 1)
        configs.append(
            SocketConfig(
                flash_id=fid,
                name=str(sock.key),
                umem=sock.umem,
                service=_service(spec.nfs[sock.key.nf].sim, spec.sim, cal),
                rings=_rings(spec.sim, scale),
                frames=FRAMES_PER_SOCKET * scale,
                targets=_targets(topology, sock.key, fid, id_of, rules, stalled),
                chained=fid in stalled or None,
                sink=sock.key.nf not in senders and sock.key.nf not in topology.egress,
                tx_budget=spec.sim.tx_budget,
                shares=tuple(shares[fid]) if fid in shares else None,
            )
        )
    return configs


def _targets(
    topology: Topology,
    key: SocketKey,
    fid: int,
    id_of: Mapping[SocketKey, int],
    rules: Mapping[int, Sequence[int]] | None,
    stalled: Collection[int],
) -> tuple[int, ...]:
    """The data path's `next` list: as given, else the chain's if every target is bound (a
    pending rule is not written: the socket still sends to the NIC)."""
    if fid in stalled:
        return ()
    if rules is not None and fid in rules:
        return tuple(rules[fid])
    wanted = [id_of.get(t) for t in topology.next_of(key)]
    return tuple(t for t in wanted if t is not None) if None not in wanted else ()


def _source_configs(chain: ChainDoc, id_of: Mapping[SocketKey, int]) -> list[SourceConfig]:
    """The chain's traffic, into the bound threads of each ingress NF (none bound: no traffic,
    since no socket would receive it)."""
    sources = []
    for i, traffic in enumerate(chain.spec.traffic):
        threads = range(chain.spec.nfs[traffic.into].thread_count)
        keys = [SocketKey(traffic.into, thread) for thread in threads]
        sockets = tuple(id_of[key] for key in keys if key in id_of)
        if not sockets:
            continue
        sources.append(
            SourceConfig(
                name=traffic.name or f"traffic-{i}",
                sockets=sockets,
                pps=traffic.pps,
                size=traffic.size,
                pattern=traffic.pattern,
                burst=traffic.burst or DEFAULT_BURST,
                ramp_s=(traffic.ramp or 0.0) / 1e9,
            )
        )
    return sources


def _service(sim: NFSim, chain_sim: SimSpec, cal: Calibration) -> Service:
    """`cost` is NF work on top of the data path; `capacity` the thread's top rate."""
    return Service(
        nf_ns=sim.cost if sim.cost is not None else cal.nf_ns,
        batch=sim.batch,
        batch_ns=sim.batch_cost,
        poll=sim.poll or chain_sim.poll,
        capacity_pps=sim.capacity.value if sim.capacity is not None else None,
    )


def _rings(sim: SimSpec, scale: int) -> RingSizes:
    r = sim.rings
    return RingSizes(r.rx * scale, r.tx * scale, r.fill * scale, r.completion * scale)
