"""An exact, in-memory model of the FLASH sysfs interface and its flash-id table.

Pure: no I/O, no clock. The simulated backend drives it through `bind`/`close`/`set_ready`
and the file-level methods; a FUSE stand-in of `/sys/kernel/<kset>` serves the very same
`listdir`/`stat`/`read`/`write`, so the two can never disagree about what the kernel does.

Kernel facts, read from `networkedsystemsIITB/flash-linux` (commit ids are the snapshots the
code index holds; several files have versions at commits it does not):

Flash-ids (xsk.c `alloc_*_id`, every snapshot)
  - `idr_alloc(&idr, xs, 0, 64)` at bind(): the lowest free id in 0..63, reused by the very
    next bind. A full table gives -ENOSPC, which bind() turns into EINVAL. The id is freed
    and the directory removed in `xsk_destruct`, when the last reference is gone.
  - The id is allocated before the rest of bind() can fail (`xp_assign_dev` -> EBUSY when
    the queue already has a socket, shared-UMEM errors): the failed socket keeps its id and
    its directory (state XSK_READY) until it is closed. Not modelled separately; a caller
    that wants it binds such a socket itself.

`next`, single int (kset `exnfc`: xsk.c 01c8b8b3, 84d0c521, 12215726, xsk_sysfs.c 12215726;
kset `flash`: xsk.c df861929, 43d5235f, and a flash-named copy of the same xsk_sysfs.c)
  - store: `kstrtoint(buf, 10, &obj->next)` (one trailing newline, a leading '+', ERANGE on
    overflow); a parse error leaves the file as it was. Then `*_update_chain_map(src, n)`:
    unknown source -> EINVAL, source not XSK_READY/XSK_BOUND -> EBUSY, n != -1 and unknown
    -> EINVAL (any other negative id is unknown). No self-loop check, no target state check.
  - On any update error the file is set to -1, but the chain map is left as it was: the file
    says -1 while the data path still redirects.
  - Close of socket X (`free_*_id`) clears every map entry that points at X, so upstream
    senders go back to the NIC while their `next` still names X. X's own entry is not
    cleared: the next socket to take X's id inherits X's redirect although its `next`
    reads -1.
  - show: "%d\\n".

`next`, multi-target table (kset `flash`: sysfs at 43d80001, xsk.c 2ed83241 and 43d80001)
  - store, on the NUL-terminated buffer: skip runs of spaces; stop at the first newline; a
    token runs to a space, newline or NUL, or to 15 characters (`char temp[16]`), so a longer
    token is cut into 15-character pieces that parse on their own; a token must be a digit
    or '-' followed by digits only, else EINVAL (tabs, "+1", "1a"); then kstrtoint, ERANGE
    when it overflows an int. Tokens are checked in order: the first bad one decides. No
    token at all -> EINVAL.
  - `flash_update_chain_map` (2ed83241): unknown source -> EINVAL; source not
    XSK_READY/XSK_BOUND -> EBUSY; first id == -1 -> unchain and clear the table (ids after
    it are parsed, so must be well formed, but are not looked up); otherwise every id must
    be a live socket -> EINVAL (so -1 in a later position and other negatives are EINVAL).
    43d80001 adds `dst_xsk == src_xsk` -> EINVAL (self-loop rejected); 2ed83241 accepts it.
    Duplicates and any number of targets are accepted.
  - Then the old outflows are destroyed (`destroy_out_buffs`) before the new ones are
    allocated (`alloc_out_buffs`); an allocation failure returns EBUSY with the chaining
    flag unchanged. A socket that was chained is left chained with no outflows: its TX
    stalls, while `next` still shows the previous table (a failed write never changes the
    file). The body of `alloc_out_buffs` is not in the index; this model fails it exactly
    when a target is not ready (XSK_UNBOUND), as the notes describe.
  - Close of socket X resets X's own chaining flag and cache entry; upstream outflows keep
    X's id and are resolved per batch, so they hold packets in the sender's TX ring until
    another socket takes the id, which then silently receives them. `next` is unchanged.
  - show: "-1\\n" for no targets, else "index\\tflash_id\\n" and one "%d\\t%d\\n" per target,
    each through `sysfs_emit_at`, which caps the whole output at PAGE_SIZE - 1 bytes.

sysfs core (Linux fs/sysfs/file.c, fs/kernfs/file.c), the same in every snapshot
  - Directories 0755, size 0; attribute files report size PAGE_SIZE. pid, procname, ifindex
    and qid are 0444, `next` 0644. procname is `current->comm` (at most 15 bytes).
  - A write of 0 bytes returns 0 without calling the store; a longer one is cut to
    PAGE_SIZE bytes (sysfs sets no atomic_write_len) and NUL-terminated, and the store sees
    only that; the write returns what the store returns (the cut length on success).
  - Opening a file without write permission bits for writing is EACCES even for root;
    files are root-owned, so any other uid gets EACCES. Reading a directory is EISDIR.

Not in any stored snapshot: `/sys/kernel/flash/tx_tracking` is documented (flash repo,
doc/flash_kernel/flash_kernel.md: "Global TX tracking control (0 or 1)", written with
`echo 1`). Modelled, when `Variant.tx_tracking`, as a 0644 file parsed with kstrtoint that
accepts 0 or 1 (anything else EINVAL): an assumption, not a reading.

`XSK_UNBOUND` (a socket released while still referenced, or its device unregistered) is
`ready=False` here. The kernel never goes back to bound; `set_ready` allows it for tests.

Not modelled: in the single-int snapshots `xs->*_id` starts at 0 (zeroed socket) and
`xsk_destruct` frees it unconditionally, so closing a never-bound AF_XDP socket frees flash-id
0 from under its owner (fixed by `flash_id = -1` in 2ed83241 and 43d80001).
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeVar, cast

PAGE_SIZE: Final = 4096
TOKEN_CHARS: Final = 15  # `char temp[16]` in the table parser
COMM_BYTES: Final = 15  # TASK_COMM_LEN - 1
INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
U64_MAX: Final = 2**64 - 1
NEXT_HEADER: Final = "index\tflash_id\n"
DATA_FORMAT: Final = 1

_T = TypeVar("_T")

SOCKET_FILES: Final[Mapping[str, int]] = {
    "ifindex": 0o444,
    "next": 0o644,
    "pid": 0o444,
    "procname": 0o444,
    "qid": 0o444,
}
KSET_FILES: Final[Mapping[str, int]] = {"tx_tracking": 0o644}
DIR_MODE: Final = stat.S_IFDIR | 0o755

# glibc's texts, so a SysfsError reads like the OSError a real write would raise.
_STRERROR: Final[Mapping[int, str]] = {
    errno.EINVAL: "Invalid argument",
    errno.EBUSY: "Device or resource busy",
    errno.ERANGE: "Numerical result out of range",
    errno.EACCES: "Permission denied",
    errno.ENOENT: "No such file or directory",
    errno.EISDIR: "Is a directory",
    errno.ENOTDIR: "Not a directory",
}


@dataclass(frozen=True, slots=True)
class Variant:
    """Which kernel snapshot the model behaves like (see the module docstring)."""

    kset: Literal["flash", "exnfc"] = "flash"  # directory name under /sys/kernel
    table: bool = True  # multi-target `next`; False: the single-int file
    self_loop: Literal["accept", "reject"] = "accept"
    tx_tracking: bool = False  # whether <kset>/tx_tracking exists
    max_sockets: int = 64  # FLASH_MAX_XSK / EXNFC_MAX_XSK

    def __post_init__(self) -> None:
        if self.kset not in ("flash", "exnfc"):
            raise ValueError(f"unknown kset {self.kset!r}")
        if self.self_loop not in ("accept", "reject"):
            raise ValueError(f"self_loop must be 'accept' or 'reject', not {self.self_loop!r}")
        if isinstance(self.max_sockets, bool) or not 1 <= self.max_sockets <= INT_MAX:
            raise ValueError(f"max_sockets must be a positive int, not {self.max_sockets!r}")


# The snapshots, by the commits they were read at.
EXNFC: Final = Variant(kset="exnfc", table=False)  # 01c8b8b3, 84d0c521, 12215726
FLASH_SINGLE: Final = Variant(table=False)  # df861929, 43d5235f
FLASH_TABLE: Final = Variant()  # 2ed83241
FLASH_TABLE_NO_SELF_LOOP: Final = Variant(self_loop="reject")  # 43d80001


class SysfsError(OSError):
    """What a failed sysfs call raises: `errno` and a strerror-like `strerror`."""

    def __init__(self, code: int, path: str | None = None) -> None:
        text = _STRERROR.get(code, f"Unknown error {code}")
        if path is not None:
            super().__init__(code, text, path)
        else:
            super().__init__(code, text)
        self.code = code  # `errno`, typed as always set

    def __reduce__(self) -> tuple[type[SysfsError], tuple[int, str | None]]:
        # OSError pickles its (errno, strerror, filename) args; ours are (code, path).
        return type(self), (self.code, self.filename)


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One bound socket as the kernel holds it.

    `next` is what the `next` file shows; `outflows` is what the data path really uses.
    They differ after a failed rewrite (torn: no outflows), after a failed single-int write
    (file -1, map unchanged), after a target closed (single int: the map entry is cleared)
    and when a single-int id is reused (inherited redirect).
    """

    flash_id: int
    pid: int
    procname: str
    ifindex: int
    qid: int
    ready: bool = True
    next: tuple[int, ...] = ()
    outflows: tuple[int, ...] = ()
    chained: bool = False  # the kernel skips NIC transmission for this socket

    @property
    def stalled(self) -> bool:
        """Chained with no outflows: nothing it sends leaves (each descriptor counts in
        tx_invalid_descs and is held in the TX ring or lost, by driver path)."""
        return self.chained and not self.outflows


@dataclass(frozen=True, slots=True)
class _Socket:
    """The sysfs object of one socket: what its files show."""

    pid: int
    procname: str
    ifindex: int
    qid: int
    ready: bool
    next: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Node:
    """A resolved path: `name` None is a directory, `flash_id` None lives in the kset."""

    flash_id: int | None
    name: str | None


def format_next(ids: Sequence[int]) -> str:
    """The text to write into `next` for these targets: "3 5\\n", or "-1\\n" for none."""
    for target in ids:
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= INT_MAX:
            raise ValueError(f"a target flash-id is an int in 0..{INT_MAX}, not {target!r}")
    text = " ".join(str(target) for target in ids) + "\n" if ids else "-1\n"
    if len(text) > PAGE_SIZE:
        raise ValueError(f"{len(ids)} targets do not fit one {PAGE_SIZE}-byte sysfs write")
    return text


def parse_next(text: str, variant: Variant) -> tuple[int, ...]:
    """The ids a read of `next` shows; ValueError for anything the kernel would not print.

    A table of PAGE_SIZE - 1 bytes or more may have been cut by the kernel, so it is
    refused rather than read as a shorter list.
    """
    if text == "-1\n":
        return ()
    if not variant.table:
        if not text.endswith("\n"):
            raise ValueError(f"not a next file: {text!r}")
        return (_parse_shown_id(text[:-1], text),)
    if len(text.encode()) >= PAGE_SIZE - 1:
        raise ValueError("a next table this long may be truncated by the kernel")
    if not text.startswith(NEXT_HEADER) or text == NEXT_HEADER or not text.endswith("\n"):
        raise ValueError(f"not a next table: {text!r}")
    lines = text[len(NEXT_HEADER) : -1].split("\n")
    return tuple(_parse_table_line(position, line) for position, line in enumerate(lines))


def _parse_table_line(position: int, line: str) -> int:
    index, _, shown = line.partition("\t")
    if index != str(position):
        raise ValueError(f"next table line {position} is {line!r}")
    return _parse_shown_id(shown, line)


def _parse_shown_id(shown: str, context: str) -> int:
    # The kernel prints ids with %d and only ever stores live (non-negative) ids.
    if not _is_canonical_decimal(shown):
        raise ValueError(f"not a flash-id as the kernel prints it: {context!r}")
    return int(shown)


def _is_canonical_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def _leading_digits(text: bytes) -> bytes:
    end = 0
    while end < len(text) and 0x30 <= text[end] <= 0x39:
        end += 1
    return text[:end]


def _u64(digits: bytes) -> int | None:
    """The value of a digit run, None when it overflows u64 (kstrtoull's overflow flag)."""
    significant = digits.lstrip(b"0")
    if len(significant) > len(str(U64_MAX)):
        return None
    value = int(significant or b"0")
    return value if value <= U64_MAX else None


def _kstrtoint(text: bytes) -> int:
    """Linux kstrtoint(text, 10): overflow beats trailing garbage, one '\\n' may follow."""
    negative = text.startswith(b"-")
    body = text[1:] if negative or text.startswith(b"+") else text
    digits = _leading_digits(body)
    magnitude = _u64(digits)
    if magnitude is None:
        raise SysfsError(errno.ERANGE)
    if not digits:
        raise SysfsError(errno.EINVAL)
    rest = body[len(digits) :]
    if rest not in (b"", b"\n"):
        raise SysfsError(errno.EINVAL)
    value = -magnitude if negative else magnitude
    if not INT_MIN <= value <= INT_MAX:
        raise SysfsError(errno.ERANGE)
    return value


def _split_tokens(text: bytes) -> list[bytes]:
    """The table parser's tokens: space-separated, up to the first newline, 15-char pieces."""
    line = text.split(b"\n", 1)[0]
    return [
        word[start : start + TOKEN_CHARS]
        for word in line.split(b" ")
        for start in range(0, len(word), TOKEN_CHARS)
    ]


def _token_value(token: bytes) -> int:
    head, tail = token[:1], token[1:]
    if not (head.isdigit() or head == b"-") or (tail and not tail.isdigit()):
        raise SysfsError(errno.EINVAL)
    return _kstrtoint(token)


def _parse_table_write(text: bytes) -> tuple[int, ...]:
    # A generator, so the tokens are checked in order and the first bad one decides.
    ids = tuple(_token_value(token) for token in _split_tokens(text))
    if not ids:
        raise SysfsError(errno.EINVAL)
    return ids


def _comm(procname: str) -> str:
    """`current->comm` as the kernel keeps it: up to the first NUL, at most 15 bytes."""
    raw = procname.encode("utf-8", "surrogateescape").split(b"\0", 1)[0][:COMM_BYTES]
    return raw.decode("utf-8", "surrogateescape")


def _c_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"{name} is a C int, not {value!r}")
    return value


class FlashSysfs:
    """The kset directory `/sys/kernel/<kset>` and the flash-id table behind it.

    Paths are relative to the kset directory: "" is the kset itself, "3" a socket's
    directory, "3/next" one of its files, "tx_tracking" the kset-level file.
    """

    def __init__(self, variant: Variant = FLASH_TABLE) -> None:
        self._variant = variant
        self._sockets: dict[int, _Socket] = {}
        # The data path, keyed by flash-id like the kernel's arrays. For the single-int
        # variants an entry outlives its source socket (the map slot is never cleared).
        self._outflows: dict[int, tuple[int, ...]] = {}
        self._chained: set[int] = set()  # table variants: `xs_chain[id]`
        self._tx_tracking = 0

    @property
    def variant(self) -> Variant:
        return self._variant

    @property
    def tx_tracking(self) -> int:
        return self._tx_tracking

    # --- sockets -------------------------------------------------------------------------

    def bind(self, *, pid: int, procname: str, ifindex: int, qid: int, ready: bool = True) -> int:
        """A socket binds: it takes the lowest free flash-id and its directory appears."""
        flash_id = self._lowest_free_id()
        self._sockets[flash_id] = _Socket(
            pid=_c_int("pid", pid),
            procname=_comm(procname),
            ifindex=_c_int("ifindex", ifindex),
            qid=_c_int("qid", qid),
            ready=ready,
        )
        if self._variant.table:
            # A fresh buffer pool: no outflows, and the chaining flag was reset at free.
            self._outflows.pop(flash_id, None)
            self._chained.discard(flash_id)
        return flash_id

    def close(self, flash_id: int) -> None:
        """The socket is destroyed: its id is free, its directory gone; others keep rules."""
        self._live(flash_id)
        del self._sockets[flash_id]
        if self._variant.table:
            self._outflows.pop(flash_id, None)
            self._chained.discard(flash_id)
        else:
            self._drop_map_entries_to(flash_id)

    def set_ready(self, flash_id: int, ready: bool) -> None:
        """False: XSK_UNBOUND (released while referenced, or its device went away)."""
        self._sockets[flash_id] = replace(self._live(flash_id), ready=ready)

    def ids(self) -> list[int]:
        return sorted(self._sockets)

    def entry(self, flash_id: int) -> SocketEntry:
        sock = self._live(flash_id)
        outflows = self._outflows.get(flash_id, ())
        chained = flash_id in self._chained if self._variant.table else bool(outflows)
        return SocketEntry(
            flash_id=flash_id,
            pid=sock.pid,
            procname=sock.procname,
            ifindex=sock.ifindex,
            qid=sock.qid,
            ready=sock.ready,
            next=sock.next,
            outflows=outflows,
            chained=chained,
        )

    def targets_of(self, flash_id: int) -> tuple[int, ...]:
        """The data path's view: the ids this socket's TX really goes to (may be dead ids)."""
        self._live(flash_id)
        return self._outflows.get(flash_id, ())

    # --- files ---------------------------------------------------------------------------

    def listdir(self, path: str) -> list[str]:
        """Names in a directory (real readdir order is kernfs hash order: do not rely on it)."""
        node = self._resolve(path)
        if node.name is not None:
            raise SysfsError(errno.ENOTDIR, path)
        if node.flash_id is not None:
            return sorted(SOCKET_FILES)
        kset_files = sorted(KSET_FILES) if self._variant.tx_tracking else []
        return [str(flash_id) for flash_id in self.ids()] + kset_files

    def stat(self, path: str) -> tuple[int, int]:
        """(st_mode, st_size): directories 0755 and size 0, files their mode and PAGE_SIZE."""
        node = self._resolve(path)
        if node.name is None:
            return DIR_MODE, 0
        return stat.S_IFREG | self._file_mode(node), PAGE_SIZE

    def read(self, path: str) -> bytes:
        """The file's whole content as the kernel's show() prints it."""
        node = self._resolve(path)
        if node.name is None:
            raise SysfsError(errno.EISDIR, path)
        if node.flash_id is None:
            return f"{self._tx_tracking}\n".encode()
        return self._show(self._sockets[node.flash_id], node.name)

    def write(self, path: str, data: bytes, *, uid: int = 0) -> int:
        """One write(2) of `data`: the count the kernel returns, or SysfsError."""
        node = self._resolve(path)
        if node.name is None:
            raise SysfsError(errno.EISDIR, path)
        if uid != 0 or not self._file_mode(node) & 0o200:
            raise SysfsError(errno.EACCES, path)
        if not data:
            return 0  # sysfs_kf_write: the store is not called
        buffer = bytes(data[:PAGE_SIZE])
        text = buffer.split(b"\0", 1)[0]  # the store sees a C string
        try:
            self._store(node, text)
        except SysfsError as error:
            raise SysfsError(error.code, path) from None
        return len(buffer)

    # --- persistence ---------------------------------------------------------------------

    def to_data(self) -> dict[str, object]:
        """A JSON-able snapshot; `from_data` rebuilds an equal model from it."""
        return {
            "format": DATA_FORMAT,
            "variant": _variant_data(self._variant),
            "sockets": [_socket_data(flash_id, self._sockets[flash_id]) for flash_id in self.ids()],
            "outflows": [
                {"flash_id": flash_id, "targets": list(targets)}
                for flash_id, targets in sorted(self._outflows.items())
            ],
            "chained": sorted(self._chained),
            "tx_tracking": self._tx_tracking,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> FlashSysfs:
        """The model `to_data` described; ValueError when `data` is not such a snapshot."""
        if _field(data, "format", int) != DATA_FORMAT:
            raise ValueError(f"unknown snapshot format {data.get('format')!r}")
        model = cls(_variant_from(_field(data, "variant", dict)))
        for item in _field(data, "sockets", list):
            model._load_socket(_mapping(item, "socket"))
        for item in _field(data, "outflows", list):
            model._load_outflows(_mapping(item, "outflows"))
        model._load_chained(_field(data, "chained", list))
        model._load_tx_tracking(_field(data, "tx_tracking", int))
        return model

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FlashSysfs):
            return NotImplemented
        return self.to_data() == other.to_data()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"FlashSysfs(variant={self._variant!r}, ids={self.ids()!r})"

    # --- internals: paths ----------------------------------------------------------------

    def _resolve(self, path: str) -> _Node:
        # Like the VFS, repeated and trailing slashes do not matter; callers (FUSE) pass
        # normalized paths, so "." and ".." are not special here.
        parts = [part for part in path.split("/") if part]
        if not parts:
            return _Node(None, None)
        head, rest = parts[0], parts[1:]
        if head in KSET_FILES and self._variant.tx_tracking:
            return self._leaf(_Node(None, head), rest, path)
        flash_id = self._dir_id(head)
        if flash_id is None:
            raise SysfsError(errno.ENOENT, path)
        if not rest:
            return _Node(flash_id, None)
        if rest[0] not in SOCKET_FILES:
            raise SysfsError(errno.ENOENT, path)
        return self._leaf(_Node(flash_id, rest[0]), rest[1:], path)

    @staticmethod
    def _leaf(node: _Node, rest: list[str], path: str) -> _Node:
        if rest:
            raise SysfsError(errno.ENOTDIR, path)  # a path that goes through a file
        return node

    def _dir_id(self, name: str) -> int | None:
        if not _is_canonical_decimal(name):
            return None
        flash_id = int(name)
        return flash_id if flash_id in self._sockets else None

    def _file_mode(self, node: _Node) -> int:
        files = KSET_FILES if node.flash_id is None else SOCKET_FILES
        return files[cast(str, node.name)]

    def _show(self, sock: _Socket, name: str) -> bytes:
        if name == "procname":
            return sock.procname.encode("utf-8", "surrogateescape") + b"\n"
        if name == "next":
            return self._show_next(sock.next)
        value = {"pid": sock.pid, "ifindex": sock.ifindex, "qid": sock.qid}[name]
        return f"{value}\n".encode()

    def _show_next(self, ids: tuple[int, ...]) -> bytes:
        if not ids:
            return b"-1\n"
        if not self._variant.table:
            return f"{ids[0]}\n".encode()
        lines = "".join(f"{index}\t{target}\n" for index, target in enumerate(ids))
        # sysfs_emit_at never writes past PAGE_SIZE - 1 bytes: a long table is cut.
        return (NEXT_HEADER + lines).encode()[: PAGE_SIZE - 1]

    # --- internals: stores ---------------------------------------------------------------

    def _store(self, node: _Node, text: bytes) -> None:
        if node.flash_id is None:
            self._store_tx_tracking(text)
        elif self._variant.table:
            self._store_table(node.flash_id, _parse_table_write(text))
        else:
            self._store_single(node.flash_id, _kstrtoint(text))

    def _store_tx_tracking(self, text: bytes) -> None:
        value = _kstrtoint(text)
        if value not in (0, 1):
            raise SysfsError(errno.EINVAL)
        self._tx_tracking = value

    def _store_table(self, source: int, ids: tuple[int, ...]) -> None:
        """flash_update_chain_map (2ed83241): checks, clear, or tear down then set up."""
        self._check_source(source)
        if ids[0] == -1:
            self._outflows.pop(source, None)
            self._chained.discard(source)
            self._set_next(source, ())
            return
        for target in ids:
            self._check_target(source, target)
        # Not atomic: the old outflows are gone before the new ones exist.
        self._outflows.pop(source, None)
        if not all(self._sockets[target].ready for target in ids):
            raise SysfsError(errno.EBUSY)  # the chaining flag stays: a chained socket stalls
        self._outflows[source] = ids
        self._chained.add(source)
        self._set_next(source, ids)

    def _store_single(self, source: int, target: int) -> None:
        """The single-int store: kstrtoint wrote the file; a failed update resets it to -1."""
        try:
            self._update_single(source, target)
        except SysfsError:
            self._set_next(source, ())
            raise
        self._set_next(source, () if target == -1 else (target,))

    def _update_single(self, source: int, target: int) -> None:
        self._check_source(source)
        if target == -1:
            self._outflows.pop(source, None)
            return
        # No snapshot has a single-int file and a self-loop check; honour the variant anyway.
        self._check_target(source, target)
        self._outflows[source] = (target,)

    def _check_source(self, source: int) -> None:
        if not self._sockets[source].ready:
            raise SysfsError(errno.EBUSY)

    def _check_target(self, source: int, target: int) -> None:
        if target not in self._sockets:
            raise SysfsError(errno.EINVAL)
        if target == source and self._variant.self_loop == "reject":
            raise SysfsError(errno.EINVAL)

    def _set_next(self, flash_id: int, ids: tuple[int, ...]) -> None:
        self._sockets[flash_id] = replace(self._sockets[flash_id], next=ids)

    def _drop_map_entries_to(self, closed: int) -> None:
        """free_*_id of the single-int snapshots: NULL every map slot pointing at `closed`."""
        for source in [src for src, targets in self._outflows.items() if closed in targets]:
            del self._outflows[source]

    # --- internals: ids ------------------------------------------------------------------

    def _lowest_free_id(self) -> int:
        for flash_id in range(self._variant.max_sockets):
            if flash_id not in self._sockets:
                return flash_id
        raise SysfsError(errno.EINVAL)  # idr_alloc's ENOSPC, as bind() reports it

    def _live(self, flash_id: int) -> _Socket:
        sock = self._sockets.get(flash_id)
        if sock is None:
            raise SysfsError(errno.ENOENT, str(flash_id))
        return sock

    # --- internals: snapshot loading -----------------------------------------------------

    def _load_socket(self, item: Mapping[str, object]) -> None:
        flash_id = _field(item, "flash_id", int)
        if not self._in_id_space(flash_id) or flash_id in self._sockets:
            raise ValueError(f"bad or repeated flash_id {flash_id!r}")
        procname = _field(item, "procname", str)
        if _comm(procname) != procname:
            raise ValueError(f"procname {procname!r} is not a kernel comm")
        shown = self._ids(_field(item, "next", list), "next")
        if len(shown) > 1 and not self._variant.table:
            raise ValueError(f"a single-int next holds one id, not {shown!r}")
        self._sockets[flash_id] = _Socket(
            pid=_c_int("pid", _field(item, "pid", int)),
            procname=procname,
            ifindex=_c_int("ifindex", _field(item, "ifindex", int)),
            qid=_c_int("qid", _field(item, "qid", int)),
            ready=_field(item, "ready", bool),
            next=shown,
        )

    def _load_outflows(self, item: Mapping[str, object]) -> None:
        flash_id = _field(item, "flash_id", int)
        targets = self._ids(_field(item, "targets", list), "targets")
        if not targets or flash_id in self._outflows or not self._in_id_space(flash_id):
            raise ValueError(f"bad outflows entry for {flash_id!r}")
        if self._variant.table and flash_id not in self._sockets:
            raise ValueError(f"outflows of closed socket {flash_id} in a table variant")
        if not self._variant.table and len(targets) != 1:
            raise ValueError(f"a single-int map slot holds one target, not {targets!r}")
        self._outflows[flash_id] = targets

    def _load_chained(self, items: list[object]) -> None:
        chained = set(self._ids(items, "chained"))
        if chained and not self._variant.table:
            raise ValueError("single-int variants have no chaining flag")
        if not chained <= set(self._sockets):
            raise ValueError(f"chained ids {sorted(chained)} are not all live sockets")
        self._chained = chained

    def _in_id_space(self, flash_id: int) -> bool:
        return 0 <= flash_id < self._variant.max_sockets

    def _ids(self, values: Iterable[object], what: str) -> tuple[int, ...]:
        ids = tuple(values)
        for value in ids:
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not self._in_id_space(value)
            ):
                raise ValueError(f"{what} must hold flash-ids, not {value!r}")
        return cast(tuple[int, ...], ids)

    def _load_tx_tracking(self, value: int) -> None:
        if value not in (0, 1) or (value and not self._variant.tx_tracking):
            raise ValueError(f"tx_tracking {value!r} does not fit {self._variant!r}")
        self._tx_tracking = value


# --- snapshot helpers --------------------------------------------------------------------


def _variant_data(variant: Variant) -> dict[str, object]:
    return {
        "kset": variant.kset,
        "table": variant.table,
        "self_loop": variant.self_loop,
        "tx_tracking": variant.tx_tracking,
        "max_sockets": variant.max_sockets,
    }


def _variant_from(data: Mapping[str, object]) -> Variant:
    kset = _field(data, "kset", str)
    self_loop = _field(data, "self_loop", str)
    if kset not in ("flash", "exnfc") or self_loop not in ("accept", "reject"):
        raise ValueError(f"bad variant {dict(data)!r}")
    return Variant(
        kset=cast(Literal["flash", "exnfc"], kset),
        table=_field(data, "table", bool),
        self_loop=cast(Literal["accept", "reject"], self_loop),
        tx_tracking=_field(data, "tx_tracking", bool),
        max_sockets=_field(data, "max_sockets", int),
    )


def _socket_data(flash_id: int, sock: _Socket) -> dict[str, object]:
    return {
        "flash_id": flash_id,
        "pid": sock.pid,
        "procname": sock.procname,
        "ifindex": sock.ifindex,
        "qid": sock.qid,
        "ready": sock.ready,
        "next": list(sock.next),
    }


def _field(data: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = data.get(key)
    # bool is an int subclass: an int field must not accept true/false, nor the reverse.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"snapshot field {key!r} must be {kind.__name__}, not {value!r}")
    return value


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"a {what} entry must be an object, not {value!r}")
    return cast(Mapping[str, object], value)
