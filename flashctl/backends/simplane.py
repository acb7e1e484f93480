"""The simulated data plane in real time: the agent's runner of `dataplane.DataPlane`.

When its backend is the simulator, the agent owns one `LivePlane`. It keeps one DataPlane per
running chain, built from the chain and from what the simulated host says now:

- which socket is which NF thread: the chain's simulated NF processes, one socket per thread
  in bind order (`SimProcess.sockets`);
- where each socket's TX really goes: the kernel's data-path view (`SocketEntry.outflows`,
  `SocketEntry.stalled`), not the `next` file, so a rule aimed at a closed id holds packets in
  the sender's TX ring, a torn rewrite stalls its sender and a cleared rule sends to the wire,
  as the kernel would.

A chain's plane is rebuilt (its rings and counters start again from zero, as after a restart
of the whole chain; `generation` counts the builds) when the chain or its sockets change (an
NF stopped or restarted, even onto the flash-ids it had), and rewired with `set_rules` when
only the data-path rules do.

Time. Every plane runs on one model clock (`now`: model seconds since the runner started) and
they advance in rounds to a common goal, so between rounds, which is when the agent serves a
request, all planes are at the same instant and one sample covers them. The goal follows the
agent's monotonic clock, quantised to the model's step so that a run in chunks steps exactly as
one long run would (tests replay the model and compare counters). A round is a slice of about
`SLICE` seconds of CPU: its length in model time adapts to the cost just measured (a steady
state the model fast-forwards costs next to nothing, a transient a computed step per 10 us),
and restarts small after a rebuild or a rewire. The model may use `share` of one core on
average (a token bucket refilled from the agent's clock). A model that cannot keep up falls
behind and says by how much (`lag`); beyond `MAX_LAG` it slips (the goal moves forward, the
model runs slower than real time, `speed`) rather than owing ever more.

`status` shows recent rates over the last `RATE_WINDOW` of model time, so one call answers
without a second sample: `pps_in` (packets placed in RX) and `pps_out` (packets that left:
to a target, to the wire, or consumed by a sink), as `flashctl.analysis.rates` defines them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from flashctl.backends.base import Backend, Sample, SocketSample
from flashctl.backends.dataplane import DEFAULT_RESOLUTION, PS_PER_S, DataPlane
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.chains.spec import Chain
from flashctl.chains.topology import SocketKey

TICK: Final = 0.05  # seconds between the runner's wake-ups
SHARE: Final = 0.25  # of one core, on average, that the model may use
SLICE: Final = 0.004  # CPU seconds a round aims at: about the longest a request waits for it
MAX_LAG: Final = 5.0  # seconds the model may owe the clock before it slips
RATE_WINDOW: Final = 1.0  # model seconds the rates shown by `status` average over
RATE_EVERY: Final = 0.1  # model seconds between the points those rates are taken from
MIN_CHUNK_STEPS: Final = 10  # a round's model time after a change, in steps
_SPEED_WINDOW: Final = 3.0  # wall seconds `speed` is measured over

Chains = Callable[[], Mapping[str, Chain]]
Route = tuple[tuple[int, ...], bool]  # a socket's data-path targets, and whether it is stalled


@dataclass(slots=True)
class ChainPlane:
    """One running chain's model and what it was built from."""

    chain: Chain
    ids: dict[SocketKey, int]
    lives: dict[str, tuple[int, int]]  # NF -> (pid, restarts) of the process behind its sockets
    routes: dict[int, Route]
    plane: DataPlane
    started_ps: int  # the shared model time at which this plane's own time was 0
    generation: int
    rewires: int = 0

    def runs(
        self, chain: Chain, ids: dict[SocketKey, int], lives: dict[str, tuple[int, int]]
    ) -> bool:
        """Whether this model is of that chain on those sockets."""
        if (self.ids, self.lives) != (ids, lives):
            return False
        if self.chain is not chain:
            if self.chain != chain:
                return False
            self.chain = chain  # re-applied as an equal spec: compare deeply only once
        return True


class LivePlane:
    """The data planes of the running chains of a simulated host, advanced in real time."""

    def __init__(
        self,
        host: SimHost,
        chains: Chains,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
        share: float = SHARE,
        resolution: float = DEFAULT_RESOLUTION,
    ) -> None:
        self.host = host
        self.chains = chains
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.share = share
        self.resolution = resolution
        self.planes: dict[str, ChainPlane] = {}
        self.errors: dict[str, str] = {}  # chains whose model could not be built, and why
        self.failed: str | None = None  # set when the runner stopped on an internal error
        self._dt = round(resolution * PS_PER_S)
        self._start = clock()
        self._refilled = self._start
        self._now = 0
        self._tokens = share * TICK
        self._chunk = MIN_CHUNK_STEPS * self._dt
        self._slipped = 0.0
        self._builds = 0
        self._progress: deque[tuple[float, int]] = deque()  # (wall, model ps) per tick
        self._history: deque[tuple[int, dict[tuple[int, int], tuple[int, int]]]] = deque()

    # --- the clock -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Model seconds since the runner started; every plane is here between rounds."""
        return self._now / PS_PER_S

    @property
    def lag(self) -> float:
        """Seconds the model is behind the agent's clock."""
        return max(0.0, self.clock() - self._start - self.now)

    @property
    def speed(self) -> float | None:
        """Model seconds per wall second over the last few seconds (None: not measured yet)."""
        if len(self._progress) < 2:
            return None
        (w0, m0), (w1, m1) = self._progress[0], self._progress[-1]
        return (m1 - m0) / PS_PER_S / (w1 - w0) if w1 > w0 else None

    def _behind(self) -> int:
        """Model picoseconds (whole steps) from `now` to the clock, after slipping any excess
        over MAX_LAG."""
        elapsed = self.clock() - self._start
        excess = elapsed - self.now - MAX_LAG
        if excess > 0:
            self._start += excess
            self._slipped += excess
            elapsed -= excess
        target = round(elapsed * PS_PER_S) // self._dt * self._dt
        return target - self._now

    # --- following the host --------------------------------------------------------------

    def sync(self) -> None:
        """Build, rebuild, rewire or drop planes to match the running chains and the host."""
        wanted = self.chains()
        for name in [n for n in self.planes if n not in wanted]:
            del self.planes[name]
        for name in [n for n in self.errors if n not in wanted]:
            del self.errors[name]
        for name, chain in wanted.items():
            ids, lives = self._sockets_of(name, chain)
            routes = {fid: self._route(fid) for fid in ids.values()}
            current = self.planes.get(name)
            if current is None or not current.runs(chain, ids, lives):
                self._build(name, chain, ids, lives, routes)
            elif current.routes != routes:
                self._rewire(current, routes)

    def _sockets_of(
        self, name: str, chain: Chain
    ) -> tuple[dict[SocketKey, int], dict[str, tuple[int, int]]]:
        """NF thread -> flash-id, from the chain's running simulated processes, and which
        run of each process holds them (a restart may bind the very same ids)."""
        ids: dict[SocketKey, int] = {}
        lives: dict[str, tuple[int, int]] = {}
        for process in self.host.processes.values():
            if process.chain != name or not process.running or process.nf not in chain.spec.nfs:
                continue
            lives[process.nf] = (process.pid, process.restarts)
            threads = chain.spec.nfs[process.nf].thread_count
            for thread, flash_id in enumerate(process.sockets[:threads]):
                ids[SocketKey(process.nf, thread)] = flash_id
        return ids, lives

    def _route(self, flash_id: int) -> Route:
        entry = self.host.sysfs.entry(flash_id)
        return entry.outflows, entry.stalled

    def _build(
        self,
        name: str,
        chain: Chain,
        ids: dict[SocketKey, int],
        lives: dict[str, tuple[int, int]],
        routes: dict[int, Route],
    ) -> None:
        self.planes.pop(name, None)
        self.errors.pop(name, None)
        try:
            plane = DataPlane.from_chain(
                chain,
                ids=ids,
                rules={fid: targets for fid, (targets, _stalled) in routes.items()},
                stalled={fid for fid, (_targets, stalled) in routes.items() if stalled},
                resolution=self.resolution,
            )
        except (KeyError, ValueError) as exc:  # a chain the model cannot hold: say so in `top`
            self.errors[name] = str(exc)
            return
        self._builds += 1
        self.planes[name] = ChainPlane(chain, ids, lives, routes, plane, self._now, self._builds)
        self._chunk = MIN_CHUNK_STEPS * self._dt  # a new model: its cost is unknown

    def _rewire(self, current: ChainPlane, routes: dict[int, Route]) -> None:
        for fid, (targets, stalled) in routes.items():
            if current.routes.get(fid) != (targets, stalled):
                # As from_chain: a stalled socket is chained with nowhere to send.
                current.plane.set_rules(fid, () if stalled else targets, chained=stalled or None)
        current.routes = routes
        current.rewires += 1
        self._chunk = MIN_CHUNK_STEPS * self._dt  # a transient follows: steps cost again

    # --- advancing -----------------------------------------------------------------------

    def refill(self) -> None:
        """Credit the CPU the model may use for the wall time since the last refill (at most
        two ticks' worth, so an idle spell does not buy a long stall later)."""
        wall = self.clock()
        credit = self._tokens + self.share * (wall - self._refilled)
        self._tokens = min(credit, 2 * self.share * TICK)
        self._refilled = wall

    def round(self) -> bool:
        """Advance every plane by one chunk toward the clock; whether another round is due."""
        behind = self._behind()
        if behind <= 0:
            return False
        if not self.planes:  # nothing to compute: the model clock simply follows
            self._now += behind
            return False
        if self._tokens <= 0:
            return False
        chunk = min(behind, self._chunk)
        goal = self._now + chunk
        before = self.cpu_clock()
        for current in self.planes.values():
            current.plane.run_ps(goal - current.started_ps)
        spent = self.cpu_clock() - before
        self._now = goal
        self._tokens -= spent
        self._adapt(chunk, spent)
        return chunk < behind and self._tokens > 0

    def _adapt(self, chunk: int, spent: float) -> None:
        """The next chunk: what should cost about SLICE at the rate just measured, growing at
        most twofold a round (a cost measured on a fast-forwarded steady state says little
        about the steps that follow it)."""
        ideal = 2 * chunk if spent <= 0 else int(chunk * SLICE / spent)
        self._chunk = max(MIN_CHUNK_STEPS * self._dt, min(2 * chunk, ideal) // self._dt * self._dt)

    def tick(self) -> None:
        """One wake-up, all at once (the agent's `drive` yields between rounds instead)."""
        self.sync()
        self.refill()
        while self.round():
            pass
        self.settle()

    def settle(self) -> None:
        """End of a wake-up: note progress for `speed` and counters for the recent rates."""
        wall = self.clock()
        self._progress.append((wall, self._now))
        while self._progress and self._progress[0][0] < wall - _SPEED_WINDOW:
            self._progress.popleft()
        last = self._history[-1][0] if self._history else None
        if last is None or self._now - last >= RATE_EVERY * PS_PER_S:
            self._history.append((self._now, self._packets()))
        while len(self._history) > 1 and self._history[1][0] <= self._now - RATE_WINDOW * PS_PER_S:
            self._history.popleft()

    def fail(self, why: str) -> None:
        """The runner stopped: drop the models, so status and top show no counters, and why."""
        self.failed = why
        self.planes.clear()
        self._history.clear()

    # --- reading -------------------------------------------------------------------------

    def _packets(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(generation, flash-id) -> packets in, packets out: a socket of a rebuilt plane is
        a new socket, its counters restarted."""
        found = {}
        for current in self.planes.values():
            for fid in current.ids.values():
                c = current.plane.counters(fid)
                found[(current.generation, fid)] = (c["rx_packets"], c["tx_packets"] + c["sunk"])
        return found

    def rates(self) -> dict[int, dict[str, float]]:
        """flash-id -> pps_in, pps_out over the recent window (empty before a full point)."""
        if not self._history:
            return {}
        then, old = self._history[0]
        seconds = (self._now - then) / PS_PER_S
        if seconds <= 0:
            return {}
        found = {}
        for key, (into, out) in self._packets().items():
            if key in old:
                into0, out0 = old[key]
                found[key[1]] = {
                    "pps_in": (into - into0) / seconds,
                    "pps_out": (out - out0) / seconds,
                }
        return found

    def sample(self) -> Sample:
        """Every plane's sockets at `now` (model seconds), with their recent rates."""
        rates = self.rates()
        sockets = [
            SocketSample(s.flash_id, s.rings, s.counters, rates.get(s.flash_id, {}))
            for current in self.planes.values()
            for s in current.plane.sample().sockets
        ]
        return Sample(at=self.now, sockets=tuple(sockets))

    def info(self) -> dict[str, Any]:
        """The runner's state for `top`: model time, lag, speed, and each chain's model."""
        return {
            "time": self.now,
            "lag": self.lag,
            "speed": self.speed,
            "slipped": self._slipped,
            "share": self.share,
            "resolution": self.resolution,
            "failed": self.failed,
            "chains": {
                name: {
                    "generation": current.generation,
                    "rewires": current.rewires,
                    "started": current.started_ps / PS_PER_S,
                    "timePs": current.plane.now_ps,
                    "sockets": len(current.ids),
                }
                for name, current in sorted(self.planes.items())
            },
            "errors": dict(sorted(self.errors.items())),
        }


def attach(backend: Backend, chains: Chains, **options: Any) -> LivePlane | None:
    """A LivePlane serving `backend.sample()`, for the simulated backend; None for others."""
    if not isinstance(backend, SimBackend):
        return None
    live = LivePlane(backend.host, chains, **options)
    backend.sampler = live.sample
    return live


async def drive(
    live: LivePlane,
    report: Callable[[str], None],
    interval: float = TICK,
    urgent: Callable[[], bool] = lambda: False,
) -> None:
    """Run `live` in real time on the agent's loop: a wake-up every `interval`, yielding to
    the loop between rounds so that requests are served while the model catches up.

    No lock is taken: the loop is single-threaded and the engine and the simulated host are
    only changed by synchronous calls, so whenever this runs they are in a consistent state.
    `urgent()` says the agent has control-plane work waiting (a reconcile after churn): the
    model then yields the loop before its next round, since repairing rules matters more
    than keeping the model's clock current.
    """
    try:
        while True:
            while urgent():
                await asyncio.sleep(0.001)
            live.sync()
            live.refill()
            while not urgent() and live.round():
                await asyncio.sleep(0)
            live.settle()
            await asyncio.sleep(interval)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a model bug must not take the agent down with it
        why = f"{type(exc).__name__}: {exc}"
        live.fail(why)
        report(f"the simulated data plane stopped: {why}")
