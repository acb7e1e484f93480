"""Graph checks: every diagnostic's exact severity, path, message and hint, per check."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from flashctl.chains.graph import NIC_IN, NIC_OUT, build_graph, check, check_across
from flashctl.chains.spec import Chain

Path = tuple[str | int, ...]
Expected = tuple[str, Path, str, str | None]  # severity, path, message, hint

# fw (2 threads) -> lb (2 threads) -> the wire, both in one umem: no diagnostics at all.
BASE: dict[str, Any] = {
    "interface": "eth0",
    "umems": [{"name": "shared", "nfs": ["fw", "lb"]}],
    "nfs": {
        "fw": {"queues": [0, 1], "outputs": ["pass"]},
        "lb": {"queues": [2, 3], "outputs": ["a", "b"]},
    },
    "links": [
        {"from": "nic", "to": "fw"},
        {"from": "fw.pass", "to": "lb"},
        {"from": "lb.a", "to": "nic"},
        {"from": "lb.b", "to": "nic"},
    ],
}
INGRESS = {"from": "nic", "to": "fw"}
FW_TO_LB = {"from": "fw.pass", "to": "lb"}
LB_OUT = [{"from": "lb.a", "to": "nic"}, {"from": "lb.b", "to": "nic"}]


def make_chain(spec: dict[str, Any], name: str = "edge") -> Chain:
    document = {
        "apiVersion": "flashctl/v1",
        "kind": "Chain",
        "metadata": {"name": name},
        "spec": spec,
    }
    return Chain.model_validate(document)


def variant(**changes: Any) -> dict[str, Any]:
    """BASE with top-level spec keys replaced; `nfs_extra` adds NFs (and puts them in `shared`)."""
    extra = changes.pop("nfs_extra", {})
    spec = copy.deepcopy({**BASE, **changes})
    if extra:
        spec["nfs"].update(extra)
        spec["umems"][0]["nfs"].extend(extra)
    return spec


def found(chain: Chain) -> list[Expected]:
    diagnostics = check(chain)
    assert all(d.position is None for d in diagnostics)  # the loader places them
    return [(d.severity, d.path, d.message, d.hint) for d in diagnostics]


def error(path: Path, message: str, hint: str | None) -> Expected:
    return ("error", path, message, hint)


def warning(path: Path, message: str, hint: str | None) -> Expected:
    return ("warning", path, message, hint)


def test_clean_chain_has_no_diagnostics() -> None:
    assert found(make_chain(BASE)) == []


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(
            variant(
                nfs_extra={"log": {"queues": [4, 5], "outputs": []}},
                links=[
                    INGRESS,
                    FW_TO_LB,
                    {"from": "lb.a", "to": "log"},
                    {"from": "lb.b", "to": "log"},
                ],
            ),
            id="sink-with-no-outputs",
        ),
        pytest.param(
            variant(
                interface=None,
                nfs={
                    "fw": {"interface": "eth0", "queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"threads": 2, "match": {"procname": "lb"}, "outputs": ["a", "b"]},
                },
            ),
            id="match-nf-needs-no-interface",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"interface": "eth1", "queues": [0, 1], "outputs": ["a", "b"]},
                }
            ),
            id="same-queues-on-other-interface",
        ),
        pytest.param(
            variant(links=[INGRESS, {**FW_TO_LB, "mapping": "spread"}, *LB_OUT]),
            id="spread",
        ),
    ],
)
def test_clean_variants(spec: dict[str, Any]) -> None:
    assert found(make_chain(spec)) == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            # fw's output and lb's reachability are not reported again: one typo, one error.
            variant(links=[INGRESS, {"from": "fww.pass", "to": "lb"}, *LB_OUT]),
            [error(("spec", "links", 1, "from"), "unknown nf 'fww'", "did you mean 'fw'?")],
            id="unknown-source-nf",
        ),
        pytest.param(
            variant(links=[INGRESS, {"from": "fw.pass", "to": "lbb"}, *LB_OUT]),
            [error(("spec", "links", 1, "to"), "unknown nf 'lbb'", "did you mean 'lb'?")],
            id="unknown-target-nf",
        ),
        pytest.param(
            variant(links=[INGRESS, {"from": "fw.pass", "to": "nci"}, *LB_OUT]),
            [
                error(("spec", "links", 1, "to"), "unknown nf 'nci'", "did you mean 'nic'?"),
                error(
                    ("spec", "nfs", "lb"),
                    "nf 'lb' cannot be reached from the NIC",
                    "add a link into it from an nf that can, or `{from: nic, to: lb}`",
                ),
            ],
            id="unknown-target-suggests-nic",
        ),
        pytest.param(
            variant(links=[INGRESS, {"from": "fw.pass", "to": "zzz"}, *LB_OUT]),
            [
                error(
                    ("spec", "links", 1, "to"),
                    "unknown nf 'zzz'",
                    "declare it under spec.nfs, or use `nic` to leave on the wire",
                ),
                error(
                    ("spec", "nfs", "lb"),
                    "nf 'lb' cannot be reached from the NIC",
                    "add a link into it from an nf that can, or `{from: nic, to: lb}`",
                ),
            ],
            id="unknown-target-without-suggestion",
        ),
        pytest.param(
            variant(links=[INGRESS, {"from": "fw.pas", "to": "lb"}, *LB_OUT]),
            [error(("spec", "links", 1, "from"), "fw has no output 'pas'", "did you mean 'pass'?")],
            id="unknown-output",
        ),
        pytest.param(
            variant(links=[INGRESS, {"from": "fw.xyz", "to": "lb"}, *LB_OUT]),
            [error(("spec", "links", 1, "from"), "fw has no output 'xyz'", "use fw.pass")],
            id="unknown-output-without-suggestion",
        ),
        pytest.param(
            variant(links=[INGRESS, FW_TO_LB, {"from": "lb", "to": "nic"}]),
            [
                error(
                    ("spec", "links", 2, "from"),
                    "lb has 2 outputs and the link does not name one",
                    "name one: lb.a or lb.b",
                )
            ],
            id="output-not-named",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [2, 3], "outputs": []},
                },
                links=[INGRESS, FW_TO_LB, {"from": "lb", "to": "nic"}],
            ),
            [
                error(
                    ("spec", "links", 2, "from"),
                    "lb has no outputs",
                    "declare one in spec.nfs.lb.outputs, or remove this link (lb is a sink)",
                )
            ],
            id="link-from-sink",
        ),
        pytest.param(
            variant(links=[{"from": "nic.rx", "to": "fw"}, FW_TO_LB, *LB_OUT]),
            [error(("spec", "links", 0, "from"), "the NIC has no outputs", "write `from: nic`")],
            id="nic-with-output",
        ),
        pytest.param(
            variant(umems=[{"name": "shared", "nfs": ["fw", "lbb"]}]),
            [error(("spec", "umems", 0, "nfs", 1), "unknown nf 'lbb'", "did you mean 'lb'?")],
            id="unknown-umem-member",
        ),
        pytest.param(
            variant(traffic=[{"into": "fww", "rate": "1Mpps"}]),
            [error(("spec", "traffic", 0, "into"), "unknown nf 'fww'", "did you mean 'fw'?")],
            id="unknown-traffic-target",
        ),
        pytest.param(
            variant(traffic=[{"into": "lb", "rate": "1Mpps"}]),
            [
                error(
                    ("spec", "traffic", 0, "into"),
                    "traffic goes into lb but no link brings the NIC's traffic to it",
                    "add `{from: nic, to: lb}`, or send it into fw",
                )
            ],
            id="traffic-into-non-ingress",
        ),
    ],
)
def test_references(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


@pytest.mark.parametrize(
    ("umems", "expected"),
    [
        pytest.param(
            [{"name": "shared", "nfs": ["fw", "lb"]}, {"name": "other", "nfs": ["lb"]}],
            [
                error(
                    ("spec", "umems", 1, "nfs", 0),
                    "lb is already in umem 'shared'",
                    "an nf has one umem: remove it here or from spec.umems[0]",
                )
            ],
            id="nf-in-two-groups",
        ),
        pytest.param(
            [{"name": "shared", "nfs": ["fw", "lb", "fw"]}],
            [
                error(
                    ("spec", "umems", 0, "nfs", 2),
                    "fw is listed twice in umem 'shared'",
                    "remove one",
                )
            ],
            id="nf-twice-in-one-group",
        ),
        pytest.param(
            [{"name": "shared", "nfs": ["fw"]}, {"name": "shared", "nfs": ["lb"]}],
            [
                error(
                    ("spec", "umems", 1, "name"),
                    "umem 'shared' is already declared by spec.umems[0]",
                    "give each umem group its own name",
                )
            ],
            id="duplicate-group-name",
        ),
    ],
)
def test_umem_groups(umems: list[dict[str, Any]], expected: list[Expected]) -> None:
    assert found(make_chain(variant(umems=umems))) == expected


def test_fan_out_beyond_declared_outputs() -> None:
    spec = variant(
        nfs_extra={"ids": {"queues": [4, 5]}},
        links=[
            INGRESS,
            FW_TO_LB,
            *LB_OUT,
            {"from": "fw.pass", "to": "ids"},
            {"from": "ids", "to": "nic"},
        ],
    )
    assert found(make_chain(spec)) == [
        error(
            ("spec", "links", 4, "from"),
            "output fw.pass is already linked by spec.links[1]",
            "one output is one index in the next list: declare another output for this target",
        )
    ]


def test_outputs_to_nic_and_nfs_at_once() -> None:
    spec = variant(
        nfs_extra={"log": {"queues": [4, 5], "outputs": []}},
        links=[INGRESS, FW_TO_LB, {"from": "lb.a", "to": "nic"}, {"from": "lb.b", "to": "log"}],
    )
    assert found(make_chain(spec)) == [
        error(
            ("spec", "links", 3, "to"),
            "lb sends lb.a to the NIC and lb.b to log: "
            "a socket with FLASH rules never transmits to the wire",
            "give the egress path its own nf, or send all of lb's outputs to the NIC",
        )
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            variant(links=[INGRESS, FW_TO_LB, LB_OUT[0]]),
            [
                error(
                    ("spec", "nfs", "lb", "outputs", 1),
                    "output lb.b is not linked",
                    "add a link from lb.b, or remove the output (`outputs: []` is a sink)",
                )
            ],
            id="declared-output",
        ),
        pytest.param(
            variant(
                nfs_extra={"log": {"queues": [4, 5]}},
                links=[INGRESS, FW_TO_LB, LB_OUT[0], {"from": "lb.b", "to": "log"}],
            ),
            # lb mixes NIC and NF targets too; `log` has no `outputs` key to point at.
            [
                error(
                    ("spec", "nfs", "log"),
                    "output log.out is not linked",
                    "add a link from log.out, or remove the output (`outputs: []` is a sink)",
                ),
                error(
                    ("spec", "links", 3, "to"),
                    "lb sends lb.a to the NIC and lb.b to log: "
                    "a socket with FLASH rules never transmits to the wire",
                    "give the egress path its own nf, or send all of lb's outputs to the NIC",
                ),
            ],
            id="default-output",
        ),
    ],
)
def test_unlinked_outputs(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


CYCLE_HINT = "retarget this link: FLASH has no TTL, so a packet on a cycle never leaves"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            # Two parallel links close the same cycle: it is reported once.
            variant(
                links=[
                    INGRESS,
                    FW_TO_LB,
                    {"from": "lb.a", "to": "fw"},
                    {"from": "lb.b", "to": "fw"},
                ]
            ),
            [error(("spec", "links", 2, "to"), "cycle: fw -> lb -> fw", CYCLE_HINT)],
            id="two-nfs",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass", "again"]},
                    "lb": {"queues": [2, 3], "outputs": ["a", "b"]},
                },
                links=[INGRESS, FW_TO_LB, {"from": "fw.again", "to": "fw"}, *LB_OUT],
            ),
            [error(("spec", "links", 2, "to"), "cycle: fw -> fw", CYCLE_HINT)],
            id="self-loop",
        ),
        pytest.param(
            # The link that closes a cycle is found by following traffic from the NIC, not by
            # position: traffic enters lb, so fw -> lb (listed last) is the one sending it back.
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [2, 3], "outputs": ["a"]},
                },
                links=[{"from": "lb.a", "to": "fw"}, {"from": "nic", "to": "lb"}, FW_TO_LB],
            ),
            [error(("spec", "links", 2, "to"), "cycle: lb -> fw -> lb", CYCLE_HINT)],
            id="closing-link-in-traffic-order",
        ),
        pytest.param(
            {
                "interface": "eth0",
                "umems": [{"name": "all", "nfs": ["a", "b", "c"]}],
                "nfs": {
                    "a": {"queues": [0], "outputs": ["x"]},
                    "b": {"queues": [1], "outputs": ["y", "z"]},
                    "c": {"queues": [2]},
                },
                "links": [
                    {"from": "nic", "to": "a"},
                    {"from": "a.x", "to": "b"},
                    {"from": "b.y", "to": "a"},
                    {"from": "b.z", "to": "c"},
                    {"from": "c", "to": "b"},
                ],
            },
            [
                error(("spec", "links", 2, "to"), "cycle: a -> b -> a", CYCLE_HINT),
                error(("spec", "links", 4, "to"), "cycle: b -> c -> b", CYCLE_HINT),
            ],
            id="two-cycles-in-one-component",
        ),
    ],
)
def test_cycles(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            variant(links=[FW_TO_LB, *LB_OUT]),
            [
                error(
                    ("spec", "links"),
                    "no link brings traffic from the NIC",
                    "add a link from the NIC to the first nf, e.g. `{from: nic, to: fw}`",
                )
            ],
            id="no-ingress",
        ),
        pytest.param(
            variant(nfs_extra={"spare": {"queues": [4]}}, links=[FW_TO_LB, *LB_OUT]),
            [
                error(
                    ("spec", "links"),
                    "no link brings traffic from the NIC",
                    "add a link from the NIC to the first nf, e.g. `{from: nic, to: fw}`",
                ),
                error(
                    ("spec", "nfs", "spare"),
                    "nf 'spare' is not linked to anything",
                    "link it (e.g. `{from: nic, to: spare}`) or remove it",
                ),
            ],
            id="no-ingress-and-not-linked",
        ),
        pytest.param(
            variant(nfs_extra={"spare": {"queues": [4]}}),
            [
                error(
                    ("spec", "nfs", "spare"),
                    "nf 'spare' is not linked to anything",
                    "link it (e.g. `{from: nic, to: spare}`) or remove it",
                )
            ],
            id="not-linked",
        ),
        pytest.param(
            # y is only unreachable because x is: x is the one mistake reported.
            variant(
                nfs_extra={
                    "y": {"queues": [6, 7], "outputs": []},
                    "x": {"queues": [4, 5], "outputs": ["o"]},
                },
                links=[INGRESS, FW_TO_LB, *LB_OUT, {"from": "x.o", "to": "y"}],
            ),
            [
                error(
                    ("spec", "nfs", "x"),
                    "nf 'x' cannot be reached from the NIC",
                    "add a link into it from an nf that can, or `{from: nic, to: x}`",
                )
            ],
            id="unreachable",
        ),
    ],
)
def test_reachability(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


@pytest.mark.parametrize(
    ("thread", "expected"),
    [
        pytest.param(
            2,
            [
                error(
                    ("spec", "links", 1, "thread"),
                    "lb has no thread 2: it has 2 threads",
                    "pick a thread from 0 to 1",
                )
            ],
            id="out-of-range",
        ),
        pytest.param(
            1,
            [
                warning(
                    ("spec", "links", 1),
                    "lb thread 0 receives nothing: pinned sends every fw thread to thread 1",
                    "use `mapping: spread` to feed every lb thread, or give lb fewer threads",
                )
            ],
            id="in-range",
        ),
    ],
)
def test_pinned_thread(thread: int, expected: list[Expected]) -> None:
    link = {**FW_TO_LB, "mapping": "pinned", "thread": thread}
    assert found(make_chain(variant(links=[INGRESS, link, *LB_OUT]))) == expected


def test_pinned_thread_of_single_threaded_target() -> None:
    spec = variant(
        nfs={
            "fw": {"queues": [0, 1], "outputs": ["pass"]},
            "lb": {"queues": [2], "outputs": ["a", "b"]},
        },
        links=[INGRESS, {**FW_TO_LB, "mapping": "pinned", "thread": 1}, *LB_OUT],
    )
    assert found(make_chain(spec)) == [
        error(
            ("spec", "links", 1, "thread"), "lb has no thread 1: it has 1 thread", "use `thread: 0`"
        )
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            variant(
                interface=None,
                nfs={
                    "fw": {"interface": "eth0", "queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [2, 3], "outputs": ["a", "b"]},
                },
            ),
            [
                error(
                    ("spec", "nfs", "lb"),
                    "lb has no interface",
                    "set spec.interface, or spec.nfs.lb.interface",
                )
            ],
            id="no-interface",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [1, 2], "outputs": ["a", "b"]},
                }
            ),
            [
                error(
                    ("spec", "nfs", "lb", "queues", 0),
                    "queue 1 of eth0 is taken by fw/1 and lb/0",
                    "give lb/0 another queue: each queue of an interface takes one AF_XDP socket",
                )
            ],
            id="queue-conflict",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": list(range(40)), "outputs": ["pass"]},
                    "lb": {"queues": list(range(40, 65)), "outputs": ["a", "b"]},
                }
            ),
            [
                error(
                    ("spec", "nfs"),
                    "the chain needs 65 sockets but the FLASH kernel has 64 flash-ids",
                    "use fewer threads; for the simulator, raise spec.sim.maxSockets",
                )
            ],
            id="kernel-socket-limit",
        ),
        pytest.param(
            variant(sim={"maxSockets": 3}),
            [
                error(
                    ("spec", "nfs"),
                    "the chain needs 4 sockets but spec.sim.maxSockets is 3 "
                    "(the FLASH kernel has 64 flash-ids)",
                    "use fewer threads, or raise spec.sim.maxSockets for the simulator",
                )
            ],
            id="configured-socket-limit",
        ),
    ],
)
def test_sockets(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            variant(umems=[]),
            [
                warning(
                    ("spec", "links", 1),
                    "fw.pass -> lb costs one copy per packet: "
                    "fw has a private umem, lb has a private umem",
                    "put fw and lb in one umem for zero-copy",
                )
            ],
            id="copy-hop-private-umems",
        ),
        pytest.param(
            variant(umems=[{"name": "a", "nfs": ["fw"]}, {"name": "b", "nfs": ["lb"]}]),
            [
                warning(
                    ("spec", "links", 1),
                    "fw.pass -> lb costs one copy per packet: fw is in umem 'a', lb is in umem 'b'",
                    "put fw and lb in one umem for zero-copy",
                )
            ],
            id="copy-hop-between-groups",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [2, 3, 4, 5], "outputs": ["a", "b"]},
                }
            ),
            [
                warning(
                    ("spec", "links", 1),
                    "lb threads 2, 3 receive nothing: affine maps fw's 2 threads onto 4",
                    "use `mapping: spread` to feed every lb thread, or give lb fewer threads",
                )
            ],
            id="idle-threads-affine",
        ),
        pytest.param(
            variant(
                nfs={
                    "fw": {"queues": [0], "outputs": ["pass"]},
                    "lb": {"queues": list(range(2, 10)), "outputs": ["a", "b"]},
                }
            ),
            [
                warning(
                    ("spec", "links", 1),
                    "lb threads 1-7 receive nothing: affine maps fw's 1 thread onto 8",
                    "use `mapping: spread` to feed every lb thread, or give lb fewer threads",
                )
            ],
            id="idle-threads-folded",
        ),
        pytest.param(
            # Each feeding link is explained; the NIC feeds every thread of an ingress NF.
            variant(
                nfs_extra={"ids": {"queues": [8]}},
                nfs={
                    "fw": {"queues": [0, 1], "outputs": ["pass"]},
                    "lb": {"queues": [2, 3, 4, 5], "outputs": ["a", "b"]},
                },
                links=[
                    INGRESS,
                    FW_TO_LB,
                    *LB_OUT,
                    {"from": "nic", "to": "ids"},
                    {"from": "ids", "to": "lb", "mapping": "pinned", "thread": 3},
                ],
            ),
            [
                warning(
                    ("spec", "links", 1),
                    "lb thread 2 receives nothing: affine maps fw's 2 threads onto 4; "
                    "pinned sends every ids thread to thread 3",
                    "use `mapping: spread` to feed every lb thread, or give lb fewer threads",
                )
            ],
            id="idle-thread-two-feeders",
        ),
    ],
)
def test_warnings(spec: dict[str, Any], expected: list[Expected]) -> None:
    assert found(make_chain(spec)) == expected


def test_errors_come_before_warnings() -> None:
    spec = variant(umems=[], links=[INGRESS, FW_TO_LB, *LB_OUT, {"from": "fw.pass", "to": "lb"}])
    assert [(d.severity, d.path) for d in check(make_chain(spec))] == [
        ("error", ("spec", "links", 4, "from")),
        ("warning", ("spec", "links", 1)),
    ]


def test_build_graph() -> None:
    graph = build_graph(make_chain(BASE))
    assert [(node, graph.nodes[node]) for node in graph] == [
        (NIC_IN, {"threads": 0, "umem": None}),
        (NIC_OUT, {"threads": 0, "umem": None}),
        ("fw", {"threads": 2, "umem": "shared"}),
        ("lb", {"threads": 2, "umem": "shared"}),
    ]
    assert list(graph.edges(data=True)) == [
        (NIC_IN, "fw", {"link": 0, "output": None, "mapping": "affine", "links": (0,)}),
        ("fw", "lb", {"link": 1, "output": "pass", "mapping": "affine", "links": (1,)}),
        ("lb", NIC_OUT, {"link": 2, "output": "a", "mapping": "affine", "links": (2, 3)}),
    ]


def test_build_graph_skips_unknown_endpoints() -> None:
    graph = build_graph(make_chain(variant(links=[INGRESS, {"from": "fw.pass", "to": "x"}])))
    assert list(graph.edges) == [(NIC_IN, "fw")]


ACROSS_HINT = "give lb/0 another queue: each queue of an interface takes one AF_XDP socket"


@pytest.mark.parametrize(
    ("chains", "expected"),
    [
        pytest.param(
            [make_chain(BASE, "edge"), make_chain(variant(interface="eth1"), "edge")],
            [
                (
                    1,
                    error(
                        ("metadata", "name"),
                        "chain name 'edge' is already used by document 1",
                        "give each chain its own name",
                    ),
                )
            ],
            id="duplicate-name",
        ),
        pytest.param(
            [
                make_chain(BASE, "a"),
                make_chain(variant(interface="eth1"), "b"),
                make_chain(
                    variant(
                        nfs={
                            "fw": {"interface": "eth2", "queues": [0, 1], "outputs": ["pass"]},
                            "lb": {"queues": [1, 5], "outputs": ["a", "b"]},
                        }
                    ),
                    "c",
                ),
            ],
            [
                (
                    2,
                    error(
                        ("spec", "nfs", "lb", "queues", 0),
                        "queue 1 of eth0 is taken by fw/1 of chain 'a' and lb/0 of chain 'c'",
                        ACROSS_HINT,
                    ),
                )
            ],
            id="queue-taken-by-earlier-chain",
        ),
        pytest.param(
            # A conflict inside one chain is check()'s to report, not check_across()'s.
            [make_chain(variant(nfs={"fw": {"queues": [0, 1]}, "lb": {"queues": [1, 2]}}), "a")],
            [],
            id="conflict-inside-one-chain",
        ),
    ],
)
def test_check_across(chains: list[Chain], expected: list[tuple[int, Expected]]) -> None:
    got = [(i, (d.severity, d.path, d.message, d.hint)) for i, d in check_across(chains)]
    assert got == expected


# ---------------------------------------------------------------- 10,000 sockets

BIG = 2500  # NFs of 4 threads each


def _big_nfs(outputs: dict[str, list[str]]) -> dict[str, Any]:
    return {
        f"n{i}": {"queues": [4 * i + k for k in range(4)], "outputs": outputs.get(f"n{i}", ["out"])}
        for i in range(BIG)
    }


def _big_spec(nfs: dict[str, Any], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "interface": "eth0",
        "umems": [{"name": "all", "nfs": list(nfs)}],
        "nfs": nfs,
        "links": links,
        "sim": {"maxSockets": 4 * BIG},
    }


def big_line(last_to: str = "nic") -> dict[str, Any]:
    links = [{"from": "nic", "to": "n0"}]
    links += [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(BIG - 1)]
    links.append({"from": f"n{BIG - 1}", "to": last_to})
    return _big_spec(_big_nfs({}), links)


def big_tree() -> dict[str, Any]:
    """A binary tree: n{i} feeds n{2i+1} and n{2i+2}; leaves go to the wire."""
    outputs: dict[str, list[str]] = {}
    links = [{"from": "nic", "to": "n0"}]
    for i in range(BIG):
        children = [c for c in (2 * i + 1, 2 * i + 2) if c < BIG]
        outputs[f"n{i}"] = ["l", "r"][: len(children)] or ["out"]
        for output, child in zip(["l", "r"], children, strict=False):
            links.append({"from": f"n{i}.{output}", "to": f"n{child}"})
        if not children:
            links.append({"from": f"n{i}", "to": "nic"})
    return _big_spec(_big_nfs(outputs), links)


def fastest_check(chain: Chain) -> tuple[float, list[Expected]]:
    """Best of three runs, so a busy machine does not fail the bound."""
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        result = found(chain)
        timings.append(time.perf_counter() - start)
    return min(timings), result


@pytest.mark.parametrize("shape", [big_line, big_tree], ids=["line", "tree"])
def test_ten_thousand_sockets_is_clean_and_fast(shape: Any) -> None:
    chain = make_chain(shape())
    assert sum(nf.thread_count for nf in chain.spec.nfs.values()) == 10_000
    elapsed, result = fastest_check(chain)
    assert result == []
    assert elapsed < 0.3


def test_cycle_in_ten_thousand_sockets_is_found() -> None:
    elapsed, result = fastest_check(make_chain(big_line(last_to="n1000")))
    assert result == [
        error(
            ("spec", "links", BIG, "to"),
            "cycle of 1500 nfs: n1000 -> n1001 -> n1002 -> ... -> n2499 -> n1000",
            CYCLE_HINT,
        )
    ]
    assert elapsed < 0.3
