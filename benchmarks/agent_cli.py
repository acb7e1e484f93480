"""Agent-backed CLI: wall time of fresh `flashctl status` and `apply` processes.

    python benchmarks/agent_cli.py [-n ROUNDS] [--warmup W] [--example FILE]
                                   [--import-runs R] [--record] [--check]

A real `flashctl agent run` (sim backend) is started in a temporary FLASHCTL_HOME and a chain
is applied (`flashctl apply --wait`). Then every round runs each command once as a new
process, in an order rotated by one each round, next to the interpreter's floors
`python -c pass` and `python -c "import typer, rich"`. Targets (from the issue):

- `flashctl status` takes at most 150 ms with an agent running (absolute, median);
- the `status` process imports neither pydantic nor networkx;
- `flashctl apply` of an unchanged chain writes nothing: exit code 3, no new `write` event
  in `flashctl events -o json`, no new revision, the simulated kernel's file untouched.

It then shows where `status` spends its time: the modules it imports (`-X importtime`, and
which import pulls pydantic in), one process importing in stages before running the
command, and the agent's share (a `status` round trip over an open connection).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    AgentProcess,
    command_line,
    machine_lines,
    median,
    ms,
    percentile,
    record,
    running_agent,
    table,
)
from _common import verdict as word
from cold_start import Launcher, child_env, find_launcher

STATUS_LIMIT = 0.150  # seconds, absolute median
DEFAULT_EXAMPLE = "examples/multi-thread.yaml"
FLOOR_IMPORTS = "import typer, rich"
# What the status path loads from libraries: typer (CLI), rich's console and table (the
# view), and typer._adapters, which typer 0.29 imports to coerce CLI values with pydantic.
LIBRARY_IMPORTS = "import typer, rich.console, rich.table, typer._adapters"
FORBIDDEN = ("pydantic", "pydantic_core", "networkx")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)\s*$")

# Prints the modules loaded by the time the interpreter exits, after running the console
# script's entry point (flashctl.cli:main) with the given arguments.
_MODULES_CHILD = """
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\n@modules " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["flashctl", *sys.argv[1:]]
from flashctl.cli import main
main()
"""
# One process: import in stages (each timed on its own; later stages find earlier modules
# loaded), run `status` as the console script would (gc off), then, apart, the agent round
# trip and the rendering on their own.
STAGES = (
    ("typer", "import typer"),
    ("flashctl.cli", "import flashctl.cli"),
    ("typer._adapters -> pydantic (typer coerces CLI values with pydantic)", "import typer._adapters"),
    ("flashctl.client, .home, .protocol", "import flashctl.client"),
    ("flashctl.agentviews -> rich.console, rich.table", "import flashctl.agentviews"),
)
_STAGES_CHILD = """
import contextlib, gc, io, json, sys, time
gc.disable()
times = []
def timed(action):
    start = time.perf_counter()
    result = action()
    times.append(time.perf_counter() - start)
    return result
for statement in json.loads(sys.argv[1]):
    timed(lambda: exec(statement, {}))
import flashctl.cli
with contextlib.redirect_stdout(io.StringIO()):
    code = timed(lambda: flashctl.cli.run(sys.argv[2:]))
from rich.console import Console
from flashctl.agentviews import status_view
from flashctl.client import Client
from flashctl.home import resolve_home
def call():
    with Client(resolve_home(), autostart=False) as client:
        return client.call("status")
data = timed(call)
timed(lambda: Console(file=io.StringIO(), width=100, highlight=False).print(status_view(data)))
print(json.dumps({"times": times, "code": code}))
"""


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    label: str
    argv: tuple[str, ...]
    exit_code: int = 0


@dataclass(frozen=True, slots=True)
class Stats:
    median: float
    p90: float
    low: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What an apply could change: the event log, the revisions, the kernel's state file."""

    events: list[dict[str, Any]]
    revisions: int
    kernel: bytes
    kernel_mtime_ns: int


def run_once(case: Case, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        case.argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != case.exit_code:
        stderr = done.stderr.decode(errors="replace").strip()
        raise SystemExit(
            f"{case.label} exited with {done.returncode}, expected {case.exit_code}:\n{stderr}"
        )
    return elapsed


def measure(
    cases: list[Case], rounds: int, warmup: int, env: dict[str, str], agent: AgentProcess
) -> dict[str, list[float]]:
    """Interleaved rounds: round r runs the cases starting at case r mod k."""
    samples: dict[str, list[float]] = {case.key: [] for case in cases}
    for number in range(warmup + rounds):
        shift = number % len(cases)
        for case in cases[shift:] + cases[:shift]:
            elapsed = run_once(case, env)
            if number >= warmup:
                samples[case.key].append(elapsed)
        if not agent.alive():
            raise SystemExit(f"the agent died during round {number}:\n{agent.log_tail()}")
    return samples


def _output(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr}")
    return done.stdout


def snapshot(launcher: Launcher, env: dict[str, str], agent: AgentProcess, chain: str) -> Snapshot:
    flashctl = list(launcher.prefix)
    text = _output([*flashctl, "events", "-o", "json", "--limit", "1000000"], env)
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    history = json.loads(_output([*flashctl, "history", chain, "-o", "json"], env))
    kernel = agent.home / "sim-kernel.json"
    return Snapshot(events, len(history["items"]), kernel.read_bytes(), kernel.stat().st_mtime_ns)


def chain_name(example: str) -> str:
    found = re.search(r"^metadata:\s*\n\s+name:\s*(\S+)|^metadata:\s*\{name:\s*([^,}\s]+)",
                      (REPO / example).read_text(encoding="utf-8"), re.MULTILINE)
    if found is None:
        raise SystemExit(f"{example}: cannot find metadata.name")
    return found.group(1) or found.group(2)
