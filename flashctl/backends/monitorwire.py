"""The FLASH monitor's NF protocol on the wire: command numbers and reply encodings.

Facts from the FLASH sources (lib/flash/uds, monitor/main.c, lib/flash/nf/flash_nf.c and the
Rust client lib/flash-rs/src/uds), which flashctl must match byte for byte so unmodified NFs
attach to it:

- A Unix stream socket; each command is a 4-byte native-endian int the NF writes alone.
  Only GET_UMEM carries a payload: 8 bytes `{int umem_id; int nf_id}`.
- Replies are raw native-endian fields, each read by the NF with exactly one read() of its
  size, so every field is its own send. An fd travels by SCM_RIGHTS on a one-byte message
  'y'; 'n' (no fd) means refused.
- CREATE_SOCKET's queue is a u8 sent with sizeof(int): 4 bytes, only the first meaningful
  (on little-endian hosts that is the int's value). FRAGS_ENABLED is one byte (C bool).
  IFNAME, IP_ADDR and each DST_IP_ADDR are 16 bytes, NUL-padded.
- The NF treats any byte from the monitor outside a reply, or EOF, as "shut down": the
  server never writes unsolicited, and closes a connection to stop an NF.

Two commands are defined by FLASH but answered by neither its monitor (which exits on them)
nor used by its clients: CREATE_UMEM (1) and GET_THREAD_INFO (5). flashctl gives them the
obvious meaning: CREATE_UMEM is GET_UMEM (UMEMs are created when the first NF of a group
asks), GET_THREAD_INFO answers the thread count, then each thread's queue, as ints.

A refused fd-bearing reply still sends every field after the marker ('n', then zeros or -1)
so a client that reads the whole reply stays in step; FLASH's clients stop at the 'n'.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from flashctl.backends.afxdp import (
    XDP_COPY,
    XDP_FLAGS_DRV_MODE,
    XDP_FLAGS_HW_MODE,
    XDP_FLAGS_SKB_MODE,
    XDP_USE_NEED_WAKEUP,
    XDP_ZEROCOPY,
)
from flashctl.chains.seats import Seat

COMMAND: Final = struct.Struct("=i")
NF_DATA: Final = struct.Struct("=ii")  # struct nf_data {int umem_id; int nf_id;}
NAME_BYTES: Final = 16  # IF_NAMESIZE and INET_ADDRSTRLEN
POLLOUT_BYTES: Final = 64  # FLASH_MAX_XSK entries of one byte


# flash_defines.h: FLASH__BUSY_POLL, FLASH__NO_NEED_WAKEUP, FLASH__POLL (mode '' is 0)
MODE_FLAGS: Final = {"wakeup": 0, "busy": 0x1, "no-wakeup": 0x2, "poll": 0x4}


def bind_flags(bind: str, mode: str) -> int:
    """The u32 GET_BIND_FLAGS answers for a bound mode (`zerocopy` or `copy`): need-wakeup is
    added in the default mode, as the monitor does for mode ''."""
    flags = XDP_ZEROCOPY if bind == "zerocopy" else XDP_COPY
    return flags | (XDP_USE_NEED_WAKEUP if mode == "wakeup" else 0)


def xdp_flags(xdp: str) -> int:
    """The u32 GET_XDP_FLAGS answers for an attach mode (`native`, `skb` or `hw`)."""
    return {"native": XDP_FLAGS_DRV_MODE, "skb": XDP_FLAGS_SKB_MODE, "hw": XDP_FLAGS_HW_MODE}[xdp]


def mode_flags(mode: str) -> int:
    """The u32 GET_MODE answers for a group's `mode`."""
    return MODE_FLAGS[mode]


class Command(IntEnum):
    CREATE_UMEM = 1
    GET_UMEM = 2
    CREATE_SOCKET = 3
    CLOSE_CONN = 4
    GET_THREAD_INFO = 5
    GET_UMEM_OFFSET = 6
    GET_ROUTE_INFO = 7
    GET_BIND_FLAGS = 8
    GET_XDP_FLAGS = 9
    GET_MODE = 10
    GET_POLL_TIMEOUT = 11
    GET_FRAGS_ENABLED = 12
    GET_IFNAME = 13
    GET_IP_ADDR = 14
    GET_DST_IP_ADDR = 15
    GET_POLLOUT_STATUS = 16
    GET_PREV_NF = 17


@dataclass(frozen=True, slots=True)
class FdPart:
    """A one-byte message carrying `fd` by SCM_RIGHTS ('y'), or 'n' when `fd` is None."""

    fd: int | None


Part = bytes | FdPart


def int32(value: int) -> bytes:
    return struct.pack("=i", value)


def u32(value: int) -> bytes:
    return struct.pack("=I", value & 0xFFFFFFFF)


def name16(text: str) -> bytes:
    """A C char[16]: at most 15 bytes of text, NUL-padded (the NF prints it with %s)."""
    return text.encode()[: NAME_BYTES - 1].ljust(NAME_BYTES, b"\0")


def umem_reply(fd: int | None, seat: Seat | None) -> list[Part]:
    """GET_UMEM / CREATE_UMEM: the UMEM memfd, the NF's thread count, the UMEM's bytes and
    its scale; refused: 'n' and zeros (which FLASH's Rust client rejects as invalid)."""
    if fd is None or seat is None:
        return [FdPart(None), int32(0), int32(0), int32(0)]
    return [FdPart(fd), int32(seat.threads), int32(seat.umem_size), int32(seat.scale)]


def socket_reply(fd: int | None, queue: int) -> list[Part]:
    """CREATE_SOCKET: a bound AF_XDP socket and its queue; refused: 'n' and -1."""
    if fd is None:
        return [FdPart(None), int32(-1)]
    return [FdPart(fd), int32(queue)]


def pollout_reply(fd: int | None) -> list[Part]:
    if fd is None:
        return [FdPart(None), int32(0)]
    return [FdPart(fd), int32(POLLOUT_BYTES)]


def seat_reply(command: Command, seat: Seat, bind: int, xdp: int) -> list[Part]:
    """Replies that are only the seat's data (no fd). `bind` and `xdp` are the flags the
    group's sockets were really bound and attached with."""
    if command == Command.GET_THREAD_INFO:
        return [int32(seat.threads), *(int32(queue) for queue in seat.queues)]
    if command == Command.GET_UMEM_OFFSET:
        return [int32(seat.umem_offset)]
    if command == Command.GET_ROUTE_INFO:
        return [int32(seat.next_size)]
    if command == Command.GET_BIND_FLAGS:
        return [u32(bind)]
    if command == Command.GET_XDP_FLAGS:
        return [u32(xdp)]
    if command == Command.GET_MODE:
        return [u32(mode_flags(seat.mode))]
    if command == Command.GET_POLL_TIMEOUT:
        return [int32(seat.poll_timeout)]
    if command == Command.GET_FRAGS_ENABLED:
        return [bytes((int(seat.frags),))]
    if command == Command.GET_IFNAME:
        return [name16(seat.interface)]
    if command == Command.GET_IP_ADDR:
        return [name16(seat.address)]
    if command == Command.GET_DST_IP_ADDR:
        return [int32(len(seat.dst_addresses)), *(name16(a) for a in seat.dst_addresses)]
    if command == Command.GET_PREV_NF:
        return [int32(len(seat.prev)), *(int32(nf_id) for nf_id in seat.prev)]
    raise ValueError(f"{command.name} is not answered from the seat alone")
