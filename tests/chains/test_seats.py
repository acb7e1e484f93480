"""Seats: what the FLASH monitor protocol tells each NF, derived from the chains (pure)."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.backends.monitorwire import mode_flags
from flashctl.chains.loader import load_sources
from flashctl.chains.seats import (
    MAX_UMEM_BYTES,
    Seat,
    assign_umem_ids,
    seats,
    umem_problems,
)
from flashctl.chains.spec import Chain

MIB16 = 4096 * 4096  # one partition: FRAMES_PER_THREAD frames of FRAME_SIZE bytes


def load(text: str) -> Chain:
    return load_sources([("x.yaml", text)]).chains[0].chain


def chain_of(name: str, spec: dict[str, Any]) -> Chain:
    """A chain from a spec dict, through the loader (JSON is YAML), graph checks included."""
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return load(json.dumps({**document, "spec": spec}))


def path(*nfs: str) -> list[dict[str, str]]:
    """Links nic -> nfs[0] -> ... -> nic."""
    return [{"from": a, "to": b} for a, b in pairwise(["nic", *nfs, "nic"])]


def linear(name: str, groups: list[list[str]], nfs: int = 2, base_queue: int = 0) -> Chain:
    """nic -> n0 -> n1 -> ... -> nic, one queue each, with the given UMEM groups."""
    names = [f"n{i}" for i in range(nfs)]
    return chain_of(
        name,
        {
            "interface": "fcnodev0",
            "umems": [{"name": f"g{i}", "nfs": members} for i, members in enumerate(groups)],
            "nfs": {n: {"queues": [base_queue + i]} for i, n in enumerate(names)},
            "links": path(*names),
        },
    )


def all_seats(*chains: Chain) -> dict[tuple[int, int], Seat]:
    return seats(list(chains), assign_umem_ids(chains, {}))


def by_nf(found: dict[tuple[int, int], Seat]) -> dict[str, Seat]:
    return {seat.nf: seat for seat in found.values()}


ORDER = load(
    """
apiVersion: flashctl/v1
kind: Chain
metadata: {name: order}
spec:
  interface: fcnodev0
  umems:
    - {name: g2, nfs: [d, b]}
    - {name: g1, nfs: [a]}
  nfs:
    a: {queues: [0]}
    b: {queues: [1]}
    c: {queues: [2]}
    d: {queues: [3]}
    e: {queues: [4]}
  links:
    - {from: nic, to: a}
    - {from: a, to: b}
    - {from: b, to: c}
    - {from: c, to: d}
    - {from: d, to: e}
    - {from: e, to: nic}
"""
)

# fw (2 threads) fans out to lb (3 threads, spread) and mon (affine); lb and mon both feed
# tap, which sends to the wire; fw, lb and tap share one UMEM, mon has a private one.
EDGE = load(
    """
apiVersion: flashctl/v1
kind: Chain
metadata: {name: edge}
spec:
  interface: fcnodev0
  umems:
    - {name: shared, nfs: [fw, lb, tap], bind: copy, xdp: skb, scale: 2}
  nfs:
    fw: {queues: [0, 1], outputs: [pass, drop], address: 10.0.0.1}
    lb: {queues: [2, 3, 4], outputs: [a], address: 10.0.0.2}
    mon: {queues: [5], address: 10.0.0.3}
    tap: {queues: [6]}
  links:
    - {from: nic, to: fw}
    - {from: fw.pass, to: lb, mapping: spread}
    - {from: fw.drop, to: mon}
    - {from: lb.a, to: tap}
    - {from: mon, to: tap}
    - {from: tap, to: nic}
"""
)


# --- numbering ---


def test_umem_ids_follow_group_order_then_private_umems_in_nf_order():
    assert assign_umem_ids([ORDER], {}) == {
        ("order", "g2"): 0,
        ("order", "g1"): 1,
        ("order", "c(private)"): 2,
        ("order", "e(private)"): 3,
    }


def test_nf_id_is_the_position_in_the_group():
    found = all_seats(ORDER)
    assert {key: (seat.nf, seat.umem) for key, seat in found.items()} == {
        (0, 0): ("d", "g2"),
        (0, 1): ("b", "g2"),
        (1, 0): ("a", "g1"),
        (2, 0): ("c", "c(private)"),
        (3, 0): ("e", "e(private)"),
    }
    assert all(seat.key == key for key, seat in found.items())


def test_umem_ids_continue_in_chain_order():
    first, second = linear("alpha", [["n0", "n1"]]), linear("beta", [["n1"]], base_queue=2)
    assert assign_umem_ids([first, second], {}) == {
        ("alpha", "g0"): 0,
        ("beta", "g0"): 1,
        ("beta", "n0(private)"): 2,
    }


def test_adding_a_chain_keeps_the_ids_of_running_groups():
    alpha = linear("alpha", [["n0"]])
    before = assign_umem_ids([alpha], {})
    assert before == {("alpha", "g0"): 0, ("alpha", "n1(private)"): 1}
    beta = linear("beta", [], base_queue=2)
    # alpha's ids stay; beta takes the next free ones.
    after = assign_umem_ids([alpha, beta], before)
    assert after == {
        ("alpha", "g0"): 0,
        ("alpha", "n1(private)"): 1,
        ("beta", "n0(private)"): 2,
        ("beta", "n1(private)"): 3,
    }


def test_an_earlier_chain_added_later_does_not_renumber_the_others():
    zulu = linear("zulu", [["n0", "n1"]])
    before = assign_umem_ids([zulu], {})
    assert before == {("zulu", "g0"): 0}
    alpha = linear("alpha", [["n0", "n1"]], base_queue=2)
    assert assign_umem_ids([alpha, zulu], before) == {("alpha", "g0"): 1, ("zulu", "g0"): 0}


def test_a_removed_chains_ids_are_reused_lowest_first():
    alpha, beta = linear("alpha", [["n0"]]), linear("beta", [["n0", "n1"]], base_queue=2)
    both = assign_umem_ids([alpha, beta], {})
    assert both == {("alpha", "g0"): 0, ("alpha", "n1(private)"): 1, ("beta", "g0"): 2}
    only_beta = assign_umem_ids([beta], both)
    assert only_beta == {("beta", "g0"): 2}
    gamma = linear("gamma", [], nfs=3, base_queue=4)
    assert assign_umem_ids([beta, gamma], only_beta) == {
        ("beta", "g0"): 2,
        ("gamma", "n0(private)"): 0,
        ("gamma", "n1(private)"): 1,
        ("gamma", "n2(private)"): 3,
    }


def test_a_kept_id_moves_with_its_group_seats():
    alpha, beta = linear("alpha", [["n0"]]), linear("beta", [["n0", "n1"]], base_queue=2)
    ids = assign_umem_ids([beta], assign_umem_ids([alpha, beta], {}))
    assert {key: (seat.chain, seat.nf) for key, seat in seats([beta], ids).items()} == {
        (2, 0): ("beta", "n0"),
        (2, 1): ("beta", "n1"),
    }


def test_a_group_without_an_id_has_no_seats():
    ids = assign_umem_ids([ORDER], {})
    del ids[("order", "g2")]
    assert sorted(seats([ORDER], ids)) == [(1, 0), (2, 0), (3, 0)]


@st.composite
def histories(draw: st.DrawFn) -> list[list[int]]:
    """Successive sets of running chains, as indices into CHAINS_FOR_IDS (sorted)."""
    steps = draw(st.lists(st.sets(st.integers(0, 3)), min_size=1, max_size=8))
    return [sorted(step) for step in steps]


CHAINS_FOR_IDS = [
    linear("c0", [["n0"]]),
    linear("c1", [["n0", "n1"]], base_queue=2),
    linear("c2", [], base_queue=4),
    linear("c3", [["n1"]], nfs=3, base_queue=6),
]


@given(histories())
@settings(max_examples=100, deadline=None)
def test_ids_are_distinct_kept_and_lowest_free(history):
    previous: dict[tuple[str, str], int] = {}
    for step in history:
        chains = [CHAINS_FOR_IDS[i] for i in step]
        assigned = assign_umem_ids(chains, previous)
        assert len(set(assigned.values())) == len(assigned)
        kept = {key: previous[key] for key in assigned if key in previous}
        assert {key: assigned[key] for key in kept} == kept
        new = [key for key in assigned if key not in previous]
        free = sorted(set(range(len(assigned) + len(previous))) - set(kept.values()))
        assert [assigned[key] for key in new] == free[: len(new)]
        previous = assigned


# --- partitions and sizes ---


def test_umem_offset_counts_the_threads_of_earlier_nfs_of_the_group():
    chain = chain_of(
        "parts",
        {
            "interface": "fcnodev0",
            "umems": [{"name": "g", "nfs": ["x", "y", "z"], "scale": 3}],
            "nfs": {
                "x": {"queues": [0, 1, 2]},
                "y": {"queues": [3]},
                "z": {"queues": [4, 5]},
            },
            "links": path("x", "y", "z"),
        },
    )
    found = by_nf(all_seats(chain))
    assert [(s.nf_id, s.umem_offset, s.threads) for s in found.values()] == [
        (0, 0, 3),
        (1, 3, 1),
        (2, 4, 2),
    ]
    # The C monitor answers nf_id * threads: y would get partition 1, inside x's 0..2, and z
    # partitions 4..5 by luck. flashctl never overlaps.
    y = found["y"]
    assert y.nf_id * y.threads == 1
    assert y.umem_offset == 3
    assert {s.umem_size for s in found.values()} == {4096 * 4096 * 6 * 3}
    assert {s.scale for s in found.values()} == {3}


def test_umem_size_of_a_private_umem_is_its_threads_at_scale_one():
    fw = by_nf(all_seats(linear("solo", [], nfs=1)))["n0"]
    assert (fw.umem_size, fw.scale, fw.umem_offset) == (16777216, 1, 0)


@st.composite
def grouped_chains(draw: st.DrawFn) -> Chain:
    """A linear chain of 1..6 NFs with 1..4 threads each; a random subset, in random order,
    shares one UMEM of random scale; the rest have private UMEMs."""
    count = draw(st.integers(1, 6))
    threads = draw(st.lists(st.integers(1, 4), min_size=count, max_size=count))
    names = [f"n{i}" for i in range(count)]
    members = draw(st.permutations(names))[: draw(st.integers(1, count))]
    scale = draw(st.integers(1, 8))
    queues, nfs = 0, {}
    for name, n in zip(names, threads, strict=True):
        nfs[name] = {"queues": list(range(queues, queues + n))}
        queues += n
    return chain_of(
        "prop",
        {
            "interface": "fcnodev0",
            "umems": [{"name": "g", "nfs": list(members), "scale": scale}],
            "nfs": nfs,
            "links": path(*names),
        },
    )


@given(grouped_chains())
@settings(max_examples=60, deadline=None)
def test_partitions_of_a_group_are_disjoint_and_inside_its_umem(chain):
    found = all_seats(chain)
    groups: dict[int, list[Seat]] = {}
    for seat in found.values():
        groups.setdefault(seat.umem_id, []).append(seat)
    for members in groups.values():
        members.sort(key=lambda s: s.nf_id)
        assert [s.nf_id for s in members] == list(range(len(members)))
        sizes = {(s.umem_size, s.scale) for s in members}
        assert len(sizes) == 1
        ((size, scale),) = sizes
        partitions = size // (MIB16 * scale)
        taken: list[int] = []
        for s in members:
            taken.extend(range(s.umem_offset, s.umem_offset + s.threads))
        # Disjoint, and together exactly the UMEM: every partition belongs to one thread.
        assert sorted(taken) == list(range(partitions))


# --- next list, addresses, previous NFs ---


def test_next_size_counts_spread_targets_per_thread_and_nothing_for_the_nic():
    found = by_nf(all_seats(EDGE))
    fw = found["fw"]
    # pass -> lb (spread over 3 threads), drop -> mon (affine: 1)
    assert fw.next_size == 4
    assert fw.dst_addresses == ("10.0.0.2", "10.0.0.2", "10.0.0.2", "10.0.0.3")
    assert fw.address == "10.0.0.1"


def test_an_nf_without_address_and_one_sending_only_to_the_nic():
    found = by_nf(all_seats(EDGE))
    assert (found["lb"].next_size, found["lb"].dst_addresses) == (1, ("0.0.0.0",))
    assert (found["tap"].next_size, found["tap"].dst_addresses) == (0, ())
    assert found["tap"].address == "0.0.0.0"


def test_pinned_mapping_is_one_entry():
    chain = chain_of(
        "pin",
        {
            "interface": "fcnodev0",
            "nfs": {"a": {"queues": [0, 1]}, "b": {"queues": [2, 3], "address": "10.1.1.1"}},
            "links": [
                {"from": "nic", "to": "a"},
                {"from": "a", "to": "b", "mapping": "pinned", "thread": 1},
                {"from": "b", "to": "nic"},
            ],
        },
    )
    a = by_nf(all_seats(chain))["a"]
    assert (a.next_size, a.dst_addresses) == (1, ("10.1.1.1",))


def test_prev_lists_only_upstream_nfs_of_the_same_group():
    found = by_nf(all_seats(EDGE))
    assert found["fw"].prev == ()
    assert found["lb"].prev == (0,)
    assert found["tap"].prev == (1,)  # lb is nf 1 of `shared`; mon (another UMEM) is left out
    assert found["mon"].prev == ()  # fw links to mon, but from another UMEM


def test_prev_is_sorted_and_each_nf_once():
    chain = chain_of(
        "fan",
        {
            "interface": "fcnodev0",
            "umems": [{"name": "g", "nfs": ["c", "b", "a"]}],
            "nfs": {
                "a": {"queues": [0], "outputs": ["x", "y"]},
                "b": {"queues": [1]},
                "c": {"queues": [2]},
            },
            "links": [
                {"from": "nic", "to": "a"},
                {"from": "a.x", "to": "c"},
                {"from": "a.y", "to": "b"},
                {"from": "b", "to": "c"},
                {"from": "c", "to": "nic"},
            ],
        },
    )
    c = by_nf(all_seats(chain))["c"]
    assert (c.nf_id, c.prev) == (0, (1, 2))


# --- flags and settings ---


def test_group_settings_reach_every_member_and_defaults_reach_private_umems():
    chain = chain_of(
        "modes",
        {
            "interface": "fcnodev0",
            "umems": [
                {
                    "name": "g",
                    "nfs": ["a"],
                    "bind": "zerocopy",
                    "xdp": "native",
                    "mode": "poll",
                    "pollTimeout": 250,
                    "frags": True,
                    "customXdp": True,
                }
            ],
            "nfs": {"a": {"queues": [0]}, "b": {"queues": [1]}},
            "links": path("a", "b"),
        },
    )
    found = by_nf(all_seats(chain))
    a, b = found["a"], found["b"]
    assert (a.bind, a.xdp, a.mode, mode_flags(a.mode), a.poll_timeout, a.frags, a.custom_xdp) == (
        "zerocopy",
        "native",
        "poll",
        4,
        250,
        True,
        True,
    )
    assert (b.bind, b.xdp, b.mode, mode_flags(b.mode), b.poll_timeout, b.frags, b.custom_xdp) == (
        "auto",
        "auto",
        "wakeup",
        0,
        0,
        False,
        False,
    )
    assert (a.interface, a.queues, b.queues) == ("fcnodev0", (0,), (1,))


def test_mode_flags():
    chain = chain_of(
        "busy",
        {
            "interface": "fcnodev0",
            "umems": [
                {"name": "b", "nfs": ["a"], "mode": "busy"},
                {"name": "m", "nfs": ["c"], "mode": "no-wakeup"},
            ],
            "nfs": {"a": {"queues": [0]}, "c": {"queues": [1]}},
            "links": path("a", "c"),
        },
    )
    found = by_nf(all_seats(chain))
    assert (mode_flags(found["a"].mode), mode_flags(found["c"].mode)) == (1, 2)


# --- servability ---


def test_nfs_without_queues_get_no_seat_but_keep_their_place():
    chain = chain_of(
        "mixed",
        {
            "umems": [{"name": "g", "nfs": ["found", "a"]}],
            "nfs": {
                "found": {"match": {"procname": "tap"}, "interface": "fcnodev0"},
                "a": {"queues": [0], "interface": "fcnodev0"},
                "spy": {"match": {"pid": 4242}, "interface": "fcnodev0"},
                "b": {"queues": [2], "interface": "fcnodev1"},
            },
            "links": [
                {"from": "nic", "to": "found"},
                {"from": "found", "to": "a"},
                {"from": "a", "to": "spy"},
                {"from": "spy", "to": "b"},
                {"from": "b", "to": "nic"},
            ],
        },
    )
    ids = assign_umem_ids([chain], {})
    assert ids == {("mixed", "g"): 0, ("mixed", "spy(private)"): 1, ("mixed", "b(private)"): 2}
    found = seats([chain], ids)
    assert {key: seat.nf for key, seat in found.items()} == {(0, 1): "a", (2, 0): "b"}
    a = found[(0, 1)]
    # The unservable NF still holds its place: nf_id 0, the partition before a's.
    assert (a.umem_offset, a.prev, a.umem_size) == (1, (0,), 2 * MIB16)
    assert found[(2, 0)].interface == "fcnodev1"


# --- UMEM size limit ---


def big(scale: int) -> Chain:
    return chain_of(
        "edge",
        {
            "interface": "fcnodev0",
            "umems": [{"name": "big", "nfs": ["x"], "scale": scale}],
            "nfs": {"x": {"queues": [0, 1]}, "y": {"queues": [2]}},
            "links": path("x", "y"),
        },
    )


def test_a_group_over_2_gib_is_a_problem():
    assert umem_problems(big(64)) == [
        "UMEM 'big' of chain 'edge' needs 2147483648 bytes (2 threads x scale 64 x 16 MiB), "
        "more than the 2 GiB the FLASH protocol can describe; split the group or lower `scale`"
    ]


def test_a_group_just_under_2_gib_is_fine():
    chain = big(63)
    assert umem_problems(chain) == []
    x = by_nf(all_seats(chain))["x"]
    assert x.umem_size == 2 * 63 * MIB16 <= MAX_UMEM_BYTES


def test_the_native_example_gives_each_flash_nf_its_seat():
    """examples/native/flash-l2fwd.yaml: what FLASH's two l2fwd NFs are told."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "native" / "flash-l2fwd.yaml"
    loaded = load_sources([(str(path), path.read_text())])
    [found] = loaded.chains
    assert loaded.warnings == ()
    by_name = by_nf(all_seats(found.chain))
    fwd0, fwd1 = by_name["fwd0"], by_name["fwd1"]
    assert (fwd0.umem_id, fwd0.nf_id, fwd0.next_size, fwd0.prev) == (0, 0, 1, ())
    assert (fwd1.umem_id, fwd1.nf_id, fwd1.next_size, fwd1.prev) == (0, 1, 0, (0,))
    assert (fwd0.umem_offset, fwd1.umem_offset, fwd1.umem_size) == (0, 1, 2 * MIB16)
    run = found.chain.spec.nfs["fwd1"].run
    assert run is not None
    assert run.argv[1:5] == ("-u", "{umem_id}", "-f", "{nf_id}")
