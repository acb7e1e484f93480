"""The FLASH sysfs model: parsers, errnos, id table, torn rewrites, files and snapshots.

Every expected value comes from the kernel sources named in flashctl/backends/flashsys.py.
"""

from __future__ import annotations

import errno
import json
import stat
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.backends.flashsys import (
    EXNFC,
    FLASH_SINGLE,
    FLASH_TABLE,
    FLASH_TABLE_NO_SELF_LOOP,
    PAGE_SIZE,
    FlashSysfs,
    SocketEntry,
    SysfsError,
    Variant,
    format_next,
    parse_next,
)

TX_TRACKING = Variant(tx_tracking=True)


def bound(variant: Variant = FLASH_TABLE, count: int = 3) -> FlashSysfs:
    """A model with sockets 0..count-1, each on its own queue of ifindex 7."""
    model = FlashSysfs(variant)
    for qid in range(count):
        assert model.bind(pid=100 + qid, procname=f"nf{qid}", ifindex=7, qid=qid) == qid
    return model


def errno_of(model: FlashSysfs, path: str, data: bytes, uid: int = 0) -> int:
    with pytest.raises(SysfsError) as caught:
        model.write(path, data, uid=uid)
    assert caught.value.filename == path
    return caught.value.code


def next_of(model: FlashSysfs, flash_id: int) -> bytes:
    return model.read(f"{flash_id}/next")


def table(*ids: int) -> bytes:
    if not ids:
        return b"-1\n"
    return b"index\tflash_id\n" + b"".join(f"{i}\t{t}\n".encode() for i, t in enumerate(ids))


# --- the table parser (flash kset, multi-target next) ------------------------------------

# Socket 0 starts chained to 1; sockets 0, 1, 2 exist. (data, errno or None, next after).
TABLE_WRITES: list[tuple[bytes, int | None, tuple[int, ...]]] = [
    (b"2\n", None, (2,)),
    (b"2", None, (2,)),
    (b"1 2\n", None, (1, 2)),
    (b"   1    2   \n", None, (1, 2)),
    (b"2 2 2", None, (2, 2, 2)),  # duplicates are not checked
    (b"1 2\n7 junk", None, (1, 2)),  # everything after the first newline is ignored
    (b"2\x007", None, (2,)),  # the store sees a C string
    (b"0", None, (0,)),  # this snapshot accepts a self-loop
    (b"-0", None, (0,)),  # kstrtoint("-0") is 0, a plain id
    (b"0000000000000002", None, (0, 2)),  # 16 chars: "000000000000000" then "2"
    (b"000000000000001000", None, (1, 0)),  # 18 chars: "000000000000001" then "000"
    (b"-000000000000001", None, (0, 1)),  # 16 chars: "-00000000000000" (0) then "1"
    (b"-00000000000001", None, ()),  # 15 chars: -1, clears
    (b"-1", None, ()),
    (b"-1\n", None, ()),
    (b"-01", None, ()),
    (b"-1 2", None, ()),  # ids after a leading -1 are parsed but not used
    (b"-1 9", None, ()),  # ... nor looked up
    (b"\n", errno.EINVAL, (1,)),
    (b" ", errno.EINVAL, (1,)),
    (b"   \n 2", errno.EINVAL, (1,)),  # the newline ends the write before the 2
    (b"\x00", errno.EINVAL, (1,)),
    (b"\t2", errno.EINVAL, (1,)),
    (b"2\t", errno.EINVAL, (1,)),
    (b"1\t2", errno.EINVAL, (1,)),
    (b"2\r\n", errno.EINVAL, (1,)),
    (b"+1", errno.EINVAL, (1,)),
    (b"1a", errno.EINVAL, (1,)),
    (b"a1", errno.EINVAL, (1,)),
    (b"1-", errno.EINVAL, (1,)),
    (b"--1", errno.EINVAL, (1,)),
    (b"-", errno.EINVAL, (1,)),  # passes the token check, kstrtoint finds no digits
    (b"\xc2\xb2", errno.EINVAL, (1,)),  # a Unicode digit is not an ASCII digit
    (b"-1 x", errno.EINVAL, (1,)),
    (b"-1 99999999999", errno.ERANGE, (1,)),
    (b"2 -1", errno.EINVAL, (1,)),  # -1 only clears in first position
    (b"-2", errno.EINVAL, (1,)),
    (b"-2147483648", errno.EINVAL, (1,)),
    (b"7", errno.EINVAL, (1,)),  # no such socket
    (b"64", errno.EINVAL, (1,)),
    (b"2147483647", errno.EINVAL, (1,)),
    (b"1 7", errno.EINVAL, (1,)),  # one unknown target fails the whole write
    (b"2147483648", errno.ERANGE, (1,)),
    (b"-2147483649", errno.ERANGE, (1,)),
    (b"999999999999999", errno.ERANGE, (1,)),
    (b"1 2147483648", errno.ERANGE, (1,)),
    (b"1x 2147483648", errno.EINVAL, (1,)),  # tokens in order: the first bad one decides
    (b"2147483648 1x", errno.ERANGE, (1,)),
    (b"1234567890123456", errno.ERANGE, (1,)),  # its first 15-char piece overflows
]


@pytest.mark.parametrize(("data", "code", "after"), TABLE_WRITES, ids=repr)
def test_table_parser(data: bytes, code: int | None, after: tuple[int, ...]) -> None:
    model = bound()
    model.write("0/next", b"1\n")
    if code is None:
        assert model.write("0/next", data) == len(data)
    else:
        assert errno_of(model, "0/next", data) == code
    assert next_of(model, 0) == table(*after)
    assert model.entry(0).next == after
    assert model.targets_of(0) == after
    assert model.entry(0).chained is bool(after)


def test_table_empty_write_is_a_no_op() -> None:
    model = bound()
    model.write("0/next", b"1")
    assert model.write("0/next", b"") == 0
    assert model.entry(0) == SocketEntry(0, 100, "nf0", 7, 0, True, (1,), (1,), chained=True)


@pytest.mark.parametrize("variant", [FLASH_TABLE, FLASH_TABLE_NO_SELF_LOOP])
def test_table_write_of_a_source_that_is_not_ready_changes_nothing(variant: Variant) -> None:
    model = bound(variant)
    model.write("0/next", b"1 2")
    model.set_ready(0, False)
    for data in (b"2", b"-1"):  # the source check comes before the clear
        assert errno_of(model, "0/next", data) == errno.EBUSY
        assert next_of(model, 0) == table(1, 2)
        assert model.targets_of(0) == (1, 2)


def test_self_loop_rejected_by_the_snapshot_that_checks_it() -> None:
    model = bound(FLASH_TABLE_NO_SELF_LOOP)
    model.write("0/next", b"1")
    assert errno_of(model, "0/next", b"0") == errno.EINVAL
    assert errno_of(model, "0/next", b"1 0") == errno.EINVAL
    assert model.write("0/next", b"1 2") == 3
    assert model.write("1/next", b"0 2") == 3  # pointing back is not a self-loop
    assert next_of(model, 0) == table(1, 2)


# --- the torn rewrite --------------------------------------------------------------------


def test_failed_setup_leaves_a_chained_socket_stalled_with_the_old_table_shown() -> None:
    model = bound()
    model.write("0/next", b"1\n")
    model.set_ready(2, False)
    assert errno_of(model, "0/next", b"1 2\n") == errno.EBUSY
    entry = model.entry(0)
    assert (entry.next, entry.outflows, entry.chained, entry.stalled) == ((1,), (), True, True)
    assert next_of(model, 0) == table(1)  # reading back does not reveal the stall
    assert model.targets_of(0) == ()
    assert model.write("0/next", b"1\n") == 2  # a good rewrite recovers
    assert not model.entry(0).stalled
    assert model.entry(0).outflows == (1,)


def test_failed_setup_of_an_unchained_socket_leaves_it_sending_to_the_nic() -> None:
    model = bound()
    model.set_ready(1, False)
    assert errno_of(model, "0/next", b"1") == errno.EBUSY
    entry = model.entry(0)
    assert (entry.next, entry.outflows, entry.chained, entry.stalled) == ((), (), False, False)


def test_clearing_a_stalled_socket_unchains_it() -> None:
    model = bound()
    model.write("0/next", b"1")
    model.set_ready(2, False)
    errno_of(model, "0/next", b"2")
    assert model.write("0/next", b"-1\n") == 3
    entry = model.entry(0)
    assert (entry.next, entry.outflows, entry.chained, entry.stalled) == ((), (), False, False)


def test_unknown_target_fails_before_teardown() -> None:
    model = bound()
    model.write("0/next", b"1")
    assert errno_of(model, "0/next", b"2 9") == errno.EINVAL
    assert model.entry(0).outflows == (1,)
    assert not model.entry(0).stalled


# --- the single-int parser (exnfc and the old flash kset) --------------------------------

# Socket 0 starts at 1; sockets 0, 1, 2 exist. (data, errno or None, file after, map after).
SINGLE_WRITES: list[tuple[bytes, int | None, bytes, tuple[int, ...]]] = [
    (b"2", None, b"2\n", (2,)),
    (b"2\n", None, b"2\n", (2,)),
    (b"+2", None, b"2\n", (2,)),
    (b"+2\n", None, b"2\n", (2,)),
    (b"002", None, b"2\n", (2,)),
    (b"2\x00junk", None, b"2\n", (2,)),
    (b"0", None, b"0\n", (0,)),  # no self-loop check in any single-int snapshot
    (b"-1", None, b"-1\n", ()),
    (b"-01\n", None, b"-1\n", ()),
    (b"-0", None, b"0\n", (0,)),
    # kstrtoint fails: the file is left as it was.
    (b"2\n\n", errno.EINVAL, b"1\n", (1,)),
    (b" 2", errno.EINVAL, b"1\n", (1,)),
    (b"2 ", errno.EINVAL, b"1\n", (1,)),
    (b"1 2", errno.EINVAL, b"1\n", (1,)),
    (b"\n", errno.EINVAL, b"1\n", (1,)),
    (b"2a", errno.EINVAL, b"1\n", (1,)),
    (b"-", errno.EINVAL, b"1\n", (1,)),
    (b"+", errno.EINVAL, b"1\n", (1,)),
    (b"-+1", errno.EINVAL, b"1\n", (1,)),
    (b"+-1", errno.EINVAL, b"1\n", (1,)),
    (b"2147483648", errno.ERANGE, b"1\n", (1,)),
    (b"-2147483649", errno.ERANGE, b"1\n", (1,)),
    (b"9999999999x", errno.EINVAL, b"1\n", (1,)),  # fits u64: the garbage is seen first
    (b"99999999999999999999x", errno.ERANGE, b"1\n", (1,)),  # u64 overflow beats garbage
    # The update fails: the file says -1 but the chain map still redirects to 1.
    (b"7", errno.EINVAL, b"-1\n", (1,)),
    (b"-2", errno.EINVAL, b"-1\n", (1,)),
    (b"64", errno.EINVAL, b"-1\n", (1,)),
]


@pytest.mark.parametrize("variant", [FLASH_SINGLE, EXNFC], ids=["flash", "exnfc"])
@pytest.mark.parametrize(("data", "code", "shown", "outflows"), SINGLE_WRITES, ids=repr)
def test_single_int_parser(
    variant: Variant, data: bytes, code: int | None, shown: bytes, outflows: tuple[int, ...]
) -> None:
    model = bound(variant)
    model.write("0/next", b"1\n")
    if code is None:
        assert model.write("0/next", data) == len(data)
    else:
        assert errno_of(model, "0/next", data) == code
    assert next_of(model, 0) == shown
    assert model.entry(0).outflows == outflows
    assert model.entry(0).chained is bool(outflows)
    assert not model.entry(0).stalled


@pytest.mark.parametrize("variant", [FLASH_SINGLE, EXNFC], ids=["flash", "exnfc"])
def test_single_int_source_not_ready_resets_the_file_only(variant: Variant) -> None:
    model = bound(variant)
    model.write("0/next", b"1")
    model.set_ready(0, False)
    assert errno_of(model, "0/next", b"-1") == errno.EBUSY
    assert next_of(model, 0) == b"-1\n"
    assert model.targets_of(0) == (1,)


def test_single_int_has_no_target_state_check() -> None:
    model = bound(FLASH_SINGLE)
    model.set_ready(1, False)
    assert model.write("0/next", b"1") == 1
    assert model.entry(0).outflows == (1,)


def test_single_int_with_self_loop_reject_is_honoured() -> None:
    # No snapshot has both; the variant still means what it says.
    model = bound(Variant(table=False, self_loop="reject"))
    model.write("0/next", b"1")
    assert errno_of(model, "0/next", b"0") == errno.EINVAL
    assert next_of(model, 0) == b"-1\n"
    assert model.targets_of(0) == (1,)


def test_exnfc_kset_is_named_exnfc() -> None:
    model = bound(EXNFC, count=1)
    assert model.variant.kset == "exnfc"
    assert model.listdir("") == ["0"]


# --- flash-ids ---------------------------------------------------------------------------


def test_ids_are_the_lowest_free_and_reused_at_once() -> None:
    model = bound(count=4)
    model.close(1)
    model.close(2)
    assert model.ids() == [0, 3]
    assert model.bind(pid=1, procname="x", ifindex=7, qid=9) == 1
    assert model.bind(pid=1, procname="x", ifindex=7, qid=10) == 2
    assert model.bind(pid=1, procname="x", ifindex=7, qid=11) == 4


def test_the_65th_bind_fails_with_einval() -> None:
    model = bound(count=64)
    with pytest.raises(SysfsError) as caught:
        model.bind(pid=1, procname="x", ifindex=7, qid=64)
    assert caught.value.errno == errno.EINVAL
    assert model.ids() == list(range(64))
    model.close(17)
    assert model.bind(pid=1, procname="x", ifindex=7, qid=64) == 17


def test_max_sockets_is_configurable() -> None:
    model = bound(Variant(max_sockets=2), count=2)
    with pytest.raises(SysfsError, match="Invalid argument"):
        model.bind(pid=1, procname="x", ifindex=7, qid=2)


@pytest.mark.parametrize("max_sockets", [0, -1, True])
def test_max_sockets_must_be_positive(max_sockets: int) -> None:
    with pytest.raises(ValueError, match="max_sockets"):
        Variant(max_sockets=max_sockets)


def test_unknown_sockets_raise_enoent() -> None:
    model = bound(count=1)
    for call in (model.close, model.entry, model.targets_of):
        with pytest.raises(SysfsError) as caught:
            call(5)
        assert caught.value.errno == errno.ENOENT
    with pytest.raises(SysfsError):
        model.set_ready(5, True)


# --- close: stale rules ------------------------------------------------------------------


@pytest.mark.parametrize("variant", [FLASH_TABLE, FLASH_TABLE_NO_SELF_LOOP])
def test_table_rules_pointing_at_a_closed_socket_stay(variant: Variant) -> None:
    model = bound(variant)
    model.write("0/next", b"1 2")
    model.close(1)
    assert next_of(model, 0) == table(1, 2)  # not updated when a target closes
    assert model.targets_of(0) == (1, 2)  # and the data path still names id 1
    assert model.listdir("") == ["0", "2"]
    assert errno_of(model, "0/next", b"1 2") == errno.EINVAL  # but it can't be written now
    assert model.bind(pid=9, procname="new", ifindex=7, qid=5) == 1  # a newcomer takes id 1
    assert model.targets_of(0) == (1, 2)  # ... and silently receives 0's traffic


def test_table_close_forgets_the_closed_sockets_own_rules() -> None:
    model = bound()
    model.write("1/next", b"2")
    model.close(1)
    assert model.bind(pid=9, procname="new", ifindex=7, qid=5) == 1
    assert model.entry(1) == SocketEntry(1, 9, "new", 7, 5)


@pytest.mark.parametrize("variant", [FLASH_SINGLE, EXNFC], ids=["flash", "exnfc"])
def test_single_int_close_clears_upstream_map_but_not_files(variant: Variant) -> None:
    model = bound(variant)
    model.write("0/next", b"1")
    model.close(1)
    assert next_of(model, 0) == b"1\n"
    assert model.entry(0).outflows == ()  # back to the NIC
    assert not model.entry(0).chained


@pytest.mark.parametrize("variant", [FLASH_SINGLE, EXNFC], ids=["flash", "exnfc"])
def test_single_int_reused_id_inherits_the_old_redirect(variant: Variant) -> None:
    model = bound(variant)
    model.write("1/next", b"2")
    model.close(1)
    assert model.bind(pid=9, procname="new", ifindex=7, qid=5) == 1
    entry = model.entry(1)
    assert (entry.next, entry.outflows, entry.chained) == ((), (2,), True)
    assert next_of(model, 1) == b"-1\n"


def test_single_int_inherited_redirect_dies_with_its_target() -> None:
    model = bound(FLASH_SINGLE)
    model.write("1/next", b"2")
    model.close(1)
    model.close(2)
    assert model.bind(pid=9, procname="new", ifindex=7, qid=5) == 1
    assert model.entry(1).outflows == ()


def test_single_int_self_loop_is_cleared_on_close() -> None:
    model = bound(FLASH_SINGLE)
    model.write("1/next", b"1")
    model.close(1)
    assert model.bind(pid=9, procname="new", ifindex=7, qid=5) == 1
    assert model.entry(1).outflows == ()


# --- files -------------------------------------------------------------------------------


def test_read_formats() -> None:
    model = FlashSysfs()
    model.bind(pid=4242, procname="firewall", ifindex=3, qid=12)
    model.bind(pid=1, procname="lb", ifindex=3, qid=13)
    model.write("0/next", b"1 0 1")
    assert model.read("0/pid") == b"4242\n"
    assert model.read("0/procname") == b"firewall\n"
    assert model.read("0/ifindex") == b"3\n"
    assert model.read("0/qid") == b"12\n"
    assert model.read("0/next") == b"index\tflash_id\n0\t1\n1\t0\n2\t1\n"
    assert model.read("1/next") == b"-1\n"


@pytest.mark.parametrize(
    ("given_name", "shown"),
    [
        ("a-very-long-process-name", b"a-very-long-pro\n"),  # TASK_COMM_LEN - 1 bytes
        ("nf\x00hidden", b"nf\n"),
        ("\u00e9" * 8, "\u00e9" * 7 + "\udcc3"),  # cut inside a UTF-8 sequence, like comm
    ],
)
def test_procname_is_a_kernel_comm(given_name: str, shown: bytes | str) -> None:
    model = FlashSysfs()
    model.bind(pid=1, procname=given_name, ifindex=1, qid=0)
    if isinstance(shown, str):
        assert model.entry(0).procname == shown
        assert model.read("0/procname") == b"\xc3\xa9" * 7 + b"\xc3\n"
    else:
        assert model.read("0/procname") == shown


def test_a_long_table_is_cut_at_page_size_minus_one() -> None:
    model = bound(count=1)
    data = b" ".join([b"0"] * 2048)  # 4095 bytes, 2048 self-loops
    assert model.write("0/next", data) == len(data)
    shown = next_of(model, 0)
    assert len(shown) == PAGE_SIZE - 1
    assert shown.startswith(b"index\tflash_id\n0\t0\n")
    assert len(model.entry(0).next) == 2048
    with pytest.raises(ValueError, match="truncated"):
        parse_next(shown.decode(), FLASH_TABLE)


def test_writes_are_cut_at_page_size() -> None:
    model = bound()
    data = b"1" + b" " * (PAGE_SIZE - 1) + b"x"  # the bad token is past the page
    assert model.write("0/next", data) == PAGE_SIZE
    assert model.entry(0).next == (1,)
    assert errno_of(model, "0/next", b"1" * (PAGE_SIZE + 10)) == errno.ERANGE


def test_listdir_and_stat() -> None:
    model = bound(TX_TRACKING, count=2)
    assert model.listdir("") == ["0", "1", "tx_tracking"]
    assert model.listdir("/") == ["0", "1", "tx_tracking"]
    assert model.listdir("1") == ["ifindex", "next", "pid", "procname", "qid"]
    assert model.listdir("/1/") == model.listdir("1")
    assert model.stat("") == (stat.S_IFDIR | 0o755, 0)
    assert model.stat("0") == (stat.S_IFDIR | 0o755, 0)
    assert model.stat("0/next") == (stat.S_IFREG | 0o644, PAGE_SIZE)
    assert model.stat("0//next") == (stat.S_IFREG | 0o644, PAGE_SIZE)
    for name in ("pid", "procname", "ifindex", "qid"):
        assert model.stat(f"0/{name}") == (stat.S_IFREG | 0o444, PAGE_SIZE)
    assert model.stat("tx_tracking") == (stat.S_IFREG | 0o644, PAGE_SIZE)
    assert bound(count=1).listdir("") == ["0"]  # no tx_tracking in the stored snapshots


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("5", errno.ENOENT),
        ("5/next", errno.ENOENT),
        ("00", errno.ENOENT),  # directory names are canonical decimals
        ("+0", errno.ENOENT),
        ("0/nope", errno.ENOENT),
        ("0/1", errno.ENOENT),
        ("0/next/x", errno.ENOTDIR),
        ("tx_tracking/x", errno.ENOTDIR),
        ("exnfc", errno.ENOENT),
    ],
)
def test_missing_paths(path: str, code: int) -> None:
    model = bound(TX_TRACKING, count=1)
    for call in (model.stat, model.read, model.listdir):
        with pytest.raises(SysfsError) as caught:
            call(path)
        assert caught.value.code == code
    assert errno_of(model, path, b"1") == code


def test_directories_cannot_be_read_or_written() -> None:
    model = bound(count=1)
    for path in ("", "0"):
        with pytest.raises(SysfsError) as caught:
            model.read(path)
        assert caught.value.code == errno.EISDIR
        assert errno_of(model, path, b"1") == errno.EISDIR
    with pytest.raises(SysfsError) as listed:
        model.listdir("0/next")
    assert listed.value.code == errno.ENOTDIR


@pytest.mark.parametrize(
    ("path", "uid"),
    [
        ("0/next", 1000),
        ("0/next", 65534),
        ("0/pid", 0),  # read-only files refuse root too
        ("0/procname", 0),
        ("0/ifindex", 0),
        ("0/qid", 0),
        ("0/qid", 1000),
        ("tx_tracking", 1000),
    ],
)
def test_eacces(path: str, uid: int) -> None:
    model = bound(TX_TRACKING, count=2)
    before = model.to_data()
    assert errno_of(model, path, b"1\n", uid=uid) == errno.EACCES
    assert errno_of(model, path, b"", uid=uid) == errno.EACCES  # refused at open
    assert model.to_data() == before


@pytest.mark.parametrize(
    ("data", "code", "after"),
    [
        (b"1\n", None, 1),
        (b"+1", None, 1),
        (b"0", None, 0),
        (b"2", errno.EINVAL, 0),
        (b"-1", errno.EINVAL, 0),
        (b"on", errno.EINVAL, 0),
        (b"1 ", errno.EINVAL, 0),
        (b"99999999999", errno.ERANGE, 0),
    ],
)
def test_tx_tracking(data: bytes, code: int | None, after: int) -> None:
    model = FlashSysfs(TX_TRACKING)
    assert model.read("tx_tracking") == b"0\n"
    if code is None:
        assert model.write("tx_tracking", data) == len(data)
    else:
        assert errno_of(model, "tx_tracking", data) == code
    assert model.read("tx_tracking") == f"{after}\n".encode()
    assert model.tx_tracking == after


def test_sysfs_error_is_an_oserror() -> None:
    error = SysfsError(errno.EBUSY, "3/next")
    assert isinstance(error, OSError)
    assert (error.errno, error.strerror, error.filename) == (
        16,
        "Device or resource busy",
        "3/next",
    )
    assert str(error) == "[Errno 16] Device or resource busy: '3/next'"
    assert str(SysfsError(errno.ERANGE)) == "[Errno 34] Numerical result out of range"


# --- format_next / parse_next ------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "text"),
    [((), "-1\n"), ((3,), "3\n"), ((3, 5), "3 5\n"), ((0, 0, 63), "0 0 63\n")],
)
def test_format_next(ids: tuple[int, ...], text: str) -> None:
    assert format_next(ids) == text


@pytest.mark.parametrize("ids", [(-1,), (1, -2), (2**31,), (True,), (1.0,), (0,) * 2049])
def test_format_next_refuses_what_the_kernel_would_misread(ids: tuple[object, ...]) -> None:
    with pytest.raises(ValueError, match=r"flash-id|fit"):
        format_next(ids)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "variant", "ids"),
    [
        ("-1\n", FLASH_TABLE, ()),
        ("index\tflash_id\n0\t5\n", FLASH_TABLE, (5,)),
        ("index\tflash_id\n0\t5\n1\t0\n2\t5\n", FLASH_TABLE, (5, 0, 5)),
        ("-1\n", FLASH_SINGLE, ()),
        ("0\n", FLASH_SINGLE, (0,)),
        ("12\n", EXNFC, (12,)),
    ],
)
def test_parse_next(text: str, variant: Variant, ids: tuple[int, ...]) -> None:
    assert parse_next(text, variant) == ids


@pytest.mark.parametrize(
    ("text", "variant"),
    [
        ("", FLASH_TABLE),
        ("-1", FLASH_TABLE),
        ("5\n", FLASH_TABLE),
        ("index\tflash_id\n", FLASH_TABLE),
        ("index\tflash_id\n1\t5\n", FLASH_TABLE),
        ("index\tflash_id\n0\t05\n", FLASH_TABLE),
        ("index\tflash_id\n0\t5", FLASH_TABLE),
        ("index\tflash_id\n0 5\n", FLASH_TABLE),
        ("index\tflash_id\n0\t5\n\n", FLASH_TABLE),
        ("index\tflash_id\n0\t-2\n", FLASH_TABLE),
        ("index flash_id\n0\t5\n", FLASH_TABLE),
        ("index\tflash_id\n0\t5\n", FLASH_SINGLE),
        ("5", FLASH_SINGLE),
        (" 5\n", FLASH_SINGLE),
        ("+5\n", FLASH_SINGLE),
        ("-2\n", FLASH_SINGLE),
        ("5\n\n", EXNFC),
        ("\u0665\n", EXNFC),  # an Arabic-Indic digit
    ],
)
def test_parse_next_refuses_anything_else(text: str, variant: Variant) -> None:
    with pytest.raises(ValueError, match=r"next|flash-id"):
        parse_next(text, variant)


# --- snapshots ---------------------------------------------------------------------------


def test_snapshot_round_trip_keeps_every_hidden_state() -> None:
    model = bound(Variant(table=False, tx_tracking=True, max_sockets=8), count=4)
    model.write("1/next", b"2")
    model.close(1)  # leaves a map slot behind
    model.write("0/next", b"3")
    assert errno_of(model, "0/next", b"9") == errno.EINVAL  # file -1, map still 3
    model.set_ready(3, False)
    model.write("tx_tracking", b"1")
    data = json.loads(json.dumps(model.to_data()))
    copy = FlashSysfs.from_data(data)
    assert copy == model
    assert copy.to_data() == model.to_data()
    assert copy.bind(pid=1, procname="x", ifindex=1, qid=1) == 1
    assert copy.targets_of(1) == (2,)
    assert copy.targets_of(0) == (3,)


def test_snapshot_of_a_stalled_socket() -> None:
    model = bound()
    model.write("0/next", b"1")
    model.set_ready(2, False)
    errno_of(model, "0/next", b"2")
    copy = FlashSysfs.from_data(json.loads(json.dumps(model.to_data())))
    assert copy.entry(0).stalled
    assert copy == model
    assert copy != bound()
    assert copy != "not a model"


@pytest.mark.parametrize(
    "change",
    [
        {"format": 2},
        {"format": True},
        {"variant": {"kset": "nope"}},
        {"sockets": [{"flash_id": 0}]},
        {"chained": [5]},
        {"tx_tracking": 1},
        {"outflows": [{"flash_id": 9, "targets": [0]}]},
        {"outflows": [{"flash_id": 0, "targets": []}]},
    ],
)
def test_from_data_rejects_malformed_snapshots(change: dict[str, object]) -> None:
    data = bound().to_data() | change
    with pytest.raises(ValueError, match=r"."):
        FlashSysfs.from_data(data)


def test_from_data_rejects_a_socket_with_a_bool_pid() -> None:
    data = bound(count=1).to_data()
    sockets = data["sockets"]
    assert isinstance(sockets, list)
    sockets[0] = dict(sockets[0], pid=True)
    with pytest.raises(ValueError, match="pid"):
        FlashSysfs.from_data(data)


# --- properties: random operation sequences ----------------------------------------------

VARIANTS = [FLASH_TABLE, FLASH_TABLE_NO_SELF_LOOP, FLASH_SINGLE, EXNFC, Variant(max_sockets=5)]
# Mostly ids of live sockets (a few sockets exist at a time), so writes succeed often enough
# to reach multi-target tables, torn rewrites and reused ids; some junk for the errors.
TOKENS = st.one_of(
    st.integers(min_value=0, max_value=3).map(str),
    st.integers(min_value=0, max_value=3).map(str),
    st.integers(min_value=-2, max_value=8).map(str),
    st.sampled_from(["+1", "1a", "\t1", "99999999999", "-0", "000000000000000001"]),
)
PAYLOADS = st.one_of(
    st.lists(TOKENS, min_size=1, max_size=4).map(lambda tokens: " ".join(tokens).encode()),
    st.lists(TOKENS, max_size=4).map(lambda tokens: (" ".join(tokens) + "\n").encode()),
    st.binary(max_size=12),
)


@dataclass(frozen=True)
class Op:
    kind: str
    pick: int = 0
    flag: bool = True
    payload: bytes = b""


MOSTLY = st.integers(0, 9).map(lambda n: n > 0)  # True nine times in ten
WRITE = st.builds(Op, st.just("write"), st.integers(0, 99), MOSTLY, PAYLOADS)
OPS = st.one_of(
    st.builds(Op, st.just("bind"), st.integers(0, 99), MOSTLY),
    st.builds(Op, st.just("close"), st.integers(0, 99)),
    st.builds(Op, st.just("ready"), st.integers(0, 99), st.booleans()),
    WRITE,
    WRITE,
    WRITE,
)


@dataclass(frozen=True)
class Outcome:
    """What one operation returned, or the errno it failed with."""

    value: int | None = None
    error: int | None = None


def apply(model: FlashSysfs, op: Op) -> Outcome:
    """Run one operation on the socket `op.pick` selects among the live ones."""
    ids = model.ids()
    target = ids[op.pick % len(ids)] if ids else None
    try:
        if op.kind == "bind":
            flash_id = model.bind(
                pid=op.pick, procname=f"nf{op.pick}", ifindex=2, qid=op.pick, ready=op.flag
            )
            return Outcome(flash_id)
        if target is None:
            return Outcome()
        if op.kind == "close":
            model.close(target)
        elif op.kind == "ready":
            model.set_ready(target, op.flag)
        else:
            return Outcome(model.write(f"{target}/next", op.payload, uid=0 if op.flag else 1000))
    except SysfsError as error:
        return Outcome(error=error.code)
    return Outcome()


def check_invariants(model: FlashSysfs, live_at_write: dict[int, frozenset[int]]) -> None:
    variant = model.variant
    ids = model.ids()
    assert ids == sorted(set(ids))
    assert all(0 <= flash_id < variant.max_sockets for flash_id in ids)
    assert model.listdir("") == [str(flash_id) for flash_id in ids]
    for flash_id in ids:
        entry = model.entry(flash_id)
        assert set(entry.next) <= live_at_write.get(flash_id, frozenset())
        assert parse_next(model.read(f"{flash_id}/next").decode(), variant) == entry.next
        assert model.targets_of(flash_id) == entry.outflows
        if not variant.table:
            assert entry.chained is bool(entry.outflows)
            assert len(entry.next) <= 1
        if entry.stalled:
            assert variant.table
    snapshot = json.loads(json.dumps(model.to_data()))
    assert FlashSysfs.from_data(snapshot) == model


def track(model: FlashSysfs, op: Op, outcome: Outcome, live: dict[int, frozenset[int]]) -> None:
    """Remember, per socket, which ids were live when its `next` was last accepted."""
    if op.kind == "bind" and outcome.value is not None:
        live[outcome.value] = frozenset()
    elif op.kind == "write" and outcome.value:  # an accepted, non-empty write
        ids = model.ids()
        live[ids[op.pick % len(ids)]] = frozenset(ids)


def started(variant: Variant, sockets: int) -> FlashSysfs:
    """A model with a few sockets already bound, so the first operations have targets."""
    model = FlashSysfs(variant)
    for qid in range(sockets):
        model.bind(pid=1, procname="nf", ifindex=2, qid=100 + qid)
    return model


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VARIANTS), st.integers(0, 4), st.lists(OPS, min_size=5, max_size=40))
def test_random_operations_keep_the_invariants(
    variant: Variant, sockets: int, ops: list[Op]
) -> None:
    model = started(variant, sockets)
    live = {flash_id: frozenset[int]() for flash_id in model.ids()}
    for op in ops:
        outcome = apply(model, op)
        track(model, op, outcome, live)
        check_invariants(model, live)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(VARIANTS),
    st.integers(0, 4),
    st.lists(OPS, max_size=25),
    st.lists(OPS, min_size=1, max_size=25),
)
def test_a_restored_snapshot_behaves_like_the_original(
    variant: Variant, sockets: int, before: list[Op], after: list[Op]
) -> None:
    model = started(variant, sockets)
    for op in before:
        apply(model, op)
    copy = FlashSysfs.from_data(json.loads(json.dumps(model.to_data())))
    for op in after:
        assert apply(copy, op) == apply(model, op)
        assert copy == model
