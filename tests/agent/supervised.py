"""Test only: a Supervisor in a process of its own, for tests that kill that process.

    python supervised.py LOGS PIDFILE USER -- COMMAND...   # USER "-": the supervisor's own

Starts COMMAND under the key `t/nf`, writes the child's pid to PIDFILE (atomically), then
waits forever: the test SIGKILLs this process and watches what happens to the child.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from flashctl.supervisor import RunSpec, Supervisor


async def main(logs: Path, pidfile: Path, user: str | None, command: list[str]) -> None:
    supervisor = Supervisor(logs, lambda kind, data: None)
    await supervisor.start("t/nf", RunSpec(tuple(command), user=user))
    (state,) = supervisor.states()
    partial = pidfile.with_name(pidfile.name + ".tmp")
    partial.write_text(f"{state.pid}\n")
    os.replace(partial, pidfile)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logs, pidfile, user, dashes, *command = sys.argv[1:]
    assert dashes == "--", "usage: supervised.py LOGS PIDFILE USER -- COMMAND..."
    asyncio.run(main(Path(logs), Path(pidfile), None if user == "-" else user, command))
