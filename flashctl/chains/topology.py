"""Expansion of an NF-level chain into sockets and socket-level hops.

This is where the thread-mapping policy of a link is defined (documented in README,
"Thread mapping"). For an NF with outputs `[o0, o1, ...]`, every thread's `next` list is the
concatenation, in output order, of the entries each output contributes:

- `affine` (default): one entry, target thread `i mod n` for source thread `i`;
- `pinned`: one entry, target thread `thread` for every source thread;
- `spread`: `n` entries, target threads `0..n-1`, so the NF picks a thread by index offset.

An output linked to `nic` contributes nothing: a FLASH socket with rules never transmits to
the wire, so an NF whose outputs go to the NIC keeps an empty `next` list (`-1`). The index
table (output -> first index, count) is therefore the same for every thread of an NF, which is
what lets NF code hard-code `options = index << 16`.

`expand` assumes the chain passed `flashctl.chains.graph` checks (references resolve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flashctl.chains.spec import NIC, Chain, Link

HopMode = Literal["zero-copy", "copy"]


@dataclass(frozen=True, slots=True, order=True)
class SocketKey:
    """One NF thread, i.e. one AF_XDP socket: `fw/0`."""

    nf: str
    thread: int

    def __str__(self) -> str:
        return f"{self.nf}/{self.thread}"


@dataclass(frozen=True, slots=True)
class SocketSpec:
    """Where a socket is expected: its interface and queue (None when found by `match`)."""

    key: SocketKey
    interface: str | None
    queue: int | None
    umem: str


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One output of an NF in its `next` list: indices `first .. first+count-1`."""

    output: str
    first: int
    count: int
    target: str  # an NF name, or "nic"
    mapping: str


@dataclass(frozen=True, slots=True)
class Hop:
    """A socket-level edge: `source` sends entry `index` of its list to `target`."""

    source: SocketKey
    index: int
    output: str
    target: SocketKey
    mode: HopMode


@dataclass(frozen=True, slots=True)
class Topology:
    sockets: tuple[SocketSpec, ...]  # NFs in document order, threads ascending
    hops: tuple[Hop, ...]  # by source, then index
    index_table: dict[str, tuple[IndexEntry, ...]]
    ingress: tuple[str, ...]  # NFs the NIC delivers to, in link order
    egress: frozenset[str]  # NFs whose outputs leave on the wire
    targets: dict[SocketKey, tuple[SocketKey, ...]]  # each source's next list, in index order

    def next_of(self, key: SocketKey) -> tuple[SocketKey, ...]:
        return self.targets.get(key, ())


def output_links(chain: Chain) -> dict[tuple[str, str], Link]:
    """(nf, output) -> the link leaving it; `from: nf` means the NF's only output."""
    out: dict[tuple[str, str], Link] = {}
    for link in chain.spec.links:
        if link.source == NIC:
            continue
        nf = chain.spec.nfs.get(link.source_nf)
        if nf is None:
            continue
        output = link.source_output or (nf.outputs[0] if len(nf.outputs) == 1 else None)
        if output is not None:
            out.setdefault((link.source_nf, output), link)
    return out


def target_threads(link: Link, source_thread: int, target_count: int) -> tuple[int, ...]:
    """The target threads one source thread's output reaches, in index order."""
    if link.mapping == "spread":
        return tuple(range(target_count))
    if link.mapping == "pinned":
        return (link.thread or 0,)
    return (source_thread % target_count,)


def expand(chain: Chain) -> Topology:
    spec = chain.spec
    sockets: list[SocketSpec] = []
    for name, nf in spec.nfs.items():
        umem = chain.umem_of(name)
        for thread in range(nf.thread_count):
            queue = nf.queues[thread] if nf.queues is not None else None
            sockets.append(
                SocketSpec(SocketKey(name, thread), chain.interface_of(name), queue, umem)
            )

    links = output_links(chain)
    hops: list[Hop] = []
    index_table: dict[str, tuple[IndexEntry, ...]] = {}
    egress: set[str] = set()
    for name, nf in spec.nfs.items():
        entries: list[IndexEntry] = []
        first = 0
        for output in nf.outputs:
            link = links.get((name, output))
            if link is None:
                continue
            if link.to == NIC:
                egress.add(name)
                entries.append(IndexEntry(output, first, 0, NIC, link.mapping))
                continue
            count = spec.nfs[link.to].thread_count
            width = count if link.mapping == "spread" else 1
            entries.append(IndexEntry(output, first, width, link.to, link.mapping))
            mode: HopMode = "zero-copy" if chain.umem_of(name) == chain.umem_of(link.to) else "copy"
            for thread in range(nf.thread_count):
                for offset, target in enumerate(target_threads(link, thread, count)):
                    hops.append(
                        Hop(
                            SocketKey(name, thread),
                            first + offset,
                            output,
                            SocketKey(link.to, target),
                            mode,
                        )
                    )
            first += width
        index_table[name] = tuple(entries)

    hops.sort(key=lambda h: (h.source, h.index))
    targets: dict[SocketKey, list[SocketKey]] = {}
    for hop in hops:
        targets.setdefault(hop.source, []).append(hop.target)
    ingress = tuple(dict.fromkeys(k.to for k in spec.links if k.source == NIC and k.to != NIC))
    frozen_targets = {source: tuple(keys) for source, keys in targets.items()}
    return Topology(
        tuple(sockets), tuple(hops), index_table, ingress, frozenset(egress), frozen_targets
    )
