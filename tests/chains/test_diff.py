"""Diff: exact writes for known transitions, and the convergence properties of plan + diff."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.chains.diff import Changes, Write, apply_changes, diff
from flashctl.chains.planner import Inventory, LiveSocket, Plan, plan, projected_inventory, rules_of
from flashctl.chains.spec import Chain
from flashctl.chains.topology import SocketKey
from tests.chains.test_planner import (
    EDGE,
    EDGE_UP,
    ID_SPACE,
    make_chain,
    planned,
    sock,
)

Rules = Mapping[int, tuple[int, ...]]
Expected = list[tuple[int, str, str, str]]  # flash_id, text, disruption, reason


def three(
    links: list[tuple[str, str]],
    outputs: Mapping[str, list[str]] | None = None,
    ids_queues: tuple[int, ...] = (4,),
    shared: bool = False,
) -> Chain:
    """fw (queue 0), lb (queue 2) and ids (queue 4), wired by `links`."""
    nfs: dict[str, dict[str, Any]] = {
        "fw": {"queues": [0]},
        "lb": {"queues": [2]},
        "ids": {"queues": list(ids_queues)},
    }
    for name, names in (outputs or {}).items():
        nfs[name]["outputs"] = names
    spec: dict[str, Any] = {
        "interface": "eth0",
        "nfs": nfs,
        "links": [{"from": source, "to": target} for source, target in links],
    }
    if shared:
        spec["umems"] = [{"name": "shared", "nfs": ["fw", "lb"]}]
    return make_chain(spec)


FLAT = Inventory((sock(10, 0, "fw"), sock(12, 2, "lb"), sock(14, 4, "ids")))
LB1_DOWN = Inventory((sock(10, 0, "fw"), sock(11, 1, "fw"), sock(12, 2, "lb")))
NGINX_13 = Inventory((*LB1_DOWN.sockets, sock(13, 9, "nginx", pid=44)))
UMEMS = Inventory(
    (sock(10, 0, "fw", umem="u1"), sock(12, 2, "lb", umem="u1"), sock(14, 4, "ids", umem="u2"))
)

CASES: list[tuple[str, Chain, Inventory, Rules, Expected]] = [
    (
        "fresh apply",
        EDGE,
        EDGE_UP,
        {},
        [
            (10, "12\n", "hitless", "fw/0: set next to [lb/0 (id 12, zero-copy)]"),
            (11, "13\n", "hitless", "fw/1: set next to [lb/1 (id 13, zero-copy)]"),
        ],
    ),
    ("already applied", EDGE, EDGE_UP, {10: (12,), 11: (13,), 12: (), 13: ()}, []),
    ("foreign ids are not ours", EDGE, EDGE_UP, {10: (12,), 11: (13,), 40: (41,)}, []),
    (
        "target restarted with a new id",
        EDGE,
        EDGE_UP,
        {10: (12,), 11: (6,)},
        [(11, "13\n", "redirect-gap", "fw/1: lb/1 restarted as id 13 (was 6)")],
    ),
    (
        "stray rule on an egress socket",
        EDGE,
        EDGE_UP,
        {10: (12,), 11: (13,), 12: (40,)},
        [(12, "-1\n", "redirect-gap", "lb/0: clear next (was [id 40]): lb sends to the NIC")],
    ),
    (
        "insert ids between fw and lb: ids first",
        three([("nic", "fw"), ("fw", "ids"), ("ids", "lb"), ("lb", "nic")]),
        FLAT,
        {10: (12,)},
        [
            (14, "12\n", "hitless", "ids/0: set next to [lb/0 (id 12, copy)]"),
            (
                10,
                "14\n",
                "redirect-gap",
                "fw/0: change next from [lb/0 (id 12)] to [ids/0 (id 14, copy)]",
            ),
        ],
    ),
    (
        "remove ids from the path: fw first",
        three([("nic", "fw"), ("fw", "lb"), ("lb", "nic"), ("nic", "ids"), ("ids", "nic")]),
        FLAT,
        {10: (14,), 14: (12,)},
        [
            (
                10,
                "12\n",
                "redirect-gap",
                "fw/0: change next from [ids/0 (id 14)] to [lb/0 (id 12, copy)]",
            ),
            (
                14,
                "-1\n",
                "redirect-gap",
                "ids/0: clear next (was [lb/0 (id 12)]): ids sends to the NIC",
            ),
        ],
    ),
    (
        "outputs swapped",
        three(
            [("nic", "fw"), ("fw.b", "ids"), ("fw.a", "lb"), ("lb", "nic"), ("ids", "nic")],
            outputs={"fw": ["b", "a"]},
        ),
        FLAT,
        {10: (12, 14)},
        [
            (
                10,
                "14 12\n",
                "index-reorder",
                "fw/0: change next from [lb/0 (id 12), ids/0 (id 14)] to "
                "[ids/0 (id 14, copy), lb/0 (id 12, copy)]; id 12 moves from index 0 to 1",
            )
        ],
    ),
    (
        "an index now reaches another output's NF",
        three(
            [("nic", "fw"), ("fw.a", "lb"), ("fw.b", "ids"), ("lb", "nic"), ("ids", "nic")],
            outputs={"fw": ["a", "b"]},
            ids_queues=(4, 5),
        ),
        Inventory((*FLAT.sockets, sock(15, 5, "ids"))),
        {10: (15,)},
        [
            (
                10,
                "12 14\n",
                "index-reorder",
                "fw/0: change next from [ids/1 (id 15)] to "
                "[lb/0 (id 12, copy), ids/0 (id 14, copy)]; "
                "index 0 moves from output 'b' (ids/1) to output 'a' (lb/0)",
            )
        ],
    ),
    (
        "copy becomes zero-copy",
        three([("nic", "fw"), ("fw", "lb"), ("lb", "nic"), ("nic", "ids"), ("ids", "nic")]),
        UMEMS,
        {10: (14,)},
        [
            (
                10,
                "12\n",
                "copy-mode-change",
                "fw/0: change next from [ids/0 (id 14)] to [lb/0 (id 12, zero-copy)]; "
                "index 0 goes from copy to zero-copy",
            )
        ],
    ),
    ("pending source keeps a dead id", EDGE, LB1_DOWN, {10: (12,), 11: (6,)}, []),
    ("pending source with no rules stays so", EDGE, LB1_DOWN, {10: (12,)}, []),
    (
        "pending source whose id was reused elsewhere is cleared",
        EDGE,
        NGINX_13,
        {10: (12,), 11: (13,)},
        [
            (
                11,
                "-1\n",
                "redirect-gap",
                "fw/1: clear next (was [id 13]): id 13 now belongs to another socket, "
                "not a target of fw/1; keep -1 until lb/1 is bound",
            )
        ],
    ),
    (
        "pending source pointing at a chain socket that is not its target is cleared",
        EDGE,
        LB1_DOWN,
        {10: (12,), 11: (12,)},
        [
            (
                11,
                "-1\n",
                "redirect-gap",
                "fw/1: clear next (was [lb/0 (id 12)]): id 12 is now lb/0, "
                "not a target of fw/1; keep -1 until lb/1 is bound",
            )
        ],
    ),
    (
        "direction reversed: set before clear",
        three([("nic", "lb"), ("lb", "fw"), ("fw", "nic"), ("nic", "ids"), ("ids", "nic")]),
        FLAT,
        {10: (12,)},
        [
            (12, "10\n", "hitless", "lb/0: set next to [fw/0 (id 10, copy)]"),
            (
                10,
                "-1\n",
                "redirect-gap",
                "fw/0: clear next (was [lb/0 (id 12)]): fw sends to the NIC",
            ),
        ],
    ),
    (
        "cycle of observed and desired edges is ordered by flash-id",
        three([("nic", "ids"), ("ids", "fw"), ("fw", "lb"), ("lb", "nic")]),
        FLAT,
        {10: (14,)},
        [
            (
                10,
                "12\n",
                "redirect-gap",
                "fw/0: change next from [ids/0 (id 14)] to [lb/0 (id 12, copy)]",
            ),
            (14, "10\n", "hitless", "ids/0: set next to [fw/0 (id 10, copy)]"),
        ],
    ),
    (
        "teardown clears upstream first",
        three([("nic", "fw"), ("fw", "nic"), ("nic", "lb"), ("lb", "nic"), ("nic", "ids")]),
        FLAT,
        {10: (14,), 14: (12,)},
        [
            (
                10,
                "-1\n",
                "redirect-gap",
                "fw/0: clear next (was [ids/0 (id 14)]): fw sends to the NIC",
            ),
            (
                14,
                "-1\n",
                "redirect-gap",
                "ids/0: clear next (was [lb/0 (id 12)]): ids has no linked outputs",
            ),
        ],
    ),
]


@pytest.mark.parametrize(
    ("chain", "inventory", "observed", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_diff(chain: Chain, inventory: Inventory, observed: Rules, expected: Expected) -> None:
    changes = diff(plan(chain, inventory), observed)
    got = [(w.flash_id, w.text(), w.disruption, w.reason) for w in changes.writes]
    assert got == expected
    assert all(w.old == tuple(observed.get(w.flash_id, ())) for w in changes.writes)


def test_changes_report_pending_rules_and_size() -> None:
    result = plan(EDGE, LB1_DOWN)
    changes = diff(result, {})
    assert [str(r.socket) for r in changes.pending] == ["fw/1"]
    assert len(changes) == 1  # fw/0 -> lb/0
    assert changes
    assert not changes.empty
    assert changes.worst() == "hitless"
    quiet = diff(result, rules_of(result))
    assert (len(quiet), bool(quiet), quiet.empty, quiet.worst()) == (0, False, True, None)
    assert quiet.pending == changes.pending


def test_write_text_is_what_sysfs_expects() -> None:
    socket = SocketKey("fw", 0)
    assert Write(3, socket, (), (5, 17), "hitless", "").text() == "5 17\n"
    assert Write(3, socket, (5,), (), "redirect-gap", "").text() == "-1\n"


def test_apply_changes_models_the_writes() -> None:
    observed = {10: (6,), 40: (41,)}
    changes = diff(plan(EDGE, EDGE_UP), observed)
    assert apply_changes(observed, changes) == {10: (12,), 11: (13,), 40: (41,)}
    assert observed == {10: (6,), 40: (41,)}


def test_ten_thousand_sockets_in_a_line() -> None:
    count, threads = 2500, 4
    nfs = {f"n{i}": {"queues": [threads * i + t for t in range(threads)]} for i in range(count)}
    links = [{"from": "nic", "to": "n0"}]
    links += [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(count - 1)]
    links += [{"from": f"n{count - 1}", "to": "nic"}]
    spec = {"interface": "eth0", "nfs": nfs, "links": links, "sim": {"maxSockets": 20000}}
    chain = make_chain(spec, "long")
    result = plan(chain, projected_inventory(chain))
    assert len(result.rules) == count * threads
    first = result.rule_for(0)
    assert first is not None
    assert (first.socket, first.next) == (SocketKey("n0", 0), (threads,))  # n0/0 -> n1/0

    changes = diff(result, {})
    assert len(changes) == (count - 1) * threads
    assert {w.disruption for w in changes.writes} == {"hitless"}
    # downstream first; ties go to the lowest id, so thread 0's line is programmed first
    assert changes.writes[0].socket == SocketKey(f"n{count - 2}", 0)
    assert changes.writes[-1].socket == SocketKey("n0", threads - 1)
    position = {w.flash_id: i for i, w in enumerate(changes.writes)}
    for i, write in enumerate(changes.writes):
        assert all(position.get(target, -1) < i for target in write.new)
    applied = apply_changes({}, changes)
    assert not diff(result, applied)
    assert {k: v for k, v in applied.items() if v} == {
        k: v for k, v in rules_of(result).items() if v
    }


# --- properties ----------------------------------------------------------------------------

IDS = st.integers(0, ID_SPACE - 1)
OBSERVED = st.dictionaries(IDS, st.lists(IDS, max_size=4).map(tuple), max_size=24)


def owned_part(rules: Rules, result: Plan) -> dict[int, tuple[int, ...]]:
    return {i: tuple(rules.get(i, ())) for i in rules_of(result)}


@settings(max_examples=150, deadline=None)
@given(planned())
def test_a_plan_applied_has_no_diff(case: tuple[Chain, Inventory]) -> None:
    result = plan(*case)
    assert diff(result, rules_of(result)).empty


@settings(max_examples=200, deadline=None)
@given(planned(), OBSERVED)
def test_one_diff_converges(case: tuple[Chain, Inventory], observed: Rules) -> None:
    result = plan(*case)
    changes = diff(result, observed)
    check_writes(result, observed, changes)
    after = apply_changes(observed, changes)
    assert diff(result, after).empty
    assert owned_part(after, result) == rules_of(result)
    for rule in result.pending:  # a pending rule never reaches a socket it does not intend
        reached = set(after.get(rule.flash_id, ())) & result.live_ids
        assert reached <= rule.intended


@settings(max_examples=200, deadline=None)
@given(planned("before"), planned("after"), OBSERVED)
def test_b_then_a_leaves_a(
    before: tuple[Chain, Inventory], after: tuple[Chain, Inventory], observed: Rules
) -> None:
    plan_b, plan_a = plan(*before), plan(*after)
    via_b = apply_changes(observed, diff(plan_b, observed))
    changes = diff(plan_a, via_b)
    check_writes(plan_a, via_b, changes)
    final = apply_changes(via_b, changes)
    assert owned_part(final, plan_a) == rules_of(plan_a)
    assert diff(plan_a, final).empty


def check_writes(result: Plan, observed: Rules, changes: Changes) -> None:
    """Only owned ids, one write each, each one a change, sets before clears, and
    make-before-break wherever the socket graph has no cycle through both ends."""
    writes = changes.writes
    assert {w.flash_id for w in writes} <= result.owned_ids
    assert len({w.flash_id for w in writes}) == len(writes)
    for write in writes:
        assert write.new != write.old
        assert write.old == tuple(observed.get(write.flash_id, ()))
    clears = [w.new == () for w in writes]
    assert clears == sorted(clears)
    graph: nx.DiGraph[int] = nx.DiGraph()
    for rules in (rules_of(result), observed):
        graph.add_edges_from((s, t) for s, targets in rules.items() for t in targets)
    position = {w.flash_id: i for i, w in enumerate(writes)}
    for write in writes:
        # a set comes after the sets of its new targets; a clear before the clears of its old
        ends = write.new if write.new else write.old
        for target in ends:
            other = position.get(target)
            if other is None or writes[other].clears != write.clears:
                continue
            if nx.has_path(graph, target, write.flash_id):
                continue  # a cycle: either order breaks something
            assert (other < position[write.flash_id]) == bool(write.new)


@settings(max_examples=100, deadline=None)
@given(planned(), st.lists(IDS, max_size=10))
def test_projected_plan_binds_everything_and_applies_hitless(
    case: tuple[Chain, Inventory], taken: list[int]
) -> None:
    chain = case[0]
    inventory = projected_inventory(chain, taken)
    result = plan(chain, inventory)
    assert all(b.status == "bound" for b in result.bindings)
    assert not result.pending
    assert not set(taken) & result.owned_ids
    changes = diff(result, {})
    assert {w.disruption for w in changes.writes} <= {"hitless"}


def test_live_socket_and_inventory_are_hashable_values() -> None:
    socket = LiveSocket(1, 2, "fw", "eth0", 3, 0)
    assert {socket, LiveSocket(1, 2, "fw", "eth0", 3, 0)} == {socket}
    assert hash(Inventory((socket,))) == hash(Inventory((socket,)))
