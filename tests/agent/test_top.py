"""`flashctl top` and `status` counters against a real agent on the simulated backend: the
agent runs the data-plane model in real time, and what `top` prints is that model's own
state (a replay of the model to the same instant gives the very same counters and rings).
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import asdict
from typing import Any

import pytest

from flashctl.backends.dataplane import PS_PER_S, DataPlane
from flashctl.chains.loader import load_sources
from flashctl.chains.topology import SocketKey
from tests.agent.harness import AgentHome, wait_for
from tests.agent.test_client_imports import _probe

# nic -> a -> b -> c -> nic, offered 3 Mpps; b tops out at 2 Mpps: the bottleneck.
SLOW = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: slow}
spec:
  interface: eth0
  nfs:
    a: {queues: [30], sim: {capacity: 10Mpps}}
    b: {queues: [31], sim: {capacity: 2Mpps}}
    c: {queues: [32], sim: {capacity: 10Mpps}}
  links:
    - {from: nic, to: a}
    - {from: a, to: b}
    - {from: b, to: c}
    - {from: c, to: nic}
  traffic:
    - {into: a, rate: 3Mpps, size: 64B}
"""


def applied(home: AgentHome) -> None:
    """slow applied, and its model past the start (b saturated, its senders backpressured)."""
    assert home.cli("apply", home.write("slow.yaml", SLOW)).code == 0
    home.wait_in_sync("slow")

    def settled() -> bool:
        chains = home.call("top")["model"]["chains"]
        return "slow" in chains and chains["slow"]["timePs"] >= SETTLED * PS_PER_S

    wait_for(settled, f"{SETTLED} s of model time")


SETTLED = 0.2  # model seconds


def top_json(home: AgentHome, *argv: str) -> dict[str, Any]:
    result = home.cli("top", "--once", "-o", "json", "--interval", "0.2", *argv)
    assert (result.code, result.err) == (0, "")
    data: dict[str, Any] = json.loads(result.out)
    return data


def replay(snapshot: dict[str, Any], started: float) -> dict[int, tuple[Any, Any]]:
    """The model rebuilt from the snapshot's sockets and rules and run to its instant:
    flash-id -> (rings, counters)."""
    (loaded,) = load_sources([("slow.yaml", SLOW)]).chains
    sockets = snapshot["sockets"]
    plane = DataPlane.from_chain(
        loaded.chain,
        ids={SocketKey(s["nf"], s["thread"]): s["flashId"] for s in sockets},
        rules={s["flashId"]: tuple(s["targets"]) for s in sockets},
    )
    plane.run_ps(round((snapshot["at"] - started) * PS_PER_S))
    return {s.flash_id: (asdict(s.rings), s.counters) for s in plane.sample().sockets}


def test_top_json_is_the_models_own_state(home: AgentHome, agent: object) -> None:
    applied(home)
    data = top_json(home)
    assert (data["apiVersion"], data["kind"], data["backend"]) == (
        "flashctl/v1",
        "TopSample",
        "sim",
    )
    model = data["model"]["chains"]["slow"]
    assert (model["generation"], model["rewires"]) == (1, 0)  # built once, rules unchanged
    assert round((data["after"]["at"] - model["started"]) * PS_PER_S) == model["timePs"]
    for snapshot in (data["before"], data["after"]):
        shown = {s["flashId"]: (s["rings"], s["counters"]) for s in snapshot["sockets"]}
        assert shown == replay(snapshot, model["started"])
    assert data["span"] == data["after"]["at"] - data["before"]["at"] > 0


def test_top_json_conserves_packets_and_names_the_bottleneck(
    home: AgentHome, agent: object
) -> None:
    applied(home)
    data = top_json(home, "--chain", "slow")
    sockets = data["after"]["sockets"]
    assert [(s["nf"], s["mode"], s["targets"]) for s in sockets] == [
        ("a", "copy", [1]),  # no UMEM shared: each NF has its own
        ("b", "copy", [2]),
        ("c", "egress", []),
    ]

    def total(name: str) -> float:
        return float(sum(s["counters"][name] for s in sockets))

    queued = sum(s["rings"]["rx"] + s["rings"]["tx"] for s in sockets)
    dropped = total("nic_drop_ring_full") + total("nic_drop_no_frame")
    delivered = total("nic_tx_packets") + total("sunk")
    assert total("nic_rx_packets") == delivered + queued + dropped > 0
    rates = {r["flashId"]: r for r in data["rates"]}
    assert sorted(rates) == [0, 1, 2]
    assert all(r["ppsIn"] > 0 and r["ppsOut"] > 0 for r in rates.values())
    (chain,) = data["chains"]
    # 30 packets a 10 us step, over whole steps (the span is a difference of float seconds)
    assert chain["offeredPps"] == pytest.approx(3e6, rel=1e-9)
    assert 1.8e6 < chain["deliveredPps"] <= 2.05e6  # b's capacity
    assert chain["dropsPps"]["ring_full"] + chain["dropsPps"]["no_frame"] > 0.9e6
    (bottleneck,) = data["bottlenecks"]
    assert (bottleneck["nf"], bottleneck["backpressured"], bottleneck["headroom"]) == (
        "b",
        True,
        0.0,
    )


def test_top_once_renders_the_bottleneck_row(home: AgentHome, agent: object) -> None:
    applied(home)
    result = home.cli("top", "--once", "--interval", "0.2")
    assert result.code == 0
    lines = result.out_lines
    assert lines[0].startswith("flashctl top  sim backend, model t ")
    assert any(line.startswith("  bottleneck b, headroom 0%: b cannot keep up") for line in lines)
    rows = [line for line in lines if " eth0 q3" in line]
    assert [row[:14] for row in rows] == ["  a           ", "▶ b           ", "  c           "]


def test_status_gains_the_counters_and_recent_rates(home: AgentHome, agent: object) -> None:
    applied(home)

    def measured() -> dict[str, Any] | None:
        (chain,) = home.status("slow")["chains"]
        return chain if all("rates" in s for s in chain["sockets"]) else None

    chain = wait_for(measured, "the agent's recent rates")
    a, b, c = chain["sockets"]
    assert a["counters"]["nic_rx_packets"] > 0
    assert c["counters"]["nic_tx_packets"] > 0
    assert 1.8e6 < b["rates"]["pps_out"] <= 2.05e6
    text = home.cli("status", "slow")
    assert text.code == 0
    assert "pps in/out" in text.out
    assert any(line.startswith("│ b/0 ") and "M/" in line for line in text.out_lines)


def test_top_follows_a_restarted_nf(home: AgentHome, agent: object) -> None:
    applied(home)
    assert home.cli("sim", "restart", "b").code == 0
    home.wait_in_sync("slow")

    def rebuilt() -> bool:
        info = home.call("top")["model"]["chains"].get("slow")
        return info is not None and info["generation"] == 2

    wait_for(rebuilt, "the model of slow to be rebuilt")
    data = top_json(home)
    assert data["model"]["chains"]["slow"]["generation"] == 2
    assert sorted(r["flashId"] for r in data["rates"]) == [0, 1, 2]


def test_top_refuses_an_unknown_chain(home: AgentHome, agent: object) -> None:
    applied(home)
    result = home.cli("top", "--once", "--chain", "nope")
    assert result.code == 2
    assert result.err_lines == [
        "error: no running chain named 'nope'",
        "hint: running chains: slow",
    ]


def test_top_keeps_the_client_light(home: AgentHome, agent: object) -> None:
    applied(home)
    assert _probe(home, "top", "--once", "-o", "json", "--interval", "0.1") == {
        "code": 0,
        "heavy": [],
    }


def test_live_top_without_a_terminal_runs_until_interrupted(home: AgentHome, agent: object) -> None:
    applied(home)
    out = home.base / "top.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [*home.cli_argv(), "top", "--interval", "0.05"],
            cwd=home.base,
            env=home.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"bottleneck b" in out.read_bytes(), "top to draw a measured frame")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    # Not a terminal: frame after frame, as `top -b` prints them.
    assert out.read_bytes().count(b"flashctl top  sim backend") >= 2
