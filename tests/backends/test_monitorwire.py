"""The FLASH monitor protocol's encodings, byte for byte (flashctl.backends.monitorwire)."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from flashctl.backends.monitorwire import (
    COMMAND,
    NF_DATA,
    Command,
    FdPart,
    bind_flags,
    int32,
    name16,
    pollout_reply,
    seat_reply,
    socket_reply,
    u32,
    umem_reply,
    xdp_flags,
)
from flashctl.chains.seats import Seat


def le(value: int, signed: bool = True) -> bytes:
    """A 4-byte native int, spelled independently of struct."""
    return value.to_bytes(4, sys.byteorder, signed=signed)


SEAT = Seat(
    chain="edge",
    nf="fw",
    umem="shared",
    umem_id=3,
    nf_id=1,
    interface="veth-fc0",
    queues=(4, 7),
    umem_offset=5,
    umem_size=4096 * 4096 * 7 * 2,
    scale=2,
    bind="copy",
    xdp="skb",
    mode="poll",
    poll_timeout=250,
    frags=True,
    custom_xdp=False,
    next_size=3,
    address="10.0.0.1",
    dst_addresses=("10.0.0.2", "0.0.0.0", "192.168.100.200"),
    prev=(0, 2),
)

# What the server answers itself (fds, the seat claim, goodbye); everything else is the seat's.
SERVER_HANDLED = {
    Command.CREATE_UMEM,
    Command.GET_UMEM,
    Command.CREATE_SOCKET,
    Command.CLOSE_CONN,
    Command.GET_POLLOUT_STATUS,
}


def test_commands_are_flash_uds_numbers():
    assert {c.name: c.value for c in Command} == {
        "CREATE_UMEM": 1,
        "GET_UMEM": 2,
        "CREATE_SOCKET": 3,
        "CLOSE_CONN": 4,
        "GET_THREAD_INFO": 5,
        "GET_UMEM_OFFSET": 6,
        "GET_ROUTE_INFO": 7,
        "GET_BIND_FLAGS": 8,
        "GET_XDP_FLAGS": 9,
        "GET_MODE": 10,
        "GET_POLL_TIMEOUT": 11,
        "GET_FRAGS_ENABLED": 12,
        "GET_IFNAME": 13,
        "GET_IP_ADDR": 14,
        "GET_DST_IP_ADDR": 15,
        "GET_POLLOUT_STATUS": 16,
        "GET_PREV_NF": 17,
    }


def test_command_and_payload_layout():
    assert COMMAND.pack(2) == le(2)
    assert COMMAND.size == 4
    assert NF_DATA.pack(3, 1) == le(3) + le(1)
    assert NF_DATA.size == 8
    assert NF_DATA.unpack(le(-1) + le(70000)) == (-1, 70000)


def test_ints():
    assert int32(16777216) == le(16777216)
    assert int32(-1) == b"\xff\xff\xff\xff"
    assert u32(0x0A) == le(0x0A, signed=False)
    assert u32(-1) == b"\xff\xff\xff\xff"  # masked, never an overflow error
    assert u32(0x1_0000_0002) == le(2)


def test_name16_pads_with_nul_and_truncates_to_15_bytes():
    assert name16("eth0") == b"eth0" + b"\0" * 12
    assert name16("") == b"\0" * 16
    assert name16("0123456789abcde") == b"0123456789abcde\0"
    assert name16("0123456789abcdefXYZ") == b"0123456789abcde\0"  # always NUL-terminated
    assert name16("255.255.255.255") == b"255.255.255.255\0"


def test_umem_reply():
    assert umem_reply(9, SEAT) == [FdPart(9), le(2), le(234881024), le(2)]


def test_refused_umem_reply_is_n_and_zeros():
    expected = [FdPart(None), le(0), le(0), le(0)]
    assert umem_reply(None, SEAT) == expected
    assert umem_reply(9, None) == expected


def test_socket_reply():
    assert socket_reply(11, 7) == [FdPart(11), le(7)]
    assert socket_reply(None, 7) == [FdPart(None), b"\xff\xff\xff\xff"]


def test_pollout_reply():
    assert pollout_reply(12) == [FdPart(12), le(64)]
    assert pollout_reply(None) == [FdPart(None), le(0)]


@pytest.mark.parametrize(
    ("command", "parts"),
    [
        (Command.GET_THREAD_INFO, [le(2), le(4), le(7)]),
        (Command.GET_UMEM_OFFSET, [le(5)]),
        (Command.GET_ROUTE_INFO, [le(3)]),
        (Command.GET_BIND_FLAGS, [le(0x0A)]),
        (Command.GET_XDP_FLAGS, [le(2)]),
        (Command.GET_MODE, [le(4)]),
        (Command.GET_POLL_TIMEOUT, [le(250)]),
        (Command.GET_FRAGS_ENABLED, [b"\x01"]),
        (Command.GET_IFNAME, [b"veth-fc0" + b"\0" * 8]),
        (Command.GET_IP_ADDR, [b"10.0.0.1" + b"\0" * 8]),
        (
            Command.GET_DST_IP_ADDR,
            [
                le(3),
                b"10.0.0.2" + b"\0" * 8,
                b"0.0.0.0" + b"\0" * 9,
                b"192.168.100.200\0",
            ],
        ),
        (Command.GET_PREV_NF, [le(2), le(0), le(2)]),
    ],
)
def test_seat_replies_field_by_field(command, parts):
    # Each field is its own part (its own send): FLASH NFs read each with one read().
    assert seat_reply(command, SEAT, 0x0A, 2) == parts


def test_seat_reply_flags_are_the_groups_real_flags_not_the_seats_wish():
    # The seat asks for `copy`/`skb`; the group really bound zero-copy in native mode.
    assert seat_reply(Command.GET_BIND_FLAGS, SEAT, 0x0C, 4) == [le(0x0C)]
    assert seat_reply(Command.GET_XDP_FLAGS, SEAT, 0x0C, 4) == [le(4)]


def test_empty_lists_and_false_frags():
    seat = replace(SEAT, dst_addresses=(), prev=(), frags=False, mode="wakeup")
    assert seat_reply(Command.GET_DST_IP_ADDR, seat, 0, 0) == [le(0)]
    assert seat_reply(Command.GET_PREV_NF, seat, 0, 0) == [le(0)]
    assert seat_reply(Command.GET_FRAGS_ENABLED, seat, 0, 0) == [b"\x00"]
    assert seat_reply(Command.GET_MODE, seat, 0, 0) == [le(0)]


@pytest.mark.parametrize("command", sorted(SERVER_HANDLED))
def test_commands_not_answered_from_the_seat_say_so(command):
    with pytest.raises(ValueError, match=f"^{command.name} is not answered from the seat alone$"):
        seat_reply(command, SEAT, 0, 0)


def test_every_command_is_answered_by_the_seat_or_by_the_server():
    """No command falls through: each of 1..17 either has a seat reply or is one the server
    handles itself (tests/backends/test_monitor_server.py checks those on the wire)."""
    from_seat = set()
    for value in range(1, 18):
        command = Command(value)
        try:
            seat_reply(command, SEAT, 0, 0)
        except ValueError:
            continue
        from_seat.add(command)
    assert from_seat | SERVER_HANDLED == set(Command)
    assert from_seat & SERVER_HANDLED == set()
    assert len(from_seat) == 12


def test_bind_flags_on_the_wire():
    assert bind_flags("copy", "wakeup") == 0x0A  # what the real FLASH NF logs for copy mode
    assert bind_flags("zerocopy", "wakeup") == 0x0C
    assert bind_flags("copy", "busy") == 0x02
    assert bind_flags("zerocopy", "poll") == 0x04
    assert bind_flags("copy", "no-wakeup") == 0x02


def test_xdp_flags_on_the_wire():
    assert [xdp_flags(m) for m in ("skb", "native", "hw")] == [2, 4, 8]
