"""`spec.txTracking`: the host-global tx_tracking file, set by the engine on apply.

On the simulated backend (a kernel with or without the file); the native driver does the
same through the FUSE stand-in (tests/linux/test_native_contract.py).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flashctl.agent import _report_data
from flashctl.agentviews import apply_report
from flashctl.backends.base import BackendError
from flashctl.backends.flashsys import FLASH_TABLE, Variant
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.engine import Engine, RolledBack
from flashctl.errors import InputError
from flashctl.store import Store

TRACKING = Variant(tx_tracking=True)


def source(name: str, queue: int, tx_tracking: bool | None) -> tuple[str, str]:
    """nic -> <name>-nf -> nic on eth0 `queue`, with `txTracking` unless None."""
    spec: dict[str, Any] = {
        "interface": "eth0",
        "nfs": {"fw": {"queues": [queue]}, "rt": {"queues": [queue + 1]}},
        "links": [
            {"from": "nic", "to": "fw"},
            {"from": "fw", "to": "rt"},
            {"from": "rt", "to": "nic"},
        ],
    }
    if tx_tracking is not None:
        spec["txTracking"] = tx_tracking
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return f"{name}.json", json.dumps({**document, "spec": spec})


def engine_on(tmp_path: Path, variant: Variant, backend: SimBackend | None = None) -> Engine:
    backend = backend or SimBackend(SimHost.load(tmp_path / "sim-kernel.json", variant))
    return Engine(backend, Store.open(tmp_path / "s.db"), prepare=backend.ensure_nfs)


def kernel_value(engine: Engine) -> int:
    assert isinstance(engine.backend, SimBackend)
    return engine.backend.host.sysfs.tx_tracking


def events(engine: Engine, kind: str) -> list[str]:
    return [e.message for e in engine.store.events() if e.kind == kind]


# --- the backend method ----------------------------------------------------------------


def test_sim_sets_tx_tracking_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "sim-kernel.json"
    backend = SimBackend(SimHost.load(path, TRACKING))
    assert backend.set_tx_tracking(True) is True
    assert backend.host.sysfs.read("tx_tracking") == b"1\n"
    assert SimHost.load(path).sysfs.tx_tracking == 1  # saved: the kernel outlives the agent
    assert backend.set_tx_tracking(False) is True
    assert SimHost.load(path).sysfs.tx_tracking == 0


def test_sim_without_the_file_says_so_and_writes_nothing(tmp_path: Path) -> None:
    backend = SimBackend(SimHost.load(tmp_path / "sim-kernel.json", FLASH_TABLE))
    before = backend.host.sysfs.to_data()
    assert backend.set_tx_tracking(True) is False
    assert backend.host.sysfs.to_data() == before


def test_sim_tx_tracking_needs_root(tmp_path: Path) -> None:
    backend = SimBackend(SimHost(TRACKING), uid=1000)
    with pytest.raises(BackendError) as caught:
        backend.set_tx_tracking(True)
    assert caught.value.message == "setting tx_tracking to 1 failed with EACCES: Permission denied"
    assert caught.value.hint == "run the agent as root"
    assert caught.value.errno == errno.EACCES
    assert backend.host.sysfs.tx_tracking == 0


# --- the engine ------------------------------------------------------------------------


def test_apply_sets_tx_tracking_and_logs_it(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    report = engine.apply([source("a", 0, True)], who="test")
    assert kernel_value(engine) == 1
    assert report.warnings == []
    assert events(engine, "tx_tracking") == ["tx_tracking set to 1 (a)"]
    engine.apply([source("a", 0, False)], who="test")  # a new revision turns it off
    assert kernel_value(engine) == 0
    assert events(engine, "tx_tracking")[-1] == "tx_tracking set to 0 (a)"


def test_a_chain_without_tx_tracking_leaves_the_file_alone(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    engine.apply([source("a", 0, True)], who="test")
    engine.apply([source("b", 4, None)], who="test")
    assert kernel_value(engine) == 1
    assert events(engine, "tx_tracking") == ["tx_tracking set to 1 (a)"]


def test_a_dry_run_does_not_set_it(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    engine.apply([source("a", 0, True)], who="test", dry_run=True)
    assert kernel_value(engine) == 0
    assert events(engine, "tx_tracking") == []


def test_a_kernel_without_the_file_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, FLASH_TABLE)
    report = engine.apply([source("a", 0, True)], who="test")
    warning = "txTracking true of a not set: this kernel has no tx_tracking file"
    assert report.warnings == [warning]
    assert events(engine, "warning") == [warning]
    assert "a" in engine.running  # applied all the same
    assert [c.revision for c in report.chains] == [1]
    data = _report_data(report)
    assert data["warnings"] == [warning]
    console = Console(width=200, record=True)
    console.print(apply_report(data))
    assert console.export_text().splitlines()[-1] == f"warning: {warning}"


def test_chains_asking_for_different_values_are_rejected(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    engine.apply([source("a", 0, True)], who="test")
    writes = len(events(engine, "write"))
    with pytest.raises(InputError) as caught:
        engine.apply([source("b", 4, False)], who="test")
    assert caught.value.message == (
        "chain b asks for txTracking false, but running chain a asks for true: "
        "tx_tracking is host-global"
    )
    assert caught.value.hint == (
        "give every chain the same txTracking, or leave it out of all but one"
    )
    assert "b" not in engine.running
    assert kernel_value(engine) == 1
    assert len(events(engine, "write")) == writes  # rejected before any write
    # The same value is fine; and a dry run is refused just the same.
    engine.apply([source("b", 4, True)], who="test")
    with pytest.raises(InputError):
        engine.apply([source("c", 8, False)], who="test", dry_run=True)


def test_two_chains_of_one_apply_must_agree(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    with pytest.raises(InputError) as caught:
        engine.apply([source("a", 0, True), source("b", 4, False)], who="test")
    assert caught.value.message == (
        "chain b asks for txTracking false, but chain a asks for true: tx_tracking is host-global"
    )
    assert engine.running == {}


def test_reapplying_the_one_chain_that_asks_may_change_the_value(tmp_path: Path) -> None:
    engine = engine_on(tmp_path, TRACKING)
    engine.apply([source("a", 0, True), source("b", 4, None)], who="test")
    engine.apply([source("a", 0, False)], who="test")  # a's own old value does not count
    assert kernel_value(engine) == 0


class FailingTracking(SimBackend):
    def set_tx_tracking(self, enabled: bool) -> bool:
        raise BackendError("setting tx_tracking to 1 failed with EIO: Input/output error")


def test_a_failed_tx_tracking_write_rolls_the_apply_back(tmp_path: Path) -> None:
    backend = FailingTracking(SimHost.load(tmp_path / "sim-kernel.json", TRACKING))
    engine = engine_on(tmp_path, TRACKING, backend)
    with pytest.raises(RolledBack) as caught:
        engine.apply([source("a", 0, True)], who="test")
    assert caught.value.message == (
        "apply rolled back: setting tx_tracking to 1 failed with EIO: Input/output error; "
        "previous rules restored"
    )
    assert engine.running == {}
    assert all(text == "-1\n" for text in map(backend.read_rule_text, backend.inventory().ids()))
