"""The real-time runner of the data-plane model (flashctl/backends/simplane.py), on fake
clocks: it follows the host's sockets and data-path rules, steps exactly as one long run
would, keeps to its CPU budget (lagging, then slipping, when the model is too slow) and
reports recent rates.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flashctl.backends.base import write_rule
from flashctl.backends.dataplane import PS_PER_S, DataPlane
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.backends.simplane import MAX_LAG, SHARE, LivePlane, attach, drive
from flashctl.chains.spec import Chain
from flashctl.chains.topology import SocketKey

# nic -> a -> b -> c -> nic; b is the slowest NF and the traffic is more than it carries.
SLOW: dict[str, Any] = {
    "interface": "eth0",
    "nfs": {
        "a": {"queues": [30], "sim": {"capacity": "10Mpps"}},
        "b": {"queues": [31], "sim": {"capacity": "2Mpps"}},
        "c": {"queues": [32], "sim": {"capacity": "10Mpps"}},
    },
    "links": [
        {"from": "nic", "to": "a"},
        {"from": "a", "to": "b"},
        {"from": "b", "to": "c"},
        {"from": "c", "to": "nic"},
    ],
    "traffic": [{"into": "a", "rate": "3Mpps", "size": "64B"}],
}


def make_chain(spec: dict[str, Any], name: str = "slow") -> Chain:
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return Chain.model_validate({**document, "spec": spec})


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 100.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


class Cpu:
    """A CPU clock that advances `per_call` seconds each time it is read: a round costs that."""

    def __init__(self, per_call: float = 0.0) -> None:
        self.per_call = per_call
        self.t = 0.0

    def __call__(self) -> float:
        self.t += self.per_call
        return self.t


class Rig:
    """A simulated host running the chain's NFs with its rules written, and a LivePlane."""

    def __init__(self, cpu: Cpu | None = None) -> None:
        self.host = SimHost()
        self.backend = SimBackend(self.host)
        self.chain = make_chain(SLOW)
        self.backend.ensure_nfs(self.chain)  # a, b, c get flash-ids 0, 1, 2
        write_rule(self.backend, 0, [1])
        write_rule(self.backend, 1, [2])
        self.running: dict[str, Chain] = {"slow": self.chain}
        self.clock = Clock()
        self.live = LivePlane(
            self.host, lambda: self.running, clock=self.clock, cpu_clock=cpu or Cpu()
        )

    def run(self, seconds: float, tick: float = 0.05) -> None:
        """Wake the runner every `tick` seconds of the fake clock for `seconds`."""
        for _ in range(round(seconds / tick)):
            self.clock.t += tick
            self.live.tick()

    def counters(self) -> dict[int, dict[str, float]]:
        return {s.flash_id: s.counters for s in self.live.sample().sockets}

    def pid(self, nf: str) -> int:
        found = self.host.find("slow", nf)
        assert found is not None
        return found.pid


def test_chunked_real_time_runs_step_exactly_as_one_run() -> None:
    rig = Rig()
    for tick in (0.013, 0.05, 0.0071, 0.2, 0.031) * 2:  # irregular wake-ups
        rig.clock.t += tick
        rig.live.tick()
    info = rig.live.info()["chains"]["slow"]
    assert info["generation"] == 1
    assert info["rewires"] == 0
    # The model follows the clock, to the step.
    elapsed_ps = round(sum((0.013, 0.05, 0.0071, 0.2, 0.031)) * 2 * PS_PER_S)
    step_ps = 10_000_000
    assert info["timePs"] % step_ps == 0
    assert 0 <= elapsed_ps - info["timePs"] <= step_ps
    replay = DataPlane.from_chain(
        rig.chain,
        ids={SocketKey("a", 0): 0, SocketKey("b", 0): 1, SocketKey("c", 0): 2},
        rules={0: (1,), 1: (2,), 2: ()},
    )
    replay.run_ps(info["timePs"])
    live = rig.live.sample()
    assert live.at == rig.live.now == info["timePs"] / PS_PER_S
    assert [(s.flash_id, s.rings, s.counters) for s in live.sockets] == [
        (s.flash_id, s.rings, s.counters) for s in replay.sample().sockets
    ]


def test_backend_sample_is_the_model_once_attached() -> None:
    rig = Rig()
    assert rig.backend.sample().sockets == ()  # no model: no counters
    live = attach(rig.backend, lambda: rig.running, clock=rig.clock, cpu_clock=Cpu())
    assert live is not None
    rig.live = live
    rig.run(0.2)
    sampled = rig.backend.sample()
    assert [s.flash_id for s in sampled.sockets] == [0, 1, 2]
    assert sampled.sockets[0].counters["nic_rx_packets"] > 0


def test_recent_rates_are_per_model_second() -> None:
    rig = Rig()
    rig.run(0.05)
    assert all(not s.rates for s in rig.live.sample().sockets)  # one point: no rates yet
    rig.run(1.5)
    # b carries its capacity; a, backpressured, takes no more in (the NIC drops the rest).
    for rates in (s.rates for s in rig.live.sample().sockets):
        assert rates["pps_in"] == pytest.approx(2e6, rel=0.02)
        assert rates["pps_out"] == pytest.approx(2e6, rel=0.02)


def test_a_model_too_slow_for_its_budget_lags_then_slips() -> None:
    cpu = Cpu(per_call=0.5)  # read twice a round: every round "costs" half a second of CPU
    rig = Rig(cpu)
    rig.run(0.05)
    assert rig.live.now > 0  # the first round ran ...
    assert rig.live.now < 0.05  # ... and used up the budget: the model is behind
    assert rig.live.lag == pytest.approx(0.05 - rig.live.now)
    rig.run(12.0, tick=1.0)
    info = rig.live.info()
    assert info["slipped"] > 0
    assert rig.live.lag <= MAX_LAG + 1.0  # at most one wake-up's worth past the limit
    # The budget held: a round starts only on credit, so the CPU spent is at most SHARE of
    # the time (and the first credit) plus one round's overrun.
    spent = cpu.t / 2
    assert spent <= SHARE * (12.0 + 0.05 + 0.05) + 0.5


def test_a_restarted_nf_rebuilds_the_model() -> None:
    rig = Rig()
    rig.run(0.3)
    before = rig.counters()[0]["nic_rx_packets"]
    rig.host.restart(rig.pid("b"))  # binds flash-id 1 again: a new socket all the same
    rig.run(0.05)
    info = rig.live.info()["chains"]["slow"]
    assert info["generation"] == 2
    assert info["started"] > 0
    assert 0 < rig.counters()[0]["nic_rx_packets"] < before  # counters started again


def test_a_cleared_rule_rewires_without_a_rebuild() -> None:
    rig = Rig()
    rig.run(0.2)
    assert rig.counters()[0]["nic_tx_packets"] == 0  # a sends to b
    write_rule(rig.backend, 0, [])  # -1: a's TX goes to the wire
    # a sleeps in poll(POLLOUT), backpressured by b: the rule change does not wake it, the
    # 1 s POLLOUT timeout does.
    rig.run(1.2)
    info = rig.live.info()["chains"]["slow"]
    assert (info["generation"], info["rewires"]) == (1, 1)
    assert rig.counters()[0]["nic_tx_packets"] > 0


def test_a_rule_aimed_at_a_closed_socket_holds_the_senders_tx() -> None:
    rig = Rig()
    rig.run(0.2)
    rig.host.stop(rig.pid("c"))  # b's rule still names flash-id 2, whose socket closed
    rig.run(0.3)
    counters = rig.counters()
    assert 2 not in counters
    b = next(s for s in rig.live.sample().sockets if s.flash_id == 1)
    # Held in TX, as the kernel does: nothing left b since the model was rebuilt, and b
    # sleeps in poll(POLLOUT) with its TX ring more than half full.
    assert counters[1]["tx_packets"] == 0
    assert b.rings.tx > b.rings.tx_size // 2
    assert counters[1]["backpressure_sleeps"] >= 1


def test_a_deleted_chain_leaves_the_model() -> None:
    rig = Rig()
    rig.run(0.1)
    rig.running = {}
    rig.run(0.05)
    assert rig.live.planes == {}
    assert rig.live.sample().sockets == ()


def test_drive_runs_on_the_loop_and_reports_a_failure() -> None:
    rig = Rig()
    reported: list[str] = []

    async def scenario() -> None:
        live = LivePlane(rig.host, lambda: rig.running)
        task = asyncio.create_task(drive(live, reported.append, interval=0.01))
        await asyncio.sleep(0.3)
        assert live.now > 0
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        def broken() -> dict[str, Chain]:
            raise RuntimeError("boom")

        failing = LivePlane(rig.host, broken)
        await asyncio.wait_for(drive(failing, reported.append, interval=0.01), 5)
        assert failing.failed == "RuntimeError: boom"
        assert failing.info()["failed"] == "RuntimeError: boom"

    asyncio.run(scenario())
    assert reported == ["the simulated data plane stopped: RuntimeError: boom"]
