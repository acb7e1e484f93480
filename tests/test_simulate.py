"""`flashctl simulate`: summaries that are the model's own counters, plots that are real PNG
and SVG files, sweeps that find a known saturation point, and the command line's messages
and exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashctl.backends.dataplane import DataPlane
from flashctl.chains.spec import Chain
from flashctl.cli import run
from flashctl.simulate import (
    default_interval,
    grid,
    planned,
    scaled,
    simulate,
    sweep,
)
from flashctl.simviews import plot_simulation, plot_sweep

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chain_document(capacities: dict[str, str | None], rate: str = "10Mpps") -> dict[str, Any]:
    names = list(capacities)
    nfs: dict[str, Any] = {}
    for i, nf in enumerate(names):
        cap = capacities[nf]
        nfs[nf] = {"queues": [i], **({"sim": {"capacity": cap}} if cap else {})}
    links = [{"from": "nic", "to": names[0]}]
    links += [{"from": a, "to": b} for a, b in pairwise(names)]
    links.append({"from": names[-1], "to": "nic"})
    return {
        "apiVersion": "flashctl/v1",
        "kind": "Chain",
        "metadata": {"name": "small"},
        "spec": {
            "interface": "eth0",
            "umems": [{"name": "u", "nfs": names}],
            "nfs": nfs,
            "links": links,
            "traffic": [{"into": names[0], "rate": rate, "size": 64}],
        },
    }


def small(capacities: dict[str, str | None] | None = None, rate: str = "10Mpps") -> Chain:
    found = capacities if capacities is not None else {"fw": None, "lb": "5Mpps", "web": None}
    return Chain.model_validate(chain_document(found, rate))


# --- the run and its summary -----------------------------------------------------------------


def test_summary_numbers_are_the_models_own_counters() -> None:
    chain = small()
    duration = 0.05
    sim = simulate(chain, duration=duration)
    # The same plane run on its own: what its counters say is what the summary must say.
    chain_plan = planned(chain)
    plane = DataPlane.from_plan(chain, chain_plan)
    plane.run(duration)
    nf_of = {b.flash_id: b.socket.nf for b in chain_plan.bindings}
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for fid in plane.flash_ids:
        for name, value in plane.counters(fid).items():
            totals[nf_of[fid]][name] += value
    everything = {n: sum(t[n] for t in totals.values()) for n in plane.counters(0)}

    s = sim.summary
    assert s.offered_pps * duration == pytest.approx(everything["nic_rx_packets"], rel=1e-12)
    delivered = everything["nic_tx_packets"] + everything["sunk"]
    assert s.delivered_pps * duration == pytest.approx(delivered, rel=1e-12)
    assert s.drops_pps["ring_full"] * duration == pytest.approx(
        everything["nic_drop_ring_full"], rel=1e-12
    )
    assert [n.nf for n in s.nfs] == ["fw", "lb", "web"]
    for nf in s.nfs:
        assert nf.processed_pps * duration == pytest.approx(totals[nf.nf]["processed"], rel=1e-12)
        cpu = totals[nf.nf]["cpu_ps"] / 1e12
        assert nf.cpu * duration == pytest.approx(cpu, rel=1e-9)
    assert sim.conservation == plane.conservation()
    assert sim.conservation.balanced
    assert sim.latency == plane.latency()
    assert (sim.bottleneck.nf, sim.bottleneck.backpressured) == ("lb", True)
    # lb forwards 5 Mpps: the rest is dropped at the NIC, in front of fw.
    assert s.delivered_pps == pytest.approx(5e6, rel=0.01)


def test_the_series_adds_up_to_the_summary() -> None:
    sim = simulate(small(), duration=0.04, interval=0.001)
    series = sim.series
    assert len(series.times) == 40
    assert series.times[-1] == pytest.approx(0.04)
    assert list(series.throughput) == ["fw", "lb", "web"]
    for nf in sim.summary.nfs:
        carried = sum(series.throughput[nf.nf]) * sim.interval
        assert carried == pytest.approx(nf.processed_pps * sim.duration, rel=1e-9)
    # lb's RX ring fills (it is the bottleneck); web's stays nearly empty.
    assert series.rx["lb"][-1] > 0.5
    assert series.rx["web"][-1] < 0.05


def test_default_interval_gives_a_few_hundred_points() -> None:
    assert default_interval(10.0, 10e-6) == pytest.approx(10.0 / 300, abs=1e-5)
    assert default_interval(1e-4, 10e-6) == pytest.approx(10e-6)  # at least one step


def test_cpu_is_reported_per_polling_mode() -> None:
    document = chain_document({"fw": None, "lb": None})
    document["spec"]["nfs"]["lb"]["sim"] = {"poll": "busy"}
    sim = simulate(Chain.model_validate(document), duration=0.01)
    by_mode = {x.poll: (x.threads, x.cores) for x in sim.cpu}
    assert set(by_mode) == {"busy", "smart"}
    threads, cores = by_mode["busy"]
    assert (threads, round(cores, 6)) == (1, 1.0)  # busy polling: a full core at any load


def test_scaled_multiplies_every_source() -> None:
    chain = small(rate="10Gbps")
    assert scaled(chain, 0.5).spec.traffic[0].pps == pytest.approx(chain.spec.traffic[0].pps / 2)


# --- plots -----------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # axes, lines, labels: not an empty canvas


def assert_svg(path: Path, *texts: str) -> None:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    shown = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for text in texts:
        assert text in shown
    assert len(list(root.iter())) > 100


def test_plots_are_valid_png_and_svg(tmp_path: Path) -> None:
    sim = simulate(small(), duration=0.02)
    paths = plot_simulation(sim, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == [
        "small-rings.png",
        "small-rings.svg",
        "small-throughput.png",
        "small-throughput.svg",
    ]
    for path in paths:
        if path.suffix == ".png":
            assert_png(path)
    assert_svg(tmp_path / "plots/small-throughput.svg", "chain small", "model time (s)", "lb")
    assert_svg(tmp_path / "plots/small-rings.svg", "RX ring", "TX ring", "% of the ring in use")


def test_sweep_plot_is_valid_png_and_svg(tmp_path: Path) -> None:
    result = sweep(small(), grid(2e6, 8e6, 4), duration=0.02)
    paths = plot_sweep(result, tmp_path)
    assert [p.name for p in paths] == ["small-sweep.png", "small-sweep.svg"]
    assert_png(paths[0])
    assert_svg(paths[1], "offered load (Mpps)", "saturation")


# --- sweeps ----------------------------------------------------------------------------------


def test_sweep_finds_the_saturation_point_of_a_5_mpps_nf() -> None:
    result = sweep(small(), grid(1e6, 10e6, 10), duration=0.02)
    assert result.saturation is not None
    assert result.below is not None
    assert result.saturation == pytest.approx(5e6, rel=0.05)
    assert result.below < result.saturation
    assert result.saturation - result.below < 1e6 / 2**5  # bisected well below the grid step
    assert result.capacity == pytest.approx(5e6, rel=0.01)
    assert any(p.refined for p in result.points)
    loads = [p.load for p in result.points]
    assert loads == sorted(loads)
    for p in result.points:
        assert p.saturated == (p.load > result.below)
        # Just past saturation lb's RX ring is still filling in a short run: it is named as
        # the busiest NF, with no headroom, rather than as backpressured.
        if p.saturated:
            assert (p.bottleneck.nf, p.bottleneck.headroom) == ("lb", 0.0)
        if p.load >= 5.5e6:
            assert p.bottleneck.backpressured


def test_sweep_that_never_saturates_and_one_saturated_from_the_start() -> None:
    calm = sweep(small(), grid(1e6, 4e6, 4), duration=0.02)
    assert calm.saturation is None
    assert calm.below == pytest.approx(4e6)
    assert not any(p.refined for p in calm.points)
    busy = sweep(small(), grid(6e6, 9e6, 4), duration=0.02)
    assert busy.saturation == pytest.approx(6e6)
    assert busy.below is None


# --- command line ----------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")


def test_cli_simulates_summarises_and_plots(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = _run(
        capsys, "simulate", "examples/linear.yaml", "--duration", "20ms", "--out", str(tmp_path)
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("chain linear: 20 ms of model time in ")
    assert (
        "offered 5 Mpps, delivered 5 Mpps (100.0%); dropped at the NIC: RX ring full 0 pps, " in out
    )
    assert "no bottleneck: nothing is backpressured; busiest NF router: " in out
    assert (
        "packets: offered 100,000 = dropped 0 + to the wire 100,000 + consumed 0 + queued 0: "
        "balanced"
    ) in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "linear-rings.png",
        "linear-rings.svg",
        "linear-throughput.png",
        "linear-throughput.svg",
    ]
    written = ["throughput.png", "throughput.svg", "rings.png", "rings.svg"]
    assert lines[-1] == "plots: " + ", ".join(str(tmp_path / f"linear-{n}") for n in written)


def test_cli_json_is_a_versioned_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "simulate", "examples/linear.yaml", "--duration", "10ms", "--no-plots", "-o", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert (data["apiVersion"], data["kind"]) == ("flashctl/v1", "SimulationList")
    (item,) = data["items"]
    assert item["chain"] == "linear"
    assert item["summary"]["offeredPps"] == pytest.approx(5e6)
    assert item["conservation"]["balanced"] is True
    assert item["plots"] == []
    assert 200 <= len(item["series"]["times"]) <= 500


@pytest.mark.parametrize(
    ("rate", "offered"), [("2x", 10e6), ("150%", 7.5e6), ("8Mpps", 8e6), ("0.5x", 2.5e6)]
)
def test_cli_rate_sets_or_scales_the_load(
    capsys: pytest.CaptureFixture[str], rate: str, offered: float
) -> None:
    code, out, _ = _run(
        capsys,
        "simulate",
        "examples/linear.yaml",
        "--duration",
        "10ms",
        "--rate",
        rate,
        "--no-plots",
        "-o",
        "json",
    )
    assert code == 0
    assert json.loads(out)["items"][0]["summary"]["offeredPps"] == pytest.approx(offered)


def test_cli_sweep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(chain_document({"fw": None, "lb": "5Mpps"})))
    code, out, err = _run(
        capsys,
        "simulate",
        str(path),
        "--sweep",
        "1Mpps:9Mpps:5",
        "--duration",
        "20ms",
        "--out",
        str(tmp_path),
    )
    assert (code, err) == (0, "")
    assert "saturation point: 5.0" in out
    assert (tmp_path / "small-sweep.png").is_file()
    code, out, _ = _run(
        capsys,
        "simulate",
        str(path),
        "--sweep",
        "1Mpps:9Mpps:5",
        "--duration",
        "20ms",
        "--no-plots",
        "-o",
        "json",
    )
    data = json.loads(out)
    assert (data["kind"], data["items"][0]["saturationPps"]) == (
        "SweepList",
        pytest.approx(5e6, rel=0.05),
    )


NO_TRAFFIC = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: quiet}
spec:
  interface: eth0
  nfs:
    fw: {queues: [0]}
  links:
    - {from: nic, to: fw}
    - {from: fw, to: nic}
"""


@pytest.mark.parametrize(
    ("argv", "lines"),
    [
        (
            ["--duration", "10x"],
            [
                "error: --duration: cannot read '10x' as a duration",
                "hint: write e.g. 10s, 500ms or 10us",
            ],
        ),
        (
            ["--duration", "0s"],
            ["error: --duration: '0s' is not a positive duration", "hint: write e.g. 10s"],
        ),
        (
            ["--resolution", "1 fortnight"],
            [
                "error: --resolution: cannot read '1 fortnight' as a duration",
                "hint: write e.g. 10s, 500ms or 10us",
            ],
        ),
        (
            ["--rate", "lots"],
            [
                "error: --rate: cannot read 'lots'",
                "hint: write a rate such as 8Mpps or 10Gbps or a factor (2x, 150%)",
            ],
        ),
        (
            ["--rate", "0x"],
            ["error: --rate: '0x' offers no load", "hint: give a positive rate or factor"],
        ),
        (
            ["--sweep", "1Mpps-20Mpps"],
            [
                "error: --sweep: cannot read '1Mpps-20Mpps'",
                "hint: write FROM:TO:STEPS, e.g. 1Mpps:20Mpps:10",
            ],
        ),
        (
            ["--sweep", "1Mpps:20Mqps:10"],
            [
                "error: --sweep TO: cannot read '20Mqps'",
                "hint: write a rate such as 8Mpps or 10Gbps",
            ],
        ),
        (
            ["--sweep", "1Mpps:20Mpps:1"],
            [
                "error: --sweep: STEPS must be a whole number from 2 to 200, got '1'",
                "hint: write FROM:TO:STEPS, e.g. 1Mpps:20Mpps:10",
            ],
        ),
        (
            ["--sweep", "9Mpps:2Mpps:3"],
            [
                "error: --sweep: TO must be above FROM, got '9Mpps:2Mpps:3'",
                "hint: write FROM:TO:STEPS, e.g. 1Mpps:20Mpps:10",
            ],
        ),
        (
            ["--sweep", "1Mpps:2Mpps:3", "--rate", "2x"],
            ["error: give --rate or --sweep, not both", "hint: a sweep sets the load itself"],
        ),
        (
            ["--duration", "5us"],
            [
                "error: --resolution is longer than --duration",
                "hint: a run needs at least one step",
            ],
        ),
        (
            ["--interval", "1us"],
            [
                "error: --interval must be between --resolution and --duration",
                "hint: leave it out for about 300 samples",
            ],
        ),
    ],
)
def test_cli_bad_options_are_one_line_errors_with_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], lines: list[str]
) -> None:
    code, out, err = _run(capsys, "simulate", "examples/linear.yaml", "--no-plots", *argv)
    assert (code, out, err.splitlines()) == (2, "", lines)


def test_cli_chain_without_traffic_says_what_to_add(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "quiet.yaml"
    path.write_text(NO_TRAFFIC)
    code, out, err = _run(capsys, "simulate", str(path))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "error: chain 'quiet' has no traffic to simulate",
        "hint: add spec.traffic, e.g. `traffic: [{into: fw, rate: 5Mpps, size: 64B}]`",
    ]


def test_cli_unwritable_plot_directory_is_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run(
        capsys, "simulate", "examples/linear.yaml", "--duration", "1ms", "--out", str(blocker / "x")
    )
    assert code == 1
    assert err.splitlines()[0].startswith(f"error: {blocker / 'x'}: cannot write the plots: ")
    assert err.splitlines()[1] == "hint: pick another directory with --out, or pass --no-plots"


def test_cli_unknown_chain_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "simulate", "examples/linear.yaml", "--chain", "nope")
    assert code == 2
    assert err.splitlines() == [
        "error: no chain named 'nope' in the input",
        "hint: chains found: linear",
    ]
