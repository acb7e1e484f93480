"""The native backend over a FUSE stand-in of the FLASH sysfs (tests/linux/flashfs.py).

The backend contract (tests/backends/contract.py) runs against NativeBackend exactly as it
runs against the simulated backend; then the variant probe on every kernel variant,
standalone mode, churn noticed by polling and by (crafted) uevents, and the messages of the
errno paths the contract does not reach.

Mounting needs root, /dev/fuse, fusermount3 (Debian fuse3) and mfusepy. Without them the
FUSE tests skip and say why, except under CI=true, where a skip would hide a broken setup:
there they fail.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from flashctl.backends.base import Backend, BackendError, BackendInfo, ChurnListener, Sample
from flashctl.backends.flashsys import (
    EXNFC,
    FLASH_SINGLE,
    FLASH_TABLE,
    FLASH_TABLE_NO_SELF_LOOP,
    SysfsError,
    Variant,
)
from flashctl.backends.native import (
    NativeBackend,
    Uevent,
    interface_name,
    parse_uevent,
    socket_event,
)
from flashctl.chains.planner import Inventory
from tests.backends.contract import BackendContract
from tests.linux.flashfs import FlashFS, fuse_missing, mounted

NOBODY = 65534
WAIT = 5.0  # seconds a churn notification may take at most
FIRST_IFINDEX = 100  # the stand-in's interfaces; any number works, names come from the harness

_T = TypeVar("_T")


@pytest.fixture
def parent() -> Iterator[Path]:
    """A directory the stand-in mounts in; every user may pass through it (not tmp_path,
    which is 0700: the unprivileged writer must reach the files to be refused by them)."""
    reason = fuse_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the FUSE tests: {reason}")
        pytest.skip(reason)
    path = Path(tempfile.mkdtemp(prefix="flashfs-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # the mount is gone by now (see `mounted`)


@pytest.fixture
def standin(parent: Path) -> Iterator[FlashFS]:
    with mounted(parent, FLASH_TABLE) as fs:
        yield fs


# --- the contract ----------------------------------------------------------------------


class AsUser:
    """A Backend whose every call runs in a child process with another uid.

    Forked (the FUSE loop keeps serving in this process) so that the stand-in sees the
    child's uid in its request context, as the kernel would.
    """

    def __init__(self, backend: NativeBackend, uid: int) -> None:
        self.backend = backend
        self.uid = uid

    def _run(self, call: Callable[[], _T]) -> _T:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.close(read_end)
                os.setresgid(self.uid, self.uid, self.uid)
                os.setresuid(self.uid, self.uid, self.uid)
                try:
                    result: tuple[bool, Any] = (True, call())
                except BackendError as exc:
                    result = (False, (exc.message, exc.hint, exc.errno))
                with os.fdopen(write_end, "wb") as out:
                    pickle.dump(result, out)
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as incoming:
            data = incoming.read()
        os.waitpid(pid, 0)
        ok, value = pickle.loads(data)
        if not ok:
            message, hint, code = value
            raise BackendError(message, hint, errno_=code)
        return value  # type: ignore[no-any-return]

    def info(self) -> BackendInfo:
        return self._run(self.backend.info)

    def inventory(self) -> Inventory:
        return self._run(self.backend.inventory)

    def read_rule_text(self, flash_id: int) -> str:
        return self._run(lambda: self.backend.read_rule_text(flash_id))

    def write_rule_text(self, flash_id: int, text: str) -> None:
        self._run(lambda: self.backend.write_rule_text(flash_id, text))

    def sample(self) -> Sample:
        return self._run(self.backend.sample)

    def set_tx_tracking(self, enabled: bool) -> bool:
        return self._run(lambda: self.backend.set_tx_tracking(enabled))

    def subscribe(self, listener: ChurnListener) -> None:
        raise NotImplementedError("the contract only reads and writes as another user")

    def close(self) -> None:
        pass


class StandinHarness:
    """The contract's Harness: sockets bind and close in the stand-in's FlashSysfs."""

    def __init__(self, fs: FlashFS, root: Path) -> None:
        self.fs = fs
        self.interfaces: dict[str, int] = {}
        self.native = NativeBackend(root, ifname=self.interface_name, poll_interval=0.05)
        self.backend: Backend = self.native
        self.max_sockets = fs.sysfs.variant.max_sockets
        self.self_loop: Literal["accept", "reject"] = fs.sysfs.variant.self_loop

    def interface_name(self, ifindex: int) -> str:
        names = {index: name for name, index in self.interfaces.items()}
        return names.get(ifindex, f"if{ifindex}")

    def bind(self, *, pid: int, procname: str, interface: str, qid: int) -> int:
        try:
            flash_id = self.fs.bind(
                pid=pid, procname=procname, ifindex=self.ifindex(interface), qid=qid
            )
        except SysfsError as exc:
            raise BackendError(f"bind failed: {exc.strerror}", errno_=exc.code) from None
        # The contract wants subscribers called before bind returns; the watcher may have
        # seen it already, and then this scan finds nothing new.
        self.native.rescan()
        return flash_id

    def close(self, flash_id: int) -> None:
        self.fs.close(flash_id)
        self.native.rescan()

    def set_ready(self, flash_id: int, ready: bool) -> None:
        self.fs.set_ready(flash_id, ready)

    def ifindex(self, interface: str) -> int:
        return self.interfaces.setdefault(interface, FIRST_IFINDEX + len(self.interfaces))

    def unprivileged(self) -> Backend | None:
        return AsUser(self.native, NOBODY)


@pytest.fixture
def harness_for(parent: Path) -> Iterator[Callable[[Variant], StandinHarness]]:
    opened: list[tuple[Any, StandinHarness]] = []

    def make(variant: Variant) -> StandinHarness:
        context = mounted(parent, variant)
        fs = context.__enter__()
        harness = StandinHarness(fs, parent / "flash")
        opened.append((context, harness))
        return harness

    try:
        yield make
    finally:
        for context, harness in reversed(opened):
            try:
                harness.native.close()  # the watcher thread first: it reads the mount
            finally:
                context.__exit__(None, None, None)


class TestNativeBackend(BackendContract):
    """The FLASH table kernel that accepts self-loops (2ed83241), through FUSE."""

    @pytest.fixture
    def harness(self, harness_for: Callable[[Variant], StandinHarness]) -> StandinHarness:
        return harness_for(FLASH_TABLE)


class TestNativeBackendSelfLoopRejected(BackendContract):
    """The FLASH table kernel that rejects self-loops (43d80001), through FUSE."""

    @pytest.fixture
    def harness(self, harness_for: Callable[[Variant], StandinHarness]) -> StandinHarness:
        return harness_for(FLASH_TABLE_NO_SELF_LOOP)


# --- at the real path, in a private mount namespace ---------------------------------


def test_the_default_root_finds_the_standin_in_a_private_namespace(parent: Path) -> None:
    """The driver with no root configured, and the agent's native backend, find the
    stand-in at /sys/kernel/flash (tests/linux/in_namespace.py); outside that namespace
    /sys/kernel is as it was."""
    if shutil.which("unshare") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the namespace test: no unshare (util-linux)")
        pytest.skip("no unshare (util-linux)")
    repo = Path(__file__).resolve().parents[2]
    outside = Path("/sys/kernel/flash").exists()  # True only on a FLASH kernel
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.linux.in_namespace",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "info": "flash, table next, self-loop not probed",
        "detail": "FLASH sysfs at /sys/kernel/flash",
        "sockets": [[0, 4242, "firewall"], [1, 4243, "router"]],
        "rule": "index\tflash_id\n0\t1\n",
        "agent": "FLASH sysfs at /sys/kernel/flash",
        "real_entries_visible": True,
    }
    assert Path("/sys/kernel/flash").exists() == outside


# --- the variant probe -----------------------------------------------------------------

PROBES = [
    (FLASH_TABLE, "flash, table next, self-loop accepted", True),
    (FLASH_TABLE_NO_SELF_LOOP, "flash, table next, self-loop rejected", True),
    (FLASH_SINGLE, "flash, single-int next, self-loop accepted", False),
    (EXNFC, "exnfc, single-int next, self-loop accepted", False),
    (Variant(tx_tracking=True), "flash, table next, self-loop accepted, tx_tracking", True),
]


@pytest.mark.parametrize(("variant", "described", "table"), PROBES)
def test_the_probe_finds_the_variant_and_leaves_no_trace(
    parent: Path, variant: Variant, described: str, table: bool
) -> None:
    with mounted(parent, variant) as fs:
        fs.bind(pid=10, procname="a", ifindex=2, qid=0)
        fs.bind(pid=11, procname="b", ifindex=2, qid=1)
        before = fs.sysfs.to_data()
        backend = NativeBackend(parent / "flash", probe_self_loop=True)
        info = backend.info()
        assert info.variant == described
        assert (info.table, info.chaining, info.name) == (table, True, "native")
        assert info.detail == f"FLASH sysfs at {parent / variant.kset}"
        # Every socket read -1: the format came from the failed write, the self-loop from
        # a write that was undone at once. The kernel ends as it was.
        assert fs.sysfs.to_data() == before


def test_the_format_is_read_from_a_rule_without_writing(standin: FlashFS) -> None:
    for qid in range(2):
        standin.bind(pid=10 + qid, procname="nf", ifindex=2, qid=qid)
    standin.sysfs.write("0/next", b"1\n")
    standin.set_ready(1, False)  # a write to 1 would be EBUSY: the probe must not need one
    backend = NativeBackend(standin.mountpoint)
    assert backend.probe().table is True
    assert backend.info().variant == "flash, table next, self-loop not probed"


def test_without_sockets_the_format_waits_for_the_first_one(parent: Path) -> None:
    for variant, table in ((FLASH_TABLE, True), (EXNFC, False)):
        with mounted(parent, variant) as fs:
            backend = NativeBackend(parent / "flash")
            info = backend.info()
            assert info.variant == f"{variant.kset}, next format not probed, self-loop not probed"
            assert info.table is table  # the kset's only or newest format, until seen
            fs.bind(pid=1, procname="nf", ifindex=2, qid=0)
            assert backend.info().variant.startswith(
                f"{variant.kset}, {'table' if table else 'single-int'} next"
            )


def test_the_self_loop_probe_skips_sockets_with_rules(standin: FlashFS) -> None:
    for qid in range(2):
        standin.bind(pid=10 + qid, procname="nf", ifindex=2, qid=qid)
    standin.sysfs.write("0/next", b"1\n")
    standin.sysfs.write("1/next", b"0\n")
    before = standin.sysfs.to_data()
    backend = NativeBackend(standin.mountpoint, probe_self_loop=True)
    assert backend.probe().self_loop is None  # nobody reads -1: nothing it may touch
    assert standin.sysfs.to_data() == before


# --- standalone mode -------------------------------------------------------------------


def test_standalone_mode_when_there_is_no_flash_kernel(tmp_path: Path) -> None:
    backend = NativeBackend(tmp_path / "kernel" / "flash")
    info = backend.info()
    assert info == BackendInfo(
        name="native",
        variant="standalone (no FLASH kernel)",
        chaining=False,
        detail=f"{tmp_path / 'kernel' / 'flash'} does not exist: AF_XDP works, "
        "chaining needs FLASH",
    )
    assert backend.inventory() == Inventory(())
    with pytest.raises(BackendError) as caught:
        backend.write_rule_text(0, "1\n")
    assert caught.value.message == (
        f"no FLASH kernel: {tmp_path / 'kernel' / 'flash'} does not exist (standalone mode)"
    )
    assert caught.value.hint == (
        "chaining needs the FLASH kernel (networkedsystemsIITB/flash-linux); "
        "use --backend sim to try chains without it"
    )
    assert caught.value.errno == errno.ENOENT
    assert backend.sample().sockets == ()


def test_status_says_standalone_plainly(tmp_path: Path) -> None:
    from rich.console import Console

    from flashctl.agentviews import status_view

    info = NativeBackend(tmp_path / "flash").info()
    data = {
        "backend": {"name": info.name, "variant": info.variant, "chaining": info.chaining},
        "chains": [],
        "sockets": 0,
    }
    console = Console(width=120, record=True)
    console.print(status_view(data))
    assert console.export_text().splitlines()[:2] == [
        "backend native (standalone (no FLASH kernel)); 0 sockets",
        "standalone mode: AF_XDP sockets work, chaining needs the FLASH kernel",
    ]


def test_the_agent_makes_a_native_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flashctl.agent import make_backend
    from flashctl.home import Home

    # The environment is the documented way to point the agent elsewhere, not a patch.
    monkeypatch.setenv("FLASHCTL_SYSFS_ROOT", str(tmp_path / "flash"))
    backend, prepare = make_backend("native", Home(tmp_path))
    assert isinstance(backend, NativeBackend)
    assert backend.root == tmp_path / "flash"
    assert prepare is None
    assert backend.info().chaining is False


def test_sysfs_root_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flashctl.agent import make_backend
    from flashctl.errors import FlashctlError
    from flashctl.home import Home

    monkeypatch.setenv("FLASHCTL_SYSFS_ROOT", str(tmp_path / "env" / "flash"))
    backend, _prepare = make_backend("native", Home(tmp_path), sysfs_root=tmp_path / "flash")
    assert isinstance(backend, NativeBackend)
    assert backend.root == tmp_path / "flash"
    with pytest.raises(FlashctlError) as caught:
        make_backend("sim", Home(tmp_path), sysfs_root=tmp_path / "flash")
    assert caught.value.message == "--sysfs-root applies to the native backend only"


def test_agent_start_with_sysfs_root_drives_the_standin(parent: Path) -> None:
    """`flashctl agent start --backend native --sysfs-root PATH`: the detached agent (started
    through `start_agent`) finds the stand-in there, with no FLASHCTL_SYSFS_ROOT set."""
    from flashctl.client import Client
    from flashctl.home import Home

    home = Home(parent / "h")
    env = {k: v for k, v in os.environ.items() if k != "FLASHCTL_SYSFS_ROOT"}
    env["FLASHCTL_HOME"] = str(home.root)
    # Never the host's /tmp/flash/uds.sock: a real FLASH monitor may be serving it.
    env["FLASHCTL_MONITOR_SOCKET"] = str(parent / "monitor.sock")
    repo = Path(__file__).resolve().parents[2]
    with mounted(parent, FLASH_TABLE) as fs:
        fs.bind(pid=4242, procname="fw", ifindex=1, qid=0)
        start = ["agent", "start", "--backend", "native", "--sysfs-root", str(parent / "flash")]
        started = subprocess.run(
            [sys.executable, "-m", "flashctl", *start],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        try:
            with Client(home, autostart=False, say=lambda _text: None) as client:
                status = client.call("status")
        finally:
            stopped = subprocess.run(
                [sys.executable, "-m", "flashctl", "agent", "stop"],
                cwd=repo,
                env=env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        assert stopped.returncode == 0
        assert status["backend"]["detail"] == f"FLASH sysfs at {parent / 'flash'}"
        assert status["sockets"] == 1


# --- tx_tracking -----------------------------------------------------------------------


def test_tx_tracking_is_written_and_read_back(parent: Path) -> None:
    with mounted(parent, Variant(tx_tracking=True)) as fs:
        backend = NativeBackend(parent / "flash")
        assert backend.set_tx_tracking(True) is True
        assert fs.sysfs.tx_tracking == 1
        assert backend.set_tx_tracking(False) is True
        assert fs.sysfs.tx_tracking == 0
        with pytest.raises(BackendError) as caught:
            AsUser(backend, NOBODY).set_tx_tracking(True)
        assert caught.value.message == (
            "setting tx_tracking to 1 failed with EACCES: Permission denied"
        )
        assert caught.value.hint == "run the agent as root"
        assert fs.sysfs.tx_tracking == 0


def test_tx_tracking_without_the_file(standin: FlashFS, tmp_path: Path) -> None:
    before = standin.sysfs.to_data()
    assert NativeBackend(standin.mountpoint).set_tx_tracking(True) is False
    assert standin.sysfs.to_data() == before
    assert NativeBackend(tmp_path / "flash").set_tx_tracking(True) is False  # standalone


TX_CHAIN = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: tx}
spec:
  interface: eth0
  txTracking: true
  nfs:
    fw: {queues: [0]}
    rt: {queues: [1]}
  links:
    - {from: nic, to: fw}
    - {from: fw, to: rt}
    - {from: rt, to: nic}
"""


@pytest.mark.parametrize("has_file", [True, False])
def test_the_engine_sets_tx_tracking_through_the_driver(
    parent: Path, tmp_path: Path, has_file: bool
) -> None:
    from flashctl.engine import Engine
    from flashctl.store import Store

    with mounted(parent, Variant(tx_tracking=has_file)) as fs:
        fs.bind(pid=10, procname="fw", ifindex=2, qid=0)
        fs.bind(pid=11, procname="rt", ifindex=2, qid=1)
        backend = NativeBackend(parent / "flash", ifname=lambda _index: "eth0")
        engine = Engine(backend, Store.open(tmp_path / "s.db"))
        report = engine.apply([("tx.yaml", TX_CHAIN)], who="test")
        assert fs.sysfs.read("0/next") == b"index\tflash_id\n0\t1\n"
        kinds = [(e.kind, e.message) for e in engine.store.events() if e.kind != "write"]
        if has_file:
            assert fs.sysfs.tx_tracking == 1
            assert report.warnings == []
            assert ("tx_tracking", "tx_tracking set to 1 (tx)") in kinds
        else:
            warning = "txTracking true of tx not set: this kernel has no tx_tracking file"
            assert report.warnings == [warning]
            assert ("warning", warning) in kinds


# --- churn -----------------------------------------------------------------------------


class Heard:
    """A listener that remembers what the inventory was each time it was called."""

    def __init__(self, backend: NativeBackend) -> None:
        self.backend = backend
        self.calls: list[list[int]] = []
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls.append([s.flash_id for s in self.backend.inventory().sockets])
        self.event.set()

    def wait(self) -> list[int]:
        assert self.event.wait(WAIT), "no churn notification"
        self.event.clear()
        return self.calls[-1]


def test_polling_notices_binds_and_closes(standin: FlashFS) -> None:
    backend = NativeBackend(standin.mountpoint, poll_interval=0.02, uevents=None)
    heard = Heard(backend)
    try:
        backend.subscribe(heard)
        standin.bind(pid=1, procname="nf", ifindex=2, qid=0)
        assert heard.wait() == [0]
        standin.bind(pid=2, procname="nf", ifindex=2, qid=1)
        assert heard.wait() == [0, 1]
        with standin.lock:  # closed and taken again between two scans: still churn
            standin.sysfs.close(0)
            standin.sysfs.bind(pid=3, procname="other", ifindex=2, qid=0)
        assert heard.wait() == [0, 1]
        assert [s.pid for s in backend.inventory().sockets] == [3, 2]
    finally:
        backend.close()


def test_a_flash_uevent_triggers_a_scan_at_once(standin: FlashFS) -> None:
    """Crafted kernel messages through a datagram pair stand in for the netlink socket:
    a FUSE file system cannot make the kernel send uevents for its directories."""
    kernel_side, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    backend = NativeBackend(standin.mountpoint, poll_interval=3600, uevents=lambda: ours)
    heard = Heard(backend)
    try:
        backend.subscribe(heard)
        standin.bind(pid=1, procname="nf", ifindex=2, qid=0)
        kernel_side.send(
            b"add@/devices/virtual/net/lo\0ACTION=add\0DEVPATH=/devices/virtual/net/lo\0"
        )
        deadline = time.monotonic() + WAIT
        while backend.uevents_seen < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.uevents_seen == 1
        assert heard.calls == []  # another device's event: no scan
        kernel_side.send(b"add@/kernel/flash/0\0ACTION=add\0DEVPATH=/kernel/flash/0\0SEQNUM=7\0")
        assert heard.wait() == [0]
        standin.close(0)
        kernel_side.send(b"remove@/kernel/flash/0\0ACTION=remove\0DEVPATH=/kernel/flash/0\0")
        assert heard.wait() == []
        assert backend.uevents_seen == 3
    finally:
        backend.close()
        kernel_side.close()
    assert ours.fileno() == -1  # closed by the watcher as it ended


def test_the_watcher_hears_real_kernel_uevents(standin: FlashFS) -> None:
    """The real netlink socket: asking the kernel to resend lo's uevent ("change", as
    `udevadm trigger` does) reaches the watcher, which scans for nothing (not a flash kset)."""
    backend = NativeBackend(standin.mountpoint, poll_interval=3600)
    heard = Heard(backend)
    try:
        backend.subscribe(heard)
        Path("/sys/class/net/lo/uevent").write_text("change")
        deadline = time.monotonic() + WAIT
        while backend.uevents_seen < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert backend.uevents_seen >= 1  # other devices may speak up meanwhile too
        assert heard.calls == []
    finally:
        backend.close()


def test_close_ends_the_watcher_without_waiting_for_the_poll(standin: FlashFS) -> None:
    backend = NativeBackend(standin.mountpoint, poll_interval=3600, uevents=None)
    backend.subscribe(lambda: None)
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name == "flashctl-uevents"]


# --- uevent parsing (pure) -------------------------------------------------------------


def test_parse_uevent_reads_kernel_messages() -> None:
    assert parse_uevent(
        b"add@/kernel/flash/3\0ACTION=add\0DEVPATH=/kernel/flash/3\0SUBSYSTEM=flash\0SEQNUM=9\0"
    ) == Uevent("add", "/kernel/flash/3")
    assert parse_uevent(b"remove@/kernel/exnfc/12\0") == Uevent("remove", "/kernel/exnfc/12")
    assert parse_uevent(b"libudev\0\xfe\xed\xca\xfe" + b"\0" * 32) is None  # udev's copy
    assert parse_uevent(b"garbage") is None
    assert parse_uevent(b"") is None


@pytest.mark.parametrize(
    ("event", "kset", "flash_id"),
    [
        (Uevent("add", "/kernel/flash/3"), "flash", 3),
        (Uevent("remove", "/kernel/flash/63"), "flash", 63),
        (Uevent("add", "/kernel/exnfc/0"), "exnfc", 0),
        (Uevent("change", "/kernel/flash/3"), "flash", None),
        (Uevent("add", "/kernel/exnfc/3"), "flash", None),
        (Uevent("add", "/kernel/flash/03"), "flash", None),  # not a name the kernel makes
        (Uevent("add", "/kernel/flash/3/next"), "flash", None),
        (Uevent("add", "/kernel/flash"), "flash", None),
    ],
)
def test_socket_event_names_the_flash_id(event: Uevent, kset: str, flash_id: int | None) -> None:
    assert socket_event(event, kset) == flash_id


# --- messages of errno paths beyond the contract ---------------------------------------


def test_reading_a_closed_socket_says_so(standin: FlashFS) -> None:
    standin.bind(pid=1, procname="nf", ifindex=2, qid=0)
    backend = NativeBackend(standin.mountpoint)
    standin.close(0)
    with pytest.raises(BackendError) as caught:
        backend.read_rule_text(0)
    assert caught.value.message == (
        "reading flash-id 0's next failed with ENOENT: No such file or directory"
    )
    assert caught.value.errno == errno.ENOENT


def test_a_write_longer_than_a_page_is_reported_cut(standin: FlashFS) -> None:
    for qid in range(2):
        standin.bind(pid=1 + qid, procname="nf", ifindex=2, qid=qid)
    backend = NativeBackend(standin.mountpoint)
    text = "1 " * 2500 + "\n"  # 5001 bytes: sysfs hands the store its first 4096
    with pytest.raises(BackendError) as caught:
        backend.write_rule_text(0, text)
    assert caught.value.message == "flash-id 0's next took 4096 of the 5001 bytes written"
    assert caught.value.hint == "give the socket fewer targets"


def test_interface_names_fall_back_to_if_n() -> None:
    assert interface_name(1) == socket.if_indextoname(1)
    assert interface_name(2**31 - 1) == f"if{2**31 - 1}"
