"""Fixtures of the agent tests: a short private home per test, and a real agent in it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.harness import Agent, AgentHome


@pytest.fixture
def home(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[AgentHome]:
    """A fresh FLASHCTL_HOME under /tmp (not tmp_path: socket paths must stay short), the
    working directory for chain files; every agent started in it is stopped by pid after."""
    base = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    env = AgentHome(base, capsys)
    monkeypatch.setenv("FLASHCTL_HOME", str(env.root))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FLASHCTL_DEBUG", raising=False)
    monkeypatch.setenv("FLASHCTL_MONITOR_SOCKET", env.env["FLASHCTL_MONITOR_SOCKET"])
    monkeypatch.chdir(base)
    try:
        yield env
    finally:
        try:
            env.stop_all()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def agent(home: AgentHome) -> Agent:
    """A running `flashctl agent run` for `home`."""
    return home.start_agent()
