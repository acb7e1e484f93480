"""Checks that relate one part of a chain document to another, on a networkx graph.

`spec.py` validates each field on its own; this module validates references, shape and limits:
unknown names, fan-out an NF cannot address, cycles, unreachable NFs, queue conflicts, the
kernel's 64 flash-ids, and (as warnings) copy hops and idle threads. Every problem is a
`Diagnostic` whose `path` points at the YAML node to blame; the loader turns paths into
`file:line:col`. Pure: no I/O, no clock.

Policies worth knowing:

- One mistake gives one error. A check runs only on inputs that resolved: a link with an
  unknown endpoint adds no edge; an NF that a "did you mean" hint names (a probable typo
  target) is not also reported as unlinked or unreachable; of a group of NFs that cannot be
  reached, only the entry of each upstream-most group is reported; without any NIC ingress,
  reachability is not judged at all.
- A cycle is reported once, at the link that closes it when traffic is followed from the NIC:
  a depth-first walk from the ingress, in link order, restricted to each strongly connected
  component; every back edge it meets closes one cycle. Removing those links makes the chain
  acyclic, so every cycle is accounted for and none is named twice.
- Errors come first, then warnings; within each, checks run in a fixed order and walk the
  document in order, so the output is deterministic.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import networkx as nx

from flashctl.chains.spec import KERNEL_MAX_SOCKETS, NIC, Chain, Link
from flashctl.chains.topology import SocketKey
from flashctl.errors import Diagnostic

NIC_IN = "nic:in"  # the wire as a source (`from: nic`); ':' cannot occur in an NF name
NIC_OUT = "nic:out"  # the wire as a sink (`to: nic`)
_LONG_CYCLE = 8  # NFs beyond which a cycle's message is abbreviated

Path = tuple[str | int, ...]
Graph: TypeAlias = "nx.DiGraph[str]"  # a string: DiGraph is not subscriptable at run time


@dataclass(frozen=True, slots=True)
class _LinkRef:
    """What one link's endpoints resolve to; None where a reference is broken."""

    index: int
    source: str | None  # an NF name, NIC, or None when unknown
    output: str | None  # the output it leaves by; None from the NIC or when unresolved
    target: str | None  # an NF name, NIC, or None when unknown
    duplicate_of: int | None = None  # an earlier link that already uses this output

    @property
    def source_nf(self) -> str | None:
        """The source when it is a known NF (not the NIC, not unknown)."""
        return None if self.source == NIC else self.source

    @property
    def target_nf(self) -> str | None:
        """The target when it is a known NF (not the NIC, not unknown)."""
        return None if self.target == NIC else self.target


@dataclass(slots=True)
class _Refs:
    """The resolved links of a chain and what resolving them found."""

    links: list[_LinkRef] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)  # links with an error: no warnings about them
    unknown: set[str] = field(default_factory=set)  # unknown NF names in from/to
    unresolved_output: set[str] = field(default_factory=set)  # NFs left by a bad output


# ---------------------------------------------------------------------------- public API


def build_graph(chain: Chain) -> Graph:
    """The NF-level graph: nodes `nic:in`, `nic:out` and every NF (attrs `threads`, `umem`).

    One edge per pair of endpoints; links with an unknown endpoint are left out. Edge attrs
    describe the first link joining the pair: `link` (its index), `output` (None from the
    NIC or when unresolved), `mapping`; `links` holds the indices of all links joining it.
    """
    return _graph(chain, _resolve_links(chain))


def check(chain: Chain) -> list[Diagnostic]:
    """Every error and warning of one chain: errors first, each group in document order."""
    refs = _resolve_links(chain)
    graph = _graph(chain, refs)
    suspects = _suspects(chain, refs)
    mentioned = _mentioned(chain)
    reach = _reachable(graph, [NIC_IN, *_assumed_roots(refs, suspects)])
    cycles = _check_cycles(chain, graph, refs)
    mixed = _check_mixed_outputs(chain, refs)
    refs.bad.update(_link_index(d) for d in [*cycles, *mixed])  # no warnings on those links
    umem_errors = _check_umems(chain)
    errors = [
        *refs.errors,
        *umem_errors,
        *_check_traffic(chain, refs, suspects),
        *_check_unlinked_outputs(chain, refs, suspects, mentioned),
        *mixed,
        *_check_reachability(chain, graph, refs, suspects, mentioned, reach),
        *cycles,
        *_check_sockets(chain),
    ]
    # Copy hops are judged from the umem groups, so only once those are valid.
    copies = [] if umem_errors else _check_copy_hops(chain, refs)
    warnings = [*copies, *_check_idle_threads(chain, refs, reach)]
    return errors + warnings


def check_across(
    chains: Sequence[Chain], labels: Sequence[str] | None = None
) -> list[tuple[int, Diagnostic]]:
    """Problems between documents, each as (index of the later chain, diagnostic).

    `labels` name the documents in messages (the loader passes `file:line`); without them a
    document is named by its 1-based position in `chains` ("document 1").
    """
    names = (
        list(labels) if labels is not None else [f"document {i + 1}" for i in range(len(chains))]
    )
    found: list[tuple[int, Diagnostic]] = []
    first_named: dict[str, int] = {}
    owners: dict[tuple[str, int], tuple[int, SocketKey]] = {}
    for index, chain in enumerate(chains):
        earlier = first_named.setdefault(chain.name, index)
        if earlier != index:
            message = f"chain name '{chain.name}' is already used by {names[earlier]}"
            found.append(
                (index, _error(("metadata", "name"), message, "give each chain its own name"))
            )
        for path, key, interface, queue in _queue_sockets(chain):
            owner_index, owner = owners.setdefault((interface, queue), (index, key))
            if owner_index == index:
                continue  # a conflict inside one chain is check()'s to report
            message = (
                f"queue {queue} of {interface} is taken by {owner} of chain "
                f"'{chains[owner_index].name}' and {key} of chain '{chain.name}'"
            )
            hint = f"give {key} another queue: each queue of an interface takes one AF_XDP socket"
            found.append((index, _error(path, message, hint)))
    return found


# ------------------------------------------------------------------------ diagnostics


def _error(path: Path, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(severity="error", path=path, message=message, hint=hint)


def _warning(path: Path, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(severity="warning", path=path, message=message, hint=hint)


def _link_index(diagnostic: Diagnostic) -> int:
    """The index of the link a `("spec", "links", i, ...)` diagnostic blames."""
    index = diagnostic.path[2]
    assert isinstance(index, int)
    return index


def _close_match(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return matches[0] if matches else None


def _unknown_nf(path: Path, name: str, candidates: Iterable[str], fallback: str) -> Diagnostic:
    match = _close_match(name, candidates)
    return _error(path, f"unknown nf '{name}'", f"did you mean '{match}'?" if match else fallback)


def _either(words: Sequence[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _ranges(numbers: Sequence[int]) -> str:
    """Ascending numbers, runs of three or more folded: `1, 3-5`."""
    parts: list[str] = []
    start = 0
    for end in range(len(numbers)):
        if end + 1 < len(numbers) and numbers[end + 1] == numbers[end] + 1:
            continue
        run = numbers[start : end + 1]
        parts.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ", ".join(map(str, run)))
        start = end + 1
    return ", ".join(parts)


# ------------------------------------------------------------------- link resolution


def _resolve_links(chain: Chain) -> _Refs:
    refs = _Refs()
    owners: dict[tuple[str, str], int] = {}  # (nf, output) -> first link using it
    for index, link in enumerate(chain.spec.links):
        ref = _resolve_link(chain, index, link, refs)
        source, output = ref.source_nf, ref.output
        if source is not None and output is not None:
            first = owners.setdefault((source, output), index)
            if first != index:
                ref = _LinkRef(index, source, output, ref.target, duplicate_of=first)
                refs.errors.append(_fan_out_error(index, source, output, first))
                refs.bad.add(index)
        refs.links.append(ref)
        _check_pinned_thread(chain, index, link, ref, refs)
    return refs


def _resolve_link(chain: Chain, index: int, link: Link, refs: _Refs) -> _LinkRef:
    source, output, source_error = _resolve_source(chain, index, link)
    target, target_error = _resolve_target(chain, index, link)
    for problem in (source_error, target_error):
        if problem is not None:
            refs.errors.append(problem)
            refs.bad.add(index)
    if source is None:
        refs.unknown.add(link.source_nf)
    elif source != NIC and output is None:
        refs.unresolved_output.add(source)
    if target is None:
        refs.unknown.add(link.to)
    return _LinkRef(index, source, output, target)


def _resolve_source(
    chain: Chain, index: int, link: Link
) -> tuple[str | None, str | None, Diagnostic | None]:
    """(source, output, error); an unresolved output still names its NF, whose edge is clear."""
    path: Path = ("spec", "links", index, "from")
    name = link.source_nf
    if name == NIC:
        if link.source_output is not None:
            return NIC, None, _error(path, "the NIC has no outputs", "write `from: nic`")
        return NIC, None, None
    nf = chain.spec.nfs.get(name)
    if nf is None:
        fallback = "declare it under spec.nfs, or use `nic` for traffic from the wire"
        return None, None, _unknown_nf(path, name, [*chain.spec.nfs, NIC], fallback)
    output, problem = _resolve_output(path, name, nf.outputs, link.source_output)
    return name, output, problem


def _resolve_output(
    path: Path, nf: str, outputs: list[str], written: str | None
) -> tuple[str | None, Diagnostic | None]:
    if not outputs:
        hint = f"declare one in spec.nfs.{nf}.outputs, or remove this link ({nf} is a sink)"
        return None, _error(path, f"{nf} has no outputs", hint)
    if written is None:
        if len(outputs) == 1:
            return outputs[0], None
        message = f"{nf} has {len(outputs)} outputs and the link does not name one"
        return None, _error(path, message, f"name one: {_either([f'{nf}.{o}' for o in outputs])}")
    if written in outputs:
        return written, None
    match = _close_match(written, outputs)
    hint = f"did you mean '{match}'?" if match else f"use {_either([f'{nf}.{o}' for o in outputs])}"
    return None, _error(path, f"{nf} has no output '{written}'", hint)


def _resolve_target(chain: Chain, index: int, link: Link) -> tuple[str | None, Diagnostic | None]:
    if link.to == NIC or link.to in chain.spec.nfs:
        return link.to, None
    path: Path = ("spec", "links", index, "to")
    fallback = "declare it under spec.nfs, or use `nic` to leave on the wire"
    return None, _unknown_nf(path, link.to, [*chain.spec.nfs, NIC], fallback)


def _fan_out_error(index: int, nf: str, output: str, first: int) -> Diagnostic:
    return _error(
        ("spec", "links", index, "from"),
        f"output {nf}.{output} is already linked by spec.links[{first}]",
        "one output is one index in the next list: declare another output for this target",
    )


def _check_pinned_thread(chain: Chain, index: int, link: Link, ref: _LinkRef, refs: _Refs) -> None:
    target = ref.target_nf
    if link.thread is None or target is None:
        return
    count = chain.spec.nfs[target].thread_count
    if link.thread < count:
        return
    message = f"{target} has no thread {link.thread}: it has {_plural(count, 'thread')}"
    hint = "use `thread: 0`" if count == 1 else f"pick a thread from 0 to {count - 1}"
    refs.errors.append(_error(("spec", "links", index, "thread"), message, hint))
    refs.bad.add(index)


# ----------------------------------------------------------------------------- graph


def _umem_groups(chain: Chain) -> dict[str, str]:
    """NF -> its UMEM group's name; the first listing wins, as in `Chain.umem_of`.

    Computed once: `Chain.umem_of` scans every group per call, quadratic on big chains.
    """
    groups: dict[str, str] = {}
    for group in chain.spec.umems:
        for nf in group.nfs:
            groups.setdefault(nf, group.name)
    return groups


def _graph(chain: Chain, refs: _Refs) -> Graph:
    graph: Graph = nx.DiGraph()
    graph.add_node(NIC_IN, threads=0, umem=None)
    graph.add_node(NIC_OUT, threads=0, umem=None)
    groups = _umem_groups(chain)
    for name, nf in chain.spec.nfs.items():
        graph.add_node(name, threads=nf.thread_count, umem=groups.get(name, f"{name}(private)"))
    for ref in refs.links:
        if ref.source is None or ref.target is None:
            continue
        source = NIC_IN if ref.source == NIC else ref.source
        target = NIC_OUT if ref.target == NIC else ref.target
        if graph.has_edge(source, target):
            graph[source][target]["links"] += (ref.index,)
            continue
        mapping = chain.spec.links[ref.index].mapping
        graph.add_edge(
            source, target, link=ref.index, output=ref.output, mapping=mapping, links=(ref.index,)
        )
    return graph


def _mentioned(chain: Chain) -> set[str]:
    """Names that appear in any link, resolved or not."""
    return {name for link in chain.spec.links for name in (link.source_nf, link.to)}


def _suspects(chain: Chain, refs: _Refs) -> set[str]:
    """NFs a "did you mean" hint names: probably the intended end of a broken link."""
    candidates = [*chain.spec.nfs, NIC]  # the same candidates as the links' hints
    matches = {_close_match(word, candidates) for word in refs.unknown}
    return {m for m in matches if m is not None and m != NIC}


def _assumed_roots(refs: _Refs, suspects: set[str]) -> set[str]:
    """NFs treated as reached because a broken link probably reaches them."""
    fed_by_unknown = {r.target_nf for r in refs.links if r.source is None}
    return suspects | {nf for nf in fed_by_unknown if nf is not None}


def _reachable(graph: Graph, starts: Iterable[str]) -> set[str]:
    seen = set(starts)
    stack = list(seen)
    while stack:
        for successor in graph.successors(stack.pop()):
            if successor not in seen:
                seen.add(successor)
                stack.append(successor)
    return seen


# ------------------------------------------------------------------- document checks


def _check_umems(chain: Chain) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    first_named: dict[str, int] = {}
    placed: dict[str, int] = {}  # nf -> index of the group that lists it first
    for index, group in enumerate(chain.spec.umems):
        earlier = first_named.setdefault(group.name, index)
        if earlier != index:
            errors.append(
                _error(
                    ("spec", "umems", index, "name"),
                    f"umem '{group.name}' is already declared by spec.umems[{earlier}]",
                    "give each umem group its own name",
                )
            )
        listed: set[str] = set()
        for position, nf in enumerate(group.nfs):
            path: Path = ("spec", "umems", index, "nfs", position)
            if nf not in chain.spec.nfs:
                errors.append(_unknown_nf(path, nf, chain.spec.nfs, "declare it under spec.nfs"))
            elif nf in listed:
                errors.append(
                    _error(path, f"{nf} is listed twice in umem '{group.name}'", "remove one")
                )
            elif placed.setdefault(nf, index) != index:
                first = placed[nf]
                message = f"{nf} is already in umem '{chain.spec.umems[first].name}'"
                hint = f"an nf has one umem: remove it here or from spec.umems[{first}]"
                errors.append(_error(path, message, hint))
            listed.add(nf)
    return errors


def _check_traffic(chain: Chain, refs: _Refs, suspects: set[str]) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    has_ingress = any(r.source == NIC for r in refs.links)
    ingress = list(dict.fromkeys(_ingress_nfs(refs)))
    for index, traffic in enumerate(chain.spec.traffic):
        path: Path = ("spec", "traffic", index, "into")
        if traffic.into not in chain.spec.nfs:
            errors.append(
                _unknown_nf(path, traffic.into, chain.spec.nfs, "declare it under spec.nfs")
            )
        elif has_ingress and traffic.into not in ingress and traffic.into not in suspects:
            # Without any ingress the missing `from: nic` link is the one error to report.
            message = f"traffic goes into {traffic.into} but no link brings the NIC's traffic to it"
            hint = f"add `{{from: nic, to: {traffic.into}}}`"
            if ingress:
                hint += f", or send it into {_either(ingress)}"
            errors.append(_error(path, message, hint))
    return errors


def _ingress_nfs(refs: _Refs) -> Iterator[str]:
    """NFs that `from: nic` links deliver to, in link order (repeats included)."""
    for ref in refs.links:
        if ref.source == NIC and ref.target is not None:
            yield ref.target


def _linked_outputs(refs: _Refs) -> dict[str, dict[str, _LinkRef]]:
    """NF -> output -> the one link leaving by it (duplicates excluded)."""
    linked: dict[str, dict[str, _LinkRef]] = {}
    for ref in refs.links:
        source, output = ref.source_nf, ref.output
        if source is not None and output is not None and ref.duplicate_of is None:
            linked.setdefault(source, {})[output] = ref
    return linked


def _check_unlinked_outputs(
    chain: Chain, refs: _Refs, suspects: set[str], mentioned: set[str]
) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    linked = _linked_outputs(refs)
    for name, nf in chain.spec.nfs.items():
        # An NF in no link, or left by a link we could not resolve, has its one error already.
        if name not in mentioned or name in refs.unresolved_output or name in suspects:
            continue
        explicit = "outputs" in nf.model_fields_set  # else point at the NF: no node to blame
        for position, output in enumerate(nf.outputs):
            if output in linked.get(name, {}):
                continue
            path: Path = (
                ("spec", "nfs", name, "outputs", position) if explicit else ("spec", "nfs", name)
            )
            hint = (
                f"add a link from {name}.{output}, or remove the output (`outputs: []` is a sink)"
            )
            errors.append(_error(path, f"output {name}.{output} is not linked", hint))
    return errors


def _check_mixed_outputs(chain: Chain, refs: _Refs) -> list[Diagnostic]:
    """A socket with FLASH rules never transmits to the wire, so NIC and NF targets cannot mix."""
    errors: list[Diagnostic] = []
    linked = _linked_outputs(refs)
    for name in chain.spec.nfs:
        by_index = sorted(linked.get(name, {}).values(), key=lambda r: r.index)
        to_nic = next((r for r in by_index if r.target == NIC), None)
        to_nf = next((r for r in by_index if r.target_nf is not None), None)
        if to_nic is None or to_nf is None:
            continue
        closing = max(to_nic, to_nf, key=lambda r: r.index)
        message = (
            f"{name} sends {name}.{to_nic.output} to the NIC and {name}.{to_nf.output} to "
            f"{to_nf.target}: a socket with FLASH rules never transmits to the wire"
        )
        hint = f"give the egress path its own nf, or send all of {name}'s outputs to the NIC"
        errors.append(_error(("spec", "links", closing.index, "to"), message, hint))
    return errors


def _check_reachability(
    chain: Chain,
    graph: Graph,
    refs: _Refs,
    suspects: set[str],
    mentioned: set[str],
    reach: set[str],
) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    has_ingress = any(r.source == NIC for r in refs.links)
    if not has_ingress:
        first = next(iter(chain.spec.nfs))
        hint = f"add a link from the NIC to the first nf, e.g. `{{from: nic, to: {first}}}`"
        errors.append(_error(("spec", "links"), "no link brings traffic from the NIC", hint))
    for name in chain.spec.nfs:
        if name not in mentioned and name not in suspects:
            hint = f"link it (e.g. `{{from: nic, to: {name}}}`) or remove it"
            errors.append(
                _error(("spec", "nfs", name), f"nf '{name}' is not linked to anything", hint)
            )
    if not has_ingress:
        return errors  # nothing is reachable then: the missing ingress is the one mistake
    for name in _unreachable_entries(chain, graph, mentioned, reach):
        hint = f"add a link into it from an nf that can, or `{{from: nic, to: {name}}}`"
        errors.append(
            _error(("spec", "nfs", name), f"nf '{name}' cannot be reached from the NIC", hint)
        )
    return errors


def _unreachable_entries(
    chain: Chain, graph: Graph, mentioned: set[str], reach: set[str]
) -> list[str]:
    """One NF per upstream-most group of unreachable NFs: its downstream is the same mistake."""
    unreached = [n for n in chain.spec.nfs if n in mentioned and n not in reach]
    if not unreached:
        return []
    rank = {name: position for position, name in enumerate(chain.spec.nfs)}
    condensed = nx.condensation(graph.subgraph(unreached))
    entries = [
        min(condensed.nodes[component]["members"], key=rank.__getitem__)
        for component in condensed
        if next(condensed.predecessors(component), None) is None
    ]
    return sorted(entries, key=rank.__getitem__)


# ------------------------------------------------------------------------------ cycles


def _check_cycles(chain: Chain, graph: Graph, refs: _Refs) -> list[Diagnostic]:
    components = [
        c
        for c in nx.strongly_connected_components(graph)
        if len(c) > 1 or graph.has_edge(next(iter(c)), next(iter(c)))
    ]
    if not components:
        return []
    adjacency: dict[str, list[tuple[str, int]]] = {}
    for ref in refs.links:
        source, target = ref.source_nf, ref.target_nf
        if source is not None and target is not None:
            adjacency.setdefault(source, []).append((target, ref.index))
    rank = _traffic_order(chain, graph)
    closing: list[tuple[int, list[str]]] = []
    for component in components:
        root = min(component, key=rank.__getitem__)
        closing.extend(_back_edges(root, adjacency, component))
    hint = "retarget this link: FLASH has no TTL, so a packet on a cycle never leaves"
    return [
        _error(("spec", "links", index, "to"), _cycle_message(cycle), hint)
        for index, cycle in sorted(closing, key=lambda found: found[0])
    ]


def _traffic_order(chain: Chain, graph: Graph) -> dict[str, int]:
    """Node -> rank: depth-first from the NIC in link order, then the rest in document order."""
    rank: dict[str, int] = {}
    for name in [*nx.dfs_preorder_nodes(graph, NIC_IN), *chain.spec.nfs]:
        rank.setdefault(name, len(rank))
    return rank


def _back_edges(
    root: str, adjacency: dict[str, list[tuple[str, int]]], members: set[str]
) -> list[tuple[int, list[str]]]:
    """(link index, cycle) for every back edge of an iterative DFS inside one component."""
    found: list[tuple[int, list[str]]] = []
    closed: set[tuple[str, str]] = set()  # parallel links (fw.a, fw.b -> lb) close one cycle
    path = [root]
    on_path = {root: 0}
    done: set[str] = set()
    pending: list[Iterator[tuple[str, int]]] = [iter(adjacency.get(root, []))]
    while pending:
        for target, index in pending[-1]:
            if target not in members or target in done:
                continue
            if target in on_path:
                if (path[-1], target) not in closed:
                    closed.add((path[-1], target))
                    found.append((index, path[on_path[target] :]))
                continue
            on_path[target] = len(path)
            path.append(target)
            pending.append(iter(adjacency.get(target, [])))
            break
        else:
            pending.pop()
            finished = path.pop()
            del on_path[finished]
            done.add(finished)
    return found


def _cycle_message(cycle: list[str]) -> str:
    if len(cycle) <= _LONG_CYCLE:
        return "cycle: " + " -> ".join([*cycle, cycle[0]])
    shown = [*cycle[:3], "...", cycle[-1], cycle[0]]
    return f"cycle of {len(cycle)} nfs: " + " -> ".join(shown)


# ----------------------------------------------------------------------------- sockets


def _queue_sockets(chain: Chain) -> Iterator[tuple[Path, SocketKey, str, int]]:
    """(path, socket, interface, queue) of every socket bound by queue on a known interface."""
    for name, nf in chain.spec.nfs.items():
        interface = chain.interface_of(name)
        if nf.queues is None or interface is None:
            continue
        for thread, queue in enumerate(nf.queues):
            yield ("spec", "nfs", name, "queues", thread), SocketKey(name, thread), interface, queue


def _check_sockets(chain: Chain) -> list[Diagnostic]:
    errors: list[Diagnostic] = []
    for name, nf in chain.spec.nfs.items():
        # Sockets found by `match` belong to apps that choose their interface themselves.
        if nf.queues is not None and chain.interface_of(name) is None:
            hint = f"set spec.interface, or spec.nfs.{name}.interface"
            errors.append(_error(("spec", "nfs", name), f"{name} has no interface", hint))
    owners: dict[tuple[str, int], SocketKey] = {}
    for path, key, interface, queue in _queue_sockets(chain):
        owner = owners.setdefault((interface, queue), key)
        if owner != key:
            message = f"queue {queue} of {interface} is taken by {owner} and {key}"
            hint = f"give {key} another queue: each queue of an interface takes one AF_XDP socket"
            errors.append(_error(path, message, hint))
    limit = _check_socket_limit(chain)
    return errors + ([limit] if limit else [])


def _check_socket_limit(chain: Chain) -> Diagnostic | None:
    total = sum(nf.thread_count for nf in chain.spec.nfs.values())
    limit = chain.spec.sim.max_sockets
    if total <= limit:
        return None
    kernel = f"the FLASH kernel has {KERNEL_MAX_SOCKETS} flash-ids"
    if limit == KERNEL_MAX_SOCKETS:
        message = f"the chain needs {total} sockets but {kernel}"
        hint = "use fewer threads; for the simulator, raise spec.sim.maxSockets"
    else:
        message = f"the chain needs {total} sockets but spec.sim.maxSockets is {limit} ({kernel})"
        hint = "use fewer threads, or raise spec.sim.maxSockets for the simulator"
    return _error(("spec", "nfs"), message, hint)


# ---------------------------------------------------------------------------- warnings


def _check_copy_hops(chain: Chain, refs: _Refs) -> list[Diagnostic]:
    warnings: list[Diagnostic] = []
    groups = _umem_groups(chain)
    for ref in refs.links:
        source, target = ref.source_nf, ref.target_nf
        if source is None or target is None or ref.index in refs.bad:
            continue
        if source == target or (source in groups and groups.get(source) == groups.get(target)):
            continue
        where = f"{_umem_phrase(source, groups)}, {_umem_phrase(target, groups)}"
        message = (
            f"{chain.spec.links[ref.index].source} -> {target} costs one copy per packet: {where}"
        )
        hint = f"put {source} and {target} in one umem for zero-copy"
        warnings.append(_warning(("spec", "links", ref.index), message, hint))
    return warnings


def _umem_phrase(nf: str, groups: dict[str, str]) -> str:
    return f"{nf} is in umem '{groups[nf]}'" if nf in groups else f"{nf} has a private umem"


def _check_idle_threads(chain: Chain, refs: _Refs, reach: set[str]) -> list[Diagnostic]:
    incoming: dict[str, list[_LinkRef]] = {}
    for ref in refs.links:
        if ref.target_nf is not None:
            incoming.setdefault(ref.target_nf, []).append(ref)
    warnings: list[Diagnostic] = []
    for name in chain.spec.nfs:
        feeding = incoming.get(name, [])
        # Judge only what is fully known: a broken feeding link would change the answer.
        if name not in reach or not feeding or any(_is_broken_feed(r, refs) for r in feeding):
            continue
        warning = _idle_warning(chain, name, feeding)
        if warning is not None:
            warnings.append(warning)
    return warnings


def _is_broken_feed(ref: _LinkRef, refs: _Refs) -> bool:
    return ref.source is None or ref.index in refs.bad


def _idle_warning(chain: Chain, name: str, feeding: list[_LinkRef]) -> Diagnostic | None:
    count = chain.spec.nfs[name].thread_count
    fed: set[int] = set()
    for ref in feeding:
        fed.update(_fed_threads(chain, ref, count))
    idle = [thread for thread in range(count) if thread not in fed]
    if not idle:
        return None
    reasons = dict.fromkeys(_idle_reason(chain, ref, count) for ref in feeding)
    threads = f"threads {_ranges(idle)} receive" if len(idle) > 1 else f"thread {idle[0]} receives"
    message = f"{name} {threads} nothing: {'; '.join(reasons)}"
    hint = f"use `mapping: spread` to feed every {name} thread, or give {name} fewer threads"
    return _warning(("spec", "links", feeding[0].index), message, hint)


def _fed_threads(chain: Chain, ref: _LinkRef, count: int) -> Iterable[int]:
    """Threads of the target one link delivers to (the policy of `topology.target_threads`)."""
    link = chain.spec.links[ref.index]
    if ref.source == NIC or link.mapping == "spread":
        return range(count)  # RSS spreads the NIC over every queue of an ingress NF
    if link.mapping == "pinned":
        return (link.thread or 0,)
    return range(min(chain.spec.nfs[str(ref.source)].thread_count, count))


def _idle_reason(chain: Chain, ref: _LinkRef, count: int) -> str:
    link = chain.spec.links[ref.index]
    source = str(ref.source)
    if link.mapping == "pinned":
        return f"pinned sends every {source} thread to thread {link.thread}"
    sending = chain.spec.nfs[source].thread_count
    return f"affine maps {source}'s {_plural(sending, 'thread')} onto {count}"
