"""Loading chain text: every bad input gets its exact message at its exact file:line:col."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.chains.loader import fields_at, load_sources
from flashctl.errors import ChainError

BASE = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: edge}
spec:
  interface: eth0
  umems:
    - {name: shared, nfs: [fw, lb]}
  nfs:
    fw: {queues: [0, 1], outputs: [pass]}
    lb: {queues: [2, 3]}
  links:
    - {from: nic, to: fw}
    - {from: fw.pass, to: lb}
    - {from: lb, to: nic}
"""


def _errors(text: str, name: str = "c.yaml") -> list[str]:
    with pytest.raises(ChainError) as info:
        load_sources([(name, text)])
    return info.value.lines()


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_the_base_chain_loads_clean() -> None:
    loaded = load_sources([("c.yaml", BASE)])
    assert [c.chain.name for c in loaded.chains] == ["edge"]
    assert loaded.warnings == ()


CASES = [
    (
        "kind: Chain",
        "kind: Chian",
        [
            "c.yaml:2:7: error: kind: 'Chian' is not allowed; expected 'Chain' "
            "(did you mean 'Chain'?)"
        ],
    ),
    (
        "apiVersion: flashctl/v1\n",
        "",
        [
            "c.yaml:1:1: error: apiVersion: missing required field 'apiVersion' "
            "(start the document with `apiVersion: flashctl/v1`)"
        ],
    ),
    (
        "{name: edge}",
        "{name: Edge}",
        [
            "c.yaml:3:18: error: metadata.name: 'Edge' is not a valid chain name "
            "(a DNS label: lowercase letters, digits and '-', at most 63 characters)"
        ],
    ),
    (
        "{name: edge}",
        "{name: edge, nmae: x}",
        ["c.yaml:3:24: error: metadata.nmae: unknown field 'nmae' (did you mean 'name'?)"],
    ),
    (
        "outputs: [pass]}",
        "outputs: [pass], thread: 2}",
        [
            "c.yaml:9:43: error: spec.nfs.fw.thread: unknown field 'thread' "
            "(did you mean 'threads'?)"
        ],
    ),
    (
        "outputs: [pass]}",
        "outputs: [pass], colour: red}",
        [
            "c.yaml:9:43: error: spec.nfs.fw.colour: unknown field 'colour' "
            "(allowed here: threads, "
            "interface, queues, outputs, match, address, port, run, sim)"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {queues: [two, 3]}",
        ["c.yaml:10:19: error: spec.nfs.lb.queues[0]: expected an integer, got 'two'"],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {queues: [1, 3]}",
        [
            "c.yaml:10:19: error: spec.nfs.lb.queues[0]: queue 1 of eth0 is taken by fw/1 and lb/0 "
            "(give lb/0 another queue: each queue of an interface takes one AF_XDP socket)"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {queues: [2, 2]}",
        [
            "c.yaml:10:9: error: spec.nfs.lb: `queues` lists a queue twice; each thread needs its "
            "own queue"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {threads: 3, queues: [2, 3]}",
        [
            "c.yaml:10:9: error: spec.nfs.lb: `threads` is 3 but 2 queues are listed; give one "
            "queue per thread"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {threads: 2}",
        [
            "c.yaml:10:9: error: spec.nfs.lb: give `queues` (one per thread) or a `match`: sockets "
            "are found by (interface, queue), or by procname/pid for apps that bind their own"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {queues: [2, 3], sim: {capacity: 5Mpps, cost: 10ns}}",
        [
            "c.yaml:10:31: error: spec.nfs.lb.sim: give `capacity` or `cost`, not both: each "
            "implies the other"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: {queues: [2, 3], sim: {capacity: 5Mqps}}",
        [
            "c.yaml:10:42: error: spec.nfs.lb.sim.capacity: cannot read rate '5Mqps': write e.g. "
            "5Mpps, 500kpps or 10Gbps"
        ],
    ),
    (
        "lb: {queues: [2, 3]}",
        "lb: 5",
        ["c.yaml:10:9: error: spec.nfs.lb: expected a mapping, got an integer"],
    ),
    (
        "interface: eth0",
        'interface: "eth0 with spaces"',
        [
            "c.yaml:5:14: error: spec.interface: 'eth0 with spaces' is not a valid interface name "
            "(Linux interface names have 1-15 characters and no spaces, '/' or ':')"
        ],
    ),
    (
        "    - {from: fw.pass, to: lb}",
        "    - {from: fw.pas, to: lbb}",
        [
            "c.yaml:13:14: error: spec.links[1].from: fw has no output 'pas' "
            "(did you mean 'pass'?)",
            "c.yaml:13:26: error: spec.links[1].to: unknown nf 'lbb' (did you mean 'lb'?)",
        ],
    ),
    (
        "    - {from: nic, to: fw}",
        '    - {from: "fw..x", to: fw}',
        [
            "c.yaml:12:14: error: spec.links[0].from: 'fw..x' is not a valid link endpoint "
            "(write `nf.output`, `nf` for an NF with one output, or `nic`)"
        ],
    ),
    (
        "    - {from: lb, to: nic}",
        "    - {from: lb, to: fw}",
        [
            "c.yaml:14:22: error: spec.links[2].to: cycle: fw -> lb -> fw (retarget this link: "
            "FLASH has no TTL, so a packet on a cycle never leaves)"
        ],
    ),
    (
        "    - {from: nic, to: fw}",
        "    - {from: nic, to: fw, mapping: spread}",
        [
            "c.yaml:12:7: error: spec.links[0]: `mapping: spread` has no effect on a link from or "
            "to the NIC; drop it"
        ],
    ),
    (
        "    fw: {queues",
        "    nic: {queues: [9]}\n    fw: {queues",
        [
            "c.yaml:9:5: error: spec.nfs.nic: 'nic' is reserved for the wire; give the NF another "
            "name"
        ],
    ),
    (
        "  links:\n",
        "  links: 7\n  old:\n",
        [
            "c.yaml:11:10: error: spec.links: expected a list, got an integer",
            "c.yaml:12:3: error: spec.old: unknown field 'old' "
            "(allowed here: interface, nfs, links, "
            "umems, traffic, sim, txTracking)",
        ],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), CASES, ids=[f"case{i}" for i in range(len(CASES))]
)
def test_bad_chain_reports_exact_message_and_location(
    old: str, new: str, expected: list[str]
) -> None:
    assert _errors(_edit(old, new)) == expected


def test_all_errors_of_a_file_are_reported_at_once() -> None:
    text = _edit("kind: Chain", "kind: Chian").replace("{name: edge}", "{name: Edge}")
    assert [line.split(": error:")[0] for line in _errors(text)] == ["c.yaml:2:7", "c.yaml:3:18"]


def test_errors_of_several_files_and_documents_are_all_reported() -> None:
    bad = BASE.replace("kind: Chain", "kind: Chian")
    sources = [("a.yaml", BASE + "---\n" + bad), ("b.yaml", "[1, 2")]
    with pytest.raises(ChainError) as info:
        load_sources(sources)
    assert info.value.lines() == [
        "a.yaml:17:7: error: kind: 'Chian' is not allowed; expected 'Chain' "
        "(did you mean 'Chain'?)",
        "b.yaml:2:1: error: invalid YAML: did not find expected ',' or ']'",
    ]


def test_duplicate_chain_names_across_files_name_the_first_place() -> None:
    with pytest.raises(ChainError) as info:
        load_sources(
            [
                ("a.yaml", BASE),
                ("b.yaml", BASE.replace("[0, 1]", "[4, 5]").replace("[2, 3]", "[6, 7]")),
            ]
        )
    assert info.value.lines() == [
        "b.yaml:3:18: error: metadata.name: chain name 'edge' is already used by a.yaml:1:1 "
        "(give each chain its own name)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "",
            "c.yaml:1:1: error: no chain document in this file (a chain starts with "
            "`apiVersion: flashctl/v1` and `kind: Chain`)",
        ),
        (
            "# only a comment\n",
            "c.yaml:1:1: error: no chain document in this file (a chain "
            "starts with `apiVersion: flashctl/v1` and `kind: Chain`)",
        ),
        (
            "- 1\n- 2\n",
            "c.yaml:1:1: error: a chain document must be a mapping, not a list "
            "(start it with `apiVersion: flashctl/v1` and `kind: Chain`)",
        ),
        (
            "just text\n",
            "c.yaml:1:1: error: a chain document must be a mapping, not a string "
            "(start it with `apiVersion: flashctl/v1` and `kind: Chain`)",
        ),
    ],
    ids=["empty", "comment-only", "list", "scalar"],
)
def test_empty_and_non_mapping_documents(text: str, expected: str) -> None:
    assert _errors(text) == [expected]


def test_warnings_are_located_and_do_not_fail_the_load() -> None:
    text = _edit("    - {name: shared, nfs: [fw, lb]}\n", "    - {name: shared, nfs: [fw]}\n")
    loaded = load_sources([("c.yaml", text)])
    assert [w.render() for w in loaded.warnings] == [
        "c.yaml:13:7: warning: spec.links[1]: fw.pass -> lb costs one copy per packet: fw is in "
        "umem 'shared', lb has a private umem (put fw and lb in one umem for zero-copy)"
    ]


def test_fields_at_follows_dicts_lists_and_optionals() -> None:
    assert fields_at(("spec", "nfs", "anything", "sim")) == [
        "capacity",
        "cost",
        "batchCost",
        "batch",
        "poll",
    ]
    assert fields_at(("spec", "links", 3)) == ["from", "to", "mapping", "thread"]
    assert fields_at(("spec", "nfs", "x", "queues")) == []


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_yaml_raises_only_chain_error(data: object) -> None:
    import yaml

    text = yaml.safe_dump({"apiVersion": "flashctl/v1", "kind": "Chain", "spec": data})
    for candidate in (text, yaml.safe_dump(data)):
        try:
            load_sources([("c.yaml", candidate)])
        except ChainError as exc:
            assert all(line.startswith("c.yaml:") for line in exc.lines())
