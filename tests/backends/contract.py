"""The backend contract: what every Backend must do, checked the same way for each of them.

A backend's test module subclasses `BackendContract` and provides a `harness` fixture (see
`Harness`): something that makes live sockets appear and disappear on the host the backend
looks at (a simulated process for `sim`; a socket bound under a FUSE stand-in of
/sys/kernel/flash, or on a test interface, for `native`). Everything else goes through the
Backend protocol and the helpers of flashctl.backends.base, so a backend that passes this
suite behaves like the FLASH kernel as far as the agent can tell.

The suite targets the table variant of `next` (kset `flash`, multi-target), the one
flashctl writes; `Harness.self_loop` says which of its two snapshots the backend faces.
Expected values are literal: flash-ids, `next` texts, errnos and whole messages.

Facts checked (shared/notes/flash-kernel.md, flashctl/backends/flashsys.py):
- ids: lowest free in 0..max_sockets-1, reused by the very next bind; a full table makes
  bind fail with EINVAL.
- `next` reads `-1\\n`, or `index\\tflash_id\\n` and one `i\\tid\\n` line per target.
- writes: EINVAL for malformed text, unknown targets and negative ids other than a leading
  -1; ERANGE for ints that overflow; EBUSY when the source (or a target) is not ready;
  EACCES for non-root. A failed write never changes the file. A socket that has no
  directory (closed, or never bound) cannot be opened: ENOENT.
- a rule naming a closed socket keeps the id (and reads back unchanged), and a socket that
  takes the id later silently becomes its target.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal, Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashctl.backends.base import (
    Backend,
    BackendError,
    BackendInfo,
    ChurnListener,
    Sample,
    read_rules,
    write_rule,
)
from flashctl.backends.flashsys import FlashSysfs, SysfsError, Variant
from flashctl.chains.planner import Inventory, LiveSocket


class Harness(Protocol):
    """What the contract needs besides the backend itself: a way to change the host.

    `bind` and `close` return once the backend can see the change (and has called its
    subscribers). A failing `bind` raises BackendError with the kernel's errno.
    """

    @property
    def backend(self) -> Backend: ...

    @property
    def max_sockets(self) -> int:
        """How many flash-ids the kernel hands out (64 in the FLASH kernel)."""
        ...

    @property
    def self_loop(self) -> Literal["accept", "reject"]:
        """Whether a socket may name itself in its `next` list."""
        ...

    def bind(self, *, pid: int, procname: str, interface: str, qid: int) -> int:
        """Make a live socket appear; return its flash-id. `pid` is never reused."""
        ...

    def close(self, flash_id: int) -> None:
        """Make a live socket disappear (its holder exits)."""
        ...

    def set_ready(self, flash_id: int, ready: bool) -> None:
        """False: the socket stays listed but is not bound (XSK_UNBOUND)."""
        ...

    def ifindex(self, interface: str) -> int:
        """The ifindex the host gave `interface` (after a socket was bound on it)."""
        ...

    def unprivileged(self) -> Backend | None:
        """A backend over the same host that writes as a non-root user, or None."""
        ...


# --- expected texts ----------------------------------------------------------------------

MINUS_ONE = "-1\n"
HEADER = "index\tflash_id\n"

# The meaning part of a write error, per errno (flashctl.backends.base).
MEANING = {
    errno.EINVAL: (
        "the kernel rejected the rule: an id is unknown (socket closed?) or the text is malformed"
    ),
    errno.EBUSY: (
        "the socket is not bound/ready, or the rewrite failed after tearing down its old rules"
    ),
    errno.ERANGE: "an id in the rule is out of range",
    errno.EACCES: "writing `next` needs root",
    errno.ENOENT: "the socket is gone (its directory disappeared)",
}
HINT = {
    errno.EINVAL: "re-read the inventory and plan again",
    errno.EBUSY: "retry, or clear the rule with -1",
    errno.ERANGE: "flash-ids are 0..63",
    errno.EACCES: "run the agent as root",
    errno.ENOENT: "re-read the inventory",
}


def table(*ids: int) -> str:
    """What reading `next` shows for these targets."""
    if not ids:
        return MINUS_ONE
    return HEADER + "".join(f"{index}\t{target}\n" for index, target in enumerate(ids))


def write_message(flash_id: int, shown: str, code: int) -> str:
    """The whole message of a failed write; `shown` is the text as the message quotes it."""
    name = errno.errorcode[code]
    return f"writing {shown} to flash-id {flash_id}'s next failed with {name}: {MEANING[code]}"


def failed_write(backend: Backend, flash_id: int, text: str) -> BackendError:
    with pytest.raises(BackendError) as caught:
        backend.write_rule_text(flash_id, text)
    return caught.value


# --- bookkeeping over a harness ----------------------------------------------------------

FIRST_PID = 7000
IF_A = "eth0"
IF_B = "eth1"


class Host:
    """The harness plus bookkeeping: fresh pids, and the lowest free queue per interface."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.backend = harness.backend
        self._pids: Iterator[int] = itertools.count(FIRST_PID)

    def bind(self, *, procname: str = "", interface: str = IF_A, qid: int | None = None) -> int:
        pid = next(self._pids)
        if qid is None:
            qid = self.free_queue(interface)
        return self.harness.bind(
            pid=pid, procname=procname or f"proc{pid}", interface=interface, qid=qid
        )

    def bind_many(self, count: int) -> list[int]:
        return [self.bind() for _ in range(count)]

    def free_queue(self, interface: str) -> int:
        taken = {s.qid for s in self.backend.inventory().sockets if s.interface == interface}
        return next(q for q in itertools.count() if q not in taken)

    def ids(self) -> list[int]:
        return [s.flash_id for s in self.backend.inventory().sockets]

    def close_all(self) -> None:
        for flash_id in self.ids():
            self.harness.close(flash_id)

    def rule(self, flash_id: int) -> str:
        return self.backend.read_rule_text(flash_id)


class OtherWriter:
    """The backend, with another writer putting `then` into `next` after every write."""

    def __init__(self, backend: Backend, then: str) -> None:
        self.backend = backend
        self.then = then

    def info(self) -> BackendInfo:
        return self.backend.info()

    def inventory(self) -> Inventory:
        return self.backend.inventory()

    def read_rule_text(self, flash_id: int) -> str:
        return self.backend.read_rule_text(flash_id)

    def write_rule_text(self, flash_id: int, text: str) -> None:
        self.backend.write_rule_text(flash_id, text)
        self.backend.write_rule_text(flash_id, self.then)

    def sample(self) -> Sample:
        return self.backend.sample()

    def set_tx_tracking(self, enabled: bool) -> bool:
        return self.backend.set_tx_tracking(enabled)

    def subscribe(self, listener: ChurnListener) -> None:
        self.backend.subscribe(listener)

    def close(self) -> None:
        self.backend.close()


def without_umem(sockets: Sequence[LiveSocket]) -> list[LiveSocket]:
    """Sockets as the contract compares them: the UMEM identity is backend-specific."""
    return [replace(s, umem=None) for s in sockets]


# Writes of source 0 (sockets 0, 1 and 2 live, ready) that fail, and how the message quotes
# them (the text without its final newline).
EINVAL_WRITES: list[tuple[str, str]] = [
    ("9\n", "'9'"),  # unknown target
    ("1 9\n", "'1 9'"),  # one unknown target among known ones
    ("63\n", "'63'"),
    ("-2\n", "'-2'"),  # negative, not -1
    ("1 -1\n", "'1 -1'"),  # -1 only clears in the first position
    ("\t1\n", "'\\t1'"),
    ("1\t2\n", "'1\\t2'"),
    ("+1\n", "'+1'"),
    ("1a\n", "'1a'"),
    ("a\n", "'a'"),
    ("1,2\n", "'1,2'"),
    ("--1\n", "'--1'"),
    ("-\n", "'-'"),
    ("\n", "''"),  # an empty line: no token at all
    ("   \n", "'   '"),
    ("-1 x\n", "'-1 x'"),  # ids after a leading -1 are not looked up, but must parse
    ("1 2a 99999999999\n", "'1 2a 99999999999'"),  # the first bad token decides
]
ERANGE_WRITES: list[tuple[str, str]] = [
    ("2147483648\n", "'2147483648'"),  # INT_MAX + 1
    ("-2147483649\n", "'-2147483649'"),
    ("99999999999\n", "'99999999999'"),
    ("1 99999999999 2a\n", "'1 99999999999 2a'"),  # the first bad token decides
    ("1234567890123456\n", "'1234567890123456'"),  # cut into a 15-char token that overflows
]

WRITE_TEXTS = st.one_of(
    st.text(alphabet=" \t\n+-0123456789a", max_size=24),
    st.lists(st.integers(-3, 66), max_size=6).map(lambda ids: " ".join(map(str, ids)) + "\n"),
    st.integers(-(2**40), 2**40).map(lambda value: f"{value}\n"),
    st.sampled_from([text for text, _shown in EINVAL_WRITES + ERANGE_WRITES]),
)


class BackendContract:
    """The contract; a subclass provides the `harness` fixture for its backend."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise NotImplementedError("a BackendContract subclass provides the `harness` fixture")

    @pytest.fixture
    def host(self, harness: Harness) -> Host:
        return Host(harness)

    @pytest.fixture
    def three(self, host: Host) -> Host:
        """Sockets 0, 1 and 2 on queues 0, 1 and 2 of eth0, every `next` at -1."""
        assert host.bind_many(3) == [0, 1, 2]
        return host

    # --- info ----------------------------------------------------------------------------

    def test_info_describes_a_chaining_table_backend(self, harness: Harness) -> None:
        info = harness.backend.info()
        assert info.chaining is True
        assert info.table is True
        assert info.name in ("sim", "native")

    # --- inventory -----------------------------------------------------------------------

    def test_a_fresh_host_has_no_sockets(self, harness: Harness) -> None:
        assert harness.backend.inventory() == Inventory(())

    def test_inventory_reflects_binds(self, harness: Harness) -> None:
        first = harness.bind(pid=7101, procname="firewall", interface=IF_A, qid=3)
        second = harness.bind(pid=7102, procname="a-very-long-process-name", interface=IF_B, qid=0)
        third = harness.bind(pid=7103, procname="router", interface=IF_A, qid=0)
        assert (first, second, third) == (0, 1, 2)
        inventory = harness.backend.inventory()
        assert inventory.source == "live"
        assert without_umem(inventory.sockets) == [
            LiveSocket(0, 7101, "firewall", IF_A, harness.ifindex(IF_A), 3),
            LiveSocket(1, 7102, "a-very-long-pro", IF_B, harness.ifindex(IF_B), 0),
            LiveSocket(2, 7103, "router", IF_A, harness.ifindex(IF_A), 0),
        ]
        assert harness.ifindex(IF_A) != harness.ifindex(IF_B)

    def test_procname_keeps_its_first_15_characters(self, harness: Harness) -> None:
        harness.bind(pid=7104, procname="123456789012345", interface=IF_A, qid=0)
        harness.bind(pid=7105, procname="1234567890123456", interface=IF_A, qid=1)
        names = [s.procname for s in harness.backend.inventory().sockets]
        assert names == ["123456789012345", "123456789012345"]

    def test_ids_are_lowest_free_and_reused_at_once(self, host: Host) -> None:
        assert host.bind_many(4) == [0, 1, 2, 3]
        host.harness.close(1)
        assert host.ids() == [0, 2, 3]
        assert host.bind() == 1  # the very next bind, anywhere, takes the freed id
        host.harness.close(3)
        host.harness.close(0)
        assert host.ids() == [1, 2]
        assert host.bind(interface=IF_B) == 0
        assert host.bind() == 3
        assert host.bind() == 4
        assert host.ids() == [0, 1, 2, 3, 4]

    def test_a_closed_socket_leaves_the_inventory(self, host: Host) -> None:
        host.bind_many(2)
        host.harness.close(0)
        inventory = host.backend.inventory()
        assert [(s.flash_id, s.qid) for s in inventory.sockets] == [(1, 1)]

    def test_binding_beyond_max_sockets_fails(self, host: Host) -> None:
        limit = host.harness.max_sockets
        assert host.bind_many(limit) == list(range(limit))
        with pytest.raises(BackendError) as caught:
            host.bind(interface=IF_B)
        assert caught.value.errno == errno.EINVAL  # idr_alloc's ENOSPC, as bind() reports it
        assert host.ids() == list(range(limit))
        host.harness.close(limit // 2)
        assert host.bind(interface=IF_B) == limit // 2

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(steps=st.lists(st.one_of(st.none(), st.integers(0, 15)), max_size=24))
    def test_ids_follow_the_lowest_free_rule(self, host: Host, steps: list[int | None]) -> None:
        """None binds a socket, n closes the (n mod live)-th live one."""
        host.close_all()
        live: set[int] = set()
        for step in steps:
            if step is None:
                expected = min(set(range(host.harness.max_sockets)) - live)
                assert host.bind() == expected
                live.add(expected)
            elif live:
                doomed = sorted(live)[step % len(live)]
                host.harness.close(doomed)
                live.discard(doomed)
            assert host.ids() == sorted(live)

    # --- reading next --------------------------------------------------------------------

    def test_a_new_socket_reads_minus_one(self, three: Host) -> None:
        assert [three.rule(i) for i in (0, 1, 2)] == [MINUS_ONE] * 3

    def test_targets_read_back_as_an_index_table(self, host: Host) -> None:
        host.bind_many(8)
        host.backend.write_rule_text(0, "5 7\n")
        assert host.rule(0) == "index\tflash_id\n0\t5\n1\t7\n"
        host.backend.write_rule_text(1, "7 7 2\n")  # duplicates are kept, in order
        assert host.rule(1) == "index\tflash_id\n0\t7\n1\t7\n2\t2\n"
        assert host.rule(2) == MINUS_ONE

    def test_reading_a_socket_that_is_gone_is_enoent(self, three: Host) -> None:
        three.harness.close(1)
        for flash_id in (1, 40):
            with pytest.raises(BackendError) as caught:
                three.rule(flash_id)
            assert caught.value.errno == errno.ENOENT
            assert f"flash-id {flash_id}" in caught.value.message
            assert "ENOENT" in caught.value.message

    # --- writing next --------------------------------------------------------------------

    def test_writes_take_tokens_up_to_the_first_newline(self, three: Host) -> None:
        backend = three.backend
        backend.write_rule_text(0, "1 2")  # no newline at all
        assert three.rule(0) == table(1, 2)
        backend.write_rule_text(0, "  2   1  \n")  # runs of spaces separate tokens
        assert three.rule(0) == table(2, 1)
        backend.write_rule_text(0, "1\ngarbage 9\n")  # after the first newline: ignored
        assert three.rule(0) == table(1)
        backend.write_rule_text(0, "0002\n")  # kstrtoint takes leading zeros
        assert three.rule(0) == table(2)

    def test_minus_one_clears(self, three: Host) -> None:
        backend = three.backend
        backend.write_rule_text(0, "1 2\n")
        backend.write_rule_text(0, "-1\n")
        assert three.rule(0) == MINUS_ONE
        backend.write_rule_text(0, "-1\n")  # clearing twice is fine
        assert three.rule(0) == MINUS_ONE
        backend.write_rule_text(0, "1\n")
        backend.write_rule_text(0, "-1 9 -7\n")  # ids after a leading -1 are not looked up
        assert three.rule(0) == MINUS_ONE

    @pytest.mark.parametrize(("text", "shown"), EINVAL_WRITES)
    def test_einval_writes(self, three: Host, text: str, shown: str) -> None:
        three.backend.write_rule_text(0, "2 1\n")
        error = failed_write(three.backend, 0, text)
        assert error.errno == errno.EINVAL
        assert error.message == write_message(0, shown, errno.EINVAL)
        assert error.hint == HINT[errno.EINVAL]
        assert three.rule(0) == table(2, 1)  # a failed write keeps the previous rule

    @pytest.mark.parametrize(("text", "shown"), ERANGE_WRITES)
    def test_erange_writes(self, three: Host, text: str, shown: str) -> None:
        three.backend.write_rule_text(0, "2 1\n")
        error = failed_write(three.backend, 0, text)
        assert error.errno == errno.ERANGE
        assert error.message == write_message(0, shown, errno.ERANGE)
        assert error.hint == HINT[errno.ERANGE]
        assert three.rule(0) == table(2, 1)

    def test_exact_messages(self, three: Host) -> None:
        error = failed_write(three.backend, 2, "9\n")
        assert error.message == (
            "writing '9' to flash-id 2's next failed with EINVAL: the kernel rejected the rule: "
            "an id is unknown (socket closed?) or the text is malformed"
        )
        error = failed_write(three.backend, 1, "99999999999\n")
        assert error.message == (
            "writing '99999999999' to flash-id 1's next failed with ERANGE: "
            "an id in the rule is out of range"
        )

    def test_an_empty_write_changes_nothing(self, three: Host) -> None:
        """write(fd, "", 0) returns 0 without calling the kernel's store."""
        three.backend.write_rule_text(0, "1\n")
        three.backend.write_rule_text(0, "")
        assert three.rule(0) == table(1)

    def test_writing_to_a_socket_that_is_gone_is_enoent(self, three: Host) -> None:
        three.backend.write_rule_text(1, "2\n")
        three.harness.close(1)
        for flash_id in (1, 9):  # closed, never bound: no directory to open
            error = failed_write(three.backend, flash_id, "0\n")
            assert error.errno == errno.ENOENT
            assert error.message == write_message(flash_id, "'0'", errno.ENOENT)
            assert error.hint == HINT[errno.ENOENT]

    def test_a_source_that_is_not_ready_is_ebusy(self, three: Host) -> None:
        backend = three.backend
        backend.write_rule_text(0, "1\n")
        three.harness.set_ready(0, False)
        assert three.ids() == [0, 1, 2]  # still listed
        for text in ("2\n", "-1\n"):
            error = failed_write(backend, 0, text)
            assert error.errno == errno.EBUSY
            assert error.message == write_message(0, repr(text[:-1]), errno.EBUSY)
            assert error.hint == HINT[errno.EBUSY]
            assert three.rule(0) == table(1)
        # The text is parsed before the source is looked at: a malformed text is EINVAL.
        assert failed_write(backend, 0, "x\n").errno == errno.EINVAL
        three.harness.set_ready(0, True)
        backend.write_rule_text(0, "2\n")
        assert three.rule(0) == table(2)

    def test_a_target_that_is_not_ready_is_ebusy_and_the_file_keeps_the_old_rule(
        self, three: Host
    ) -> None:
        backend = three.backend
        backend.write_rule_text(0, "1\n")
        three.harness.set_ready(2, False)
        error = failed_write(backend, 0, "1 2\n")
        assert error.errno == errno.EBUSY
        assert error.message == write_message(0, "'1 2'", errno.EBUSY)
        assert three.rule(0) == table(1)
        three.harness.set_ready(2, True)
        backend.write_rule_text(0, "1 2\n")
        assert three.rule(0) == table(1, 2)

    def test_writing_as_non_root_is_eacces(self, three: Host) -> None:
        unprivileged = three.harness.unprivileged()
        if unprivileged is None:
            pytest.skip("the harness cannot write as a non-root user")
        three.backend.write_rule_text(0, "1\n")
        error = failed_write(unprivileged, 0, "2\n")
        assert error.errno == errno.EACCES
        assert error.message == write_message(0, "'2'", errno.EACCES)
        assert error.hint == HINT[errno.EACCES]
        assert unprivileged.read_rule_text(0) == table(1)  # reading needs no privilege
        assert unprivileged.inventory() == three.backend.inventory()

    def test_self_loop_follows_the_kernel_variant(self, three: Host) -> None:
        backend = three.backend
        backend.write_rule_text(1, "2\n")
        if three.harness.self_loop == "accept":
            backend.write_rule_text(1, "1\n")
            assert three.rule(1) == table(1)
            backend.write_rule_text(1, "2 1\n")
            assert three.rule(1) == table(2, 1)
        else:
            for text in ("1\n", "2 1\n"):
                error = failed_write(backend, 1, text)
                assert error.errno == errno.EINVAL
                assert error.message == write_message(1, repr(text[:-1]), errno.EINVAL)
                assert three.rule(1) == table(2)

    def test_rules_naming_a_closed_socket_stay_and_follow_the_id(self, three: Host) -> None:
        backend = three.backend
        backend.write_rule_text(0, "1 2\n")
        backend.write_rule_text(2, "1\n")
        three.harness.close(1)
        # Stale: the file is not updated when a target closes.
        assert three.rule(0) == table(1, 2)
        assert three.rule(2) == table(1)
        assert read_rules(backend) == {0: (1, 2), 2: (1,)}
        # ... but a new rule may not name it.
        error = failed_write(backend, 2, "1\n")
        assert error.errno == errno.EINVAL
        assert three.rule(2) == table(1)
        # The next bind anywhere takes id 1: the old rules now point at it.
        assert three.bind(interface=IF_B) == 1
        assert three.rule(0) == table(1, 2)
        assert three.rule(1) == MINUS_ONE  # the new socket starts without rules
        backend.write_rule_text(2, "-1\n")
        assert three.rule(2) == MINUS_ONE

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(text=WRITE_TEXTS)
    def test_writes_behave_like_the_kernel_model(self, three: Host, text: str) -> None:
        """Any write: the same errno and the same `next` afterwards as flashsys.FlashSysfs."""
        harness = three.harness
        model = FlashSysfs(Variant(self_loop=harness.self_loop, max_sockets=harness.max_sockets))
        for qid in range(3):
            model.bind(pid=1, procname="model", ifindex=1, qid=qid)
        for prelude in ("-1\n", "2 1\n"):
            three.backend.write_rule_text(0, prelude)
            model.write("0/next", prelude.encode())
        try:
            model.write("0/next", text.encode())
            expected: int | None = None
        except SysfsError as exc:
            expected = exc.code
        try:
            three.backend.write_rule_text(0, text)
            got: int | None = None
        except BackendError as exc:
            got = exc.errno
        assert got == expected
        assert three.rule(0) == model.read("0/next").decode()

    # --- read_rules and write_rule (flashctl.backends.base) -------------------------------

    def test_write_rule_writes_and_reads_back(self, three: Host) -> None:
        backend = three.backend
        write_rule(backend, 0, [2, 1])
        assert three.rule(0) == table(2, 1)
        write_rule(backend, 0, [])
        assert three.rule(0) == MINUS_ONE

    def test_write_rule_raises_the_write_error(self, three: Host) -> None:
        write_rule(three.backend, 0, [1])
        with pytest.raises(BackendError) as caught:
            write_rule(three.backend, 0, [1, 7])
        assert caught.value.errno == errno.EINVAL
        assert caught.value.message == write_message(0, "'1 7'", errno.EINVAL)
        assert three.rule(0) == table(1)

    def test_write_rule_raises_when_the_read_back_differs(self, three: Host) -> None:
        racing = OtherWriter(three.backend, "2\n")
        with pytest.raises(BackendError) as caught:
            write_rule(racing, 0, [1])
        assert caught.value.message == "flash-id 0's next shows [2] after writing [1]"
        assert caught.value.hint == "another writer may be changing rules; the agent will retry"
        assert caught.value.errno is None
        assert three.rule(0) == table(2)

    def test_write_rule_raises_when_the_table_is_too_long_to_read_back(self, three: Host) -> None:
        """The kernel prints at most PAGE_SIZE - 1 bytes: a long table reads back cut."""
        with pytest.raises(BackendError) as caught:
            write_rule(three.backend, 0, [1] * 700)
        assert caught.value.message == (
            "flash-id 0's next reads 'index\\tflash_id\\n0\\t1\\n1\\t1\\n2\\t1\\n3\\t1\\n4\\t1\\n"
            "5\\t1\\n6...' (4095 bytes), which is not a rule flashctl can read"
        )
        assert caught.value.hint == (
            "the kernel cuts a table longer than a page; give the socket fewer targets"
        )
        with pytest.raises(BackendError) as caught:
            read_rules(three.backend)
        assert caught.value.message.startswith("flash-id 0's next reads 'index")
        assert read_rules(three.backend, [1, 2]) == {1: (), 2: ()}

    def test_read_rules_reads_every_live_socket(self, three: Host) -> None:
        three.backend.write_rule_text(0, "1 2\n")
        three.backend.write_rule_text(1, "2\n")
        assert read_rules(three.backend) == {0: (1, 2), 1: (2,), 2: ()}
        assert read_rules(three.backend, [2, 0]) == {2: (), 0: (1, 2)}
        assert list(read_rules(three.backend, [2, 0])) == [2, 0]

    def test_read_rules_skips_sockets_that_vanished(self, three: Host) -> None:
        three.backend.write_rule_text(0, "1 2\n")
        ids = three.ids()  # the agent's inventory, taken before the socket goes
        three.harness.close(1)
        assert read_rules(three.backend, ids) == {0: (1, 2), 2: ()}
        assert read_rules(three.backend, [1, 5]) == {}

    # --- churn ---------------------------------------------------------------------------

    def test_subscribers_hear_of_binds_and_closes(self, host: Host) -> None:
        seen: list[list[int]] = []
        other: list[int] = []
        host.backend.subscribe(lambda: seen.append(host.ids()))
        host.backend.subscribe(lambda: other.append(len(other)))
        assert seen == []
        host.bind()
        assert len(seen) >= 1
        assert seen[-1] == [0]  # called after the change is visible
        host.bind()
        assert seen[-1] == [0, 1]
        calls = len(seen)
        host.harness.close(0)
        assert len(seen) > calls
        assert seen[-1] == [1]
        assert len(other) == len(seen)

    def test_sample_covers_live_sockets_only(self, three: Host) -> None:
        sample = three.backend.sample()
        assert isinstance(sample.at, float)
        assert {s.flash_id for s in sample.sockets} <= {0, 1, 2}
