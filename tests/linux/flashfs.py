"""A FUSE stand-in for /sys/kernel/flash (or /sys/kernel/exnfc), for tests of the native backend.

Every file operation is delegated to ONE `flashsys.FlashSysfs`, the same pure model the
simulated backend uses, so the stand-in and the simulated kernel cannot disagree about
listings, modes, contents or errnos. The tests drive the host side (sockets binding and
closing) through the in-process API of `FlashFS` (`bind`, `close`, `set_ready`): the FUSE
loop runs in a thread of the test process.

What FUSE needs to look like sysfs:
- no caching of attributes, entries or data (`attr_timeout=0`, `entry_timeout=0`,
  `negative_timeout=0`, `direct_io`), so a closed socket's directory is gone at once and
  every read calls show() again, and each write() reaches the store as one buffer;
- permission checks in `open` (sysfs checks mode bits even for root), the writer's uid
  from the FUSE request context, and `allow_other` so tests can act as another user;
- O_TRUNC is accepted and ignored, as sysfs does (`echo 1 > next` from a shell).

Needs root, /dev/fuse, libfuse3 (Debian fuse3) and the PyPI package mfusepy; `mfusepy` is
imported only when mounting, so importing this module never fails.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flashctl.backends.flashsys import FlashSysfs, SysfsError, Variant

MOUNT_TIMEOUT = 10.0  # seconds for the FUSE loop to mount or to end after unmounting


class FlashOperations:
    """The FUSE operations (mfusepy calls the methods it finds by name)."""

    use_ns = True  # times in nanoseconds (mfusepy warns otherwise)

    def __init__(self, sysfs: FlashSysfs, lock: threading.Lock) -> None:
        self.sysfs = sysfs
        # The tests' thread changes the model while FUSE reads it. Not named `lock`: mfusepy
        # takes every attribute named like a FUSE operation for that operation.
        self._guard = lock
        self.started = time.time_ns()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._guard:
            mode, size = self.sysfs.stat(path)
        return {
            "st_mode": mode,
            "st_size": size,
            "st_nlink": 2 if stat.S_ISDIR(mode) else 1,
            "st_uid": 0,  # sysfs files are root's
            "st_gid": 0,
            "st_atime": self.started,
            "st_mtime": self.started,
            "st_ctime": self.started,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._guard:
            return [".", "..", *self.sysfs.listdir(path)]

    def open(self, path: str, flags: int) -> int:
        with self._guard:
            mode, _size = self.sysfs.stat(path)
        if flags & os.O_ACCMODE != os.O_RDONLY and (_caller_uid() != 0 or not mode & 0o200):
            raise SysfsError(errno.EACCES, path)  # kernfs: mode bits count, even for root
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._guard:
            content = self.sysfs.read(path)
        return content[offset : offset + size]

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        uid = _caller_uid()
        with self._guard:
            return self.sysfs.write(path, data, uid=uid)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._guard:
            self.sysfs.stat(path)  # ENOENT for a vanished file; otherwise nothing to do
        return 0


def _caller_uid() -> int:
    import mfusepy  # type: ignore[import-untyped, unused-ignore]

    uid, _gid, _pid = mfusepy.fuse_get_context()
    return int(uid)


class FlashFS:
    """The stand-in, mounted at `mountpoint` (a directory named after the kset)."""

    def __init__(self, mountpoint: Path, variant: Variant) -> None:
        self.mountpoint = mountpoint
        self.sysfs = FlashSysfs(variant)
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- the host side -------------------------------------------------------------------

    def bind(self, *, pid: int, procname: str, ifindex: int, qid: int) -> int:
        with self.lock:
            return self.sysfs.bind(pid=pid, procname=procname, ifindex=ifindex, qid=qid)

    def close(self, flash_id: int) -> None:
        with self.lock:
            self.sysfs.close(flash_id)

    def set_ready(self, flash_id: int, ready: bool) -> None:
        with self.lock:
            self.sysfs.set_ready(flash_id, ready)

    # --- mounting ------------------------------------------------------------------------

    def mount(self) -> None:
        self.mountpoint.mkdir(mode=0o755, exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name="flashfs", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"the FUSE stand-in did not mount: {self._error!r}")
            time.sleep(0.01)

    def _serve(self) -> None:
        import mfusepy  # type: ignore[import-untyped, unused-ignore]

        try:
            mfusepy.FUSE(
                FlashOperations(self.sysfs, self.lock),
                str(self.mountpoint),
                foreground=True,  # never daemonize: the loop is this thread
                nothreads=True,  # one request at a time, like the model expects
                allow_other=True,  # tests also act as an unprivileged user
                direct_io=True,
                attr_timeout=0,
                entry_timeout=0,
                negative_timeout=0,
                fsname="flashfs",
            )
        except BaseException as exc:  # reported by mount(); the thread must just end
            self._error = exc

    def unmount(self) -> None:
        """Unmount (lazily if something still holds a file) and wait for the loop to end."""
        if os.path.ismount(self.mountpoint):
            done = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
            )
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        if self._thread is not None:
            self._thread.join(MOUNT_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError(f"the FUSE loop for {self.mountpoint} did not end")
            self._thread = None
        with contextlib.suppress(OSError):
            self.mountpoint.rmdir()


@contextlib.contextmanager
def mounted(parent: Path, variant: Variant) -> Iterator[FlashFS]:
    """A stand-in at `parent/<kset>`, unmounted and its loop ended whatever happens."""
    fs = FlashFS(parent / variant.kset, variant)
    fs.mount()
    try:
        yield fs
    finally:
        fs.unmount()


def fuse_missing() -> str | None:
    """Why the FUSE stand-in cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting the FUSE stand-in needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "no mfusepy (pip install mfusepy)"
    return None
