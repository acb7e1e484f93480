"""The planner: which live FLASH socket each NF thread is, and what its `next` list must be.

`plan(chain, inventory)` binds every socket of the chain's topology (`topology.expand`) to a
live socket, then resolves the socket-level hops into flash-id lists. Flash-ids are only
meaningful for as long as their socket lives (the kernel reuses them at once), so sockets are
recognised by what is stable: (interface, queue), checked against `match` when the NF has one,
or by `match` alone for apps that choose their own queues.

A source whose targets are not all bound gets a *pending* rule (`next is None`) rather than a
partial list: dropping a target would shift the index of every later output, and NF code
addresses outputs by index (`options >> 16`).

Pure: no I/O, no clock. Every result is a frozen value in a deterministic order, so that
`flashctl plan`, `diff` and the agent render and compare the same thing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from flashctl.chains.spec import Chain, Match
from flashctl.chains.topology import Hop, HopMode, SocketKey, SocketSpec, Topology, expand

BindingStatus = Literal["bound", "pending", "conflict"]
InventorySource = Literal["live", "projected"]  # projected: predicted by projected_inventory
PROCNAME_MAX = 15  # the kernel truncates `procname` (TASK_COMM_LEN - 1)


@dataclass(frozen=True, slots=True)
class LiveSocket:
    """One bound AF_XDP socket as the backend sees it (a `/sys/kernel/flash/<id>` directory)."""

    flash_id: int
    pid: int
    procname: str
    interface: str
    ifindex: int
    qid: int
    umem: str | None = None  # the backend's UMEM identity, when it knows it

    def holder(self) -> str:
        return f"pid {self.pid} '{self.procname}'"


@dataclass(frozen=True, slots=True)
class Inventory:
    """The live sockets of a host, sorted by flash-id so that equal hosts compare equal."""

    sockets: tuple[LiveSocket, ...]
    source: InventorySource = "live"

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.sockets, key=lambda s: s.flash_id))
        for before, after in pairwise(ordered):
            if before.flash_id == after.flash_id:
                raise ValueError(f"inventory lists flash-id {after.flash_id} twice")
        object.__setattr__(self, "sockets", ordered)

    def by_id(self) -> dict[int, LiveSocket]:
        return {s.flash_id: s for s in self.sockets}

    def ids(self) -> frozenset[int]:
        return frozenset(s.flash_id for s in self.sockets)


@dataclass(frozen=True, slots=True)
class Binding:
    """How one NF thread maps to a live socket, or why it does not (yet)."""

    socket: SocketKey
    interface: str | None
    queue: int | None
    flash_id: int | None
    status: BindingStatus
    reason: str


@dataclass(frozen=True, slots=True)
class SocketRule:
    """The `next` list one bound socket should have.

    `next is None` means pending: some target is not bound, so no list can be written yet;
    `intended` holds the flash-ids of the targets that are bound (diff uses it to spot ids
    that were reused by a socket outside the chain).
    """

    socket: SocketKey
    flash_id: int
    next: tuple[int, ...] | None
    targets: tuple[SocketKey, ...]
    modes: tuple[HopMode, ...]
    intended: frozenset[int]
    reason: str

    @property
    def pending(self) -> bool:
        return self.next is None


@dataclass(frozen=True, slots=True)
class Plan:
    """Bindings and rules of one chain against one inventory; `rules` sorted by flash-id."""

    chain: str
    bindings: tuple[Binding, ...]
    rules: tuple[SocketRule, ...]
    topology: Topology
    live_ids: frozenset[int]
    umem_of_id: dict[int, str]
    source: InventorySource = "live"
    # Lookup tables derived from the fields above; kept so that diff stays O(n).
    _rule_by_id: dict[int, SocketRule] = field(init=False, repr=False, compare=False)
    _binding_by_key: dict[SocketKey, Binding] = field(init=False, repr=False, compare=False)
    _key_by_id: dict[int, SocketKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rule_by_id", {r.flash_id: r for r in self.rules})
        object.__setattr__(self, "_binding_by_key", {b.socket: b for b in self.bindings})
        bound = {b.flash_id: b.socket for b in self.bindings if b.flash_id is not None}
        object.__setattr__(self, "_key_by_id", bound)

    @property
    def owned_ids(self) -> frozenset[int]:
        """The flash-ids this plan may write: its bound sockets."""
        return frozenset(self._rule_by_id)

    @property
    def pending(self) -> tuple[SocketRule, ...]:
        return tuple(r for r in self.rules if r.next is None)

    def rule_for(self, flash_id: int) -> SocketRule | None:
        return self._rule_by_id.get(flash_id)

    def binding_for(self, socket: SocketKey) -> Binding | None:
        return self._binding_by_key.get(socket)

    def socket_of(self, flash_id: int) -> SocketKey | None:
        """The chain socket bound to a flash-id, if any."""
        return self._key_by_id.get(flash_id)

    def missing_targets(self, rule: SocketRule) -> tuple[SocketKey, ...]:
        """The targets of a rule that are not bound, in index order, without repeats."""
        missing = (t for t in rule.targets if self._binding_by_key[t].flash_id is None)
        return tuple(dict.fromkeys(missing))

    def desired(self) -> dict[int, tuple[int, ...]]:
        """flash-id -> next list, for every resolved rule (`()` is `-1`)."""
        return {r.flash_id: r.next for r in self.rules if r.next is not None}


def rules_of(plan: Plan) -> dict[int, tuple[int, ...]]:
    """The kernel rules a fully applied plan leaves on its sockets (pending ones excluded)."""
    return plan.desired()


def plan(chain: Chain, inventory: Inventory, topology: Topology | None = None) -> Plan:
    """Bind the chain's sockets to `inventory` and resolve every bound socket's `next` list."""
    # Callers that plan one chain repeatedly (the agent, on every churn) pass its topology.
    topology = topology if topology is not None else expand(chain)
    bindings = _bind(chain, topology, inventory)
    umem_of_id = {s.flash_id: s.umem for s in inventory.sockets if s.umem is not None}
    rules = _rules(topology, bindings, umem_of_id)
    return Plan(
        chain=chain.name,
        bindings=bindings,
        rules=rules,
        topology=topology,
        live_ids=inventory.ids(),
        umem_of_id=umem_of_id,
        source=inventory.source,
    )


# --- projection ----------------------------------------------------------------------------


def projected_inventory(
    chain: Chain, taken: Iterable[int] = (), topology: Topology | None = None
) -> Inventory:
    """The sockets the kernel would create if the chain's NFs started in document order.

    Flash-ids are allocated as the kernel does: lowest free id first, one per thread, in
    `0 .. spec.sim.maxSockets - 1`; threads beyond the limit get no socket (the bind fails).
    pid is 0 (unknown) and procname the NF name, unless `match` names them. NFs found by
    `match` alone get the lowest queues of their interface that no NF lists (queue = thread
    number when none collide), since the kernel allows one socket per queue.
    """
    topology = topology if topology is not None else expand(chain)
    free_ids = _free_ids(frozenset(taken), chain.spec.sim.max_sockets)
    spare_queues = _spare_queues(topology.sockets)
    sockets: list[LiveSocket] = []
    for spec, flash_id in zip(topology.sockets, free_ids, strict=False):
        match = chain.spec.nfs[spec.key.nf].match
        interface = spec.interface or ""
        qid = spec.queue if spec.queue is not None else next(spare_queues[interface])
        procname = match.procname if match and match.procname else spec.key.nf[:PROCNAME_MAX]
        pid = match.pid if match and match.pid else 0
        sockets.append(LiveSocket(flash_id, pid, procname, interface, 0, qid, spec.umem))
    return Inventory(tuple(sockets), source="projected")


def _free_ids(taken: frozenset[int], limit: int) -> Iterator[int]:
    return (i for i in range(limit) if i not in taken)


def _spare_queues(sockets: Sequence[SocketSpec]) -> dict[str, Iterator[int]]:
    """Per interface, an endless supply of queues no socket of the chain names."""
    listed: dict[str, set[int]] = defaultdict(set)
    for spec in sockets:
        if spec.queue is not None:
            listed[spec.interface or ""].add(spec.queue)

    def spare(interface: str) -> Iterator[int]:
        queue = 0
        while True:
            if queue not in listed[interface]:
                yield queue
            queue += 1

    return {name: spare(name) for name in {spec.interface or "" for spec in sockets}}


# --- binding -------------------------------------------------------------------------------


def _bind(chain: Chain, topology: Topology, inventory: Inventory) -> tuple[Binding, ...]:
    """Bindings in topology order.

    Sockets on listed queues are claimed first: a socket that sits on an NF's queue is that
    NF's, and a `match` search (which may find it too) must not hand it to another NF.
    """
    claimed: dict[int, SocketKey] = {}
    by_queue = _index_by_queue(inventory)
    bound: dict[SocketKey, Binding] = {}
    for spec in topology.sockets:
        if spec.queue is not None:
            match = chain.spec.nfs[spec.key.nf].match
            bound[spec.key] = _bind_queue(spec, spec.queue, match, by_queue, claimed)
    finder = _MatchIndex(inventory)
    for specs in _match_only_groups(topology.sockets):
        match = chain.spec.nfs[specs[0].key.nf].match
        for binding in _bind_matched(specs, match, finder, claimed):
            bound[binding.socket] = binding
    return tuple(bound[spec.key] for spec in topology.sockets)


def _index_by_queue(inventory: Inventory) -> dict[tuple[str, int], LiveSocket]:
    """(interface, qid) -> socket. The kernel allows one socket per queue; should a backend
    report two anyway, the lowest flash-id wins so that the result stays deterministic."""
    index: dict[tuple[str, int], LiveSocket] = {}
    for live in inventory.sockets:  # sorted by flash-id
        index.setdefault((live.interface, live.qid), live)
    return index


def _bind_queue(
    spec: SocketSpec,
    queue: int,
    match: Match | None,
    by_queue: Mapping[tuple[str, int], LiveSocket],
    claimed: dict[int, SocketKey],
) -> Binding:
    key = spec.key
    if spec.interface is None:
        why = f"{key.nf} has no interface (set spec.interface or spec.nfs.{key.nf}.interface)"
        return Binding(key, None, queue, None, "pending", why)
    where = f"{spec.interface} queue {queue}"
    live = by_queue.get((spec.interface, queue))
    if live is None:
        why = f"{where} has no socket yet (start {key.nf})"
        return Binding(key, spec.interface, queue, None, "pending", why)
    owner = claimed.get(live.flash_id)
    if owner is not None:
        why = f"{where} is already bound to {owner}"
        return Binding(key, spec.interface, queue, None, "conflict", why)
    if match is not None and not _matches(match, live):
        why = f"{where} is held by {live.holder()}, which does not match {_describe(match)}"
        return Binding(key, spec.interface, queue, None, "conflict", why)
    claimed[live.flash_id] = key
    why = f"{where} is id {live.flash_id} ({live.holder()})"
    return Binding(key, spec.interface, queue, live.flash_id, "bound", why)


def _match_only_groups(sockets: Sequence[SocketSpec]) -> list[list[SocketSpec]]:
    """The sockets of NFs without queues, grouped by NF in document order."""
    groups: dict[str, list[SocketSpec]] = {}
    for spec in sockets:
        if spec.queue is None:
            groups.setdefault(spec.key.nf, []).append(spec)
    return list(groups.values())


class _MatchIndex:
    """Live sockets by procname and by pid, so matching stays O(matches), not O(inventory)."""

    def __init__(self, inventory: Inventory) -> None:
        self._by_procname: dict[str, list[LiveSocket]] = defaultdict(list)
        self._by_pid: dict[int, list[LiveSocket]] = defaultdict(list)
        for live in inventory.sockets:
            self._by_procname[live.procname].append(live)
            self._by_pid[live.pid].append(live)

    def find(self, match: Match, interface: str | None) -> list[LiveSocket]:
        """Matching sockets by (interface, qid, flash_id): the order threads take them in."""
        if match.pid is not None:
            pool = self._by_pid.get(match.pid, [])
        else:
            pool = self._by_procname.get(match.procname or "", [])
        found = [s for s in pool if _matches(match, s) and interface in (None, s.interface)]
        return sorted(found, key=lambda s: (s.interface, s.qid, s.flash_id))


def _bind_matched(
    specs: Sequence[SocketSpec],
    match: Match | None,
    finder: _MatchIndex,
    claimed: dict[int, SocketKey],
) -> list[Binding]:
    nf, interface = specs[0].key.nf, specs[0].interface
    if match is None:  # the spec model forbids it; stay total anyway
        why = f"{nf} has neither queues nor a match, so no socket can be found for it"
        return [Binding(s.key, interface, None, None, "pending", why) for s in specs]
    found = [s for s in finder.find(match, interface) if s.flash_id not in claimed]
    bindings: list[Binding] = []
    for spec, live in zip(specs, found, strict=False):
        claimed[live.flash_id] = spec.key
        why = f"id {live.flash_id} on {live.interface} queue {live.qid} matches {_describe(match)}"
        bindings.append(Binding(spec.key, live.interface, live.qid, live.flash_id, "bound", why))
    on = f" on {interface}" if interface else ""
    for spec in specs[len(found) :]:
        why = (
            f"no socket matching {_describe(match)}{on} for thread {spec.key.thread} "
            f"(found {len(found)} of {len(specs)}; start {nf})"
        )
        bindings.append(Binding(spec.key, interface, None, None, "pending", why))
    return bindings


def _matches(match: Match, live: LiveSocket) -> bool:
    procname_ok = match.procname is None or match.procname == live.procname
    return procname_ok and (match.pid is None or match.pid == live.pid)


def _describe(match: Match) -> str:
    parts = [f"procname '{match.procname}'"] if match.procname is not None else []
    parts += [f"pid {match.pid}"] if match.pid is not None else []
    return " and ".join(parts)


# --- rules ---------------------------------------------------------------------------------


def _rules(
    topology: Topology, bindings: Sequence[Binding], umem_of_id: Mapping[int, str]
) -> tuple[SocketRule, ...]:
    resolver = _Resolver(
        ids={b.socket: b.flash_id for b in bindings if b.flash_id is not None},
        bindings={b.socket: b for b in bindings},
        umem_of_id=umem_of_id,
        egress=topology.egress,
    )
    hops = _hops_by_source(topology)
    rules: list[SocketRule] = []
    for spec in topology.sockets:
        source_id = resolver.ids.get(spec.key)
        if source_id is not None:
            rules.append(resolver.rule(spec.key, source_id, hops.get(spec.key, ())))
    rules.sort(key=lambda r: r.flash_id)
    return tuple(rules)


def _hops_by_source(topology: Topology) -> dict[SocketKey, list[Hop]]:
    """Hops grouped by source socket, in index order."""
    grouped: dict[SocketKey, list[Hop]] = defaultdict(list)
    for hop in topology.hops:  # sorted by (source, index)
        grouped[hop.source].append(hop)
    return grouped


@dataclass(frozen=True, slots=True)
class _Resolver:
    """Turns one source's hops into its rule, given where every chain socket is bound."""

    ids: Mapping[SocketKey, int]
    bindings: Mapping[SocketKey, Binding]
    umem_of_id: Mapping[int, str]
    egress: frozenset[str]

    def rule(self, source: SocketKey, source_id: int, hops: Sequence[Hop]) -> SocketRule:
        targets = tuple(h.target for h in hops)
        resolved = [self.ids.get(t) for t in targets]
        source_umem = self.umem_of_id.get(source_id)
        modes = tuple(self.mode(h, source_umem, i) for h, i in zip(hops, resolved, strict=True))
        intended = frozenset(i for i in resolved if i is not None)
        next_ids: tuple[int, ...] | None = tuple(i for i in resolved if i is not None)
        if not hops:
            why = "sends to the NIC" if source.nf in self.egress else "has no linked outputs"
            reason = f"{source}: no rules ({source.nf} {why})"
        elif None in resolved:
            next_ids = None
            reason = self.waiting_reason(source, targets)
        else:
            reason = f"{source}: next {format_targets(targets, resolved, modes)}"
        return SocketRule(source, source_id, next_ids, targets, modes, intended, reason)

    def mode(self, hop: Hop, source_umem: str | None, target_id: int | None) -> HopMode:
        """The live UMEMs decide when the backend knows both; otherwise the chain's groups."""
        target_umem = self.umem_of_id.get(target_id) if target_id is not None else None
        if source_umem is None or target_umem is None:
            return hop.mode
        return "zero-copy" if source_umem == target_umem else "copy"

    def waiting_reason(self, source: SocketKey, targets: Sequence[SocketKey]) -> str:
        missing = list(dict.fromkeys(t for t in targets if t not in self.ids))
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"{source}: waiting for {missing[0]}{more}: {self.bindings[missing[0]].reason}"


def format_targets(
    targets: Sequence[SocketKey], ids: Sequence[int | None], modes: Sequence[HopMode]
) -> str:
    """`[lb/0 (id 5, zero-copy), ids/0 (unbound, copy)]`: a next list as people read it."""
    items = [
        f"{target} ({'unbound' if flash_id is None else f'id {flash_id}'}, {mode})"
        for target, flash_id, mode in zip(targets, ids, modes, strict=True)
    ]
    return "[" + ", ".join(items) + "]"
