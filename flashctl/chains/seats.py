"""What the FLASH monitor protocol tells each NF process, derived from the running chains.

An unmodified FLASH NF names itself with two numbers on its command line, `umem_id` and
`nf_id`, and asks the monitor (flashctl's agent) everything else: its UMEM, its sockets, its
flags, its next-list size, addresses, previous NFs. A *seat* is that answer sheet for one
NF: `seats()` builds every seat from the chains; the agent's protocol server only encodes it.

Numbering, as the FLASH monitor uses it (its `umem[]` / `nf[]` positions):

- `umem_id` names a UMEM group host-wide. An NF in no group has a private UMEM, which gets
  an id like any group. Ids are assigned once and kept while the group runs
  (`assign_umem_ids`): applying another chain never renumbers NFs that are attached, and a
  deleted group's id is reused only by a later group (lowest free id first).
- `nf_id` is the NF's position inside its group (`umems[].nfs` order), 0-based. It also
  indexes the group's 64-byte POLLOUT status block, which is why it is per group.

Where flashctl answers differently from the C monitor, on purpose:

- `umem_offset` (the NF's first frame partition) is the number of threads of the NFs before
  it in the group. The monitor sends `nf_id * threads`, which overlaps partitions as soon as
  two NFs of a group have different thread counts.
- `next_size` is the length of the NF's `next` list as the planner builds it (a `spread`
  output counts one entry per target thread), the number of indices the NF may put in the
  TX descriptor's `options`; outputs to the NIC count nothing.
- Previous NFs are the group's NFs that link to this one (their `nf_id`s): they share the
  POLLOUT block. Upstream NFs in other groups cannot see this group's block and are left out.

Pure: chains in, seats out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flashctl.chains.spec import NIC, Chain, Umem
from flashctl.chains.topology import expand, output_links

FRAME_SIZE = 4096  # XSK_UMEM__DEFAULT_FRAME_SIZE, what FLASH NFs assume
FRAMES_PER_THREAD = 4096  # NUM_FRAMES in flash_defines.h: one partition, times `scale`
MAX_UMEM_BYTES = (1 << 31) - 1  # the protocol sends the UMEM size as a C int
NO_ADDRESS = "0.0.0.0"  # what the monitor's configs hold for "no address"

UmemKey = tuple[str, str]  # (chain, group name); a private UMEM is named `nf(private)`


@dataclass(frozen=True, slots=True)
class Seat:
    """Everything the protocol answers to one NF, and where its sockets go."""

    chain: str
    nf: str
    umem: str  # group name (`nf(private)` for a private UMEM)
    umem_id: int
    nf_id: int
    interface: str
    queues: tuple[int, ...]  # one per thread, in thread order
    umem_offset: int  # partition index of thread 0
    umem_size: int  # bytes of the group's UMEM
    scale: int
    bind: str  # auto | zerocopy | copy: what to try when binding
    xdp: str  # auto | native | skb | hw
    mode: str
    poll_timeout: int
    frags: bool
    custom_xdp: bool
    next_size: int
    address: str
    dst_addresses: tuple[str, ...]  # one per next-list index
    prev: tuple[int, ...]  # nf_ids of the group's NFs linking here

    @property
    def key(self) -> tuple[int, int]:
        return (self.umem_id, self.nf_id)

    @property
    def threads(self) -> int:
        return len(self.queues)


def groups_of(chain: Chain) -> list[tuple[str, list[str], Umem | None]]:
    """The chain's UMEMs in id order: declared groups as written (NFs in group order, each
    NF once), then a private UMEM per NF in no group, in NF order."""
    seen: set[str] = set()
    out: list[tuple[str, list[str], Umem | None]] = []
    for group in chain.spec.umems:
        members = [nf for nf in group.nfs if nf in chain.spec.nfs and nf not in seen]
        seen.update(members)
        out.append((group.name, members, group))
    for nf in chain.spec.nfs:
        if nf not in seen:
            out.append((chain.umem_of(nf), [nf], None))
    return out


def servable(chain: Chain, nf: str) -> bool:
    """Whether the agent can create this NF's sockets: it needs an interface and queues."""
    spec = chain.spec.nfs[nf]
    return spec.queues is not None and chain.interface_of(nf) is not None


def assign_umem_ids(chains: Iterable[Chain], previous: Mapping[UmemKey, int]) -> dict[UmemKey, int]:
    """Keep the id of every group still present; give new groups the lowest free ids, in
    chain order, then group order."""
    keys = [(chain.name, name) for chain in chains for name, _, _ in groups_of(chain)]
    kept = {key: previous[key] for key in keys if key in previous}
    used = set(kept.values())
    assigned = dict(kept)
    candidate = 0
    for key in keys:
        if key in assigned:
            continue
        while candidate in used:
            candidate += 1
        assigned[key] = candidate
        used.add(candidate)
    return assigned


def seats(chains: Sequence[Chain], umem_ids: Mapping[UmemKey, int]) -> dict[tuple[int, int], Seat]:
    """Every servable NF's seat, keyed by (umem_id, nf_id)."""
    out: dict[tuple[int, int], Seat] = {}
    for chain in chains:
        for seat in _chain_seats(chain, umem_ids):
            out[seat.key] = seat
    return out


def umem_problems(chain: Chain) -> list[str]:
    """Groups whose UMEM cannot be described on the wire (its size is a 32-bit int)."""
    problems = []
    for name, members, group in groups_of(chain):
        scale = group.scale if group is not None else 1
        threads = sum(chain.spec.nfs[nf].thread_count for nf in members)
        size = FRAMES_PER_THREAD * FRAME_SIZE * threads * scale
        if size > MAX_UMEM_BYTES:
            problems.append(
                f"UMEM {name!r} of chain {chain.name!r} needs {size} bytes ({threads} threads "
                f"x scale {scale} x 16 MiB), more than the 2 GiB the FLASH protocol can "
                "describe; split the group or lower `scale`"
            )
    return problems


def _chain_seats(chain: Chain, umem_ids: Mapping[UmemKey, int]) -> list[Seat]:
    topology = expand(chain)
    links = output_links(chain)
    out = []
    for name, members, group in groups_of(chain):
        umem_id = umem_ids.get((chain.name, name))
        if umem_id is None:
            continue
        scale = group.scale if group is not None else 1
        threads = [chain.spec.nfs[nf].thread_count for nf in members]
        size = FRAMES_PER_THREAD * FRAME_SIZE * sum(threads) * scale
        position = {nf: index for index, nf in enumerate(members)}
        for nf_id, nf in enumerate(members):
            if not servable(chain, nf):
                continue
            spec = chain.spec.nfs[nf]
            entries = topology.index_table.get(nf, ())
            dst = tuple(
                _address_of(chain, entry.target) for entry in entries for _ in range(entry.count)
            )
            prev = sorted(
                position[source]
                for (source, _output), link in links.items()
                if link.to == nf and source in position
            )
            out.append(
                Seat(
                    chain=chain.name,
                    nf=nf,
                    umem=name,
                    umem_id=umem_id,
                    nf_id=nf_id,
                    interface=chain.interface_of(nf) or "",
                    queues=tuple(spec.queues or ()),
                    umem_offset=sum(threads[:nf_id]),
                    umem_size=size,
                    scale=scale,
                    bind=group.bind if group is not None else "auto",
                    xdp=group.xdp if group is not None else "auto",
                    mode=group.mode if group is not None else "wakeup",
                    poll_timeout=(group.poll_timeout or 0) if group is not None else 0,
                    frags=group.frags if group is not None else False,
                    custom_xdp=group.custom_xdp if group is not None else False,
                    next_size=len(dst),
                    address=str(spec.address) if spec.address is not None else NO_ADDRESS,
                    dst_addresses=dst,
                    prev=tuple(dict.fromkeys(prev)),
                )
            )
    return out


def _address_of(chain: Chain, nf: str) -> str:
    if nf == NIC:
        return NO_ADDRESS
    address = chain.spec.nfs[nf].address
    return str(address) if address is not None else NO_ADDRESS
