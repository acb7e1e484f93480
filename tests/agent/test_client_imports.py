"""The client side of agent-backed commands stays light: `flashctl status` and friends talk to
the agent and render its JSON; they must not import the chain core (pydantic, networkx)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.agent.chains import LINEAR
from tests.agent.harness import Agent, AgentHome

HEAVY = ("pydantic", "networkx", "flashctl.chains", "flashctl.engine", "flashctl.agent")

# Runs one command in a fresh interpreter, then lists which heavy modules it imported.
PROBE = """
import json, sys
from flashctl.cli import run
code = run(sys.argv[2:])
heavy = sorted(
    name for name in sys.modules
    if any(name == h or name.startswith(h + ".") for h in json.loads(sys.argv[1]))
)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _probe(home: AgentHome, *argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *argv],
        cwd=home.base,
        env=home.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    last = done.stderr.decode().splitlines()[-1]
    result: dict[str, object] = json.loads(last)
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "-o", "json"],
        ["status", "linear"],
        ["history", "linear"],
        ["events"],
        ["agent", "status"],
        ["sim", "list"],
        ["diff", "linear.yaml"],
        ["apply", "linear.yaml"],
    ],
    ids=" ".join,
)
def test_agent_backed_commands_do_not_import_the_chain_core(
    home: AgentHome, agent: Agent, argv: list[str]
) -> None:
    assert home.cli("apply", home.write("linear.yaml", LINEAR)).code == 0
    expected = 3 if argv[0] in ("apply", "diff") else 0  # linear is applied: unchanged
    assert _probe(home, *argv) == {"code": expected, "heavy": []}
