"""Run under `unshare -m`: the stand-in at the real /sys/kernel/flash, seen by the default root.

/sys/kernel refuses new directories even in a private mount namespace, so an overlay (its
upper layer on a tmpfs) goes over /sys/kernel first: the real entries stay visible, `flash`
can be made, and the FUSE stand-in is mounted on it. Nothing leaks out: every mount lives in
this process's namespace, which the kernel tears down when the process exits, and each one
is also unmounted here in reverse order.

Prints one JSON object: what the native backend (default root) and the agent's native backend
saw. Exits non-zero with the error on stderr when anything fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from flashctl.agent import make_backend
from flashctl.backends.flashsys import FLASH_TABLE
from flashctl.backends.native import DEFAULT_ROOT, NativeBackend
from flashctl.home import Home
from tests.linux.flashfs import mounted


def _mount(stack: ExitStack, *args: str) -> None:
    subprocess.run(["mount", *args], check=True)
    stack.callback(subprocess.run, ["umount", args[-1]], check=False)


def main() -> int:
    os.environ.pop("FLASHCTL_SYSFS_ROOT", None)  # the agent must use the default root
    with ExitStack() as stack:
        scratch = Path(tempfile.mkdtemp(prefix="flashns-"))
        stack.callback(scratch.rmdir)
        _mount(stack, "-t", "tmpfs", "tmpfs", str(scratch))
        (scratch / "upper").mkdir()
        (scratch / "work").mkdir()
        options = f"lowerdir=/sys/kernel,upperdir={scratch}/upper,workdir={scratch}/work"
        _mount(stack, "-t", "overlay", "overlay", "-o", options, "/sys/kernel")
        fs = stack.enter_context(mounted(DEFAULT_ROOT.parent, FLASH_TABLE))
        fs.bind(pid=4242, procname="firewall", ifindex=1, qid=0)
        fs.bind(pid=4243, procname="router", ifindex=1, qid=1)
        backend = NativeBackend()
        backend.write_rule_text(0, "1\n")
        agents, _prepare = make_backend("native", Home(scratch))
        report = {
            "info": backend.info().variant,
            "detail": backend.info().detail,
            "sockets": [(s.flash_id, s.pid, s.procname) for s in backend.inventory().sockets],
            "rule": backend.read_rule_text(0),
            "agent": agents.info().detail,
            "real_entries_visible": Path("/sys/kernel/mm").is_dir(),
        }
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
