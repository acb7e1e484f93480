"""Runs the network-function processes that chain files name, and keeps them running.

One `Supervisor` per agent, used from the agent's event loop. Each key ("chain/nf") has at
most one process; it is restarted whenever it exits, crash or clean, until `stop`, with an
exponential backoff that resets once a run lasted `stable_after` seconds.

Choices, and why:

- Output. The child's stdout and stderr are the key's log file itself, opened O_APPEND: the
  child writes the file directly, so a chatty NF costs the agent nothing and cannot block it
  (no pipe to drain). The supervisor appends its own `--- ...` lines to the same file; the
  `started` line is written by the child just before exec, so it always precedes the
  child's own output.
- Rotation is copy-then-truncate (checked every `log_check_interval` seconds and at each
  start): the child keeps its file descriptor, so renaming the file would only rename where
  it writes. With O_APPEND, writes after the truncation land at the new end. What the child
  writes between the copy and the truncation (microseconds) is lost, and a file may overshoot
  `log_max_bytes` by what the child writes in one check interval.
- Process group. The child gets its own session (start_new_session): a Ctrl-C in the
  terminal of a foreground agent does not reach it, and its pid is also its process group.
  Signals go to that group, so helpers an NF forks (a `sh -c` wrapper's children) stop with
  it; when the leader exits, what is left of its group is SIGKILLed, so a restart never runs
  beside leftovers of the previous run holding the same queues. This is race-free because the
  supervisor reaps the leader itself, after those signals: an unreaped pid cannot be reused,
  so the group id cannot name anyone else's processes. Exits are noticed through a pidfd
  (no SIGCHLD handler, no child-watcher thread, no waitpid(-1) that could steal another
  component's children); where pidfd_open is refused (kernels before 5.3, old seccomp
  profiles) a 0.1 s waitid(WNOWAIT) poll does the same.
- Agent death. The child sets PR_SET_PDEATHSIG=SIGTERM (after its uid change, which would
  clear it), so NFs go when the agent is killed with SIGKILL: they would have lost their
  AF_XDP sockets' owner anyway. The signal comes when the *thread* that forked the child
  exits: start NFs from the event loop's thread (as `start` does), never from an executor.
  Only the direct child gets it; its helpers get nothing.
- Environment. A clean one: PATH (a fixed system PATH, not the agent's, so the same chain
  runs the same binaries however the agent was started, and a root agent never runs what a
  user's ~/bin shadows), HOME (the run-as user's), LANG, plus the spec's `env`. Working
  directory `/` unless `cwd` is given. stdin is /dev/null; no other file descriptor is
  inherited; signals the agent ignores or blocks are reset to default.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from flashctl.errors import FlashctlError

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_MAX_BYTES: Final = 4 << 20
LOG_CHECK_INTERVAL: Final = 1.0  # seconds between log-size checks of a running process
EXIT_POLL_INTERVAL: Final = 0.1  # seconds between exit checks when pidfds are unavailable
_MAX_NAME: Final = 200  # bytes of a log file name before it is shortened with a hash

# starting: registered, not launched yet (start() launches before it yields: rarely seen);
# running: a process is alive (pid); backoff: it exited, a restart is due; failed: it could
# not be launched (exec failed, user gone, ...), a retry is due, or supervision itself broke
# (in the log); stopped: by stop() or close(), nothing more happens.
State = Literal["starting", "running", "backoff", "stopped", "failed"]
EventSink = Callable[[str, dict[str, object]], None]

PR_SET_PDEATHSIG: Final = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

# Dispositions an agent may have been started with (nohup, a shell's `trap '' ...`) that exec
# would otherwise hand down to the NF: an NF ignoring SIGTERM would only stop by SIGKILL.
_RESET_SIGNALS: Final = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPIPE,
)


@dataclass(frozen=True)
class RunSpec:
    """How to run one NF. Compared as a whole: `start` with a different spec restarts."""

    command: tuple[str, ...]  # argv, already templated by the caller
    user: str | None = None  # run as this user (the agent runs as root); None: the agent's
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cwd: str | None = None

    def __post_init__(self) -> None:
        # Own copies: a caller mutating its list or dict later must not change a running spec.
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def __hash__(self) -> int:
        return hash((self.command, self.user, tuple(sorted(self.env.items())), self.cwd))


@dataclass(frozen=True)
class ProcessState:
    key: str
    pid: int | None  # None unless running
    state: State
    restarts: int
    last_exit: str | None  # "exited 1", "killed by SIGSEGV"
    since: float  # wall-clock time of the last state change
    log: Path


@dataclass
class _Child:
    """One spawned process, until reaped. `exited` resolves to its returncode."""

    popen: subprocess.Popen[bytes]
    started: float  # monotonic
    exited: asyncio.Future[int]
    poller: asyncio.Task[None] | None = None  # without pidfds: the task polling for the exit

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ran_for(self) -> float:
        return time.monotonic() - self.started


@dataclass
class _Proc:
    key: str
    run: RunSpec
    log: Path
    state: State = "starting"
    since: float = field(default_factory=time.time)
    restarts: int = 0
    last_exit: str | None = None
    child: _Child | None = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False


class Supervisor:
    def __init__(
        self,
        logs: Path,
        on_event: EventSink,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        stop_timeout: float = 5.0,
        log_max_bytes: int = LOG_MAX_BYTES,
        log_check_interval: float = LOG_CHECK_INTERVAL,
        path: str = DEFAULT_PATH,
    ) -> None:
        self.logs = logs
        self.on_event = on_event
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.log_max_bytes = log_max_bytes
        self.log_check_interval = log_check_interval
        self.path = path
        self._procs: dict[str, _Proc] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- checks ---------------------------------------------------------------------------

    def check(self, run: RunSpec) -> None:
        """Raise FlashctlError if `run` cannot start (apply time: before anything changes).

        Messages do not name the NF: the caller knows which one it checked."""
        if not run.command or not run.command[0]:
            raise FlashctlError(
                "command is empty",
                'give the program and its arguments, e.g. command: [/usr/local/bin/nf, "-q", "0"]',
            )
        _account(run.user)
        if run.cwd is not None and not os.path.isdir(run.cwd):
            raise FlashctlError(
                f"working directory {run.cwd!r} does not exist", "create it, or fix `cwd`"
            )
        program = run.command[0]
        if "/" in program:
            where = os.path.join(run.cwd or "/", program)
            if not os.path.exists(where):
                raise FlashctlError(
                    f"executable {program!r} does not exist", "install it, or fix the path"
                )
            if os.path.isdir(where) or not os.access(where, os.X_OK):
                raise FlashctlError(
                    f"{program!r} is not an executable file",
                    f"make it executable: chmod +x {where}",
                )
            return
        path = run.env.get("PATH", self.path)
        if shutil.which(program, path=path) is None:
            raise FlashctlError(
                f"executable {program!r} not found on PATH ({path})",
                "install it, give its absolute path, or set PATH in the NF's env",
            )

    # --- control --------------------------------------------------------------------------

    async def start(self, key: str, run: RunSpec) -> None:
        """Start `key`; keep it if it already runs (or waits to restart) with this same spec;
        restart it if the spec changed. Returns once the process is spawned (or failed to)."""
        async with self._lock(key):
            proc = self._procs.get(key)
            if proc is not None:
                if proc.run == run and not proc.stopping and _alive(proc.task):
                    return
                await self._stop(proc, "spec changed" if proc.run != run else "")
            proc = _Proc(key, run, self.log_path(key))
            self._procs[key] = proc
            error = self._spawn(proc)
            proc.task = asyncio.create_task(self._supervise(proc, error), name=f"nf {key}")

    async def stop(self, key: str, *, forget: bool = False) -> None:
        """SIGTERM the process group, SIGKILL it after `stop_timeout`; return once the process
        is reaped. No restart follows. A stopped or unknown key is a no-op. The key stays in
        `states()` as "stopped" unless `forget`."""
        async with self._lock(key):
            proc = self._procs.get(key)
            if proc is not None:
                await self._stop(proc, "")
                if forget:
                    del self._procs[key]

    async def close(self) -> None:
        """Stop everything, all at once (each may take `stop_timeout`)."""
        await asyncio.gather(*(self.stop(key) for key in list(self._procs)))

    def states(self) -> list[ProcessState]:
        return [
            ProcessState(
                key=proc.key,
                pid=proc.child.pid if proc.child is not None else None,
                state=proc.state,
                restarts=proc.restarts,
                last_exit=proc.last_exit,
                since=proc.since,
                log=proc.log,
            )
            for proc in sorted(self._procs.values(), key=lambda p: p.key)
        ]

    def log_path(self, key: str) -> Path:
        return self.logs / log_name(key)

    # --- internals ------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _set(self, proc: _Proc, state: State) -> None:
        proc.state = state
        proc.since = time.time()

    def _event(self, proc: _Proc, kind: str, data: dict[str, object]) -> None:
        try:
            self.on_event(kind, {"key": proc.key, **data})
        except Exception as exc:  # a broken sink must not end supervision
            _note(proc.log, f"event {kind} not delivered: {exc!r}")

    def _spawn(self, proc: _Proc) -> str | None:
        """Launch `proc.run` now; None on success, else why it could not start."""
        run = proc.run
        try:
            account = _account(run.user)
            self.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # an old log must not keep the NF down
                rotate_log(proc.log, self.log_max_bytes)
            # Credentials change only as root (`_account` refused other users otherwise).
            as_user = account if run.user is not None and os.geteuid() == 0 else None
            who = f" as {run.user}" if run.user is not None else ""
            stamp = f"--- {_now()} started pid "
            banner = (stamp.encode(), f"{who}: {shlex.join(run.command)}\n".encode())
            env = {
                "PATH": self.path,
                "HOME": account.pw_dir if account is not None else "/",
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                **run.env,
            }
            fd = _open_log(proc.log)
            try:
                popen = subprocess.Popen(
                    run.command,
                    stdin=subprocess.DEVNULL,
                    stdout=fd,
                    stderr=fd,
                    close_fds=True,
                    start_new_session=True,
                    cwd=run.cwd or "/",
                    env=env,
                    user=as_user.pw_uid if as_user else None,
                    group=as_user.pw_gid if as_user else None,
                    extra_groups=(
                        os.getgrouplist(as_user.pw_name, as_user.pw_gid) if as_user else None
                    ),
                    preexec_fn=_child_setup(os.getpid(), banner),
                )
            finally:
                os.close(fd)
        except FlashctlError as exc:
            return self._failed(proc, exc.message)
        except OSError as exc:
            return self._failed(proc, _os_error(exc))
        except subprocess.SubprocessError as exc:
            return self._failed(proc, str(exc))
        loop = asyncio.get_running_loop()
        child = _Child(popen, time.monotonic(), loop.create_future())
        proc.child = child
        self._watch(child)
        self._set(proc, "running")
        self._event(proc, "nf-started", {"pid": child.pid})
        return None

    def _failed(self, proc: _Proc, error: str) -> str:
        proc.child = None
        self._set(proc, "failed")
        return error

    def _watch(self, child: _Child) -> None:
        """Resolve `child.exited` when it exits: kill what is left of its group, then reap."""
        loop = asyncio.get_running_loop()

        def reap() -> None:
            _signal_group(child.pid, signal.SIGKILL)  # leftovers; the leader is a zombie
            returncode = child.popen.wait()
            if not child.exited.done():
                child.exited.set_result(returncode)

        try:
            pidfd = os.pidfd_open(child.pid)
        except OSError:
            child.poller = loop.create_task(_poll_exit(child.pid, reap))
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            reap()

        loop.add_reader(pidfd, readable)

    async def _supervise(self, proc: _Proc, error: str | None) -> None:
        """Wait for each exit and restart after the backoff, until `stop` (which cancels this
        task in its backoff sleep, or sets `stopping` and waits for the exit itself)."""
        delay = self.backoff_initial
        try:
            while True:
                child = proc.child
                if error is None and child is not None:
                    returncode = await self._wait_exit(proc, child)
                    if proc.stopping:
                        return
                    ran_for = child.ran_for()
                    proc.child = None
                    if ran_for >= self.stable_after:
                        delay = self.backoff_initial
                    status = proc.last_exit = describe_exit(returncode)
                    self._set(proc, "backoff")
                    _note(
                        proc.log,
                        f"{status} after {_secs(ran_for)} s; restarting in {_secs(delay)} s",
                    )
                    self._event(
                        proc,
                        "nf-exited",
                        {
                            "pid": child.pid,
                            "status": status,
                            "ran_for": round(ran_for, 3),
                            "restart_in": delay,
                        },
                    )
                else:
                    _note(proc.log, f"cannot start: {error}; retrying in {_secs(delay)} s")
                    self._event(proc, "nf-failed", {"error": error, "restart_in": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                proc.restarts += 1
                error = self._spawn(proc)
        except Exception as exc:  # a bug here must show, not silently end supervision
            self._set(proc, "failed")
            _note(proc.log, f"supervision failed: {exc!r}")
            self._event(proc, "nf-failed", {"error": f"supervision failed: {exc!r}"})

    async def _wait_exit(self, proc: _Proc, child: _Child) -> int:
        """The child's returncode once reaped; checks the log's size meanwhile."""
        while True:
            done, _ = await asyncio.wait({child.exited}, timeout=self.log_check_interval)
            if done:
                return child.exited.result()
            with contextlib.suppress(OSError):
                rotate_log(proc.log, self.log_max_bytes)

    async def _stop(self, proc: _Proc, why: str) -> None:
        if proc.stopping:
            return
        proc.stopping = True
        child = proc.child
        status: str | None = None
        if child is not None:
            if not child.exited.done():
                because = f" ({why})" if why else ""
                _note(proc.log, f"stopping pid {child.pid}{because}: SIGTERM")
                _signal_group(child.pid, signal.SIGTERM)
                done, _ = await asyncio.wait({child.exited}, timeout=self.stop_timeout)
                if not done:
                    _note(
                        proc.log,
                        f"pid {child.pid} still running after {_secs(self.stop_timeout)} s: "
                        "SIGKILL",
                    )
                    _signal_group(child.pid, signal.SIGKILL)
                    await asyncio.wait({child.exited})
            status = proc.last_exit = describe_exit(child.exited.result())
            _note(proc.log, f"{status} after {_secs(child.ran_for())} s; stopped")
            proc.child = None
        else:
            _note(proc.log, f"stopped (was {proc.state})")
        if proc.task is not None:
            proc.task.cancel()
            await asyncio.wait({proc.task})
        self._set(proc, "stopped")
        pid = child.pid if child is not None else None
        self._event(proc, "nf-stopped", {"pid": pid, "status": status})


# --- the child side ------------------------------------------------------------------------


def _child_setup(parent: int, banner: tuple[bytes, bytes]) -> Callable[[], None]:
    """The preexec_fn: runs in the child after fork, setsid and the uid change, before exec.

    Kept to system calls on values computed before the fork (the agent may have threads)."""

    def setup() -> None:
        for sig in _RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:  # the agent died before prctl: nobody will signal us
            os._exit(1)
        os.write(1, banner[0] + str(os.getpid()).encode() + banner[1])

    return setup


def _account(user: str | None) -> pwd.struct_passwd | None:
    """The passwd entry to run as: `user`'s, else the agent's own (None if it has none)."""
    if user is None:
        try:
            return pwd.getpwuid(os.geteuid())
        except KeyError:  # an anonymous uid (containers): HOME falls back to /
            return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise FlashctlError(
            f"unknown user {user!r}",
            "create the user, or remove `user` to run the NF as the agent's user",
        ) from None
    if os.geteuid() not in (0, entry.pw_uid):
        raise FlashctlError(
            f"cannot run as user {user!r}: the agent is not root",
            "run the agent as root, or remove `user`",
        )
    return entry


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal our child's process group. Only called while the leader is unreaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _poll_exit(pid: int, reap: Callable[[], None]) -> None:
    """The pidfd-less way to notice an exit: waitid with WNOWAIT leaves the zombie for reap."""
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        except ChildProcessError:  # reaped already: Popen.wait reports it as exited 0
            break
        await asyncio.sleep(EXIT_POLL_INTERVAL)
    reap()


def _alive(task: asyncio.Task[None] | None) -> bool:
    return task is not None and not task.done()


def describe_exit(returncode: int) -> str:
    """`exited 1`, `killed by SIGSEGV` (a Popen returncode: negative for a signal)."""
    if returncode >= 0:
        return f"exited {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


def _os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename!r}"
    return exc.strerror or str(exc)


def _secs(seconds: float) -> str:
    """0.013, 0.25, 1.5, 12: two significant digits below 10 s, whole seconds above."""
    return (
        f"{seconds:.2g}" if seconds < 1 else f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"
    )


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


# --- log files -----------------------------------------------------------------------------


def log_name(key: str) -> str:
    """A file name for `key`, injective and inside the directory: `chain/nf` ->
    `chain.nf.log`; characters other than letters, digits, `_` and `-` become %XX."""
    out = []
    for char in key:
        if char == "/":
            out.append(".")
        elif char.isascii() and (char.isalnum() or char in "_-"):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    name = "".join(out)
    if len(name) > _MAX_NAME:
        name = f"{name[:100]}%{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    return f"{name or '%'}.log"


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _note(path: Path, text: str) -> None:
    """Append one supervisor line (`--- ...`) to a log."""
    try:
        fd = _open_log(path)
    except OSError:
        return  # a full or missing disk must not stop supervision
    try:
        os.write(fd, f"--- {_now()} {text}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def rotate_log(path: Path, max_bytes: int) -> bool:
    """If `path` holds `max_bytes` or more, copy it to `<path>.1` and truncate it in place
    (the child's O_APPEND descriptor keeps writing at the new end). True if it rotated."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    backup = backup_path(path)
    partial = path.with_name(path.name + ".1.tmp")
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # To the end as it is now, bounded so that a child outrunning the copy cannot
            # keep it going.
            copied, limit = 0, 2 * size
            while copied < limit:
                sent = os.sendfile(dst, src, copied, min(1 << 20, limit - copied))
                if sent == 0:
                    break
                copied += sent
        finally:
            os.close(dst)
        os.replace(partial, backup)
        os.truncate(path, 0)
    finally:
        os.close(src)
    return True


def _tail(path: Path, lines: int, end: int | None = None) -> list[str]:
    """The last `lines` lines of `path` before offset `end`, reading backwards in blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        pos = os.fstat(fd).st_size if end is None else end
        data = b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(1 << 16, pos)
            pos -= step
            data = os.pread(fd, step, pos) + data
    finally:
        os.close(fd)
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    if pos > 0:  # the first piece may be the end of a longer line
        parts = parts[1:]
    return [part.decode(errors="replace") for part in parts[-lines:]] if lines > 0 else []


def read_log(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log, from its `.1` backup too if the live file has fewer.
    Reads only the end of each file."""
    if lines <= 0:
        return []
    got = _tail(path, lines)
    if len(got) < lines:
        got = _tail(backup_path(path), lines - len(got)) + got
    return got


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _open_existing(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _read_rest(fd: int, offset: int) -> bytes:
    chunks = []
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_from(path: Path, offset: int) -> bytes:
    fd = _open_existing(path)
    if fd is None:
        return b""
    try:
        return _read_rest(fd, offset)
    finally:
        os.close(fd)


def follow_log(
    path: Path,
    lines: int = 0,
    *,
    interval: float = 0.2,
    stop: Callable[[], bool] | None = None,
) -> Generator[str, None, None]:
    """`logs -f`: the last `lines` lines, then each line as it is appended, polling every
    `interval` seconds; returns when `stop()` is true at an idle moment (None: never).

    Survives rotation: when the `.1` backup changes, the rest of what was being read is
    taken from that copy, then the live file from its start. The file is held open, so a
    file deleted or replaced outright is noticed (its inode cannot be reused meanwhile): the
    rest of the old one is read, then the new one from its start."""
    backup = backup_path(path)
    seen_backup = _identity(backup)
    fd = _open_existing(path)
    offset = os.fstat(fd).st_size if fd is not None else 0
    try:
        yield from _tail(path, lines, offset)
        pending = b""
        while True:
            data = b""
            try:
                now = path.stat()
            except FileNotFoundError:
                now = None
            if now is not None and (fd is None or not os.path.samestat(now, os.fstat(fd))):
                if fd is not None:
                    data = _read_rest(fd, offset)
                    os.close(fd)
                fd, offset = _open_existing(path), 0
            if fd is not None:
                now_backup = _identity(backup)
                if now_backup != seen_backup:  # rotated: the rest of what we read is in .1
                    data += _read_from(backup, offset) if now_backup else b""
                    offset = 0
                elif os.fstat(fd).st_size < offset:  # truncated by someone else
                    offset = 0
                seen_backup = now_backup
                fresh = _read_rest(fd, offset)
                offset += len(fresh)
                data += fresh
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode(errors="replace")
            if not data:
                if stop is not None and stop():
                    return
                time.sleep(interval)
    finally:
        if fd is not None:
            os.close(fd)
