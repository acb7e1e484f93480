"""Cold start: wall time of fresh `flashctl` processes against the interpreter's own floors.

    python benchmarks/cold_start.py [-n ROUNDS] [--example FILE ...] [--record] [--check]

Every round runs each command once as a new process, in an order rotated by one each round,
so that noise from the (shared, noisy) machine lands on all commands alike. The floors are
`python -c pass` and `python -c "import pydantic, networkx, yaml"` with the same interpreter,
measured in the same rounds. Targets (from the issue):

- `flashctl --help` takes at most 100 ms (absolute, median);
- `flashctl validate examples/<x>.yaml` takes at most 50 ms more than the import floor
  (median minus median).

It then runs `validate` under `-X importtime` a few times and lists the imports that cost
most, and those that cost most among the modules the import floor does not load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    REPO,
    add_record_args,
    finish,
    json_child,
    median,
    ms,
    percentile,
    section_head,
    table,
)
from _common import verdict as word

HELP_LIMIT = 0.100  # seconds, absolute
VALIDATE_MARGIN = 0.050  # seconds above the import floor
FLOOR_IMPORTS = "import pydantic, networkx, yaml"
# `import pydantic` is lazy (BaseModel loads on first use), so this is the floor of any
# program that defines a pydantic model; shown for information, not used by the verdicts.
MODELS_FLOOR = "from pydantic import BaseModel; import networkx, yaml"
DEFAULT_EXAMPLES = ("examples/linear.yaml", "examples/multi-thread.yaml")
# Variables that would change what a child process does or prints.
_SCRUB = ("PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "FLASHCTL_DEBUG")
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)\s*$")

# Where `validate` spends its time beyond the floor: one process imports in stages (each
# stage timed on its own; later stages find earlier modules loaded), then runs the command.
# Garbage collections are timed through gc.callbacks across all stages.
STAGES = (
    ("floor: pydantic (lazy), networkx, yaml", "import pydantic, networkx, yaml"),
    ("typer", "import typer"),
    ("flashctl.cli", "import flashctl.cli"),
    ("pydantic.main (BaseModel; the floor's `import pydantic` is lazy)", "import pydantic.main"),
    ("flashctl.chains.spec (pydantic model classes)", "import flashctl.chains.spec"),
    ("flashctl.chains.topology", "import flashctl.chains.topology"),
    ("flashctl.chains.graph", "import flashctl.chains.graph"),
    ("flashctl.chains.source", "import flashctl.chains.source"),
    ("flashctl.chains.loader, flashctl.inputs", "import flashctl.chains.loader, flashctl.inputs"),
)
_STAGES_CHILD = """
import contextlib, gc, io, json, sys, time
gc_clock = {"total": 0.0, "count": 0, "start": 0.0}
def on_gc(phase, info):
    if phase == "start":
        gc_clock["start"] = time.perf_counter()
    else:
        gc_clock["total"] += time.perf_counter() - gc_clock["start"]
        gc_clock["count"] += 1
gc.callbacks.append(on_gc)
times, gcs = [], []
def timed(action):
    gc_before, start = gc_clock["total"], time.perf_counter()
    result = action()
    times.append(time.perf_counter() - start)
    gcs.append(gc_clock["total"] - gc_before)
    return result
for statement in json.loads(sys.argv[1]):
    timed(lambda: exec(statement, {}))
import flashctl.cli
with contextlib.redirect_stdout(io.StringIO()):
    code = timed(lambda: flashctl.cli.run(sys.argv[2:]))
print(json.dumps({"times": times, "gcs": gcs, "code": code, "gc_n": gc_clock["count"]}))
"""


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    label: str  # as shown in the table
    argv: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stats:
    median: float
    p90: float
    low: float


@dataclass(frozen=True, slots=True)
class Import:
    module: str
    depth: int  # 0 for a top-level import
    self_s: float
    cumulative_s: float


@dataclass(frozen=True, slots=True)
class Launcher:
    """How `flashctl` is started: the console script, or `python -m flashctl`."""

    prefix: tuple[str, ...]  # argv before the subcommand
    traced: tuple[str, ...]  # argv after `python -X importtime`
    description: str


def _script_interpreter(script: Path) -> str | None:
    try:
        with script.open("rb") as handle:
            first = handle.readline(512).decode("utf-8", errors="replace").strip()
    except OSError:
        return None
    return first[2:].strip().split()[0] if first.startswith("#!") and len(first) > 2 else None


def find_launcher() -> Launcher:
    """The installed console script next to this interpreter (not a pyenv shim), else -m."""
    candidates = [Path(sysconfig.get_path("scripts")) / "flashctl"]
    found = shutil.which("flashctl")
    if found and "/shims/" not in found:
        candidates.append(Path(found))
    for script in candidates:
        if script.is_file() and os.access(script, os.X_OK):
            interpreter = _script_interpreter(script)
            note = f"console script `{script}`"
            if interpreter is not None:
                note += f" (`#!{interpreter}`"
                same = Path(interpreter).resolve() == Path(sys.executable).resolve()
                note += ")" if same else f", NOT the interpreter of the floors: {sys.executable})"
            return Launcher((str(script),), (str(script),), note)
    note = "`python -m flashctl` (no `flashctl` console script found; `pip install -e .`)"
    return Launcher((sys.executable, "-m", "flashctl"), ("-m", "flashctl"), note)


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["COLUMNS"] = "100"  # the help text wraps the same way whatever the terminal
    return env


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
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise SystemExit(f"{case.label} exited with {done.returncode}:\n{stderr}")
    return elapsed


def measure(cases: list[Case], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved rounds: round r runs the cases starting at case r mod k."""
    env = child_env()
    samples: dict[str, list[float]] = {case.key: [] for case in cases}
    for number in range(warmup + rounds):
        shift = number % len(cases)
        for case in cases[shift:] + cases[:shift]:
            elapsed = run_once(case, env)
            if number >= warmup:
                samples[case.key].append(elapsed)
    return samples


def import_profile(argv_tail: tuple[str, ...], runs: int) -> dict[str, Import]:
    """Per module, the median self and cumulative import time of `python -X importtime ...`."""
    env = child_env()
    seen: dict[str, list[tuple[int, int, int]]] = {}
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *argv_tail],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"-X importtime {' '.join(argv_tail)} failed:\n{done.stderr}")
        for line in done.stderr.splitlines():
            found = _IMPORT_LINE.match(line)
            if found:
                own, total, indent, module = found.groups()
                depth = max(0, (len(indent) - 1) // 2)
                seen.setdefault(module, []).append((int(own), int(total), depth))
    return {
        module: Import(
            module,
            rows[0][2],
            median([r[0] for r in rows]) / 1e6,
            median([r[1] for r in rows]) / 1e6,
        )
        for module, rows in seen.items()
    }


@dataclass(frozen=True, slots=True)
class Stage:
    label: str
    seconds: float  # median
    gc_seconds: float  # median time in garbage collection during the stage


@dataclass(frozen=True, slots=True)
class Breakdown:
    stages: list[Stage]
    gc_collections: float


def stage_breakdown(command: tuple[str, ...], runs: int) -> Breakdown:
    """Median time of each import stage, then of `run(command)`, in fresh processes."""
    env = child_env()
    per_run: list[list[float]] = []
    gc_per_run: list[list[float]] = []
    gc_counts: list[float] = []
    statements = json.dumps([statement for _, statement in STAGES])
    for _ in range(runs):
        argv = [sys.executable, "-c", _STAGES_CHILD, statements, *command]
        result = json_child(argv, "the staged run failed", env)
        if result["code"] != 0:
            raise SystemExit(f"flashctl {' '.join(command)} returned {result['code']}")
        per_run.append([float(x) for x in result["times"]])
        gc_per_run.append([float(x) for x in result["gcs"]])
        gc_counts.append(float(result["gc_n"]))
    labels = [label for label, _ in STAGES] + [f"`run({list(command)})` (parse args, load)"]
    stages = [
        Stage(label, median([r[i] for r in per_run]), median([r[i] for r in gc_per_run]))
        for i, label in enumerate(labels)
    ]
    return Breakdown(stages, median(gc_counts))


def _stats(values: list[float]) -> Stats:
    return Stats(median(values), percentile(values, 0.9), min(values))


def _versus(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x, {(value - floor) * 1000:+.1f} ms"


def _import_rows(imports: list[Import]) -> list[list[str]]:
    return [
        [f"{'. ' * item.depth}`{item.module}`", ms(item.cumulative_s), ms(item.self_s)]
        for item in imports
    ]


def build_cases(launcher: Launcher, examples: list[str]) -> list[Case]:
    python = sys.executable
    cases = [
        Case("pass", "`python -c pass`", (python, "-c", "pass")),
        Case("floor", f'`python -c "{FLOOR_IMPORTS}"`', (python, "-c", FLOOR_IMPORTS)),
        Case(
            "models",
            f'`python -c "{MODELS_FLOOR}"` (info)',
            (python, "-c", MODELS_FLOOR),
        ),
        Case("typer", '`python -c "import typer"` (info)', (python, "-c", "import typer")),
        Case("help", "`flashctl --help`", (*launcher.prefix, "--help")),
    ]
    for example in examples:
        label = f"`flashctl validate {example}`"
        cases.append(Case(f"validate:{example}", label, (*launcher.prefix, "validate", example)))
    return cases


def report(args: argparse.Namespace) -> tuple[str, bool]:
    launcher = find_launcher()
    examples: list[str] = args.example or list(DEFAULT_EXAMPLES)
    for example in examples:
        if not (REPO / example).is_file():
            raise SystemExit(f"{example}: no such file (paths are relative to {REPO})")
    cases = build_cases(launcher, examples)
    print(f"timing {len(cases)} commands x {args.rounds} rounds (+{args.warmup} warm-up) ...")
    samples = measure(cases, args.rounds, args.warmup)
    stats = {key: _stats(values) for key, values in samples.items()}
    floor_pass, floor_imports = stats["pass"].median, stats["floor"].median

    lines = section_head("## cold_start: fresh-process wall time")
    lines += [
        f"- flashctl started as: {launcher.description}",
        f"- {args.rounds} interleaved rounds after {args.warmup} warm-up rounds; each time is "
        "`subprocess.run` wall time (fork/exec included, the same for every row)",
        "",
    ]
    rows = []
    for case in cases:
        s = stats[case.key]
        rows.append(
            [
                case.label,
                ms(s.median),
                ms(s.p90),
                ms(s.low),
                _versus(s.median, floor_pass),
                _versus(s.median, floor_imports),
            ]
        )
    header = ["command", "median ms", "p90 ms", "min ms", "vs `pass`", "vs import floor"]
    lines += table(header, rows)

    help_s = stats["help"]
    checks = [
        (
            "`flashctl --help` <= 100 ms",
            f"median {ms(help_s.median)} ms (p90 {ms(help_s.p90)}); "
            f"{_versus(help_s.median, floor_pass)} vs `pass`",
            help_s.median <= HELP_LIMIT,
        )
    ]
    for example in examples:
        s = stats[f"validate:{example}"]
        over = s.median - floor_imports
        checks.append(
            (
                f"`flashctl validate {example}` <= import floor + 50 ms",
                f"{over * 1000:+.1f} ms over the floor ({s.median / floor_imports:.2f}x; "
                f"floor {ms(floor_imports)} ms, p90 over floor "
                f"{(s.p90 - stats['floor'].p90) * 1000:+.1f} ms)",
                over <= VALIDATE_MARGIN,
            )
        )
    lines += ["", "Verdicts (medians):", ""]
    lines += table(["target", "measured", "verdict"], [[t, m, word(ok)] for t, m, ok in checks])

    traced_example = examples[0]
    runs = args.import_runs
    print(f"staged run of validate {traced_example} ({runs} runs) ...")
    breakdown = stage_breakdown(("validate", traced_example), runs)
    staged_total = sum(stage.seconds for stage in breakdown.stages)
    staged_gc = sum(stage.gc_seconds for stage in breakdown.stages)
    lines += [
        "",
        f"Where `validate {traced_example}` spends its time (one process imports in stages, "
        f"then runs the command; median of {runs} runs; in-process, so no interpreter start):",
        "",
    ]
    stage_rows = [[s.label, ms(s.seconds), ms(s.gc_seconds)] for s in breakdown.stages]
    stage_rows.append(
        [
            f"**total** ({breakdown.gc_collections:.0f} garbage collections)",
            ms(staged_total),
            ms(staged_gc),
        ]
    )
    lines += table(["stage", "ms", "of which gc ms"], stage_rows)
    print(f"profiling imports of validate {traced_example} ({runs} runs) ...")
    traced = import_profile((*launcher.traced, "validate", traced_example), runs)
    floor_modules = set(import_profile(("-c", FLOOR_IMPORTS), runs))
    top = sorted(traced.values(), key=lambda i: i.cumulative_s, reverse=True)[:10]
    extra = [i for i in traced.values() if i.module not in floor_modules]
    extra_top = sorted(extra, key=lambda i: i.self_s, reverse=True)[:10]
    total = sum(i.cumulative_s for i in traced.values() if i.depth == 0)
    extra_total = sum(i.self_s for i in extra)
    validate_wall = stats[f"validate:{traced_example}"].median
    lines += [
        "",
        f"Imports of `flashctl validate {traced_example}` "
        f"(`python -X importtime`, median of {runs} runs; `. ` marks nesting depth):",
        f"all imports {ms(total)} ms of a {ms(validate_wall)} ms run; "
        f"{len(extra)} modules that the import floor does not load cost {ms(extra_total)} ms "
        "(self time; `-X importtime` itself inflates these, and a module's self time "
        "includes any garbage collection that ran while it was imported).",
        "",
        "Top 10 by cumulative time:",
        "",
    ]
    lines += table(["module", "cumulative ms", "self ms"], _import_rows(top))
    lines += ["", "Top 10 by self time among modules the import floor does not load:", ""]
    lines += table(["module", "cumulative ms", "self ms"], _import_rows(extra_top))
    help_imports = import_profile((*launcher.traced, "--help"), runs)
    help_top = sorted(help_imports.values(), key=lambda i: i.cumulative_s, reverse=True)[:5]
    help_total = sum(i.cumulative_s for i in help_imports.values() if i.depth == 0)
    lines += [
        "",
        f"Imports of `flashctl --help`: {len(help_imports)} modules, {ms(help_total)} ms "
        f"under `-X importtime` (median of {runs} runs); top 5 by cumulative time:",
        "",
    ]
    lines += table(["module", "cumulative ms", "self ms"], _import_rows(help_top))
    return "\n".join(lines) + "\n", all(ok for _, _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=20, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument(
        "--example",
        action="append",
        metavar="FILE",
        help=f"chain file for `validate` (repeatable; default: {', '.join(DEFAULT_EXAMPLES)})",
    )
    parser.add_argument("--import-runs", type=int, default=5, help="-X importtime runs")
    add_record_args(parser, check="exit 1 if a target fails")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or args.import_runs < 1:
        parser.error("--rounds and --import-runs must be >= 1, --warmup >= 0")
    section, passed = report(args)
    return finish(args, "cold_start", section, passed)


if __name__ == "__main__":
    sys.exit(main())
