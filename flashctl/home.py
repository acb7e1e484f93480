"""Where the agent keeps its state: the state directory and the files inside it.

`$FLASHCTL_HOME` wins; otherwise root uses /var/lib/flashctl and other users their XDG state
directory. Kept free of heavy imports: every client command resolves these paths first.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flashctl.errors import FlashctlError

# sun_path is 108 bytes including the terminating NUL.
UNIX_PATH_MAX = 107


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "agent.sock"

    @property
    def store(self) -> Path:
        return self.root / "state.db"

    @property
    def lock(self) -> Path:
        return self.root / "agent.lock"

    @property
    def log(self) -> Path:
        return self.root / "agent.log"

    @property
    def sim_kernel(self) -> Path:
        return self.root / "sim-kernel.json"

    def check_socket_path(self) -> None:
        length = len(os.fsencode(self.socket))
        if length > UNIX_PATH_MAX:
            raise FlashctlError(
                f"state directory {self.root} is too long for a Unix socket path "
                f"({length} > {UNIX_PATH_MAX} bytes)",
                "set FLASHCTL_HOME to a shorter directory",
            )

    def ensure(self) -> None:
        """Create the directory, private to its owner (the socket and store live inside)."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise FlashctlError(
                f"cannot create state directory {self.root}: {exc.strerror}",
                "set FLASHCTL_HOME to a writable directory",
            ) from None


def resolve_home(env: Mapping[str, str] | None = None, euid: int | None = None) -> Home:
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if env.get("FLASHCTL_HOME"):
        return Home(Path(env["FLASHCTL_HOME"]).expanduser().absolute())
    if euid == 0:
        return Home(Path("/var/lib/flashctl"))
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Home(Path(state) / "flashctl")


class AgentLock:
    """An exclusive flock on `agent.lock`, holding the agent's pid for others to read."""

    def __init__(self, home: Home) -> None:
        self.path = home.lock
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FlashctlError(
                f"another agent (pid {holder}) is already running for {self.path.parent}",
                "use it, or stop it with `flashctl agent stop`",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1


def lock_holder(home: Home) -> int | None:
    """The pid of the agent holding the lock, or None if no agent runs."""
    try:
        fd = os.open(home.lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
