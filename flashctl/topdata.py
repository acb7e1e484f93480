"""What the agent's `top` op returns: every running chain's sockets, placed in their chains,
with ring occupancy and cumulative counters from the backend's sample (agent side).

Works for every backend: sockets come from the engine's plans (chain, NF, thread, queue, hop
mode) and the rules it reads (`targets`, the `next` lists the kernel shows); a backend that
samples nothing still lists them, with empty rings and counters (`counters: false`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flashctl.analysis import Snapshot, SocketView
from flashctl.backends.base import SocketSample, by_flash_id
from flashctl.chains.planner import Plan, SocketRule
from flashctl.engine import Engine, xsk_data


def top_data(engine: Engine, chain: str | None = None) -> dict[str, Any]:
    """`{"backend", "counters", "snapshot"}`: the snapshot as `Snapshot.to_data()` gives it,
    and whether the backend sampled any counters at all."""
    inventory, observed = engine.observe()
    sample = engine.backend.sample()
    sampled = by_flash_id(sample, inventory)
    views: list[SocketView] = []
    for name, planned in engine.plans(inventory).items():
        if chain is None or name == chain:
            views += _views(name, planned, observed, sampled)
    return {
        "backend": engine.backend.info().name,
        "counters": bool(sampled),
        "snapshot": Snapshot(at=sample.at, sockets=tuple(views)).to_data(),
        # Real AF_XDP sockets (native backend): the agent's own and other processes'.
        "xsks": [xsk_data(x) for x in sample.xsks if chain is None or x.chain == chain],
    }


def _views(
    chain: str,
    planned: Plan,
    observed: dict[int, tuple[int, ...]],
    sampled: dict[int, SocketSample],
) -> list[SocketView]:
    """The chain's bound sockets in topology order (NFs as written, threads ascending)."""
    views = []
    for binding in planned.bindings:
        if binding.flash_id is None:
            continue  # not bound: nothing to sample, `status` says why
        found = sampled.get(binding.flash_id)
        views.append(
            SocketView(
                flash_id=binding.flash_id,
                chain=chain,
                nf=binding.socket.nf,
                thread=binding.socket.thread,
                interface=binding.interface,
                queue=binding.queue,
                mode=_mode(planned, binding.socket.nf, planned.rule_for(binding.flash_id)),
                targets=tuple(observed.get(binding.flash_id, ())),
                rings=asdict(found.rings) if found is not None else {},
                counters=dict(found.counters) if found is not None else {},
            )
        )
    return views


def _mode(planned: Plan, nf: str, rule: SocketRule | None) -> str:
    """How the socket sends by the plan: its hops' mode (`mixed` if both), else the wire
    (`egress`) or nowhere (`sink`)."""
    modes = set(rule.modes) if rule is not None else set()
    if len(modes) == 1:
        return modes.pop()
    if modes:
        return "mixed"
    return "egress" if nf in planned.topology.egress else "sink"
