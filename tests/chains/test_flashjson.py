"""Import and export of the FLASH monitor's JSON config (flashctl.chains.flashjson)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flashctl.chains.flashjson import FlashJsonError, export_flash_json, import_flash_json
from flashctl.chains.spec import Chain
from flashctl.errors import ExitCode, InputError

DATA = Path(__file__).parent / "data" / "flashjson"
DELETE = object()  # an edit that removes the field

ROUTE_FLASH_IDS = (
    "route: the monitor writes each list verbatim to /sys/kernel/flash/<nf_id>/next, taking nf "
    "ids as flash-ids; flashctl finds each NF's sockets by (interface, queue) and writes the "
    "flash-ids they have"
)
EXPORT_FLASH_IDS = (
    "route: the monitor writes each list to /sys/kernel/flash/<nf_id>/next, taking nf ids as "
    "flash-ids; that is right only if the sockets bind in nf-id order on a host with no other "
    "AF_XDP socket"
)
FLASH_ID_HINT = (
    "route keys and values are nf ids; if this file numbers sockets (flash-ids, counted "
    "thread by thread) instead, rewrite each number as the nf_id of the NF it meant"
)
OTHER_SOCKETS = (
    "its other sockets get no rule of their own, or the rule meant for a later nf id whose "
    "flash-id they took"
)


def threads_warning(nf_id: int, threads: int) -> str:
    return (
        f'route["{nf_id}"]: nf {nf_id} has {threads} threads but the monitor writes one rule per '
        f"NF (to flash-id {nf_id}): {OTHER_SOCKETS}; flashctl writes one per thread (affine: "
        "thread i to thread i mod n of the target)"
    )


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def edited(name: str, *edits: tuple[tuple[str | int, ...], object]) -> dict[str, Any]:
    """A fixture with fields replaced (or removed, with DELETE) at the given paths."""
    config = copy.deepcopy(load(name))
    for path, value in edits:
        parent: Any = config
        for part in path[:-1]:
            parent = parent[part]
        if value is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return config


def chain_document(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}, "spec": spec}


# --- import: each fixture gives an exact document and exact warnings ------------------------

IMPORTS = [
    pytest.param(
        "single",
        {
            "interface": "veth-flash0",
            "umems": [{"name": "umem0", "nfs": ["nf0"], "bind": "copy", "xdp": "skb"}],
            "nfs": {"nf0": {"queues": [3], "address": "10.20.0.1", "port": 7000}},
            "links": [{"from": "nic", "to": "nf0"}, {"from": "nf0", "to": "nic"}],
        },
        [],
        id="single",
    ),
    pytest.param(
        "pair",
        {
            "interface": "eth7",
            "umems": [
                {"name": "umem0", "nfs": ["nf0", "nf1"], "bind": "zerocopy", "xdp": "native"}
            ],
            "nfs": {
                "nf0": {
                    "queues": [0],
                    "outputs": ["to_nf1"],
                    "address": "172.16.5.10",
                    "port": 9100,
                },
                "nf1": {"queues": [1], "address": "172.16.5.11", "port": 9100},
            },
            "links": [
                {"from": "nic", "to": "nf0"},
                {"from": "nf0.to_nf1", "to": "nf1"},
                {"from": "nf1", "to": "nic"},
            ],
        },
        [ROUTE_FLASH_IDS],
        id="pair",
    ),
    pytest.param(
        "diamond",
        {
            "interface": "enp3s0f1",
            "umems": [
                {
                    "name": "umem0",
                    "nfs": ["nf0", "nf1", "nf2", "nf3"],
                    "bind": "zerocopy",
                    "xdp": "native",
                    "scale": 4,
                    "mode": "no-wakeup",
                }
            ],
            "nfs": {
                # nf_ip 0.0.0.0 and nf_port 0 are the monitor's placeholders: no address
                "nf0": {
                    "queues": [4, 5],
                    "outputs": ["to_nf1", "to_nf2"],
                    "address": "198.51.100.1",
                    "port": 4789,
                },
                "nf1": {"queues": [6], "outputs": ["to_nf3"], "address": "198.51.100.2"},
                "nf2": {"queues": [7], "outputs": ["to_nf3"], "port": 4789},
                "nf3": {"queues": [8]},
            },
            "links": [
                {"from": "nic", "to": "nf0"},
                {"from": "nf0.to_nf1", "to": "nf1"},
                {"from": "nf0.to_nf2", "to": "nf2"},
                {"from": "nf1.to_nf3", "to": "nf3"},
                {"from": "nf2.to_nf3", "to": "nf3"},
                {"from": "nf3", "to": "nic"},
            ],
        },
        [ROUTE_FLASH_IDS, threads_warning(0, 2)],
        id="diamond",
    ),
    pytest.param(
        "two-umems",
        {
            "umems": [
                {
                    "name": "umem0",
                    "nfs": ["nf0", "nf1"],
                    "bind": "zerocopy",
                    "xdp": "native",
                    "scale": 2,
                    "mode": "busy",
                },
                {
                    "name": "umem1",
                    "nfs": ["nf2", "nf3"],
                    "bind": "copy",
                    "xdp": "skb",
                    "mode": "poll",
                    "pollTimeout": 250,
                    "customXdp": True,
                    "frags": True,
                },
            ],
            "nfs": {
                "nf0": {
                    "interface": "ens2f0",
                    "queues": [0, 1],
                    "outputs": ["to_nf1"],
                    "address": "203.0.113.7",
                    "port": 5353,
                },
                "nf1": {
                    "interface": "ens2f0",
                    "queues": [2],
                    "outputs": ["to_nf2", "to_nf3"],
                    "address": "203.0.113.8",
                    "port": 5353,
                },
                "nf2": {
                    "interface": "ens2f1",
                    "queues": [0],
                    "address": "203.0.113.9",
                    "port": 6000,
                },
                "nf3": {
                    "interface": "ens2f1",
                    "queues": [1, 2],
                    "outputs": ["to_nf2"],
                    "address": "203.0.113.10",
                    "port": 6000,
                },
            },
            "links": [
                {"from": "nic", "to": "nf0"},
                {"from": "nf0.to_nf1", "to": "nf1"},
                {"from": "nf1.to_nf2", "to": "nf2"},
                {"from": "nf1.to_nf3", "to": "nf3"},
                {"from": "nf2", "to": "nic"},
                {"from": "nf3.to_nf2", "to": "nf2"},
            ],
        },
        [
            ROUTE_FLASH_IDS,
            "umem[1]: the monitor's `load route` writes the routes of the first umem entry only, "
            "not those of nf 3; flashctl applies them",
            threads_warning(0, 2),
            threads_warning(3, 2),
        ],
        id="two-umems",
    ),
]


@pytest.mark.parametrize(("fixture", "spec", "warnings"), IMPORTS)
def test_import_fixture(fixture: str, spec: dict[str, Any], warnings: list[str]) -> None:
    result = import_flash_json(load(fixture), name=fixture)

    assert result.document == chain_document(fixture, spec)
    assert list(result.warnings) == warnings
    Chain.model_validate(result.document)


def test_import_keeps_a_pleasant_key_order() -> None:
    document = import_flash_json(load("two-umems"), name="x").document

    assert list(document) == ["apiVersion", "kind", "metadata", "spec"]
    assert list(document["spec"]) == ["umems", "nfs", "links"]
    assert list(document["spec"]["umems"][0]) == ["name", "nfs", "bind", "xdp", "scale", "mode"]
    assert list(document["spec"]["umems"][1]) == [
        "name",
        "nfs",
        "bind",
        "xdp",
        "mode",
        "pollTimeout",
        "customXdp",
        "frags",
    ]
    assert list(document["spec"]["nfs"]["nf1"]) == [
        "interface",
        "queues",
        "outputs",
        "address",
        "port",
    ]


@pytest.mark.parametrize(
    ("interface_default", "spec_interface", "nf_interfaces"),
    [
        pytest.param(None, None, ["ens2f0", "ens2f0", "ens2f1", "ens2f1"], id="no-default"),
        pytest.param("ens2f0", "ens2f0", [None, None, "ens2f1", "ens2f1"], id="first"),
        pytest.param("lo9", "lo9", ["ens2f0", "ens2f0", "ens2f1", "ens2f1"], id="elsewhere"),
    ],
)
def test_import_interface_default(
    interface_default: str | None, spec_interface: str | None, nf_interfaces: list[str | None]
) -> None:
    spec = import_flash_json(
        load("two-umems"), name="x", interface_default=interface_default
    ).document["spec"]

    assert spec.get("interface") == spec_interface
    assert [nf.get("interface") for nf in spec["nfs"].values()] == nf_interfaces


def test_import_names_come_from_ids_not_positions() -> None:
    config = edited(
        "pair",
        (("umem", 0, "umem_id"), 3),
        (("umem", 0, "nf", 0, "nf_id"), 10),
        (("umem", 0, "nf", 1, "nf_id"), 20),
        (("route",), {"10": [20], "20": []}),
    )

    spec = import_flash_json(config, name="x").document["spec"]

    assert spec["umems"][0]["nfs"] == ["nf10", "nf20"]
    assert spec["umems"][0]["name"] == "umem3"
    assert spec["links"][1] == {"from": "nf10.to_nf20", "to": "nf20"}


def test_import_repeated_route_target_gets_numbered_outputs() -> None:
    config = edited("diamond", (("route", "0"), [1, 2, 1]))

    spec = import_flash_json(config, name="x").document["spec"]

    assert spec["nfs"]["nf0"]["outputs"] == ["to_nf1", "to_nf2", "to_nf1_2"]
    assert {"from": "nf0.to_nf1_2", "to": "nf1"} in spec["links"]


def test_import_hardware_xdp() -> None:
    config = edited("pair", (("umem", 0, "xdp_flags"), "h"))

    result = import_flash_json(config, name="x")

    assert result.document["spec"]["umems"][0]["xdp"] == "hw"
    assert list(result.warnings) == [ROUTE_FLASH_IDS]


def test_import_wide_queue_warns() -> None:
    config = edited("single", (("umem", 0, "nf", 0, "thread", 0, "queue"), 300))

    result = import_flash_json(config, name="x")

    assert result.document["spec"]["nfs"]["nf0"]["queues"] == [300]
    assert list(result.warnings) == [
        "umem[0].nf[0].thread[0]: the monitor keeps only the low 8 bits of queue 300 "
        "(it would bind queue 44)",
    ]


@pytest.mark.parametrize(
    ("mode", "fields"),
    [
        pytest.param("", {}, id="need-wakeup"),
        pytest.param("b", {"mode": "busy"}, id="busy"),
        pytest.param("p", {"mode": "poll", "pollTimeout": 0}, id="poll"),
        pytest.param("m", {"mode": "no-wakeup"}, id="no-need-wakeup"),
    ],
)
def test_import_modes(mode: str, fields: dict[str, Any]) -> None:
    config = edited("single", (("umem", 0, "mode"), mode), (("umem", 0, "poll_timeout"), 0))

    result = import_flash_json(config, name="x")

    group = result.document["spec"]["umems"][0]
    assert {k: v for k, v in group.items() if k in ("mode", "pollTimeout")} == fields
    Chain.model_validate(result.document)


def test_import_drops_a_poll_timeout_without_poll_mode() -> None:
    config = edited("single", (("umem", 0, "mode"), "b"), (("umem", 0, "poll_timeout"), 100))

    result = import_flash_json(config, name="x")

    assert "pollTimeout" not in result.document["spec"]["umems"][0]
    assert list(result.warnings) == [
        "dropped: umem[0].poll_timeout 100: it goes with mode 'p' (poll), not mode 'b' (busy poll)"
    ]


# --- import: every malformed config is reported with its JSON path --------------------------

MALFORMED = [
    pytest.param([], ["top level: expected an object, got a list"], id="top-level-list"),
    pytest.param(
        edited("pair", (("umem",), DELETE)), ["umem: required field is missing"], id="no-umem"
    ),
    pytest.param(
        edited("pair", (("umem",), [])), ["umem: expected at least one umem entry"], id="empty-umem"
    ),
    pytest.param(
        edited("pair", (("route",), DELETE)), ["route: required field is missing"], id="no-route"
    ),
    pytest.param(
        edited("pair", (("route",), [[1], []])),
        ["route: expected an object, got a list"],
        id="route-list",
    ),
    pytest.param(
        edited("pair", (("comment",), "hi")), ["comment: unknown field"], id="unknown-top"
    ),
    pytest.param(
        edited("pair", (("umem", 0), "x")),
        ["umem[0]: expected an object, got 'x'"],
        id="umem-not-object",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 1, "thread", 0, "queue"), "x")),
        ["umem[0].nf[1].thread[0].queue: expected an integer, got 'x'"],
        id="queue-string",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 1, "thread", 0, "queue"), 70000)),
        ["umem[0].nf[1].thread[0].queue: expected an integer from 0 to 65535, got 70000"],
        id="queue-range",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 1, "thread", 0, "queue"), 0)),
        [
            "umem[0].nf[1].thread[0].queue: queue 0 of eth7 is already taken by "
            "umem[0].nf[0].thread[0] (one socket per interface and queue)"
        ],
        id="queue-twice",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "thread", 0, "queue"), DELETE)),
        ["umem[0].nf[0].thread[0].queue: required field is missing"],
        id="queue-missing",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "thread"), [])),
        ["umem[0].nf[0].thread: expected at least one thread"],
        id="no-threads",
    ),
    pytest.param(
        edited(
            "diamond",
            (("umem", 0, "nf", 0, "thread", 1, "thread_id"), 0),
        ),
        ["umem[0].nf[0].thread[1].thread_id: 0 is already the id of umem[0].nf[0].thread[0]"],
        id="thread-id-twice",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 1, "nf_id"), 0)),
        [
            "umem[0].nf[1].nf_id: 0 is already the id of umem[0].nf[0]",
            'route["0"][0]: nf 1 does not exist (nf ids: 0)',
            'route["1"]: nf 1 does not exist (nf ids: 0)',
        ],
        id="nf-id-twice",
    ),
    pytest.param(
        edited("two-umems", (("umem", 1, "nf", 0, "nf_id"), 0)),
        [
            "umem[1].nf[0].nf_id: 0 is already the id of umem[0].nf[0]",
            'route["1"][0]: nf 2 does not exist (nf ids: 0, 1, 3)',
            'route["2"]: nf 2 does not exist (nf ids: 0, 1, 3)',
            'route["3"][0]: nf 2 does not exist (nf ids: 0, 1, 3)',
        ],
        id="nf-id-twice-across-umems",
    ),
    pytest.param(
        edited("two-umems", (("umem", 1, "umem_id"), 0)),
        ["umem[1].umem_id: 0 is already the id of umem[0]"],
        id="umem-id-twice",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "nf_id"), 1.0)),
        [
            "umem[0].nf[0].nf_id: expected an integer, got 1.0",
            'route["0"]: nf 0 does not exist (nf ids: 1)',
        ],
        id="nf-id-float",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "nf_id"), -1)),
        [
            "umem[0].nf[0].nf_id: expected a non-negative integer, got -1",
            'route["0"]: nf 0 does not exist (nf ids: 1)',
        ],
        id="nf-id-negative",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0), 3)),
        ["umem[0].nf[0]: expected an object, got 3", 'route["0"]: nf 0 does not exist (nf ids: 1)'],
        id="nf-not-object",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf"), {})),
        ["umem[0].nf: expected a list, got an object"],
        id="nf-not-list",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "nf_ip"), "300.1.1.1")),
        ["umem[0].nf[0].nf_ip: expected an IPv4 address, got '300.1.1.1'"],
        id="nf-ip",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "nf_ip"), None)),
        ["umem[0].nf[0].nf_ip: expected a string, got null"],
        id="nf-ip-null",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "nf_port"), DELETE)),
        ["umem[0].nf[0].nf_port: required field is missing"],
        id="nf-port-missing",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "nf", 0, "name"), "fw")),
        ["umem[0].nf[0].name: unknown field"],
        id="nf-unknown-field",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "ifname"), DELETE)),
        ["umem[0].ifname: required field is missing"],
        id="ifname-missing",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "ifname"), "eth 7")),
        [
            "umem[0].ifname: expected an interface name (1 to 15 characters, no spaces, '/' "
            "or ':'), got 'eth 7'"
        ],
        id="ifname-bad",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "xdp_flags"), "x")),
        [
            "umem[0].xdp_flags: expected one of 'd' (native), 's' (skb), 'h' (hardware "
            "offload), got 'x'"
        ],
        id="xdp-flags",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "bind_flags"), 1)),
        ["umem[0].bind_flags: expected one of 'z' (zero-copy), 'c' (copy), got 1"],
        id="bind-flags",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "xdp_flags"), "s")),
        ["umem[0].bind_flags: 'z' (zero-copy) needs xdp_flags 'd' or 'h', got 's'"],
        id="skb-zerocopy",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "mode"), "q")),
        [
            "umem[0].mode: expected one of '' (need-wakeup), 'b' (busy poll), 'p' (poll with "
            "poll_timeout), 'm' (no need-wakeup), got 'q'"
        ],
        id="mode",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "mode"), "p")),
        ["umem[0].poll_timeout: required field is missing (mode 'p')"],
        id="poll-without-timeout",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "poll_timeout"), "100")),
        ["umem[0].poll_timeout: expected an integer, got '100'"],
        id="poll-timeout-string",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "custom_xsk"), "no")),
        ["umem[0].custom_xsk: expected true or false, got 'no'"],
        id="custom-xsk",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "frags_enabled"), DELETE)),
        ["umem[0].frags_enabled: required field is missing"],
        id="frags-missing",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "umem_scale"), 0)),
        ["umem[0].umem_scale: expected an integer from 1 to 64, got 0"],
        id="scale",
    ),
    pytest.param(
        edited("pair", (("umem", 0, "ifqueue_mask"), "0xF")),
        ["umem[0].ifqueue_mask: unknown field"],
        id="umem-unknown-field",
    ),
    pytest.param(
        edited("pair", (("route", "0"), [5])),
        ['route["0"][0]: nf 5 does not exist (nf ids: 0, 1)'],
        id="route-target-unknown",
    ),
    pytest.param(
        edited("pair", (("route", "9"), [])),
        ['route["9"]: nf 9 does not exist (nf ids: 0, 1)'],
        id="route-key-unknown",
    ),
    pytest.param(
        edited("pair", (("route", "1"), DELETE)),
        [
            "route: no entry for nf 1 (umem[0].nf[1]); the monitor rejects the file without one "
            '(use "1": [] for an NF that sends to the wire)'
        ],
        id="route-entry-missing",
    ),
    pytest.param(
        edited("pair", (("route", "a"), [])),
        ["route[\"a\"]: a key must be an nf id in decimal, got 'a'"],
        id="route-key-not-decimal",
    ),
    pytest.param(
        edited("pair", (("route", "1"), 2)),
        ['route["1"]: expected a list of nf ids, got 2'],
        id="route-not-list",
    ),
    pytest.param(
        edited("pair", (("route", "0"), [True])),
        ['route["0"][0]: expected an integer, got true'],
        id="route-target-bool",
    ),
    pytest.param(
        # Modelled on a monitor file whose routes hold flash-ids: nf 0 has two threads, so the
        # socket of nf 1 would be flash-id 2. flashctl cannot tell which socket 2 meant.
        edited(
            "pair",
            (
                ("umem", 0, "nf", 0, "thread"),
                [{"thread_id": 0, "queue": 0}, {"thread_id": 1, "queue": 2}],
            ),
            (("route",), {"0": [2], "1": [2], "2": []}),
        ),
        [
            'route["0"][0]: nf 2 does not exist (nf ids: 0, 1)',
            'route["1"][0]: nf 2 does not exist (nf ids: 0, 1)',
            'route["2"]: nf 2 does not exist (nf ids: 0, 1)',
        ],
        id="route-holds-flash-ids",
    ),
]


@pytest.mark.parametrize(("config", "problems"), MALFORMED)
def test_import_reports_every_problem_with_its_path(config: object, problems: list[str]) -> None:
    with pytest.raises(FlashJsonError) as caught:
        import_flash_json(config, name="x")

    assert list(caught.value.problems) == problems
    assert caught.value.message == problems[0]
    assert str(caught.value) == problems[0]
    names_no_nf = any("does not exist" in problem for problem in problems)
    assert caught.value.hint == (FLASH_ID_HINT if names_no_nf else None)
    hint_line = [f"hint: {FLASH_ID_HINT}"] if names_no_nf and len(problems) > 1 else []
    assert caught.value.lines() == [f"error: {problem}" for problem in problems] + hint_line


def test_import_collects_problems_from_all_levels() -> None:
    config = edited(
        "two-umems",
        (("umem", 0, "xdp_flags"), "x"),
        (("umem", 0, "nf", 1, "thread", 0, "queue"), "two"),
        (("umem", 1, "custom_xsk"), 0),
        (("route", "3"), DELETE),
    )

    with pytest.raises(FlashJsonError) as caught:
        import_flash_json(config, name="x")

    assert caught.value.problems == (
        "umem[0].xdp_flags: expected one of 'd' (native), 's' (skb), 'h' (hardware offload), "
        "got 'x'",
        "umem[0].nf[1].thread[0].queue: expected an integer, got 'two'",
        "umem[1].custom_xsk: expected true or false, got 0",
        "route: no entry for nf 3 (umem[1].nf[1]); the monitor rejects the file without one "
        '(use "3": [] for an NF that sends to the wire)',
    )
    assert caught.value.message == caught.value.problems[0]


def test_import_error_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        import_flash_json("{}", name="x")

    assert caught.value.exit_code == ExitCode.INVALID
    assert caught.value.message == "top level: expected an object, got '{}'"


def test_import_rejects_a_bad_chain_name() -> None:
    with pytest.raises(FlashJsonError) as caught:
        import_flash_json(load("single"), name="Not_A_Label")

    assert caught.value.problems == (
        "metadata.name: String should match pattern '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'",
    )


# --- round trip: export(import(x)) gives x back ---------------------------------------------


UMEM_FIELD_ORDER = (
    "umem_id",
    "ifname",
    "xdp_flags",
    "bind_flags",
    "mode",
    "poll_timeout",
    "custom_xsk",
    "frags_enabled",
    "umem_scale",
    "nf",
)


def as_exported(config: dict[str, Any]) -> dict[str, Any]:
    """`config` as export writes it: umem fields in the monitor's order, and `umem_scale`
    written out where it is absent (the monitor assumes 1)."""
    umems = []
    for entry in config["umem"]:
        full = {"umem_scale": 1, **entry}
        umems.append({k: full[k] for k in UMEM_FIELD_ORDER if k in full})
    return {"umem": umems, "route": config["route"]}


ROUND_TRIPS = [
    pytest.param(load(name), id=name) for name in ("single", "pair", "diamond", "two-umems")
] + [
    pytest.param(
        edited("pair", (("umem", 0, "xdp_flags"), "h"), (("umem", 0, "bind_flags"), "c")),
        id="hw-copy",
    ),
    pytest.param(
        edited("single", (("umem", 0, "mode"), "p"), (("umem", 0, "poll_timeout"), 0)),
        id="poll-0",
    ),
    pytest.param(edited("single", (("umem", 0, "nf", 0, "nf_ip"), "0.0.0.0")), id="placeholder-ip"),
]


@pytest.mark.parametrize("original", ROUND_TRIPS)
def test_round_trip(original: dict[str, Any]) -> None:
    document = import_flash_json(original, name="x").document

    exported = export_flash_json(Chain.model_validate(document)).data

    assert json.dumps(exported) == json.dumps(as_exported(original))  # key order too


def test_round_trip_of_two_umems_warns_about_the_second() -> None:
    document = import_flash_json(load("two-umems"), name="x").document

    warnings = export_flash_json(Chain.model_validate(document)).warnings

    assert list(warnings) == [
        EXPORT_FLASH_IDS,
        'umem[0] (group "umem0"): its NFs have different thread counts (nf0 2, nf1 1); the '
        "monitor puts a thread at UMEM partition (nf position x thread count + thread), so "
        "partitions overlap or run past the UMEM",
        'umem[1] (group "umem1"): its NFs have different thread counts (nf2 1, nf3 2); the '
        "monitor puts a thread at UMEM partition (nf position x thread count + thread), so "
        "partitions overlap or run past the UMEM",
        'umem[1] (group "umem1"): the monitor looks up an NF by its position in its umem entry, '
        "so start nf2 with nf id 0 and nf3 with nf id 1 (the nf_id in this file only keys "
        "`route`)",
        'umem[1] (group "umem1"): the monitor\'s `load route` writes the routes of the first '
        "umem entry only and ignores those of nf 3 (nf3)",
        f"nf 0 (nf0) has 2 threads but the monitor writes one rule per NF (to flash-id 0): "
        f"{OTHER_SOCKETS} (flashctl writes one rule per thread)",
        f"nf 3 (nf3) has 2 threads but the monitor writes one rule per NF (to flash-id 3): "
        f"{OTHER_SOCKETS} (flashctl writes one rule per thread)",
    ]


def test_round_trip_of_a_single_nf_has_no_warning() -> None:
    document = import_flash_json(load("single"), name="x").document

    assert export_flash_json(Chain.model_validate(document)).warnings == ()


# --- export ---------------------------------------------------------------------------------

EDGE = chain_document(
    "edge",
    {
        "interface": "eth0",
        "umems": [
            {
                "name": "front",
                "nfs": ["fw", "lb"],
                "bind": "zerocopy",
                "xdp": "native",
                "scale": 2,
                "mode": "poll",
                "pollTimeout": 10,
                "customXdp": True,
                "frags": True,
            }
        ],
        "nfs": {
            "fw": {"queues": [0, 1], "outputs": ["pass", "log"], "address": "192.0.2.1"},
            "lb": {"queues": [2], "interface": "eth2", "outputs": ["a", "b"], "port": 8080},
            "web": {"queues": [3, 300], "interface": "eth1", "address": "192.0.2.3", "port": 80},
            "db": {"queues": [5], "match": {"procname": "dbd"}},
        },
        "links": [
            {"from": "nic", "to": "fw"},
            {"from": "fw.pass", "to": "lb"},
            {"from": "fw.log", "to": "nic"},
            {"from": "lb.a", "to": "web", "mapping": "spread"},
            {"from": "lb.b", "to": "db", "mapping": "pinned", "thread": 0},
            {"from": "web", "to": "db"},
            {"from": "nic", "to": "db"},
            {"from": "db", "to": "nic"},
        ],
        "traffic": [{"into": "fw", "rate": "1Mpps"}],
        "txTracking": True,
    },
)


def umem_entry(umem_id: int, ifname: str, scale: int, nfs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "umem_id": umem_id,
        "ifname": ifname,
        "xdp_flags": "d",
        "bind_flags": "z",
        "mode": "",
        "custom_xsk": False,
        "frags_enabled": False,
        "umem_scale": scale,
        "nf": nfs,
    }


def nf_entry(nf_id: int, *queues: int, ip: str = "0.0.0.0", port: int = 0) -> dict[str, Any]:
    threads = [{"thread_id": t, "queue": q} for t, q in enumerate(queues)]
    return {"nf_id": nf_id, "nf_ip": ip, "nf_port": port, "thread": threads}


def test_export_multi_umem_multi_thread_chain() -> None:
    result = export_flash_json(Chain.model_validate(EDGE))

    front = {
        "umem_id": 0,
        "ifname": "eth0",
        "xdp_flags": "d",
        "bind_flags": "z",
        "mode": "p",
        "poll_timeout": 10,
        "custom_xsk": True,
        "frags_enabled": True,
        "umem_scale": 2,
        "nf": [nf_entry(0, 0, 1, ip="192.0.2.1"), nf_entry(1, 2, port=8080)],
    }
    assert result.data == {
        "umem": [
            front,
            umem_entry(1, "eth1", 1, [nf_entry(2, 3, 300, ip="192.0.2.3", port=80)]),
            umem_entry(2, "eth0", 1, [nf_entry(3, 5)]),
        ],
        "route": {"0": [1], "1": [2, 3], "2": [3], "3": []},
    }
    assert list(result.warnings) == [
        "nf ids: 0 = fw, 1 = lb, 2 = web, 3 = db (the monitor's config has no NF names)",
        EXPORT_FLASH_IDS,
        'umem[0] (group "front"): its NFs use eth0 (fw), eth2 (lb), but the monitor binds '
        "every socket of an entry to one ifname; wrote eth0",
        'umem[0] (group "front"): its NFs have different thread counts (fw 2, lb 1); the '
        "monitor puts a thread at UMEM partition (nf position x thread count + thread), so "
        "partitions overlap or run past the UMEM",
        "umem[1] (nf \"web\"): the monitor has no automatic mode; wrote xdp_flags 'd' (native) "
        "for xdp auto and bind_flags 'z' (zero-copy) for bind auto",
        'umem[1] (nf "web"): the monitor looks up an NF by its position in its umem entry, so '
        "start web with nf id 0 (the nf_id in this file only keys `route`)",
        'umem[1] (nf "web"): the monitor\'s `load route` writes the routes of the first umem '
        "entry only and ignores those of nf 2 (web)",
        "umem[2] (nf \"db\"): the monitor has no automatic mode; wrote xdp_flags 'd' (native) "
        "for xdp auto and bind_flags 'z' (zero-copy) for bind auto",
        'umem[2] (nf "db"): the monitor looks up an NF by its position in its umem entry, so '
        "start db with nf id 0 (the nf_id in this file only keys `route`)",
        f"nf 0 (fw) has 2 threads but the monitor writes one rule per NF (to flash-id 0): "
        f"{OTHER_SOCKETS} (flashctl writes one rule per thread)",
        f"nf 2 (web) has 2 threads but the monitor writes one rule per NF (to flash-id 2): "
        f"{OTHER_SOCKETS} (flashctl writes one rule per thread)",
        "nf 2 (web): the monitor keeps only the low 8 bits of queue 300 (it would bind queue 44)",
        "spec.links[2] (fw.log -> nic): a route has no entry for the wire (a socket with rules "
        "never transmits to it); left out",
        "spec.links[3] (lb.a -> web): mapping spread has no monitor equivalent; the route names "
        "nf 2 once",
        "spec.links[4] (lb.b -> db): mapping pinned has no monitor equivalent; the route names "
        "nf 3 once",
        "spec.links[6] (nic -> db): the monitor has no ingress links (every socket receives from "
        "its queue), and a route also reaches db, so this link is not in the file",
        "dropped: spec.nfs.db.match: the monitor creates every socket itself, on the NF's queues",
        "dropped: spec.traffic (simulated backend only)",
        "dropped: spec.txTracking: the monitor does not set it",
    ]


@pytest.mark.parametrize(
    ("xdp", "bind", "flags", "warning"),
    [
        pytest.param("native", "copy", ("d", "c"), None, id="explicit"),
        pytest.param(
            "skb", "auto", ("s", "c"), "bind_flags 'c' (copy) for bind auto", id="skb-auto-bind"
        ),
        pytest.param(
            "auto", "copy", ("d", "c"), "xdp_flags 'd' (native) for xdp auto", id="auto-xdp"
        ),
        pytest.param("hw", "copy", ("h", "c"), None, id="hw"),
        pytest.param(
            "hw", "auto", ("h", "z"), "bind_flags 'z' (zero-copy) for bind auto", id="hw-auto-bind"
        ),
    ],
)
def test_export_flags(xdp: str, bind: str, flags: tuple[str, str], warning: str | None) -> None:
    chain = chain_document(
        "x",
        {
            "interface": "eth0",
            "umems": [{"name": "u", "nfs": ["a"], "xdp": xdp, "bind": bind}],
            "nfs": {"a": {"queues": [0]}},
            "links": [{"from": "nic", "to": "a"}, {"from": "a", "to": "nic"}],
        },
    )

    result = export_flash_json(Chain.model_validate(chain))

    entry = result.data["umem"][0]
    assert (entry["xdp_flags"], entry["bind_flags"]) == flags
    expected = [f'umem[0] (group "u"): the monitor has no automatic mode; wrote {warning}']
    assert [w for w in result.warnings if "automatic" in w] == (expected if warning else [])


@pytest.mark.parametrize(
    ("mode", "flag"),
    [("wakeup", ""), ("busy", "b"), ("no-wakeup", "m")],
)
def test_export_modes(mode: str, flag: str) -> None:
    chain = chain_document(
        "x",
        {
            "interface": "eth0",
            "umems": [{"name": "u", "nfs": ["a"], "mode": mode}],
            "nfs": {"a": {"queues": [0]}},
            "links": [{"from": "nic", "to": "a"}, {"from": "a", "to": "nic"}],
        },
    )

    entry = export_flash_json(Chain.model_validate(chain)).data["umem"][0]

    assert entry["mode"] == flag
    assert "poll_timeout" not in entry


def test_skb_zerocopy_is_a_spec_error_not_an_export_one() -> None:
    # The monitor rejects this pair too; the chain model refuses it before export can run.
    chain = chain_document(
        "x",
        {
            "interface": "eth0",
            "umems": [{"name": "u", "nfs": ["a"], "xdp": "skb", "bind": "zerocopy"}],
            "nfs": {"a": {"queues": [0]}},
            "links": [{"from": "nic", "to": "a"}, {"from": "a", "to": "nic"}],
        },
    )

    with pytest.raises(ValidationError, match="`xdp: skb` is copy-only"):
        Chain.model_validate(chain)


def test_export_refuses_what_the_monitor_cannot_run() -> None:
    chain = chain_document(
        "x",
        {
            "umems": [{"name": "u", "nfs": ["a", "ghost"]}],
            "nfs": {"a": {"queues": [0]}, "app": {"match": {"procname": "app"}}},
            "links": [{"from": "a", "to": "app"}, {"from": "app", "to": "nowhere"}],
        },
    )

    with pytest.raises(FlashJsonError) as caught:
        export_flash_json(Chain.model_validate(chain))

    assert caught.value.problems == (
        "spec.umems[0].nfs[1]: unknown NF 'ghost'",
        "spec.links[1].to: unknown NF 'nowhere'",
        "spec.nfs.a: no interface; set spec.interface or spec.nfs.a.interface",
        "spec.nfs.app: no queues; the monitor creates each thread's socket on a listed queue, "
        "so give `queues`",
        "spec.nfs.app: no interface; set spec.interface or spec.nfs.app.interface",
    )
    assert caught.value.message == "spec.umems[0].nfs[1]: unknown NF 'ghost'"


def test_export_dropped_sim_fields_are_listed_once() -> None:
    chain = chain_document(
        "x",
        {
            "interface": "eth0",
            "nfs": {"a": {"queues": [0], "sim": {"capacity": "2Mpps"}}},
            "links": [{"from": "nic", "to": "a"}, {"from": "a", "to": "nic"}],
            "sim": {"poll": "busy"},
        },
    )

    warnings = export_flash_json(Chain.model_validate(chain)).warnings

    assert warnings[-1] == "dropped: spec.sim, spec.nfs.a.sim (simulated backend only)"
