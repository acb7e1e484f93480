"""Planner: projection, binding, rules; plus the chain/inventory strategies the diff tests use."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.chains.planner import (
    Binding,
    Inventory,
    LiveSocket,
    Plan,
    SocketRule,
    plan,
    projected_inventory,
    rules_of,
)
from flashctl.chains.spec import Chain
from flashctl.chains.topology import SocketKey, expand

ID_SPACE = 64  # the FLASH kernel's flash-ids


def make_chain(spec: dict[str, Any], name: str = "edge") -> Chain:
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return Chain.model_validate({**document, "spec": spec})


def sock(
    flash_id: int,
    qid: int,
    procname: str = "nf",
    pid: int = 100,
    umem: str | None = None,
    interface: str = "eth0",
) -> LiveSocket:
    return LiveSocket(flash_id, pid, procname, interface, 2, qid, umem)


def key(text: str) -> SocketKey:
    nf, thread = text.split("/")
    return SocketKey(nf, int(thread))


def edge_spec(**nfs: dict[str, Any]) -> dict[str, Any]:
    """fw (queues 0, 1) -> lb (queues 2, 3) -> nic, fw and lb sharing a UMEM."""
    base: dict[str, dict[str, Any]] = {
        "fw": {"queues": [0, 1], "outputs": ["pass"]},
        "lb": {"queues": [2, 3], "outputs": ["a"]},
    }
    return {
        "interface": "eth0",
        "umems": [{"name": "shared", "nfs": ["fw", "lb"]}],
        "nfs": {name: {**base.get(name, {}), **nfs.get(name, {})} for name in base},
        "links": [
            {"from": "nic", "to": "fw"},
            {"from": "fw.pass", "to": "lb"},
            {"from": "lb.a", "to": "nic"},
        ],
    }


EDGE = make_chain(edge_spec())
EDGE_UP = Inventory((sock(10, 0, "fw"), sock(11, 1, "fw"), sock(12, 2, "lb"), sock(13, 3, "lb")))


def binding_of(result: Plan, socket: str) -> Binding:
    found = result.binding_for(key(socket))
    assert found is not None
    return found


def rule_of(result: Plan, socket: str) -> SocketRule:
    found = [r for r in result.rules if r.socket == key(socket)]
    assert len(found) == 1
    return found[0]


# --- projection ----------------------------------------------------------------------------


def test_projection_takes_lowest_free_ids_in_document_order() -> None:
    inventory = projected_inventory(EDGE, taken=[0, 2])
    assert inventory.source == "projected"
    assert inventory.sockets == (
        LiveSocket(1, 0, "fw", "eth0", 0, 0, "shared"),
        LiveSocket(3, 0, "fw", "eth0", 0, 1, "shared"),
        LiveSocket(4, 0, "lb", "eth0", 0, 2, "shared"),
        LiveSocket(5, 0, "lb", "eth0", 0, 3, "shared"),
    )
    assert plan(EDGE, inventory).source == "projected"


def test_projection_truncates_procname_like_the_kernel() -> None:
    chain = make_chain(
        {
            "interface": "eth0",
            "nfs": {"firewall-with-long-name": {"queues": [0]}},
            "links": [{"from": "nic", "to": "firewall-with-long-name"}],
        }
    )
    (only,) = projected_inventory(chain).sockets
    assert only.procname == "firewall-with-l"


def test_projection_stops_at_the_socket_limit() -> None:
    chain = make_chain({**edge_spec(), "sim": {"maxSockets": 4}})
    inventory = projected_inventory(chain, taken=[1])
    assert [(s.flash_id, s.qid) for s in inventory.sockets] == [(0, 0), (2, 1), (3, 2)]
    lb1 = binding_of(plan(chain, inventory), "lb/1")
    assert (lb1.status, lb1.reason) == ("pending", "eth0 queue 3 has no socket yet (start lb)")


def test_projection_of_matched_nf_uses_match_and_spare_queues() -> None:
    chain = make_chain(
        edge_spec(lb={"queues": None, "threads": 2, "match": {"procname": "nginx", "pid": 7}})
    )
    inventory = projected_inventory(chain)
    lb_sockets = [(s.procname, s.pid, s.qid) for s in inventory.sockets if s.flash_id >= 2]
    # queues 0 and 1 are fw's, so lb's threads land on the next free queues
    assert lb_sockets == [("nginx", 7, 2), ("nginx", 7, 3)]
    assert all(b.status == "bound" for b in plan(chain, inventory).bindings)


def test_projection_of_matched_nf_alone_uses_thread_numbers() -> None:
    chain = make_chain(
        {
            "interface": "eth0",
            "nfs": {"app": {"threads": 3, "match": {"procname": "app"}}},
            "links": [{"from": "nic", "to": "app"}],
        }
    )
    assert [s.qid for s in projected_inventory(chain).sockets] == [0, 1, 2]


# --- inventory -----------------------------------------------------------------------------


def test_inventory_is_sorted_and_rejects_duplicate_ids() -> None:
    inventory = Inventory((sock(5, 0), sock(2, 1)))
    assert [s.flash_id for s in inventory.sockets] == [2, 5]
    assert inventory == Inventory((sock(2, 1), sock(5, 0)))
    assert set(inventory.by_id()) == {2, 5}
    with pytest.raises(ValueError, match="flash-id 2 twice"):
        Inventory((sock(2, 0), sock(2, 1)))


# --- binding -------------------------------------------------------------------------------

BINDING_CASES: list[tuple[str, dict[str, Any], tuple[LiveSocket, ...], str, Binding]] = [
    (
        "queue bound",
        {},
        (sock(12, 2, "lb", pid=44),),
        "lb/0",
        Binding(key("lb/0"), "eth0", 2, 12, "bound", "eth0 queue 2 is id 12 (pid 44 'lb')"),
    ),
    (
        "queue empty",
        {},
        (),
        "lb/0",
        Binding(
            key("lb/0"), "eth0", 2, None, "pending", "eth0 queue 2 has no socket yet (start lb)"
        ),
    ),
    (
        "queue held by another process",
        {"lb": {"match": {"procname": "lb"}}},
        (sock(12, 2, "nginx", pid=44),),
        "lb/0",
        Binding(
            key("lb/0"),
            "eth0",
            2,
            None,
            "conflict",
            "eth0 queue 2 is held by pid 44 'nginx', which does not match procname 'lb'",
        ),
    ),
    (
        "pid and procname both checked",
        {"lb": {"match": {"procname": "lb", "pid": 45}}},
        (sock(12, 2, "lb", pid=44),),
        "lb/0",
        Binding(
            key("lb/0"),
            "eth0",
            2,
            None,
            "conflict",
            "eth0 queue 2 is held by pid 44 'lb', which does not match procname 'lb' and pid 45",
        ),
    ),
    (
        "matching socket on another interface is not taken",
        {"lb": {"queues": None, "threads": 2, "match": {"procname": "lb"}}},
        (sock(30, 9, "lb", interface="eth1"), sock(31, 7, "lb")),
        "lb/1",
        Binding(
            key("lb/1"),
            "eth0",
            None,
            None,
            "pending",
            "no socket matching procname 'lb' on eth0 for thread 1 (found 1 of 2; start lb)",
        ),
    ),
    (
        "matched sockets go to threads by (interface, qid, flash_id)",
        {"lb": {"queues": None, "threads": 2, "match": {"pid": 9}}},
        (sock(30, 9, "x", pid=9), sock(31, 7, "y", pid=9), sock(32, 8, "z", pid=8)),
        "lb/1",
        Binding(key("lb/1"), "eth0", 9, 30, "bound", "id 30 on eth0 queue 9 matches pid 9"),
    ),
    (
        "a queue NF's socket is not taken by a matched NF",
        {
            "fw": {"match": {"procname": "app"}},
            "lb": {"queues": None, "match": {"procname": "app"}},
        },
        (sock(1, 0, "app"), sock(2, 1, "app"), sock(3, 5, "app")),
        "lb/0",
        Binding(key("lb/0"), "eth0", 5, 3, "bound", "id 3 on eth0 queue 5 matches procname 'app'"),
    ),
]


@pytest.mark.parametrize(
    ("nfs", "sockets", "socket", "expected"),
    [case[1:] for case in BINDING_CASES],
    ids=[case[0] for case in BINDING_CASES],
)
def test_binding(
    nfs: dict[str, Any], sockets: tuple[LiveSocket, ...], socket: str, expected: Binding
) -> None:
    chain = make_chain(edge_spec(**nfs))
    assert binding_of(plan(chain, Inventory(sockets)), socket) == expected


def test_two_nfs_on_one_queue_conflict_instead_of_sharing_a_socket() -> None:
    chain = make_chain(edge_spec(lb={"queues": [1, 3]}))
    result = plan(chain, EDGE_UP)
    assert binding_of(result, "fw/1").flash_id == 11
    lb0 = binding_of(result, "lb/0")
    assert (lb0.status, lb0.reason) == ("conflict", "eth0 queue 1 is already bound to fw/1")


def test_nf_without_interface_is_pending_with_a_hint() -> None:
    spec = edge_spec()
    del spec["interface"]
    spec["nfs"]["fw"]["interface"] = "eth0"
    lb0 = binding_of(plan(make_chain(spec), EDGE_UP), "lb/0")
    assert (lb0.status, lb0.reason) == (
        "pending",
        "lb has no interface (set spec.interface or spec.nfs.lb.interface)",
    )


# --- rules ---------------------------------------------------------------------------------


def test_rules_of_a_fully_bound_chain() -> None:
    result = plan(EDGE, EDGE_UP)
    assert result.rules == (
        SocketRule(
            key("fw/0"),
            10,
            (12,),
            (key("lb/0"),),
            ("zero-copy",),
            frozenset({12}),
            "fw/0: next [lb/0 (id 12, zero-copy)]",
        ),
        SocketRule(
            key("fw/1"),
            11,
            (13,),
            (key("lb/1"),),
            ("zero-copy",),
            frozenset({13}),
            "fw/1: next [lb/1 (id 13, zero-copy)]",
        ),
        SocketRule(
            key("lb/0"), 12, (), (), (), frozenset(), "lb/0: no rules (lb sends to the NIC)"
        ),
        SocketRule(
            key("lb/1"), 13, (), (), (), frozenset(), "lb/1: no rules (lb sends to the NIC)"
        ),
    )
    assert rules_of(result) == {10: (12,), 11: (13,), 12: (), 13: ()}
    assert result.live_ids == frozenset({10, 11, 12, 13})
    assert result.owned_ids == frozenset({10, 11, 12, 13})


def test_rules_are_sorted_by_flash_id_and_unbound_sources_have_none() -> None:
    inventory = Inventory((sock(3, 0, "fw"), sock(1, 2, "lb"), sock(2, 3, "lb")))
    result = plan(EDGE, inventory)
    assert [(r.flash_id, str(r.socket)) for r in result.rules] == [
        (1, "lb/0"),
        (2, "lb/1"),
        (3, "fw/0"),
    ]
    assert result.rule_for(3) == rule_of(result, "fw/0")
    assert result.rule_for(11) is None
    assert result.socket_of(2) == key("lb/1")


def test_pending_rule_names_the_missing_target_and_keeps_bound_ones() -> None:
    chain = make_chain(
        {
            **edge_spec(),
            "links": [
                {"from": "nic", "to": "fw"},
                {"from": "fw.pass", "to": "lb", "mapping": "spread"},
                {"from": "lb.a", "to": "nic"},
            ],
        }
    )
    result = plan(chain, Inventory((sock(10, 0, "fw"), sock(12, 2, "lb"))))
    fw0 = rule_of(result, "fw/0")
    assert fw0.next is None
    assert fw0.pending
    assert fw0.targets == (key("lb/0"), key("lb/1"))
    assert fw0.intended == frozenset({12})
    assert fw0.reason == "fw/0: waiting for lb/1: eth0 queue 3 has no socket yet (start lb)"
    assert result.pending == (fw0,)
    assert result.missing_targets(fw0) == (key("lb/1"),)
    assert 10 not in rules_of(result)


MAPPING_CASES: list[tuple[dict[str, Any], dict[str, tuple[str, ...]]]] = [
    ({"mapping": "affine"}, {"fw/0": ("lb/0",), "fw/1": ("lb/1",), "fw/2": ("lb/0",)}),
    ({"mapping": "pinned", "thread": 1}, {"fw/0": ("lb/1",), "fw/1": ("lb/1",)}),
    ({"mapping": "spread"}, {"fw/0": ("lb/0", "lb/1"), "fw/2": ("lb/0", "lb/1")}),
]


@pytest.mark.parametrize(("link", "expected"), MAPPING_CASES)
def test_thread_mapping_reaches_rules(
    link: dict[str, Any], expected: dict[str, tuple[str, ...]]
) -> None:
    spec = edge_spec(fw={"queues": [0, 1, 4]})
    spec["links"][1] = {"from": "fw.pass", "to": "lb", **link}
    inventory = Inventory((*EDGE_UP.sockets, sock(14, 4, "fw")))
    result = plan(make_chain(spec), inventory)
    by_key = {"lb/0": 12, "lb/1": 13}
    for source, targets in expected.items():
        rule = rule_of(result, source)
        assert rule.targets == tuple(key(t) for t in targets)
        assert rule.next == tuple(by_key[t] for t in targets)


def test_live_umems_decide_the_hop_mode_when_known() -> None:
    inventory = Inventory(
        (
            sock(10, 0, "fw", umem="u1"),
            sock(11, 1, "fw", umem="u1"),
            sock(12, 2, "lb", umem="u2"),
            sock(13, 3, "lb"),
        )
    )
    result = plan(EDGE, inventory)
    assert result.umem_of_id == {10: "u1", 11: "u1", 12: "u2"}
    assert rule_of(result, "fw/0").modes == ("copy",)  # both known: live UMEMs differ
    assert rule_of(result, "fw/1").modes == ("zero-copy",)  # lb/1's unknown: chain groups
    assert rule_of(result, "fw/0").reason == "fw/0: next [lb/0 (id 12, copy)]"


def test_sink_without_linked_outputs_gets_an_empty_rule() -> None:
    spec = edge_spec()
    spec["links"] = spec["links"][:2]
    rule = rule_of(plan(make_chain(spec), EDGE_UP), "lb/0")
    assert (rule.next, rule.reason) == ((), "lb/0: no rules (lb has no linked outputs)")


# --- strategies (also used by test_diff) ---------------------------------------------------

MAPPINGS = st.sampled_from(["affine", "spread", "pinned"])


@st.composite
def chains(draw: st.DrawFn, name: str = "chain") -> Chain:
    """Valid chains of 1-6 NFs, 1-4 threads: a line or a fan-out tree, leaves to the NIC."""
    count = draw(st.integers(1, 6))
    threads = [draw(st.integers(1, 4)) for _ in range(count)]
    line = draw(st.booleans())
    children: dict[int, list[int]] = {i: [] for i in range(count)}
    for i in range(1, count):
        children[i - 1 if line else draw(st.integers(0, i - 1))].append(i)
    nfs: dict[str, dict[str, Any]] = {}
    links: list[dict[str, Any]] = [{"from": "nic", "to": "nf0"}]
    next_queue = 0
    for i in range(count):
        nf: dict[str, Any] = {"threads": threads[i]}
        how = draw(st.sampled_from(["queues", "queues", "queues+match", "match"]))
        if how != "match":
            nf["queues"] = list(range(next_queue, next_queue + threads[i]))
            next_queue += threads[i]
        if how != "queues":
            nf["match"] = {"procname": f"app{i}"}
        nf["outputs"] = [f"o{j}" for j in range(len(children[i]))] or ["out"]
        nfs[f"nf{i}"] = nf
        for j, child in enumerate(children[i]):
            link: dict[str, Any] = {"from": f"nf{i}.o{j}", "to": f"nf{child}"}
            mapping = draw(MAPPINGS)
            link["mapping"] = mapping
            if mapping == "pinned":
                link["thread"] = draw(st.integers(0, threads[child] - 1))
            links.append(link)
        if not children[i]:
            links.append({"from": f"nf{i}.out", "to": "nic"})
    groups: dict[str, list[str]] = {}
    for nf_name in nfs:
        group = draw(st.sampled_from([None, "g0", "g1"]))
        if group is not None:
            groups.setdefault(group, []).append(nf_name)
    umems = [{"name": g, "nfs": members} for g, members in sorted(groups.items())]
    spec = {"interface": "eth0", "nfs": nfs, "links": links, "umems": umems}
    return make_chain(spec, name)


@st.composite
def inventories(draw: st.DrawFn, chain: Chain) -> Inventory:
    """Some of the chain's sockets up (a few held by strangers), plus foreign sockets.

    Flash-ids are drawn from the kernel's 64, so inventories drawn for two chains reuse ids.
    """
    ids = iter(draw(st.permutations(range(ID_SPACE))))
    sockets: list[LiveSocket] = []
    spare_queue = 100
    for spec in expand(chain).sockets:
        fate = draw(st.sampled_from(["up", "up", "up", "down", "stranger"]))
        if fate == "down":
            continue
        match = chain.spec.nfs[spec.key.nf].match
        procname = "stranger" if fate == "stranger" else (match.procname if match else "nf")
        qid = spec.queue
        if qid is None:
            spare_queue += draw(st.integers(1, 3))
            qid = spare_queue
        umem = draw(st.sampled_from([None, spec.umem, "elsewhere"]))
        sockets.append(LiveSocket(next(ids), 100, procname or "nf", "eth0", 2, qid, umem))
    for extra in range(draw(st.integers(0, 3))):
        sockets.append(LiveSocket(next(ids), 7, "foreign", "eth0", 2, 500 + extra))
    return Inventory(tuple(sockets))


@st.composite
def planned(draw: st.DrawFn, name: str = "chain") -> tuple[Chain, Inventory]:
    chain = draw(chains(name))
    return chain, draw(inventories(chain))


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(planned())
def test_plan_is_deterministic(case: tuple[Chain, Inventory]) -> None:
    chain, inventory = case
    shuffled = Inventory(tuple(reversed(inventory.sockets)))
    assert plan(chain, inventory) == plan(chain, shuffled)


@settings(max_examples=150, deadline=None)
@given(planned())
def test_plan_invariants(case: tuple[Chain, Inventory]) -> None:
    chain, inventory = case
    result = plan(chain, inventory)
    bound = [b for b in result.bindings if b.status == "bound"]
    assert len(result.bindings) == len(expand(chain).sockets)
    # every bound socket owns exactly one rule, and no live socket is bound twice
    assert sorted(r.flash_id for r in result.rules) == sorted(b.flash_id or 0 for b in bound)
    assert len({b.flash_id for b in bound}) == len(bound)
    assert [r.flash_id for r in result.rules] == sorted(r.flash_id for r in result.rules)
    assert result.owned_ids <= result.live_ids
    for rule in result.rules:
        assert len(rule.modes) == len(rule.targets)
        assert rule.intended <= result.owned_ids
        if rule.next is not None:
            assert len(rule.next) == len(rule.targets)
            assert frozenset(rule.next) == rule.intended
        else:
            assert result.missing_targets(rule)
