"""`flashctl simulate` wall time: 10 s of model time of an 8-NF chain at 10 Mpps, fresh processes.

    python benchmarks/simulate_speed.py [-n ROUNDS] [--warmup W] [--record] [--check]

The chain is nic -> nf0 -> ... -> nf7 -> nic in one UMEM with default NFs (~21 Mpps a thread,
`flashctl.backends.dataplane.Calibration`), offered 10 Mpps of 64 B frames: the shape of the
issue's target, "`flashctl simulate` of 10 s of an 8-NF chain at 10 Mpps: <= 2 s wall". Each
round runs, as new processes and in an order rotated by one each round:

- `flashctl simulate chain.yaml --out DIR` (the target: summary and the four plot files);
- the same with `--no-plots` (what the plots cost);
- `flashctl validate chain.yaml` (the baseline: start-up, imports, loading the chain);
- `python -c "import matplotlib.figure"` (the floor of drawing anything).

Then, once and in-process, where a run's time goes (model, summary, each plot), and the same
chain with nf4 capped at 8 Mpps (saturated: the model's cycle detection finds no repeating
state, so every step is computed) for `--saturated-seconds` of model time, to show what a
backpressured chain costs per model second.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from _common import REPO, add_record_args, finish, median, percentile, section_head, table
from _common import verdict as word
from cold_start import child_env, find_launcher

NFS = 8
TARGET = 2.0  # seconds, median wall of the simulate command
PLOT_FILES = ("throughput.png", "throughput.svg", "rings.png", "rings.svg")


def chain_document(capped: str | None = None) -> dict[str, Any]:
    names = [f"nf{i}" for i in range(NFS)]
    nfs: dict[str, Any] = {name: {"queues": [i]} for i, name in enumerate(names)}
    if capped is not None:
        nfs["nf4"]["sim"] = {"capacity": capped}
    links = [{"from": "nic", "to": names[0]}]
    links += [{"from": a, "to": b} for a, b in pairwise(names)]
    links.append({"from": names[-1], "to": "nic"})
    return {
        "apiVersion": "flashctl/v1",
        "kind": "Chain",
        "metadata": {"name": "speed"},
        "spec": {
            "interface": "eth0",
            "umems": [{"name": "chain", "nfs": names}],
            "nfs": nfs,
            "links": links,
            "traffic": [{"into": names[0], "rate": "10Mpps", "size": 64}],
        },
    }


def run_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited with {done.returncode}:\n{done.stderr.decode()}")
    return elapsed


def measure(cases: dict[str, list[str]], rounds: int, warmup: int) -> dict[str, list[float]]:
    env = child_env()
    keys = list(cases)
    samples: dict[str, list[float]] = {key: [] for key in keys}
    for number in range(warmup + rounds):
        shift = number % len(keys)
        for key in keys[shift:] + keys[:shift]:
            elapsed = run_once(cases[key], env)
            if number >= warmup:
                samples[key].append(elapsed)
    return samples


def breakdown(path: Path, out: Path) -> list[tuple[str, float]]:
    """One in-process run, timed by stage (imports first, so later stages find them loaded)."""
    stages: list[tuple[str, float]] = []

    def timed(label: str, action: Any) -> Any:
        start = time.perf_counter()
        result = action()
        stages.append((label, time.perf_counter() - start))
        return result

    timed("import flashctl.simulate (pydantic, chain core, data plane)", _import_simulate)
    chain = timed("load and check the chain file", lambda: _load(path))
    from flashctl.simulate import simulate

    sim = timed("simulate(): 10 s of model time, 300 samples, summary", lambda: simulate(chain))
    timed("import matplotlib (Agg), rich views", _import_views)
    from flashctl import simviews

    for name, make in (
        ("throughput", simviews.throughput_figure),
        ("rings", simviews.rings_figure),
    ):
        timed(f"{name} figure: PNG + SVG", lambda make=make, name=name: _draw(make(sim), out, name))
    return stages


def _import_simulate() -> None:
    import flashctl.simulate  # noqa: F401


def _import_views() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    import flashctl.simviews  # noqa: F401


def _load(path: Path) -> Any:
    from flashctl.chains.loader import load_sources
    from flashctl.inputs import read_sources

    return load_sources(read_sources([str(path)])).chains[0].chain


def _draw(figure: Any, out: Path, name: str) -> None:
    from flashctl.simviews import _save

    _save(figure, out, f"bench-{name}")


def saturated(seconds: float) -> tuple[float, int, int, float]:
    """Wall seconds, steps, computed steps and delivered Mpps of the capped chain."""
    from flashctl.chains.spec import Chain
    from flashctl.simulate import simulate

    chain = Chain.model_validate(chain_document(capped="8Mpps"))
    start = time.perf_counter()
    sim = simulate(chain, duration=seconds)
    wall = time.perf_counter() - start
    return wall, sim.steps, sim.computed_steps, sim.summary.delivered_pps / 1e6


def report(args: argparse.Namespace, work: Path) -> tuple[str, bool]:
    path = work / "speed.yaml"
    path.write_text(yaml.safe_dump(chain_document(), sort_keys=False), encoding="utf-8")
    out = work / "plots"
    flashctl = list(find_launcher().prefix)
    cases = {
        "simulate": [*flashctl, "simulate", str(path), "--out", str(out), "-q"],
        "no-plots": [*flashctl, "simulate", str(path), "--no-plots", "-q"],
        "validate": [*flashctl, "validate", str(path)],
        "matplotlib": [sys.executable, "-c", "import matplotlib.figure"],
    }
    labels = {
        "simulate": "`flashctl simulate speed.yaml --out DIR` (10 s, 8 NFs, 10 Mpps)",
        "no-plots": "`flashctl simulate speed.yaml --no-plots` (info)",
        "validate": "`flashctl validate speed.yaml` (baseline)",
        "matplotlib": '`python -c "import matplotlib.figure"` (info: floor of plotting)',
    }
    print(f"timing {len(cases)} commands x {args.rounds} rounds (+{args.warmup} warm-up) ...")
    samples = measure(cases, args.rounds, args.warmup)
    missing = [name for name in PLOT_FILES if not (out / f"speed-{name}").is_file()]
    if missing:
        raise SystemExit(f"simulate wrote no {', '.join(missing)} in {out}")
    base = median(samples["validate"])
    rows = [
        [
            labels[key],
            f"{median(values):.3f}",
            f"{percentile(values, 0.9):.3f}",
            f"{min(values):.3f}",
            f"{median(values) / base:.2f}x, {median(values) - base:+.3f} s",
        ]
        for key, values in samples.items()
    ]
    target = median(samples["simulate"])
    lines = section_head("## simulate_speed: `flashctl simulate` wall time")
    lines += [
        f"- {args.rounds} interleaved rounds after {args.warmup} warm-up; each time is "
        "`subprocess.run` wall time of a fresh process",
        "- chain: nic -> nf0 -> ... -> nf7 -> nic, one UMEM, default NFs, 10 Mpps of 64 B",
        "",
    ]
    lines += table(["command", "median s", "p90 s", "min s", "vs validate"], rows)
    ok = target <= TARGET
    lines += ["", "Verdict (median):", ""]
    lines += table(
        ["target", "measured", "verdict"],
        [["`flashctl simulate` of 10 s, 8 NFs, 10 Mpps <= 2 s", f"{target:.3f} s", word(ok)]],
    )
    print("in-process breakdown ...")
    stages = breakdown(path, work / "breakdown")
    lines += [
        "",
        "Where one run spends its time (in-process, one run, stages in order; the figures are "
        "drawn one after the other here, while the command draws them in two forked processes "
        "when it has two cores):",
        "",
    ]
    lines += table(["stage", "s"], [[label, f"{s:.3f}"] for label, s in stages])
    print(f"saturated variant ({args.saturated_seconds:g} s of model time) ...")
    runs = [saturated(args.saturated_seconds) for _ in range(args.saturated_runs)]
    wall = statistics.median(r[0] for r in runs)
    _, steps, computed, delivered = runs[0]
    lines += [
        "",
        f"Saturated variant (info): nf4 capped at 8 Mpps, {args.saturated_seconds:g} s of model "
        f"time, `simulate()` in-process without plots, median of {args.saturated_runs}: "
        f"{wall:.2f} s wall ({wall / args.saturated_seconds:.2f} s per model second; "
        f"{computed:,} of {steps:,} steps computed; delivers {delivered:.2f} Mpps). The data "
        "plane finds no exactly repeating state in a backpressured chain, so every step is "
        "computed: 10 s of it would take about "
        f"{10 * wall / args.saturated_seconds:.0f} s.",
    ]
    return "\n".join(lines) + "\n", ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=7, help="measured rounds")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first")
    parser.add_argument("--saturated-seconds", type=float, default=1.0)
    parser.add_argument("--saturated-runs", type=int, default=3)
    add_record_args(parser, check="exit 1 if the target fails")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or args.saturated_runs < 1:
        parser.error("--rounds and --saturated-runs must be >= 1, --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="simspeed") as work:
        section, passed = report(args, Path(work))
    return finish(args, "simulate_speed", section, passed)


if __name__ == "__main__":
    sys.exit(main())
