"""The diff: the ordered `next` writes that take observed kernel rules to a plan's rules.

Three kernel facts shape it (notes/flash-kernel.md):

- A rewrite of `next` is not atomic: the old outflows are torn down before the new ones are
  set up. So a file whose content is already right is never written again.
- Flash-ids are reused at once. A rule that points at a dead id is harmless until another
  socket takes that id; then traffic silently goes there. So pending sources keep their
  rules, except when they name a live id that is not one of their targets.
- Make-before-break: a socket is programmed before anything upstream points at it, and on
  removal upstream rules go first. All writes that set a list come first, downstream first;
  then all clears, upstream first. Both orders come from one graph of desired and observed
  edges; strongly connected parts (a rule being reversed, say) are ordered by flash-id.

Only ids the plan owns (its bound sockets) are written: other ids belong to other chains.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from flashctl.chains.planner import Plan, SocketRule, format_targets
from flashctl.chains.topology import HopMode, SocketKey

Disruption = Literal["hitless", "redirect-gap", "copy-mode-change", "index-reorder"]
SEVERITY: dict[Disruption, int] = {
    "hitless": 0,  # the socket had no rules: it starts redirecting
    "redirect-gap": 1,  # old outflows are gone for a moment before the new ones exist
    "copy-mode-change": 2,  # an index moves between zero-copy and copy (cost changes)
    "index-reorder": 3,  # an index now reaches another output's NF: NF code must agree
}
Rules = Mapping[int, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class Write:
    """One write to `/sys/kernel/flash/<flash_id>/next`."""

    flash_id: int
    socket: SocketKey
    old: tuple[int, ...]
    new: tuple[int, ...]
    disruption: Disruption
    reason: str

    @property
    def clears(self) -> bool:
        return not self.new

    def text(self) -> str:
        """The exact bytes to write, in one write() call: `3 5\\n`, or `-1\\n` to clear."""
        return (" ".join(str(i) for i in self.new) if self.new else "-1") + "\n"


@dataclass(frozen=True, slots=True)
class Changes:
    """Writes in the order to perform them, and the rules still waiting for sockets."""

    writes: tuple[Write, ...]
    pending: tuple[SocketRule, ...]

    @property
    def empty(self) -> bool:
        return not self.writes

    def __bool__(self) -> bool:
        return bool(self.writes)

    def __len__(self) -> int:
        return len(self.writes)

    def worst(self) -> Disruption | None:
        """The most severe disruption among the writes, if any."""
        if not self.writes:
            return None
        return max((w.disruption for w in self.writes), key=SEVERITY.__getitem__)


def diff(plan: Plan, observed: Rules) -> Changes:
    """The writes that make `observed` (flash-id -> next list; absent = `-1`) match `plan`."""
    writes = (_write_for(plan, r, _observed(observed, r.flash_id)) for r in plan.rules)
    needed = [w for w in writes if w is not None]
    return Changes(_ordered(needed, plan, observed), plan.pending)


def teardown(plan: Plan, observed: Rules, only: Iterable[int] | None = None) -> Changes:
    """The writes that clear every rule the plan owns (or the `only` ids), upstream first.

    Used to delete a chain, and before stopping an NF (clear what points at it) so that no
    rule is left aimed at an id the kernel will hand to the next socket that binds.
    """
    wanted = plan.owned_ids if only is None else frozenset(only) & plan.owned_ids
    writes = []
    for flash_id in sorted(wanted):
        old = _observed(observed, flash_id)
        rule = plan.rule_for(flash_id)
        if not old or rule is None:
            continue
        reason = f"{rule.socket}: clear next (was {_format_old(plan, old)}): removing"
        writes.append(Write(flash_id, rule.socket, old, (), "redirect-gap", reason))
    return Changes(_ordered(writes, plan, observed), ())


def apply_changes(observed: Rules, changes: Changes) -> dict[int, tuple[int, ...]]:
    """The rules after performing `changes` on `observed`: a pure model of the writes."""
    after = {flash_id: tuple(ids) for flash_id, ids in observed.items()}
    for write in changes.writes:
        after[write.flash_id] = write.new
    return after


def _observed(observed: Rules, flash_id: int) -> tuple[int, ...]:
    return tuple(observed.get(flash_id, ()))


# --- one write per rule --------------------------------------------------------------------


def _write_for(plan: Plan, rule: SocketRule, old: tuple[int, ...]) -> Write | None:
    if rule.next is None:
        return _pending_clear(plan, rule, old)
    if rule.next == old:
        return None
    disruption, detail = _classify(plan, rule, rule.next, old)
    reason = _reason(plan, rule, rule.next, old, detail)
    return Write(rule.flash_id, rule.socket, old, rule.next, disruption, reason)


def _pending_clear(plan: Plan, rule: SocketRule, old: tuple[int, ...]) -> Write | None:
    """Clear a pending source only if its old list reaches a live socket it should not."""
    reused = [i for i in dict.fromkeys(old) if i in plan.live_ids and i not in rule.intended]
    if not reused:
        return None
    owner = plan.socket_of(reused[0])
    now = f"is now {owner}" if owner is not None else "now belongs to another socket"
    missing = plan.missing_targets(rule)
    waiting = f"; keep -1 until {missing[0]} is bound" if missing else ""
    reason = (
        f"{rule.socket}: clear next (was {_format_old(plan, old)}): "
        f"id {reused[0]} {now}, not a target of {rule.socket}{waiting}"
    )
    return Write(rule.flash_id, rule.socket, old, (), "redirect-gap", reason)


def _classify(
    plan: Plan, rule: SocketRule, new: tuple[int, ...], old: tuple[int, ...]
) -> tuple[Disruption, str]:
    """The most severe disruption of replacing `old` by `new`, with what makes it so."""
    if not old:
        return "hitless", ""
    if not new:
        return "redirect-gap", ""
    reorder = _moved_id(new, old) or _changed_output(plan, rule, new, old)
    if reorder:
        return "index-reorder", reorder
    mode_change = _mode_change(plan, rule, new, old)
    if mode_change:
        return "copy-mode-change", mode_change
    return "redirect-gap", ""


def _moved_id(new: Sequence[int], old: Sequence[int]) -> str:
    """A target present in both lists at another (first) position."""
    first_new: dict[int, int] = {}
    for index, flash_id in enumerate(new):
        first_new.setdefault(flash_id, index)
    first_old: dict[int, int] = {}
    for index, flash_id in enumerate(old):
        first_old.setdefault(flash_id, index)
    for flash_id, was in first_old.items():
        now = first_new.get(flash_id, was)
        if now != was:
            return f"id {flash_id} moves from index {was} to {now}"
    return ""


def _changed_output(plan: Plan, rule: SocketRule, new: Sequence[int], old: Sequence[int]) -> str:
    """An index that reached the target NF of one output and now reaches another output's.

    Only ids bound in the plan tell which NF an old entry reached; a dead or foreign id could
    have been anything, and retargeting an output to a new NF is not a reorder.
    """
    outputs = _outputs_by_index(plan, rule.socket.nf)
    for index, (was, now) in enumerate(zip(old, new, strict=False)):
        holder = plan.socket_of(was)
        if was == now or holder is None:
            continue
        old_outputs = _outputs_to(plan, rule.socket.nf, holder.nf)
        if old_outputs and outputs[index] not in old_outputs:
            return (
                f"index {index} moves from output '{old_outputs[0]}' ({holder}) "
                f"to output '{outputs[index]}' ({rule.targets[index]})"
            )
    return ""


def _outputs_by_index(plan: Plan, nf: str) -> list[str]:
    return [e.output for e in plan.topology.index_table.get(nf, ()) for _ in range(e.count)]


def _outputs_to(plan: Plan, nf: str, target_nf: str) -> list[str]:
    entries = plan.topology.index_table.get(nf, ())
    return [e.output for e in entries if e.target == target_nf and e.count]


def _mode_change(plan: Plan, rule: SocketRule, new: Sequence[int], old: Sequence[int]) -> str:
    """An index whose hop flips between zero-copy and copy, where the old UMEMs are known."""
    source_umem = plan.umem_of_id.get(rule.flash_id)
    if source_umem is None:
        return ""
    for index, (was, now) in enumerate(zip(old, new, strict=False)):
        old_umem = plan.umem_of_id.get(was)
        if was == now or old_umem is None:
            continue
        old_mode: HopMode = "zero-copy" if old_umem == source_umem else "copy"
        if old_mode != rule.modes[index]:
            return f"index {index} goes from {old_mode} to {rule.modes[index]}"
    return ""


def _reason(
    plan: Plan, rule: SocketRule, new: tuple[int, ...], old: tuple[int, ...], detail: str
) -> str:
    source = rule.socket
    if not old:
        return f"{source}: set next to {format_targets(rule.targets, new, rule.modes)}"
    if not new:
        why = "sends to the NIC" if source.nf in plan.topology.egress else "has no linked outputs"
        return f"{source}: clear next (was {_format_old(plan, old)}): {source.nf} {why}"
    restarts = _restarts(plan, rule, new, old)
    if restarts:
        return f"{source}: {restarts}"
    change = (
        f"{source}: change next from {_format_old(plan, old)} "
        f"to {format_targets(rule.targets, new, rule.modes)}"
    )
    return f"{change}; {detail}" if detail else change


def _restarts(plan: Plan, rule: SocketRule, new: Sequence[int], old: Sequence[int]) -> str:
    """`lb/1 restarted as id 9 (was 6)` when only dead ids were replaced, in place."""
    if len(new) != len(old):
        return ""
    changed = [
        (i, was, now) for i, (was, now) in enumerate(zip(old, new, strict=True)) if was != now
    ]
    if any(was in plan.live_ids for _, was, _ in changed):
        return ""
    parts = dict.fromkeys(
        f"{rule.targets[i]} restarted as id {now} (was {was})" for i, was, now in changed
    )
    return ", ".join(parts)


def _format_old(plan: Plan, old: Sequence[int]) -> str:
    """An observed list: ids the plan knows carry their socket name (`lb/0 (id 5)`)."""
    items = []
    for flash_id in old:
        owner = plan.socket_of(flash_id)
        items.append(f"{owner} (id {flash_id})" if owner is not None else f"id {flash_id}")
    return "[" + ", ".join(items) + "]"


# --- order ---------------------------------------------------------------------------------


def _ordered(writes: Sequence[Write], plan: Plan, observed: Rules) -> tuple[Write, ...]:
    """Sets downstream first, then clears upstream first (make-before-break)."""
    if len(writes) <= 1:
        return tuple(writes)
    graph = _SocketGraph(writes, plan, observed)
    downstream = _rank(graph.order(upstream_first=False))
    upstream = _rank(graph.order(upstream_first=True))
    sets = sorted((w for w in writes if w.new), key=lambda w: downstream[w.flash_id])
    clears = sorted((w for w in writes if not w.new), key=lambda w: upstream[w.flash_id])
    return (*sets, *clears)


def _rank(order: Iterable[int]) -> dict[int, int]:
    return {flash_id: rank for rank, flash_id in enumerate(order)}


class _SocketGraph:
    """Edges source -> target of every desired and every observed rule, cycles collapsed.

    Hand-written (Tarjan, then Kahn with a heap) rather than networkx: this runs on every
    reconcile, and for 10,000 sockets networkx's condensation and lexicographic sort alone
    cost several times the rest of plan + diff.
    """

    def __init__(self, writes: Iterable[Write], plan: Plan, observed: Rules) -> None:
        succ: dict[int, set[int]] = {w.flash_id: set() for w in writes}
        for rules in (plan.desired(), observed):
            for source, targets in rules.items():
                succ.setdefault(source, set()).update(targets)
                for target in targets:
                    succ.setdefault(target, set())
        self._nodes = sorted(succ)
        self._succ = {node: sorted(targets) for node, targets in succ.items()}
        self._parts = _strong_components(self._nodes, self._succ)
        self._part_of = {node: i for i, part in enumerate(self._parts) for node in part}

    def order(self, *, upstream_first: bool) -> Iterator[int]:
        """Flash-ids in topological order (or its reverse); ties and cycles by flash-id."""
        edges = self._part_edges(reverse=not upstream_first)
        waiting = [0] * len(self._parts)
        for targets in edges:
            for target in targets:
                waiting[target] += 1
        ready = [(part[0], i) for i, part in enumerate(self._parts) if not waiting[i]]
        heapq.heapify(ready)
        while ready:
            _, i = heapq.heappop(ready)
            yield from self._parts[i]
            for target in edges[i]:
                waiting[target] -= 1
                if not waiting[target]:
                    heapq.heappush(ready, (self._parts[target][0], target))

    def _part_edges(self, *, reverse: bool) -> list[set[int]]:
        edges: list[set[int]] = [set() for _ in self._parts]
        for node, targets in self._succ.items():
            for target in targets:
                a, b = self._part_of[node], self._part_of[target]
                if a != b:
                    edges[b if reverse else a].add(a if reverse else b)
        return edges


def _strong_components(nodes: Sequence[int], succ: Mapping[int, Sequence[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively; each one sorted by flash-id."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    parts: list[list[int]] = []

    def visit(node: int) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for root in nodes:
        if root in index:
            continue
        visit(root)
        work = [(root, iter(succ[root]))]
        while work:
            node, targets = work[-1]
            descended = False
            for target in targets:
                if target not in index:
                    visit(target)
                    work.append((target, iter(succ[target])))
                    descended = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if descended:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                parts.append(_pop_part(stack, on_stack, node))
    return parts


def _pop_part(stack: list[int], on_stack: set[int], root: int) -> list[int]:
    part: list[int] = []
    while True:
        node = stack.pop()
        on_stack.discard(node)
        part.append(node)
        if node == root:
            return sorted(part)
