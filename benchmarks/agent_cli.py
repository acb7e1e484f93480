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
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from _common import (
    REPO,
    AgentProcess,
    add_record_args,
    finish,
    json_child,
    median,
    ms,
    percentile,
    running_agent,
    section_head,
    table,
)
from _common import verdict as word
from cold_start import Launcher, child_env, find_launcher

STATUS_LIMIT = 0.150  # seconds, absolute median
DEFAULT_EXAMPLE = "examples/multi-thread.yaml"
FLOOR_IMPORTS = "import typer, rich"
# What the status path loads from libraries: typer (CLI) and rich's console and table (the
# view). (typer 0.29 would add pydantic through typer._adapters; pyproject keeps typer < 0.29.)
LIBRARY_IMPORTS = "import typer, rich.console, rich.table"
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
import typer.main
timed(lambda: typer.main.get_command(flashctl.cli.app))
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
    kernel = agent.state.sim_kernel
    return Snapshot(events, len(history["items"]), kernel.read_bytes(), kernel.stat().st_mtime_ns)


def first_apply(launcher: Launcher, env: dict[str, str], example: str) -> list[str]:
    """Apply the example and wait until it is in sync; the names of its chains."""
    text = _output([*launcher.prefix, "apply", example, "--wait", "-o", "json"], env)
    return [str(c["chain"]) for c in json.loads(text)["chains"]]


# --------------------------------------------------------------------------- imports


def loaded_modules(env: dict[str, str], args: list[str]) -> list[str]:
    """The modules loaded when `flashctl ARGS` (flashctl.cli:main) exits."""
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_CHILD, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    marker = [line for line in done.stderr.splitlines() if line.startswith("@modules ")]
    if done.returncode != 0 or not marker:
        raise SystemExit(f"flashctl {' '.join(args)} (module census) failed:\n{done.stderr}")
    return [str(name) for name in json.loads(marker[-1].removeprefix("@modules "))]


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    depth: int  # 0 for a top-level import
    self_s: float
    cumulative_s: float
    parent: str | None  # the module whose import ran this one


def import_trace(launcher: Launcher, env: dict[str, str], args: list[str]) -> list[Import]:
    """One `python -X importtime` run, in the order the lines come (children first)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *launcher.traced, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"-X importtime flashctl {' '.join(args)} failed:\n{done.stderr}")
    rows: list[tuple[str, int, int, int]] = []
    for line in done.stderr.splitlines():
        found = _IMPORT_LINE.match(line)
        if found:
            own, total, indent, module = found.groups()
            rows.append((module, max(0, (len(indent) - 1) // 2), int(own), int(total)))
    imports = []
    for index, (module, depth, own, total) in enumerate(rows):
        # A module's importer is the next line one level up (importtime prints children first).
        parent = next((r[0] for r in rows[index + 1 :] if r[1] == depth - 1), None)
        imports.append(Import(module, depth, own / 1e6, total / 1e6, parent))
    return imports


def import_profile(
    launcher: Launcher, env: dict[str, str], args: list[str], runs: int
) -> list[Import]:
    """Per module (first run's order and nesting), the median times over `runs` runs."""
    traces = [import_trace(launcher, env, args) for _ in range(runs)]
    by_module: dict[str, list[Import]] = {}
    for trace in traces:
        for item in trace:
            by_module.setdefault(item.module, []).append(item)
    return [
        Import(
            item.module,
            item.depth,
            median([i.self_s for i in by_module[item.module]]),
            median([i.cumulative_s for i in by_module[item.module]]),
            item.parent,
        )
        for item in traces[0]
    ]


def importer_chain(imports: list[Import], module: str) -> list[Import]:
    """`module`, the module that imported it, and so on up to the top-level import."""
    by_name = {i.module: i for i in imports}
    chain = []
    current = by_name.get(module)
    while current is not None:
        chain.append(current)
        current = by_name.get(current.parent) if current.parent else None
    return chain


# --------------------------------------------------------------------------- stages


def stage_times(env: dict[str, str], runs: int) -> list[float]:
    """Median seconds of each stage of _STAGES_CHILD over `runs` fresh processes."""
    per_run: list[list[float]] = []
    statements = json.dumps([statement for _, statement in STAGES])
    for _ in range(runs):
        argv = [sys.executable, "-c", _STAGES_CHILD, statements, "status"]
        result = json_child(argv, "the staged run failed", env)
        if result["code"] != 0:
            raise SystemExit(f"flashctl status returned {result['code']} in the staged run")
        per_run.append([float(x) for x in result["times"]])
    return [median([r[i] for r in per_run]) for i in range(len(per_run[0]))]


def agent_share(agent: AgentProcess, calls: int) -> tuple[list[float], list[float]]:
    """Connect + hello, and one `status` call over an open connection, as seen by a client."""
    from flashctl.client import Client

    connects, statuses = [], []
    for _ in range(calls):
        start = time.perf_counter()
        with Client(agent.state, autostart=False, say=lambda _text: None) as client:
            connected = time.perf_counter()
            client.call("status")
            done = time.perf_counter()
        connects.append(connected - start)
        statuses.append(done - connected)
    return connects, statuses


# --------------------------------------------------------------------------- report


def _stats(values: list[float]) -> Stats:
    return Stats(median(values), percentile(values, 0.90), min(values))


def _versus(value: float, base: float) -> str:
    return f"{value / base:.2f}x, {(value - base) * 1000:+.1f} ms"


def build_cases(launcher: Launcher, example: str) -> list[Case]:
    python = sys.executable
    flashctl = launcher.prefix
    return [
        Case("pass", "`python -c pass`", (python, "-c", "pass")),
        Case("floor", f'`python -c "{FLOOR_IMPORTS}"`', (python, "-c", FLOOR_IMPORTS)),
        Case("libs", f'`python -c "{LIBRARY_IMPORTS}"` (info)', (python, "-c", LIBRARY_IMPORTS)),
        Case("status", "`flashctl status`", (*flashctl, "status")),
        Case("json", "`flashctl status -o json` (info)", (*flashctl, "status", "-o", "json")),
        Case("apply", f"`flashctl apply {example}` (unchanged)", (*flashctl, "apply", example), 3),
    ]


def _import_rows(imports: list[Import]) -> list[list[str]]:
    return [[". " * i.depth + f"`{i.module}`", ms(i.cumulative_s), ms(i.self_s)] for i in imports]


def report(args: argparse.Namespace) -> tuple[str, bool]:
    launcher = find_launcher()
    base_env = child_env()
    example = args.example
    lines = [
        *section_head("## agent_cli: `flashctl status` and `apply` with an agent running"),
        f"- flashctl started as: {launcher.description}",
    ]
    with running_agent(launcher.prefix, base_env) as agent:
        env = agent.env(base_env)
        chains = first_apply(launcher, env, example)
        lines.append(
            f"- agent: `flashctl agent run --backend sim` (pid {agent.pid}) in a temporary "
            f"FLASHCTL_HOME, stopped by pid afterwards; `{example}` applied (chains: "
            f"{', '.join(chains)}) and in sync before the rounds"
        )
        lines.append(
            f"- {args.rounds} interleaved rounds after {args.warmup} warm-up rounds; each time "
            "is `subprocess.run` wall time (fork/exec included, the same for every row); "
            "output to /dev/null"
        )
        cases = build_cases(launcher, example)
        before = snapshot(launcher, env, agent, chains[0])
        print(f"{args.rounds} rounds of {len(cases)} commands ...")
        samples = measure(cases, args.rounds, args.warmup, env, agent)
        after = snapshot(launcher, env, agent, chains[0])
        print("module census, import profile, staged runs ...")
        modules = loaded_modules(env, ["status"])
        imports = import_profile(launcher, env, ["status"], args.import_runs)
        stages = stage_times(env, args.import_runs)
        connects, statuses = agent_share(agent, 50)
        if not agent.alive():
            raise SystemExit(f"the agent died:\n{agent.log_tail()}")
        agent_pid = agent.pid
    print(f"agent pid {agent_pid} stopped, its FLASHCTL_HOME removed")

    stats = {key: _stats(values) for key, values in samples.items()}
    floor_pass, floor = stats["pass"].median, stats["floor"].median
    rows = [
        [
            case.label,
            ms(stats[case.key].median),
            ms(stats[case.key].p90),
            ms(stats[case.key].low),
            _versus(stats[case.key].median, floor_pass),
            _versus(stats[case.key].median, floor),
        ]
        for case in cases
    ]
    lines += [""]
    lines += table(
        ["command", "median ms", "p90 ms", "min ms", "vs `pass`", "vs `import typer, rich`"],
        rows,
    )

    # The apply of an unchanged chain.
    new_events = after.events[len(before.events) :]
    new_writes = [e for e in new_events if e["kind"] == "write"]
    kernel_same = after.kernel == before.kernel and after.kernel_mtime_ns == before.kernel_mtime_ns
    applies = len(samples["apply"]) + args.warmup
    apply_ok = not new_writes and after.revisions == before.revisions and kernel_same
    kinds = sorted({str(e["kind"]) for e in new_events})
    apply_facts = (
        f"{applies} applies, every one exit 3; new events {len(new_events)} "
        f"({', '.join(kinds) or 'none'}), of which `write` {len(new_writes)}; revisions "
        f"{before.revisions} -> {after.revisions}; sim-kernel.json "
        f"{'unchanged (bytes and mtime)' if kernel_same else 'CHANGED'}"
    )

    # Imports.
    forbidden = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    roots = sorted({m.split(".")[0] for m in forbidden})
    import_ok = not forbidden
    status = stats["status"]
    checks = [
        (
            "`flashctl status` <= 150 ms (agent running)",
            f"median {ms(status.median)} ms (p90 {ms(status.p90)}); "
            f"{_versus(status.median, floor_pass)} vs `pass`, "
            f"{_versus(status.median, floor)} vs `import typer, rich`",
            status.median <= STATUS_LIMIT,
        ),
        (
            "`flashctl status` imports neither pydantic nor networkx",
            f"{len(modules)} modules loaded at exit; "
            + (
                f"{len(forbidden)} of them from {', '.join(f'`{r}`' for r in roots)}"
                if forbidden
                else "none from pydantic, pydantic_core or networkx"
            ),
            import_ok,
        ),
        (
            f"`flashctl apply {example}` (unchanged) writes nothing",
            apply_facts,
            apply_ok,
        ),
    ]
    lines += ["", "Verdicts (medians):", ""]
    lines += table(["target", "measured", "verdict"], [[t, m, word(ok)] for t, m, ok in checks])

    # Where `status` spends its time.
    total_imports = sum(i.cumulative_s for i in imports if i.depth == 0)
    top = sorted(imports, key=lambda i: i.cumulative_s, reverse=True)[:12]
    lines += [
        "",
        f"Imports of `flashctl status` (`python -X importtime`, median of {args.import_runs} "
        f"runs; `. ` marks nesting): {len(imports)} modules, {ms(total_imports)} ms in all "
        f"(importtime inflates these) of a {ms(status.median)} ms run. Top 12 by cumulative "
        "time:",
        "",
    ]
    lines += table(["module", "cumulative ms", "self ms"], _import_rows(top))
    for root in ("pydantic", "networkx"):
        chain = importer_chain(imports, root)
        if chain:
            path = " <- ".join(f"`{i.module}`" for i in chain)
            cost = sum(
                i.self_s for i in imports if i.module.split(".")[0] in (root, f"{root}_core")
            )
            lines += [
                "",
                f"`{root}` is loaded by: {path} (top-level import, {ms(chain[-1].cumulative_s)} "
                f"ms cumulative; `{root}*` modules' own time {ms(cost)} ms).",
            ]
    labels = [label for label, _ in STAGES]
    labels += [
        "`run(['status'])`: parse args, connect, call the agent, render",
        "(apart) connect + hello + `status` call",
        "(apart) render `status_view` (100 columns)",
        "(apart, a second time) typer builds the click command tree (`get_command`)",
    ]
    lines += [
        "",
        f"Where `status` spends its time in one process (imports in stages, then the command "
        f"as the console script runs it, gc off; median of {args.import_runs} runs; in-process,"
        f" so without the interpreter start, which `python -c pass` shows: "
        f"{ms(floor_pass)} ms):",
        "",
    ]
    stage_rows = [[label, ms(seconds)] for label, seconds in zip(labels, stages, strict=True)]
    stage_rows.append(
        ["**total** (stages and `run`, not the apart rows)", ms(sum(stages[: len(STAGES) + 1]))]
    )
    lines += table(["stage", "ms"], stage_rows)
    lines += [
        "",
        f"The agent's share, from a client in the benchmark process (50 calls): connect + "
        f"hello median {ms(median(connects))} ms (p90 {ms(percentile(connects, 0.9))}), one "
        f"`status` call median {ms(median(statuses))} ms (p90 {ms(percentile(statuses, 0.9))}).",
    ]
    return "\n".join(lines) + "\n", all(ok for _, _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=20, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--example", default=DEFAULT_EXAMPLE, help="the chain file to apply")
    parser.add_argument("--import-runs", type=int, default=5, help="-X importtime / staged runs")
    add_record_args(parser, check="exit 1 if a target fails")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or args.import_runs < 1:
        parser.error("--rounds and --import-runs must be >= 1, --warmup >= 0")
    section, passed = report(args)
    return finish(args, "agent_cli", section, passed)


if __name__ == "__main__":
    sys.exit(main())
