"""Big chain: validate, plan and diff a synthetic 10,000-socket chain.

    python benchmarks/big_chain.py [--sockets N] [--runs R] [--profile [N]] [--no-cli] [--record]

Two chains are generated as YAML text (flow-style NFs and links, like examples/), each with
`spec.sim.maxSockets` raised to the socket count:

- `line`: NFs x threads in a line (nic -> nf0 -> nf1 -> ... -> nic), affine links, UMEM
  groups of 50 consecutive NFs (so one copy hop every 50 NFs);
- `tree`: the same NFs as a complete tree of fan-out 4 through named outputs (`o0`..`o3`;
  output `o0` uses `mapping: spread`, the others affine), leaves to the NIC, one UMEM per
  subtree below depth 2.

A run times, per chain: `load_sources` (YAML with positions, pydantic, graph checks),
`projected_inventory` + `plan`, `diff` against no observed rules, and `diff` against the
rules those writes leave (which must be empty); and, as the yardstick, `yaml.load` of the
same text with libyaml's `CSafeLoader`. Target (from the issue): load + plan + diff <= 1 s.

Every measured run is the first pipeline of a fresh process (imports not timed), as in
`flashctl validate` / `plan`; runs alternate between the chains; figures are medians. A
second view repeats the pipeline in one process, as a long-running agent would, and counts
the objects each repetition leaves alive.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from _common import (
    REPO,
    GcClock,
    add_record_args,
    finish,
    import_path,
    json_child,
    median,
    ms,
    percentile,
    section_head,
    table,
)
from _common import verdict as word

T = TypeVar("T")
TARGET = 1.0  # seconds for load + plan + both diffs
UMEM_SIZE = 50  # NFs per UMEM group in the line
FANOUT = 4
UMEM_DEPTH = 2  # the tree's UMEM groups are its subtrees below this depth
# Stages in the order they run; the first is the yardstick, the next four make the total.
BASELINE = "yaml.load (CSafeLoader)"
PIPELINE = ("load_sources", "projected_inventory + plan", "diff vs empty", "diff vs applied")
# The parts of load_sources and plan, timed on their own afterwards (not in the total).
PARTS = (
    "load: parse_documents",
    "load: Chain.model_validate",
    "load: graph.check",
    "plan: topology.expand",
    "plan: projected_inventory",
    "plan: plan",
)


# --------------------------------------------------------------------------- chains


def _nf_line(name: str, first_queue: int, threads: int, outputs: list[str] | None) -> str:
    queues = ", ".join(str(first_queue + t) for t in range(threads))
    fields = [f"queues: [{queues}]"]
    if outputs is not None:
        fields.append(f"outputs: [{', '.join(outputs)}]")
    fields.append("sim: {capacity: 10Mpps}")
    return f"    {name}: {{{', '.join(fields)}}}"


def _header(name: str, sockets: int) -> list[str]:
    return [
        "apiVersion: flashctl/v1",
        "kind: Chain",
        f"metadata: {{name: {name}, description: synthetic {sockets}-socket chain}}",
        "spec:",
        "  interface: eth0",
        f"  sim: {{maxSockets: {sockets}}}",
        "  traffic:",
        "    - {into: nf0, rate: 10Mpps, size: 64B}",
    ]


def _umem_lines(groups: dict[str, list[int]]) -> list[str]:
    lines = ["  umems:"]
    for group, members in groups.items():
        names = ", ".join(f"nf{i}" for i in members)
        lines.append(f"    - {{name: {group}, nfs: [{names}]}}")
    return lines


def line_chain(nfs: int, threads: int) -> str:
    groups: dict[str, list[int]] = {}
    for i in range(nfs):
        groups.setdefault(f"u{i // UMEM_SIZE}", []).append(i)
    lines = [*_header("big-line", nfs * threads), *_umem_lines(groups), "  nfs:"]
    lines += [_nf_line(f"nf{i}", i * threads, threads, None) for i in range(nfs)]
    lines += ["  links:", "    - {from: nic, to: nf0}"]
    lines += [f"    - {{from: nf{i}.out, to: nf{i + 1}}}" for i in range(nfs - 1)]
    lines.append(f"    - {{from: nf{nfs - 1}, to: nic}}")
    return "\n".join(lines) + "\n"


def _children(i: int, nfs: int) -> list[int]:
    return [c for c in range(FANOUT * i + 1, FANOUT * i + FANOUT + 1) if c < nfs]


def tree_chain(nfs: int, threads: int) -> str:
    depth = [0] * nfs
    top = [0] * nfs  # the ancestor at UMEM_DEPTH (or the node itself above it)
    groups: dict[str, list[int]] = {}
    for i in range(nfs):
        if i:
            parent = (i - 1) // FANOUT
            depth[i] = depth[parent] + 1
            top[i] = i if depth[i] == UMEM_DEPTH else top[parent]
        group = "top" if depth[i] < UMEM_DEPTH else f"t{top[i]}"
        groups.setdefault(group, []).append(i)
    lines = [*_header("big-tree", nfs * threads), *_umem_lines(groups), "  nfs:"]
    links = ["  links:", "    - {from: nic, to: nf0}"]
    for i in range(nfs):
        children = _children(i, nfs)
        outputs = [f"o{k}" for k in range(len(children))] or None
        lines.append(_nf_line(f"nf{i}", i * threads, threads, outputs))
        for k, child in enumerate(children):
            mapping = ", mapping: spread" if k == 0 else ""
            links.append(f"    - {{from: nf{i}.o{k}, to: nf{child}{mapping}}}")
        if not children:
            links.append(f"    - {{from: nf{i}, to: nic}}")
    return "\n".join([*lines, *links]) + "\n"


# ---------------------------------------------------------------------------- timing


@dataclass(slots=True)
class Sample:
    seconds: dict[str, float]
    gc_seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds[stage] for stage in PIPELINE)

    @property
    def total_gc(self) -> float:
        return sum(self.gc_seconds[stage] for stage in PIPELINE)


@dataclass(frozen=True, slots=True)
class Facts:
    """What one pipeline run produced, checked for sanity and shown in the report."""

    nfs: int
    sockets: int
    links: int
    warnings: int
    rules: int
    hops: int
    writes: int
    pending: int
    yaml_bytes: int


class Timer:
    def __init__(self, clock: GcClock) -> None:
        self.clock = clock
        self.sample = Sample({}, {})

    def __call__(self, stage: str, action: Callable[[], T]) -> T:
        gc_before = self.clock.total
        start = time.perf_counter()
        result = action()
        self.sample.seconds[stage] = time.perf_counter() - start
        self.sample.gc_seconds[stage] = self.clock.total - gc_before
        return result


def pipeline(name: str, text: str, timed: Timer, parts: bool) -> Facts:
    """One load + plan + diff + diff (and the parts, if asked), each stage timed."""
    import_path()
    from flashctl.chains import graph
    from flashctl.chains.diff import apply_changes, diff
    from flashctl.chains.loader import load_sources
    from flashctl.chains.planner import plan, projected_inventory
    from flashctl.chains.source import parse_documents
    from flashctl.chains.spec import Chain
    from flashctl.chains.topology import expand

    loaded = timed(PIPELINE[0], lambda: load_sources([(name, text)]))
    chain = loaded.chains[0].chain
    made = timed(PIPELINE[1], lambda: plan(chain, projected_inventory(chain)))
    changes = timed(PIPELINE[2], lambda: diff(made, {}))
    observed = apply_changes({}, changes)
    again = timed(PIPELINE[3], lambda: diff(made, observed))
    if again.writes:
        raise SystemExit(f"{name}: diff against the applied rules is not empty: {len(again)}")
    topology = expand(chain)
    if parts:  # for whoever optimises; their sum differs a little from the stages above
        document = timed(PARTS[0], lambda: parse_documents(text, name)[0])
        model = timed(PARTS[1], lambda: Chain.model_validate(document.data))
        timed(PARTS[2], lambda: graph.check(model))
        timed(PARTS[3], lambda: expand(model))
        inventory = timed(PARTS[4], lambda: projected_inventory(model))
        timed(PARTS[5], lambda: plan(model, inventory))
    return Facts(
        nfs=len(chain.spec.nfs),
        sockets=len(topology.sockets),
        links=len(chain.spec.links),
        warnings=len(loaded.warnings),
        rules=len(made.rules),
        hops=len(topology.hops),
        writes=len(changes.writes),
        pending=len(made.pending),
        yaml_bytes=len(text.encode()),
    )


def child_once(name: str, path: Path) -> dict[str, Any]:
    """In a fresh process: the yardstick, then the first pipeline of this process."""
    import_path()
    import flashctl.chains.loader  # noqa: F401  (imports are not what this measures)

    text = path.read_text(encoding="utf-8")
    clock = GcClock()
    with clock.installed():
        timed = Timer(clock)
        timed(BASELINE, lambda: yaml.load(text, Loader=yaml.CSafeLoader))
        gc.collect()
        facts = pipeline(name, text, timed, parts=True)
    return {"sample": asdict(timed.sample), "facts": asdict(facts)}


def child_repeat(name: str, path: Path, repeat: int) -> dict[str, Any]:
    """In a fresh process: the pipeline `repeat` times, and what each leaves alive."""
    import_path()
    import flashctl.chains.loader  # noqa: F401

    text = path.read_text(encoding="utf-8")
    clock = GcClock()
    totals: list[float] = []
    gcs: list[float] = []
    alive: list[int] = []
    nodes: list[int] = []
    with clock.installed():
        gc.collect()
        base = len(gc.get_objects())
        for _ in range(repeat):
            timed = Timer(clock)
            pipeline(name, text, timed, parts=False)
            totals.append(timed.sample.total)
            gcs.append(timed.sample.total_gc)
            gc.collect()
            objects = gc.get_objects()
            alive.append(len(objects) - base)
            nodes.append(sum(1 for o in objects if type(o).__name__ == "ScalarNode"))
            del objects
    return {"totals": totals, "gcs": gcs, "alive": alive, "nodes": nodes}


def _spawn(*args: str) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), *args]
    return json_child(argv, f"child {' '.join(args)} failed", stderr_tail=3000)


def profile(name: str, text: str, limit: int) -> str:
    """cProfile of one pipeline run (load, plan, both diffs), top functions by own time."""
    import_path()
    from flashctl.chains.diff import apply_changes, diff
    from flashctl.chains.loader import load_sources
    from flashctl.chains.planner import plan, projected_inventory

    profiler = cProfile.Profile()
    profiler.enable()
    loaded = load_sources([(name, text)])
    chain = loaded.chains[0].chain
    made = plan(chain, projected_inventory(chain))
    diff(made, apply_changes({}, diff(made, {})))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def cli_times(paths: dict[str, Path], runs: int) -> list[tuple[str, float, float]]:
    """Fresh-process `flashctl validate` and `flashctl plan -o json` of the chains."""
    from cold_start import child_env, find_launcher

    launcher = find_launcher()
    env = child_env()
    commands = [
        (name, (verb, str(path), *extra))
        for name, path in paths.items()
        for verb, extra in (("validate", ()), ("plan", ("-o", "json")))
    ]
    samples: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for (_, command), values in zip(commands, samples, strict=True):
            start = time.perf_counter()
            done = subprocess.run(
                [*launcher.prefix, *command],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
            )
            values.append(time.perf_counter() - start)
            if done.returncode != 0:
                stderr = done.stderr.decode(errors="replace")[-2000:]
                raise SystemExit(f"flashctl {' '.join(command)} failed:\n{stderr}")
    out = []
    for (name, command), values in zip(commands, samples, strict=True):
        shown = " ".join([command[0], f"big-{name}.yaml", *command[2:]])
        out.append((f"`flashctl {shown}`", median(values), percentile(values, 0.9)))
    return out


# ---------------------------------------------------------------------------- report


def _facts_line(name: str, facts: Facts) -> str:
    return (
        f"- `{name}`: {facts.nfs} NFs, {facts.sockets} sockets, {facts.links} links, "
        f"{facts.hops} socket hops, {facts.yaml_bytes / 1024:.0f} KiB of YAML, "
        f"{facts.warnings} warnings; plan: {facts.rules} rules ({facts.pending} pending), "
        f"diff vs empty: {facts.writes} writes, diff vs applied: 0 writes"
    )


def _stage_table(runs: list[Sample]) -> tuple[list[str], float, float]:
    """The per-stage table of one chain, its median total and p90 total."""
    totals = [s.total for s in runs]
    total = median(totals)
    baseline = median([s.seconds[BASELINE] for s in runs])
    rows = []
    for stage in (BASELINE, *PIPELINE, *PARTS):
        seconds = median([s.seconds[stage] for s in runs])
        spent_gc = median([s.gc_seconds[stage] for s in runs])
        shown = stage if stage in PIPELINE else f"({stage})"
        rows.append([shown, ms(seconds), ms(spent_gc), f"{seconds / baseline:.2f}x"])
        if stage == PIPELINE[-1]:
            total_gc = median([s.total_gc for s in runs])
            rows.append(
                [
                    "**load + plan + diffs**",
                    f"**{ms(total)}**",
                    ms(total_gc),
                    f"{total / baseline:.2f}x",
                ]
            )
    header = ["stage", "median ms", "of which gc ms", "vs yaml.load"]
    return table(header, rows), total, percentile(totals, 0.9)


def write_chains(folder: Path, sockets: int, threads: int) -> dict[str, Path]:
    nfs = sockets // threads
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"line": folder / "big-line.yaml", "tree": folder / "big-tree.yaml"}
    paths["line"].write_text(line_chain(nfs, threads), encoding="utf-8")
    paths["tree"].write_text(tree_chain(nfs, threads), encoding="utf-8")
    return paths


def report(args: argparse.Namespace, paths: dict[str, Path]) -> tuple[str, bool]:
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    facts: dict[str, Facts] = {}
    for number in range(args.runs):
        print(f"fresh-process run {number + 1}/{args.runs} ...", flush=True)
        for name, path in paths.items():
            result = _spawn("--child-once", name, str(path))
            samples[name].append(Sample(**result["sample"]))
            facts[name] = Facts(**result["facts"])
    for name, found in facts.items():
        if found.sockets != args.sockets - args.sockets % args.threads or found.pending:
            raise SystemExit(f"{name}: unexpected plan: {found}")

    title = f"## big_chain: validate, plan and diff a {args.sockets:,}-socket chain"
    lines = section_head(title)
    lines += [
        f"- {args.runs} runs per chain, alternating chains; each run is the first pipeline of "
        "a fresh process (imports not timed, gc enabled, its time shown separately); medians",
        *(_facts_line(name, facts[name]) for name in paths),
        "",
    ]
    checks: list[tuple[str, str, bool]] = []
    for name in paths:
        rows, total, total_p90 = _stage_table(samples[name])
        baseline = median([s.seconds[BASELINE] for s in samples[name]])
        lines += [f"`{name}` (stages in parentheses are informational, not in the total):", ""]
        lines += [*rows, ""]
        checks.append(
            (
                f"`{name}`: load + plan + diffs <= {TARGET:.0f} s",
                f"median {ms(total)} ms (p90 {ms(total_p90)}); {total / baseline:.2f}x yaml.load",
                total <= TARGET,
            )
        )
    lines += ["Verdicts:", ""]
    lines += table(["target", "measured", "verdict"], [[t, m, word(ok)] for t, m, ok in checks])

    if args.repeat:
        print(f"repeating the pipeline {args.repeat} times in one process ...", flush=True)
        lines += [
            "",
            f"The same pipeline repeated {args.repeat} times in one process (a long-running "
            "agent's view): total ms of each repetition (of which gc), and the gc-tracked "
            "objects left alive after it (after `gc.collect()`; `ScalarNode` counted apart):",
            "",
        ]
        repeat_rows = []
        for name, path in paths.items():
            repeated = _spawn("--child-repeat", name, str(path), str(args.repeat))
            for index, total in enumerate(repeated["totals"]):
                repeat_rows.append(
                    [
                        f"`{name}` #{index + 1}",
                        f"{ms(total)} ({ms(repeated['gcs'][index])})",
                        f"{repeated['alive'][index]:,}",
                        f"{repeated['nodes'][index]:,}",
                    ]
                )
        header = ["repetition", "total ms (gc)", "objects left alive", "of which ScalarNode"]
        lines += table(header, repeat_rows)

    if args.cli:
        print("timing the CLI on the generated files ...", flush=True)
        cli_rows = [
            [label, ms(med), ms(p90)] for label, med, p90 in cli_times(paths, args.cli_runs)
        ]
        lines += [
            "",
            f"Fresh `flashctl` processes on the same files (informational; interpreter start and "
            f"imports included; median of {args.cli_runs}):",
            "",
        ]
        lines += table(["command", "median ms", "p90 ms"], cli_rows)
    if args.profile:
        for name, path in paths.items():
            text = path.read_text(encoding="utf-8")
            lines += ["", f"cProfile of one `{name}` pipeline (first in this process):", ""]
            lines += ["```", *profile(name, text, args.profile).strip("\n").splitlines(), "```"]
    return "\n".join(lines) + "\n", all(ok for _, _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000, help="sockets per chain")
    parser.add_argument("--threads", type=int, default=4, help="threads (sockets) per NF")
    parser.add_argument("--runs", type=int, default=5, help="fresh-process runs per chain")
    parser.add_argument(
        "--repeat",
        type=int,
        default=4,
        help="pipelines in one process for the agent view (0: skip)",
    )
    parser.add_argument(
        "--cli",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time `flashctl validate` / `plan -o json` in fresh processes",
    )
    parser.add_argument("--cli-runs", type=int, default=3, help="runs of each CLI command")
    parser.add_argument(
        "--profile", type=int, nargs="?", const=20, default=0, metavar="N", help="cProfile top N"
    )
    parser.add_argument("--write", type=Path, metavar="DIR", help="keep the chain files here")
    add_record_args(parser, check="exit 1 if the target fails")
    parser.add_argument("--child-once", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--child-repeat", nargs=3, metavar=("NAME", "FILE", "K"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child_once:
        name, file = args.child_once
        print(json.dumps(child_once(name, Path(file))))
        return 0
    if args.child_repeat:
        name, file, repeat = args.child_repeat
        print(json.dumps(child_repeat(name, Path(file), int(repeat))))
        return 0
    if args.runs < 1 or args.cli_runs < 1 or args.repeat < 0:
        parser.error("--runs and --cli-runs must be >= 1, --repeat >= 0")
    if args.threads < 1 or not args.threads <= args.sockets <= 1 << 16:
        parser.error("need --threads >= 1 and --threads <= --sockets <= 65536 (one queue each)")
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_chains(args.write or Path(scratch), args.sockets, args.threads)
        section, passed = report(args, paths)
    return finish(args, "big_chain", section, passed)


if __name__ == "__main__":
    sys.exit(main())
