"""The command line as users and scripts see it: output, messages, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flashctl import __version__
from flashctl.cli import run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "--version") == (0, f"flashctl {__version__}\n", "")


def test_validate_examples_directory(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "validate", "examples")
    assert code == 0
    assert out.splitlines() == [
        "ok: examples/linear.yaml: chain 'linear' (2 NFs, 2 sockets, 3 links)",
        "ok: examples/load-balancer.yaml: chain 'lb' (3 NFs, 3 sockets, 5 links)",
        "ok: examples/multi-thread.yaml: chain 'multi-thread' (4 NFs, 10 sockets, 5 links)",
        "ok: examples/two-umems.yaml: chain 'two-umems' (3 NFs, 3 sockets, 4 links)",
    ]
    assert err.splitlines() == [
        "examples/two-umems.yaml:28:7: warning: spec.links[2]: nat -> monitor costs one copy "
        "per packet: nat is in umem 'tenant', monitor is in umem 'provider' (put nat and "
        "monitor in one umem for zero-copy)"
    ]


def test_strict_turns_warnings_into_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "validate", "--strict", "examples/two-umems.yaml")
    assert code == 2
    assert err.splitlines()[1:] == [
        "error: 1 warning(s) and --strict was given",
        "hint: fix the warnings above",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"",
            "{f}:1:1: error: no chain document in this file (a chain starts with "
            "`apiVersion: flashctl/v1` and `kind: Chain`)",
        ),
        (
            b"\x7fELF\x02\x01\x01\x00\x00",
            "{f}:1:8: error: binary data (a NUL byte), not a YAML "
            "chain file (pass a .yaml chain file)",
        ),
        (
            b"kind: Chain\napi: \xff\xfe\n",
            "{f}:2:6: error: not UTF-8 text (byte 0xff) (save the file as UTF-8)",
        ),
        (b"a: [\n", "{f}:2:1: error: invalid YAML: did not find expected node content"),
    ],
    ids=["empty", "binary", "latin1", "syntax"],
)
def test_bad_files_give_one_located_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    code, out, err = _run(capsys, "validate", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [expected.format(f=path)]


def test_missing_paths_and_empty_directories(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "validate", str(tmp_path / "nope.yaml"), str(tmp_path))
    assert code == 2
    assert err.splitlines() == [
        f"{tmp_path}/nope.yaml: error: no such file or directory (check the path)",
        f"{tmp_path}: error: directory holds no chain files (chain files end in .yaml or .yml)",
    ]


def test_oversized_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * ((8 << 20) + 1))
    code, _, err = _run(capsys, "validate", str(path))
    assert code == 2
    assert err.splitlines() == [
        f"{path}:1:1: error: larger than 8 MiB; chain files are small (check the path)"
    ]


def test_stdin_is_read_with_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    text = (EXAMPLES / "linear.yaml").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text)))
    code, out, _ = _run(capsys, "validate", "-")
    assert (code, out) == (0, "ok: <stdin>: chain 'linear' (2 NFs, 2 sockets, 3 links)\n")


def test_validate_json_reports_errors_on_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text((EXAMPLES / "linear.yaml").read_text().replace("queues: [1]", "queues: [0]"))
    code, out, _ = _run(capsys, "validate", "-o", "json", str(path))
    assert code == 2
    assert json.loads(out) == {
        "apiVersion": "flashctl/v1",
        "kind": "ValidationResult",
        "valid": False,
        "errors": [
            {
                "severity": "error",
                "file": str(path),
                "line": 18,
                "column": 16,
                "path": "spec.nfs.router.queues[0]",
                "message": "queue 0 of eth0 is taken by firewall/0 and router/0",
                "hint": "give router/0 another queue: each queue of an interface takes one "
                "AF_XDP socket",
            }
        ],
        "warnings": [],
    }


EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_plan_matches_golden(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = _run(capsys, "plan", "-o", "json", f"examples/{name}.yaml")
    assert code == 0
    golden = GOLDEN / f"{name}.plan.json"
    if os.environ.get("FLASHCTL_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert json.loads(out) == json.loads(golden.read_text())


def test_plan_yaml_is_the_same_data_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    _, as_json, _ = _run(capsys, "plan", "-o", "json", "examples/multi-thread.yaml")
    _, as_yaml, _ = _run(capsys, "plan", "-o", "yaml", "examples/multi-thread.yaml")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_plan_table_shows_sockets_next_lists_and_indices(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "plan", "examples/load-balancer.yaml")
    assert code == 0
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "balancer/0 0 eth0 2 bound 0:web/0#1 zero-copy 1:api/0#2 zero-copy" in lines
    assert "balancer web 0 web affine zero-copy" in lines
    assert "balancer api 1 api affine zero-copy" in lines
    assert "web out - nic - egress (next = -1)" in lines


def test_unknown_chain_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "--chain", "nope", "examples/linear.yaml")
    assert code == 2
    assert err.splitlines() == [
        "error: no chain named 'nope' in the input",
        "hint: chains found: linear",
    ]


@pytest.mark.parametrize("fmt", ["dot", "mermaid"])
def test_graph_text_formats_match_golden(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = _run(capsys, "graph", "-f", fmt, "examples/two-umems.yaml")
    assert code == 0
    golden = GOLDEN / f"two-umems.{fmt}"
    if os.environ.get("FLASHCTL_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert out == golden.read_text()


def test_graph_tree_follows_the_chain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "graph", "examples/linear.yaml")
    assert code == 0
    assert [line.strip("│└─├ ") for line in out.splitlines()] == [
        "linear (nic ingress)",
        "firewall 1 thread, eth0 q0, umem shared",
        "pass [index 0, affine] -> zero-copy",
        "router 1 thread, eth0 q1, umem shared",
        "out -> nic (egress, next = -1)",
    ]


def test_schema_validates_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    import jsonschema
    import yaml

    code, out, _ = _run(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert list(validator.iter_errors(document)) == [], path
    bad = yaml.safe_load((EXAMPLES / "linear.yaml").read_text())
    bad["spec"]["nfs"]["router"]["thread"] = 1
    assert [e.message for e in validator.iter_errors(bad)] == [
        "Additional properties are not allowed ('thread' was unexpected)"
    ]


def test_flash_json_round_trip_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    chain = tmp_path / "chain.yaml"
    monitor = tmp_path / "monitor.json"
    assert _run(capsys, "export", "flash-json", "examples/linear.yaml", "-o", str(monitor))[0] == 0
    code, _, _ = _run(capsys, "import", "flash-json", str(monitor), "-o", str(chain))
    assert code == 0
    code, out, _ = _run(capsys, "validate", str(chain))
    assert (code, out) == (0, f"ok: {chain}: chain 'monitor' (2 NFs, 2 sockets, 3 links)\n")


def test_import_reports_json_errors_with_location(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"umem": [\n')
    code, _, err = _run(capsys, "import", "flash-json", str(path))
    assert code == 2
    assert err.splitlines() == [
        f"{path}:2:1: error: invalid JSON: expecting value (a FLASH monitor config is a JSON "
        "object with umem[] and route)"
    ]


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from flashctl.errors import ChainError

    with pytest.raises(ChainError):
        run(["--debug", "validate", "nope.yaml"])
    run(["validate", "examples/linear.yaml"])  # --debug does not stick to later runs
    capsys.readouterr()
    assert run(["validate", "nope.yaml"]) == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "-o", "xml", "examples/linear.yaml")
    assert code == 2
    assert "'xml' is not one of 'table', 'json', 'yaml'" in err
