"""Simulator controls behind `flashctl sim ...`: start, stop, restart and kill simulated NFs,
and add foreign AF_XDP users, for demos and churn tests.

A graceful stop or restart goes through the engine first: the rules that point at the NF's
sockets are cleared before its sockets close, as flashctl does for NFs it runs, so no rule
is left aimed at an id the kernel hands to the next socket. `kill` skips that: it is the
crash case the reconcile loop must repair.
"""

from __future__ import annotations

from typing import Any

from flashctl.backends.base import BackendError
from flashctl.backends.sim import SimBackend, SimProcess
from flashctl.engine import Engine
from flashctl.errors import InputError


def _backend(engine: Engine) -> SimBackend:
    if not isinstance(engine.backend, SimBackend):
        raise InputError(
            "simulator controls need the simulated backend",
            "start the agent with `--backend sim`",
        )
    return engine.backend


def _process_data(process: SimProcess) -> dict[str, Any]:
    return {
        "pid": process.pid,
        "procname": process.procname,
        "chain": process.chain,
        "nf": process.nf,
        "running": process.running,
        "sockets": list(process.sockets),
        "binds": [list(b) for b in process.binds],
        "restarts": process.restarts,
    }


def _target(backend: SimBackend, args: dict[str, Any]) -> SimProcess:
    if args.get("pid") is not None:
        return backend.host.process(int(args["pid"]))
    chain, nf = args.get("chain"), str(args["nf"])
    candidates = [
        p
        for p in backend.host.processes.values()
        if p.nf == nf and (chain is None or p.chain == chain)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        known = sorted({p.label() for p in backend.host.processes.values() if p.nf})
        raise InputError(
            f"no simulated NF {nf!r}" + (f" in chain {chain!r}" if chain else ""),
            f"simulated NFs: {', '.join(known) or 'none (apply a chain first)'}",
        )
    chains = ", ".join(sorted(str(p.chain) for p in candidates))
    raise InputError(f"NF {nf!r} runs in several chains ({chains})", "pick one with --chain")


ACTIONS = ("list", "add-socket", "start", "stop", "restart", "kill", "remove")


def control(engine: Engine, action: str, args: dict[str, Any]) -> Any:
    if action not in ACTIONS:
        raise InputError(f"unknown simulator action {action!r}", f"one of: {', '.join(ACTIONS)}")
    backend = _backend(engine)
    host = backend.host
    if action == "list":
        return [_process_data(p) for p in sorted(host.processes.values(), key=lambda p: p.pid)]
    try:
        return _process_data(_act(engine, backend, action, args))
    except BackendError as exc:
        # What was asked of the simulated host is impossible there: that is the user's input.
        raise InputError(exc.message, exc.hint) from None


def _act(engine: Engine, backend: SimBackend, action: str, args: dict[str, Any]) -> SimProcess:
    host = backend.host
    if action == "add-socket":
        procname = str(args.get("procname") or "xdpsock")
        return host.spawn(procname, [(str(args["interface"]), int(args["queue"]))])
    process = _target(backend, args)
    graceful = action in ("stop", "restart", "remove")
    if graceful and process.running and process.chain in engine.running:
        engine.clear_upstream_of(str(process.chain), str(process.nf))
    if action in ("stop", "kill"):
        host.stop(process.pid)
    elif action == "start":
        host.start(process.pid)
    elif action == "restart":
        host.restart(process.pid)
    else:
        host.remove(process.pid)
    return process
