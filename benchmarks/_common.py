"""Helpers shared by the benchmark scripts: statistics, machine facts, RESULTS.md sections.

Not a benchmark itself. The scripts import it as a sibling module (`python benchmarks/x.py`
puts this directory first on `sys.path`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flashctl.home import Home

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"
RESULTS_HEADER = """# Benchmark results

Figures recorded by the scripts in this directory (`python benchmarks/<name>.py --record`
replaces that script's section below). Each section names its machine, date, command and
the git state it measured: numbers from different sections are not comparable unless those
match. The machine is shared and noisy; every figure is a median (or p90) of interleaved
repetitions, and the floors measured in the same run are the fair yardstick.
"""
PACKAGES = ("pydantic", "pydantic_core", "networkx", "PyYAML", "typer", "click")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p90 of 20 values is the 18th smallest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def _git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "flashctl")
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted((REPO / "flashctl").rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    changes = " + uncommitted changes in flashctl/" if dirty else ""
    return f"{commit}{changes} (sources sha1 {digest.hexdigest()[:12]}: flashctl/**/*.py)"


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def machine_lines() -> list[str]:
    """Markdown bullet lines describing where and when the figures were taken."""
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    date = datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return [
        f"- machine: {nproc} cores (nproc), {_cpu_model()}, "
        f"kernel {platform.release()}, load average {load} at start",
        f"- python: {platform.python_version()} ({sys.executable})",
        f"- packages: {_versions()}",
        f"- flashctl: git {_git_state()}",
        f"- date: {date}",
    ]


def command_line() -> str:
    """The command that reproduces this run, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *sys.argv[1:]])


def import_path() -> None:
    """Import flashctl from this checkout even when it is not installed."""
    if str(REPO) not in sys.path:
        sys.path.insert(1, str(REPO))


def json_child(
    argv: Sequence[str], failed: str, env: Mapping[str, str] | None = None, stderr_tail: int = 0
) -> dict[str, Any]:
    """Run a child (cwd REPO, no stdin) and parse the JSON object on its last line of output.

    On a non-zero exit: SystemExit with `failed` and the child's stderr (its last
    `stderr_tail` characters, if set).
    """
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{failed}:\n{done.stderr[-stderr_tail:] if stderr_tail else done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class GcClock:
    """Time spent in the cyclic garbage collector (and its runs), through gc.callbacks."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start
            self.count += 1

    @contextmanager
    def installed(self) -> Iterator[GcClock]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def section_head(title: str, *, from_root: bool = True) -> list[str]:
    """A section's first lines: its title, where and when it ran, the command that ran it."""
    where = " (from the repository root)" if from_root else ""
    return [title, "", *machine_lines(), f"- command: `{command_line()}`{where}"]


def add_record_args(parser: argparse.ArgumentParser, check: str | None) -> None:
    """`--record` and (with its help text, unless None) `--check`."""
    parser.add_argument("--record", action="store_true", help="write the section to RESULTS.md")
    if check is not None:
        parser.add_argument("--check", action="store_true", help=check)


def finish(args: argparse.Namespace, name: str, section: str, passed: bool = True) -> int:
    """Print the section, record it if `--record`; 1 if `--check` and a target failed."""
    print()
    print(section)
    if args.record:
        print(f"recorded in {record(name, section)}")
    return 1 if getattr(args, "check", False) and not passed else 0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table; the first column is left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- begin {name} -->", f"<!-- end {name} -->"


def record(name: str, section: str) -> Path:
    """Replace the section `name` of RESULTS.md (or append it), keeping every other section."""
    begin, end = _markers(name)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else RESULTS_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text, encoding="utf-8")
    return RESULTS


# --------------------------------------------------------------------------- agents


@dataclass(frozen=True, slots=True)
class AgentProcess:
    """A `flashctl agent run` started by a benchmark, in a state directory of its own."""

    process: subprocess.Popen[bytes]
    home: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def state(self) -> Home:
        """The agent's files (socket, lock, store, sim kernel) as flashctl.home names them."""
        import_path()
        from flashctl.home import Home

        return Home(self.home)

    @property
    def socket(self) -> Path:
        return self.state.socket

    @property
    def log(self) -> Path:
        return self.home / "bench-agent.log"

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with FLASHCTL_HOME pointing at this agent (for child `flashctl` processes)."""
        return {**base, "FLASHCTL_HOME": str(self.home)}

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM by pid (the agent stops gracefully), SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def _lock_holder(home: Path) -> int | None:
    """The pid in `agent.lock` while an agent holds its flock, else None."""
    import_path()
    from flashctl.home import Home, lock_holder

    holder = lock_holder(Home(home))
    return None if holder == -1 else holder  # -1: held, but no pid written yet


def _stop_stray(home: Path, ours: int) -> None:
    """If a child `flashctl` autostarted another agent in our directory (ours had died),
    stop that one too, by the pid it wrote in the lock file."""
    holder = _lock_holder(home)
    if holder is None or holder == ours:
        return
    print(f"stopping agent pid {holder}, autostarted in {home}", file=sys.stderr)
    os.kill(holder, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _lock_holder(home) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def running_agent(
    prefix: Sequence[str], env: Mapping[str, str], *, start_timeout: float = 15.0
) -> Iterator[AgentProcess]:
    """Run `<prefix> agent run --backend sim` in a fresh short state directory under /tmp.

    The directory name stays short (`/tmp/fcXXXXXXXX`): Unix socket paths are limited to
    107 bytes. On exit the agent is stopped by its pid and the directory removed.
    """
    home = Path(tempfile.mkdtemp(prefix="fc", dir="/tmp"))
    try:
        with (home / "bench-agent.log").open("wb") as log:
            process = subprocess.Popen(
                [*prefix, "agent", "run", "--backend", "sim"],
                cwd=REPO,
                env={**env, "FLASHCTL_HOME": str(home)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        agent = AgentProcess(process, home)
        try:
            deadline = time.monotonic() + start_timeout
            while not _answers(agent.socket):
                if not agent.alive():
                    raise SystemExit(f"the agent exited at start:\n{agent.log_tail()}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"the agent did not answer within {start_timeout:g} s")
                time.sleep(0.02)
            yield agent
        finally:
            _stop(process, 10.0)
            _stop_stray(home, process.pid)
    finally:
        shutil.rmtree(home, ignore_errors=True)
