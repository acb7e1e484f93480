"""Test only: the real agent over a simulated backend that misbehaves at one rule write.

    python stall_agent.py stall N MARKER   # before write N: create MARKER, then hang forever
    python stall_agent.py fail N MARKER    # write N fails with EINVAL (nothing written)

Writes are counted from the agent's start (reads and read-backs do not count). `stall` lets
a test kill -9 the agent at a known point in the middle of an apply; `fail` makes one apply
roll back. Everything else is the agent of `flashctl agent run`, on FLASHCTL_HOME.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

from flashctl import agent, cli
from flashctl.backends.base import write_error
from flashctl.backends.sim import SimBackend, SimHost
from flashctl.engine import Prepare
from flashctl.home import Home


class MisbehavingBackend(SimBackend):
    def __init__(self, host: SimHost, mode: str, at: int, marker: Path) -> None:
        super().__init__(host)
        self.mode = mode
        self.at = at
        self.marker = marker
        self.writes = 0

    def write_rule_text(self, flash_id: int, text: str) -> None:
        self.writes += 1
        if self.writes == self.at:
            if self.mode == "fail":
                raise write_error(flash_id, text, errno.EINVAL)
            self.marker.write_text(f"{os.getpid()} {flash_id} {text}")
            while True:  # the test kills us here
                time.sleep(60)
        super().write_rule_text(flash_id, text)


def main() -> int:
    mode, at, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

    def make_backend(
        name: str, home: Home, kernel: str | None = None, sysfs_root: Path | None = None
    ) -> tuple[SimBackend, Prepare]:
        backend = MisbehavingBackend(SimHost.load(home.sim_kernel), mode, at, marker)
        return backend, backend.ensure_nfs

    agent.make_backend = make_backend  # the one seam: everything else is the real agent
    return cli.run(["agent", "run"])


if __name__ == "__main__":
    sys.exit(main())
