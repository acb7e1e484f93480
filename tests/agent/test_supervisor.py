"""The supervisor of NF processes, with small real processes: start, crash and backoff, stop
(SIGTERM, then SIGKILL), spec changes, the child's environment, running as another user,
logs (rotation, tail, follow) and children going when the supervisor is SIGKILLed.

Every test polls for what it waits for (a loaded 2-core machine is slow, never wrong), and
only ever signals or probes pids it started itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from flashctl.errors import FlashctlError
from flashctl.supervisor import (
    DEFAULT_PATH,
    RunSpec,
    Supervisor,
    backup_path,
    follow_log,
    log_name,
    read_log,
    rotate_log,
)

TIMEOUT = 10.0
SUPERVISED = Path(__file__).resolve().parent / "supervised.py"
ROOT = Path(__file__).resolve().parents[2]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# Quick by default; a test that wants one run only raises the backoff.
FAST: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_max": 0.4,
    "stable_after": 10.0,
    "stop_timeout": 5.0,
}


class Events(list[tuple[str, dict[str, object]]]):
    def __call__(self, kind: str, data: dict[str, object]) -> None:
        self.append((kind, data))

    def of(self, kind: str) -> list[dict[str, object]]:
        return [data for k, data in self if k == kind]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@contextlib.asynccontextmanager
async def supervising(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Supervisor, Events]]:
    events = Events()
    supervisor = Supervisor(tmp_path / "logs", events, **{**FAST, **options})
    try:
        yield supervisor, events
    finally:
        await supervisor.close()


async def until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def sh(script: str, **kwargs: Any) -> RunSpec:
    return RunSpec(("/bin/sh", "-c", script), **kwargs)


def text(supervisor: Supervisor, key: str) -> str:
    path = supervisor.log_path(key)
    return path.read_text() if path.exists() else ""


def output(supervisor: Supervisor, key: str) -> list[str]:
    """The child's lines of the log: without the supervisor's own (`--- ...`)."""
    return [line for line in text(supervisor, key).splitlines() if not line.startswith("--- ")]


def state(supervisor: Supervisor, key: str) -> Any:
    (found,) = [s for s in supervisor.states() if s.key == key]
    return found


def gone(pid: int) -> bool:
    """Our direct children are reaped by the supervisor: their pid is free."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def start_time(pid: int) -> int | None:
    """/proc's start time of `pid`, None once it is gone or a zombie (for processes that are
    not our children, such as an NF's helpers, which whoever inherits them reaps)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def gone_since(pid: int, started: int | None) -> bool:
    return start_time(pid) != started


# --- start, crash, backoff -----------------------------------------------------------------------


def test_start_runs_the_command_with_its_output_in_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("web/fw", sh("echo hello from the nf; exec sleep 60"))
            running = state(supervisor, "web/fw")
            assert (running.state, running.restarts, running.last_exit) == ("running", 0, None)
            assert running.pid is not None
            assert running.log == tmp_path / "logs" / "web.fw.log"
            await until(lambda: output(supervisor, "web/fw"), "output")
            first, second = text(supervisor, "web/fw").splitlines()[:2]
            assert first.startswith("--- ")
            assert first.endswith(
                f" started pid {running.pid}: /bin/sh -c 'echo hello from the nf; exec sleep 60'"
            )
            assert second == "hello from the nf"
            assert events == [("nf-started", {"key": "web/fw", "pid": running.pid})]
            assert stat.S_IMODE(running.log.stat().st_mode) == 0o600

    run(scenario)


def test_a_crashing_nf_restarts_with_exponential_backoff(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("c/crash", sh("echo crashing; exit 3"))
            await until(lambda: len(events.of("nf-exited")) >= 5, "five exits")
            exits = events.of("nf-exited")[:5]
            assert [e["restart_in"] for e in exits] == [0.05, 0.1, 0.2, 0.4, 0.4]
            assert {e["status"] for e in exits} == {"exited 3"}
            started = [e["pid"] for e in events.of("nf-started")]
            assert [e["pid"] for e in exits] == started[:5]
            assert len(set(started)) == len(started)
            current = state(supervisor, "c/crash")
            assert current.restarts == len(started) - 1 >= 4
            assert current.last_exit == "exited 3"
            log = text(supervisor, "c/crash")
            assert log.count("crashing\n") == len(started)
            assert "exited 3 after " in log
            assert "; restarting in 0.1 s" in log

    run(scenario)


def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    # Runs 1-3 crash at once, run 4 lasts past stable_after, run 5 crashes again.
    script = (
        f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; "
        "if [ $n -eq 4 ]; then sleep 1; fi; exit 1"
    )

    async def scenario() -> None:
        options = {"stable_after": 0.5, "backoff_max": 5.0}
        async with supervising(tmp_path, **options) as (supervisor, events):
            await supervisor.start("c/flaky", sh(script))
            await until(lambda: len(events.of("nf-exited")) >= 5, "five exits")
            exits = events.of("nf-exited")[:5]
            assert [e["restart_in"] for e in exits] == [0.05, 0.1, 0.2, 0.05, 0.1]
            ran_for = exits[3]["ran_for"]
            assert isinstance(ran_for, float)
            assert ran_for >= 0.5

    run(scenario)


def test_a_command_that_cannot_exec_backs_off_and_recovers(tmp_path: Path) -> None:
    program = tmp_path / "nf.sh"

    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("c/nf", RunSpec((str(program),)))
            assert state(supervisor, "c/nf").state == "failed"
            assert state(supervisor, "c/nf").pid is None
            failed = (await until(lambda: events.of("nf-failed"), "nf-failed"))[0]
            assert failed == {
                "key": "c/nf",
                "error": f"No such file or directory: '{program}'",
                "restart_in": 0.05,
            }
            assert f"cannot start: No such file or directory: '{program}'; retrying in 0.05 s" in (
                text(supervisor, "c/nf")
            )
            program.write_text("#!/bin/sh\necho back\nexec sleep 60\n")
            program.chmod(0o755)
            await until(lambda: state(supervisor, "c/nf").state == "running", "running")
            await until(lambda: "back" in output(supervisor, "c/nf"), "output")
            assert state(supervisor, "c/nf").restarts >= 1

    run(scenario)


def test_an_event_sink_that_raises_does_not_end_supervision(tmp_path: Path) -> None:
    def broken(kind: str, data: dict[str, object]) -> None:
        raise RuntimeError("store closed")

    async def scenario() -> None:
        supervisor = Supervisor(tmp_path / "logs", broken, **FAST)
        try:
            await supervisor.start("c/nf", sh("exit 1"))
            await until(lambda: state(supervisor, "c/nf").restarts >= 2, "restarts")
            log = text(supervisor, "c/nf")
            assert "event nf-started not delivered: RuntimeError('store closed')" in log
        finally:
            await supervisor.close()

    run(scenario)


def test_the_pidfd_less_fallback_notices_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", refused)

    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("c/crash", sh("exit 2"))
            await until(lambda: len(events.of("nf-exited")) >= 2, "two exits")
            assert events.of("nf-exited")[0]["status"] == "exited 2"
            await supervisor.start("c/long", sh("exec sleep 60"))
            pid = state(supervisor, "c/long").pid
            await supervisor.stop("c/long")
            assert state(supervisor, "c/long").last_exit == "killed by SIGTERM"
            assert gone(pid)

    run(scenario)


# --- stop ----------------------------------------------------------------------------------------


def test_stop_sends_sigterm_and_waits_for_the_exit(tmp_path: Path) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done"

    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("c/nf", sh(script))
            pid = state(supervisor, "c/nf").pid
            await until(lambda: "ready" in output(supervisor, "c/nf"), "the trap")
            await supervisor.stop("c/nf")
            stopped = state(supervisor, "c/nf")
            assert (stopped.state, stopped.pid, stopped.last_exit) == ("stopped", None, "exited 0")
            assert gone(pid)
            log = text(supervisor, "c/nf")
            assert f"stopping pid {pid}: SIGTERM\n" in log
            assert "got TERM\n" in log
            assert log.rstrip().endswith("; stopped")
            assert events[-1] == ("nf-stopped", {"key": "c/nf", "pid": pid, "status": "exited 0"})
            await asyncio.sleep(0.3)  # no restart follows (the backoff is 0.05 s)
            assert state(supervisor, "c/nf").state == "stopped"
            assert len(events.of("nf-started")) == 1

            # Stopping again, or stopping a key nobody started, changes nothing.
            before = (list(events), log)
            await supervisor.stop("c/nf")
            await supervisor.stop("c/unknown")
            assert (list(events), text(supervisor, "c/nf")) == before
            assert [s.key for s in supervisor.states()] == ["c/nf"]
            await supervisor.stop("c/nf", forget=True)
            assert supervisor.states() == []

    run(scenario)


def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"

    async def scenario() -> None:
        async with supervising(tmp_path, stop_timeout=0.3) as (supervisor, _):
            await supervisor.start("c/stubborn", sh(script))
            pid = state(supervisor, "c/stubborn").pid
            await until(lambda: "ready" in output(supervisor, "c/stubborn"), "the trap")
            began = time.monotonic()
            await supervisor.stop("c/stubborn")
            assert time.monotonic() - began >= 0.3
            assert state(supervisor, "c/stubborn").last_exit == "killed by SIGKILL"
            assert gone(pid)
            assert f"pid {pid} still running after 0.3 s: SIGKILL" in text(supervisor, "c/stubborn")

    run(scenario)


def test_stop_during_the_backoff_cancels_the_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervising(tmp_path, backoff_initial=5.0) as (supervisor, events):
            await supervisor.start("c/nf", sh("exit 1"))
            await until(lambda: state(supervisor, "c/nf").state == "backoff", "the backoff")
            began = time.monotonic()
            await supervisor.stop("c/nf")
            assert time.monotonic() - began < 2
            assert state(supervisor, "c/nf").state == "stopped"
            assert state(supervisor, "c/nf").last_exit == "exited 1"
            assert events[-1] == ("nf-stopped", {"key": "c/nf", "pid": None, "status": None})
            assert "stopped (was backoff)" in text(supervisor, "c/nf")

    run(scenario)


def test_stop_takes_the_nfs_helpers_too_and_an_exit_leaves_none_behind(tmp_path: Path) -> None:
    async def helper(supervisor: Supervisor, key: str) -> tuple[int, int | None]:
        line = await until(
            lambda: [x for x in output(supervisor, key) if x.startswith("helper ")],
            "the helper's pid",
        )
        pid = int(line[0].split()[1])
        return pid, start_time(pid)

    async def scenario() -> None:
        async with supervising(tmp_path, backoff_initial=5.0) as (supervisor, events):
            await supervisor.start("c/stop", sh("sleep 60 & echo helper $!; wait"))
            pid, started = await helper(supervisor, "c/stop")
            await supervisor.stop("c/stop")
            await until(lambda: gone_since(pid, started), "the helper to go on stop")

            await supervisor.start("c/exit", sh("sleep 60 & echo helper $!; sleep 0.2; exit 1"))
            pid, started = await helper(supervisor, "c/exit")
            await until(lambda: events.of("nf-exited"), "the leader's exit")
            await until(lambda: gone_since(pid, started), "the helper to go with its leader")

    run(scenario)


# --- start again, changed specs ------------------------------------------------------------------


def test_start_keeps_an_unchanged_spec_and_restarts_a_changed_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, events):
            await supervisor.start("c/nf", sh("echo A; exec sleep 60", env={"X": "1"}))
            first = state(supervisor, "c/nf").pid
            await supervisor.start("c/nf", sh("echo A; exec sleep 60", env={"X": "1"}))
            assert state(supervisor, "c/nf").pid == first
            assert [kind for kind, _ in events] == ["nf-started"]

            await supervisor.start("c/nf", sh("echo B; exec sleep 60", env={"X": "1"}))
            second = state(supervisor, "c/nf").pid
            assert second != first
            assert gone(first)
            assert [kind for kind, _ in events] == ["nf-started", "nf-stopped", "nf-started"]
            assert state(supervisor, "c/nf").restarts == 0
            await until(lambda: "B" in output(supervisor, "c/nf"), "the new output")
            assert f"stopping pid {first} (spec changed): SIGTERM" in text(supervisor, "c/nf")

            await supervisor.start("c/nf", sh("echo B; exec sleep 60", env={"X": "2"}))
            assert state(supervisor, "c/nf").pid not in (first, second)

            await supervisor.stop("c/nf")
            await supervisor.start("c/nf", sh("echo B; exec sleep 60", env={"X": "2"}))
            assert state(supervisor, "c/nf").state == "running"

    run(scenario)


def test_run_spec_owns_copies_of_what_it_is_given() -> None:
    argv, env = ["/bin/true"], {"A": "1"}
    spec = RunSpec(argv, env=env)  # type: ignore[arg-type]  # a list, as callers may pass
    argv.append("x")
    env["A"] = "2"
    assert spec == RunSpec(("/bin/true",), env={"A": "1"})
    assert hash(spec) == hash(RunSpec(("/bin/true",), env={"A": "1"}))
    assert spec != RunSpec(("/bin/true",), env={"A": "2"})


# --- check ---------------------------------------------------------------------------------------


def _message(supervisor: Supervisor, run: RunSpec) -> tuple[str, str | None]:
    with pytest.raises(FlashctlError) as raised:
        supervisor.check(run)
    return raised.value.message, raised.value.hint


def test_check_refuses_what_cannot_start(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, Events())
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    assert _message(supervisor, RunSpec(()))[0] == "command is empty"
    assert _message(supervisor, RunSpec(("",)))[0] == "command is empty"
    assert _message(supervisor, RunSpec(("no-such-nf-xyz", "-q"))) == (
        f"executable 'no-such-nf-xyz' not found on PATH ({DEFAULT_PATH})",
        "install it, give its absolute path, or set PATH in the NF's env",
    )
    assert _message(supervisor, RunSpec(("no-such-nf-xyz",), env={"PATH": "/x"}))[0] == (
        "executable 'no-such-nf-xyz' not found on PATH (/x)"
    )
    assert _message(supervisor, RunSpec(("/nonexistent/nf",)))[0] == (
        "executable '/nonexistent/nf' does not exist"
    )
    assert _message(supervisor, RunSpec((str(plain),)))[0] == (
        f"'{plain}' is not an executable file"
    )
    assert _message(supervisor, RunSpec((str(tmp_path),)))[0] == (
        f"'{tmp_path}' is not an executable file"
    )
    assert _message(supervisor, RunSpec(("sh",), user="no-such-user-xyz")) == (
        "unknown user 'no-such-user-xyz'",
        "create the user, or remove `user` to run the NF as the agent's user",
    )
    assert _message(supervisor, RunSpec(("sh",), cwd="/nonexistent"))[0] == (
        "working directory '/nonexistent' does not exist"
    )
    supervisor.check(RunSpec(("sh", "-c", "true")))
    supervisor.check(RunSpec(("./sh",), cwd="/bin"))
    supervisor.check(RunSpec(("/bin/sh",), user=pwd.getpwuid(os.geteuid()).pw_name))


# --- the child's surroundings --------------------------------------------------------------------


def test_the_child_gets_a_clean_environment_and_nothing_of_the_agent(tmp_path: Path) -> None:
    script = (
        'echo "stat $(cat /proc/$$/stat)"; echo "stdin $(readlink /proc/$$/fd/0)"; '
        'echo "fds $(ls /proc/$$/fd | tr "\\n" " ")"; echo "cwd $(pwd)"; exec sleep 60'
    )
    leaked = os.dup2(os.open("/dev/null", os.O_RDONLY), 99)  # inheritable, as dup2 makes it
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup

    async def scenario() -> None:
        async with supervising(tmp_path, backoff_initial=5.0) as (supervisor, _):
            await supervisor.start("c/env", RunSpec(("/usr/bin/env",), env={"NF_QUEUE": "3"}))
            await supervisor.start(
                "c/sig", RunSpec(("/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"))
            )
            await supervisor.start("c/sh", sh(script))
            pid = state(supervisor, "c/sh").pid
            await until(lambda: len(output(supervisor, "c/sh")) == 4, "the shell's report")
            await until(lambda: len(output(supervisor, "c/env")) == 4, "env's output")
            await until(lambda: len(output(supervisor, "c/sig")) == 2, "grep's output")

            report = dict(line.split(" ", 1) for line in output(supervisor, "c/sh"))
            fields = report["stat"].rsplit(")", 1)[1].split()
            assert (int(fields[2]), int(fields[3])) == (pid, pid)  # process group, session
            assert report["stdin"] == "/dev/null"
            assert "99" not in report["fds"].split()
            assert report["cwd"] == "/"

            env = dict(line.split("=", 1) for line in output(supervisor, "c/env"))
            home = pwd.getpwuid(os.geteuid()).pw_dir
            lang = os.environ.get("LANG", "C.UTF-8")
            assert env == {"PATH": DEFAULT_PATH, "HOME": home, "LANG": lang, "NF_QUEUE": "3"}

            masks = dict(line.split(":") for line in output(supervisor, "c/sig"))
            assert int(masks["SigIgn"], 16) & (1 << (signal.SIGHUP - 1)) == 0
            assert int(masks["SigBlk"], 16) == 0

    try:
        run(scenario)
    finally:
        os.close(leaked)
        signal.signal(signal.SIGHUP, previous)


@as_root
def test_run_as_another_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    script = (
        'echo "ids $(id -u) $(id -g)"; echo "groups $(id -G)"; echo "home $HOME"; exec sleep 60'
    )

    async def scenario() -> None:
        async with supervising(tmp_path) as (supervisor, _):
            await supervisor.start("c/nf", sh(script, user="nobody"))
            await until(lambda: len(output(supervisor, "c/nf")) == 3, "the report")
            report = dict(line.split(" ", 1) for line in output(supervisor, "c/nf"))
            assert report["ids"] == f"{nobody.pw_uid} {nobody.pw_gid}"
            groups = {int(g) for g in report["groups"].split()}
            assert groups == set(os.getgrouplist("nobody", nobody.pw_gid))  # none of root's
            assert report["home"] == nobody.pw_dir
            assert " as nobody: /bin/sh -c " in text(supervisor, "c/nf").splitlines()[0]

    run(scenario)


@pytest.mark.parametrize("user", [None, pytest.param("nobody", marks=as_root)])
def test_children_go_when_the_supervisor_is_killed(tmp_path: Path, user: str | None) -> None:
    """PR_SET_PDEATHSIG, also after the child changed its uid (which would clear it)."""
    pidfile = tmp_path / "pid"
    argv = [sys.executable, str(SUPERVISED), str(tmp_path / "logs"), str(pidfile), user or "-"]
    agent = subprocess.Popen(
        [*argv, "--", "/bin/sleep", "60"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not pidfile.exists():
            assert agent.poll() is None, "the supervised helper died"
            assert time.monotonic() < deadline, "the helper never started its child"
            time.sleep(0.02)
        child = int(pidfile.read_text())
        started = start_time(child)
        assert started is not None
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + TIMEOUT
        while not gone_since(child, started):
            assert time.monotonic() < deadline, "the child outlived its supervisor"
            time.sleep(0.02)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_close_leaves_no_child_alive(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor = Supervisor(tmp_path / "logs", Events(), **{**FAST, "stop_timeout": 0.3})
        await supervisor.start("a/x", sh("exec sleep 60"))
        await supervisor.start("a/y", sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
        await supervisor.start("b/z", sh("exit 1"))
        pids = [s.pid for s in supervisor.states() if s.pid is not None]
        await until(lambda: "ready" in output(supervisor, "a/y"), "the trap")
        began = time.monotonic()
        await supervisor.close()
        assert time.monotonic() - began < 3  # all at once, not one timeout after another
        assert {s.state for s in supervisor.states()} == {"stopped"}
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    run(scenario)


# --- logs ----------------------------------------------------------------------------------------


def test_log_names_are_safe_and_distinct() -> None:
    assert log_name("chain/nf") == "chain.nf.log"
    assert log_name("web-1/Fire_wall") == "web-1.Fire_wall.log"
    assert log_name("../x") == "%2E%2E.x.log"
    assert log_name("a.b/c") != log_name("a/b.c")
    assert log_name("é/x") == "%C3%A9.x.log"
    assert log_name("") == "%.log"
    long = log_name("x" * 300)
    assert "/" not in long
    assert len(long.encode()) < 255
    assert long != log_name("x" * 301)


def test_the_log_rotates_to_one_backup(tmp_path: Path) -> None:
    script = (
        "i=0; while [ $i -lt 3000 ]; do echo line $i of a chatty nf; i=$((i+1)); done; "
        "echo done; exec sleep 60"
    )

    async def scenario() -> None:
        options = {"log_max_bytes": 20_000, "log_check_interval": 0.02}
        async with supervising(tmp_path, **options) as (supervisor, _):
            await supervisor.start("c/chatty", sh(script))
            log = supervisor.log_path("c/chatty")
            backup = backup_path(log)
            await until(backup.exists, "a backup")
            await until(lambda: "done" in read_log(log, 1), "the end of the output")
            await until(lambda: log.stat().st_size < 20_000, "the live log to shrink")
            assert backup.stat().st_size >= 20_000
            assert sorted(p.name for p in log.parent.iterdir()) == [log.name, backup.name]
            assert "line" in backup.read_text()

    run(scenario)


def test_rotation_truncates_in_place_for_an_append_only_writer(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    writer = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(writer, b"a" * 99 + b"\n")
        assert not rotate_log(log, 101)
        assert rotate_log(log, 100)
        assert backup_path(log).read_bytes() == b"a" * 99 + b"\n"
        assert log.read_bytes() == b""
        os.write(writer, b"after\n")
        assert log.read_bytes() == b"after\n"  # at the new end: no hole of 100 NULs
    finally:
        os.close(writer)
    assert not rotate_log(tmp_path / "missing.log", 1)


def test_read_log_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert read_log(log, 5) == []
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert read_log(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert read_log(log, 0) == []
    long = "y" * 200_000
    log.write_text(f"first\n{long}\nlast")  # a line longer than a block, no final newline
    assert read_log(log, 2) == [long, "last"]
    assert read_log(log, 10) == ["first", long, "last"]
    backup_path(log).write_text("old 1\nold 2\nold 3\n")
    log.write_text("new 1\nnew 2\n")
    assert read_log(log, 3) == ["old 3", "new 1", "new 2"]
    assert read_log(log, 1) == ["new 2"]


def test_follow_log_sees_appended_lines_across_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\nb\n")
    deadline = time.monotonic() + TIMEOUT
    lines = follow_log(log, 1, interval=0.01, stop=lambda: time.monotonic() > deadline)

    def append(data: str) -> None:
        with log.open("a") as file:
            file.write(data)

    assert next(lines) == "b"
    append("c\n")
    assert next(lines) == "c"
    append("d")  # a partial line waits for its end
    append("-e\nf\n")
    assert [next(lines), next(lines)] == ["d-e", "f"]
    append("g\n")  # not read yet when the log rotates
    assert rotate_log(log, 1)
    append("h\n")
    assert [next(lines), next(lines)] == ["g", "h"]
    append("i\n")  # written to the old file just before it is replaced
    log.unlink()  # replaced outright: the rest of the old one, then the new one from its start
    append("j\n")
    assert [next(lines), next(lines)] == ["i", "j"]
    lines.close()


def test_follow_log_waits_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    deadline = time.monotonic() + 0.3
    assert list(follow_log(log, 5, interval=0.01, stop=lambda: time.monotonic() > deadline)) == []
    deadline = time.monotonic() + TIMEOUT
    lines = follow_log(log, 5, interval=0.01, stop=lambda: time.monotonic() > deadline)
    log.write_text("x\n")
    assert next(lines) == "x"
    lines.close()
