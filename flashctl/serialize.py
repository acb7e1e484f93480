"""Plain-data (JSON/YAML) forms of flashctl's results, in a versioned envelope.

Scripts depend on these shapes: every top-level object carries `apiVersion` and `kind`, keys
are camelCase, lists keep the planner's deterministic order. Add fields; never rename them
within one apiVersion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flashctl.chains.loader import Loaded
from flashctl.chains.planner import Plan
from flashctl.chains.topology import Hop
from flashctl.errors import Diagnostic

API_VERSION = "flashctl/v1"


def envelope(kind: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def diagnostic_data(diagnostic: Diagnostic) -> dict[str, Any]:
    position = diagnostic.position
    return {
        "severity": diagnostic.severity,
        "file": position.source if position else None,
        "line": position.line if position and position.line > 0 else None,
        "column": position.column if position and position.line > 0 else None,
        "path": diagnostic.dotted_path(),
        "message": diagnostic.message,
        "hint": diagnostic.hint,
    }


def validation_data(loaded: Loaded) -> dict[str, Any]:
    chains = []
    for item in loaded.chains:
        spec = item.chain.spec
        chains.append(
            {
                "name": item.chain.name,
                "file": item.source,
                "nfs": len(spec.nfs),
                "sockets": sum(nf.thread_count for nf in spec.nfs.values()),
                "links": len(spec.links),
            }
        )
    warnings = [diagnostic_data(w) for w in loaded.warnings]
    return envelope("ValidationResult", valid=True, chains=chains, warnings=warnings)


def _hop_data(hop: Hop, flash_id: int | None) -> dict[str, Any]:
    return {
        "index": hop.index,
        "output": hop.output,
        "target": str(hop.target),
        "flashId": flash_id,
        "mode": hop.mode,
    }


def plan_data(plan: Plan) -> dict[str, Any]:
    hops_by_source: dict[str, list[Hop]] = {}
    for hop in plan.topology.hops:
        hops_by_source.setdefault(str(hop.source), []).append(hop)
    ids = {str(b.socket): b.flash_id for b in plan.bindings}
    sockets = []
    for binding in plan.bindings:
        key = str(binding.socket)
        rule = plan.rule_for(binding.flash_id) if binding.flash_id is not None else None
        sockets.append(
            {
                "socket": key,
                "nf": binding.socket.nf,
                "thread": binding.socket.thread,
                "interface": binding.interface,
                "queue": binding.queue,
                "flashId": binding.flash_id,
                "status": binding.status,
                "reason": binding.reason,
                "next": list(rule.next) if rule is not None and rule.next is not None else None,
                "targets": [
                    _hop_data(h, ids.get(str(h.target))) for h in hops_by_source.get(key, [])
                ],
            }
        )
    indices = {
        nf: [
            {
                "output": e.output,
                "first": e.first,
                "count": e.count,
                "to": e.target,
                "mapping": e.mapping,
            }
            for e in entries
        ]
        for nf, entries in plan.topology.index_table.items()
    }
    return {"chain": plan.chain, "inventory": plan.source, "sockets": sockets, "indices": indices}


def plans_data(plans: Sequence[Plan]) -> dict[str, Any]:
    return envelope("PlanList", items=[plan_data(p) for p in plans])
