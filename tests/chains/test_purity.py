"""`flashctl.chains` is the pure core: no I/O, no clock, no backends, no CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import flashctl.chains

PACKAGE = Path(flashctl.chains.__file__).parent
# Modules whose import would let the core touch the outside world or the layers above it.
FORBIDDEN_IMPORTS = {
    "os",
    "io",
    "socket",
    "subprocess",
    "pathlib",
    "shutil",
    "time",
    "datetime",
    "random",
    "threading",
    "asyncio",
    "sqlite3",
    "mmap",
    "ctypes",
    "select",
    "signal",
    "tempfile",
    "typer",
    "rich",
    "click",
    "flashctl.backends",
    "flashctl.cli",
    "flashctl.inputs",
    "flashctl.views",
    "flashctl.serialize",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_modules_import_nothing_that_does_io() -> None:
    offenders = {}
    for path in _modules():
        imported = _imports(ast.parse(path.read_text()))
        bad = {
            name
            for name in imported
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IMPORTS)
        }
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_core_modules_call_no_io_builtins() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                offenders.append(f"{path.name}:{node.lineno}: {node.func.id}()")
    assert offenders == []


def test_importing_the_core_loads_no_backend_cli_or_terminal_code() -> None:
    code = (
        "import sys\n"
        "import flashctl.chains.loader, flashctl.chains.planner, flashctl.chains.diff\n"
        "import flashctl.chains.flashjson, flashctl.chains.graph, flashctl.chains.topology\n"
        "bad = [m for m in sys.modules if m.startswith(('flashctl.backends', 'flashctl.cli',"
        " 'typer', 'rich', 'click'))]\n"
        "print(','.join(sorted(bad)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
