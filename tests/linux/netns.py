"""Network namespaces with veth pairs for the kernel tests, and frames to send through them.

`link` is a pytest fixture: a fresh namespace (unique name) holding one veth pair with IPv6
off, both ends up; it deletes exactly what it made. `inside(netns)` moves the calling thread
into a namespace for a block (network namespaces are per thread); processes can instead be
started with `ip netns exec`.

Needs root and `ip` (iproute2). Without them the tests skip and say why, except under
CI=true, where a skip would hide a broken setup: there they fail.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

ETH_TYPE = 0x88B5  # IEEE local experimental: nothing else on the link uses it
CLONE_NEWNET = 0x40000000
WAIT = 3.0  # seconds a packet may take to arrive at most


def setup_missing() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces, veths and AF_XDP need root"
    if shutil.which("ip") is None:
        return "no ip (iproute2)"
    return None


@dataclass(frozen=True)
class Link:
    netns: str
    xdp: str  # the end the program and the socket sit on
    peer: str  # the end packets are injected from and observed at


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@contextmanager
def inside(netns: str) -> Iterator[None]:
    """Run the block in `netns` (this thread only), then come back."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - would poison the run
                raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
    finally:
        os.close(target)
        os.close(own)


@contextmanager
def veth_pair(queues: int = 1) -> Iterator[Link]:
    """A fresh namespace holding a veth pair with `queues` RX/TX queues per end, IPv6 off,
    both ends up; deleted (by name, never anything else) afterwards."""
    reason = setup_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the AF_XDP tests: {reason}")
        pytest.skip(reason)
    tag = secrets.token_hex(4)
    made = Link(netns=f"fc{tag}", xdp=f"fc{tag}a", peer=f"fc{tag}b")
    ip("netns", "add", made.netns)
    try:
        counts = ("numrxqueues", str(queues), "numtxqueues", str(queues))
        ip(
            *("-n", made.netns, "link", "add", made.xdp, *counts),
            *("type", "veth", "peer", "name", made.peer, *counts),
        )
        with inside(made.netns):
            # No IPv6 on the pair: router solicitations and MLD reports would reach the
            # socket too, and the tests count frames exactly.
            for name in (made.xdp, made.peer):
                with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as knob:
                    knob.write("1\n")
        for name in (made.xdp, made.peer):
            ip("-n", made.netns, "link", "set", name, "up")
        yield made
    finally:
        subprocess.run(["ip", "-n", made.netns, "link", "del", made.xdp], capture_output=True)
        subprocess.run(["ip", "netns", "del", made.netns], capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    with veth_pair() as made:
        yield made


def frame(seq: int, size: int = 100) -> bytes:
    """An Ethernet frame with the test's ethertype and a payload naming its sequence."""
    header = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + struct.pack("!H", ETH_TYPE)
    body = struct.pack("!I", seq) + bytes((seq + i) & 0xFF for i in range(size - 18))
    return header + body


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()
