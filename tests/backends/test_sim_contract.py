"""The backend contract (tests/backends/contract.py) run against the simulated backend.

Sockets appear and disappear the way they do on a simulated host: `bind` spawns a
simulated process with one thread on the queue, `close` stops it. The host persists to a
state file, as the agent's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from flashctl.backends.base import Backend
from flashctl.backends.flashsys import FLASH_TABLE, FLASH_TABLE_NO_SELF_LOOP, Variant
from flashctl.backends.sim import SimBackend, SimHost
from tests.backends.contract import BackendContract

NON_ROOT_UID = 1000


class SimHarness:
    """The contract's Harness over a SimHost."""

    def __init__(self, variant: Variant, path: Path) -> None:
        self.host = SimHost(variant, path)
        self.backend = SimBackend(self.host)
        self.max_sockets = variant.max_sockets
        self.self_loop: Literal["accept", "reject"] = variant.self_loop

    def bind(self, *, pid: int, procname: str, interface: str, qid: int) -> int:
        assert pid not in self.host.processes, f"pid {pid} was used before"
        self.host.next_pid = pid
        process = self.host.spawn(procname, [(interface, qid)])
        assert process.pid == pid
        (flash_id,) = process.sockets
        return flash_id

    def close(self, flash_id: int) -> None:
        (process,) = [p for p in self.host.processes.values() if flash_id in p.sockets]
        self.host.stop(process.pid)

    def set_ready(self, flash_id: int, ready: bool) -> None:
        self.host.sysfs.set_ready(flash_id, ready)
        self.host.save()

    def ifindex(self, interface: str) -> int:
        return self.host.interfaces[interface]

    def unprivileged(self) -> Backend | None:
        return SimBackend(self.host, uid=NON_ROOT_UID)


class TestSimBackend(BackendContract):
    """The FLASH table kernel that accepts self-loops (2ed83241)."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> SimHarness:
        return SimHarness(FLASH_TABLE, tmp_path / "sim-kernel.json")


class TestSimBackendSelfLoopRejected(BackendContract):
    """The FLASH table kernel that rejects self-loops (43d80001)."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> SimHarness:
        return SimHarness(FLASH_TABLE_NO_SELF_LOOP, tmp_path / "sim-kernel.json")


class TestSimBackendManySockets(BackendContract):
    """The simulator with more flash-ids than the kernel's 64 (spec.sim.maxSockets)."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> SimHarness:
        return SimHarness(Variant(max_sockets=100), tmp_path / "sim-kernel.json")


class TestSimBackendInMemory(BackendContract):
    """A host without a state file (nothing persisted) behaves the same."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> SimHarness:
        harness = SimHarness(FLASH_TABLE, tmp_path / "unused.json")
        harness.host.path = None
        return harness


def test_the_sim_harness_reports_sim_values(tmp_path: Path) -> None:
    """The values the contract takes from the harness, pinned for the simulated host."""
    harness = SimHarness(FLASH_TABLE, tmp_path / "sim-kernel.json")
    harness.bind(pid=4321, procname="nf", interface="eth0", qid=0)
    harness.bind(pid=4322, procname="nf", interface="eth1", qid=0)
    assert (harness.ifindex("eth0"), harness.ifindex("eth1")) == (2, 3)  # 1 is lo
    assert harness.host.next_pid == 4323
    info = harness.backend.info()
    assert info.name == "sim"
    assert info.variant == "flash, table next, self-loop accepted"
    assert info.detail == "simulated FLASH kernel, 64 flash-ids"
    rejecting = SimHarness(FLASH_TABLE_NO_SELF_LOOP, tmp_path / "other.json")
    assert rejecting.backend.info().variant == "flash, table next, self-loop rejected"
