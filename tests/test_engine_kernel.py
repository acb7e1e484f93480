"""The engine refuses what the kernel in front of it cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashctl.backends.flashsys import FLASH_SINGLE
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.engine import Engine
from flashctl.errors import ExitCode, InputError
from flashctl.store import Store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _engine(tmp_path: Path) -> tuple[Engine, SimBackend]:
    backend = SimBackend(SimHost(FLASH_SINGLE, tmp_path / "sim-kernel.json"))
    return Engine(backend, Store.open(tmp_path / "state.db"), prepare=backend.ensure_nfs), backend


def test_fan_out_is_rejected_on_a_single_id_kernel_before_anything_starts(tmp_path: Path) -> None:
    engine, backend = _engine(tmp_path)
    text = (EXAMPLES / "load-balancer.yaml").read_text()
    with pytest.raises(InputError) as caught:
        engine.apply([("lb.yaml", text)], who="test")
    assert caught.value.message == (
        "chain lb: balancer/0 needs 2 targets, but this kernel's next holds a single id "
        "(older FLASH/exnfc kernel)"
    )
    assert caught.value.hint == (
        "give each NF socket one output, or use a kernel with multi-target next"
    )
    assert caught.value.exit_code == ExitCode.INVALID
    assert backend.host.processes == {}  # no simulated NF was started
    assert engine.store.history("lb") == []


def test_a_linear_chain_applies_on_a_single_id_kernel(tmp_path: Path) -> None:
    engine, backend = _engine(tmp_path)
    report = engine.apply([("linear.yaml", (EXAMPLES / "linear.yaml").read_text())], who="t")
    assert [(w.flash_id, w.new) for c in report.chains for w in c.changes.writes] == [(0, (1,))]
    assert backend.read_rule_text(0) == "1\n"  # the single-int read format
