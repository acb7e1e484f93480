"""A separate process that owns AF_XDP sockets, for the observer's tests and benchmark.

    ip netns exec NS python -m tests.linux.xsk_owner IFNAME [--queues Q] [--rx N] [--tx N]
        [--fill N] [--completion N] [--frames F] [--name COMM] [--no-program]

Binds one socket per queue 0..Q-1 on IFNAME (the first registers a UMEM, the others share it
with rings of their own), attaches the XSKMAP redirect program (unless --no-program), posts
F frames to each fill ring and prints one JSON line: {"pid", "procname", "sockets": [{"inode",
"fd", "queue"}]}. Then it obeys one command per line on stdin and answers each with one JSON
line (its own ground truth, read through its own mappings):

    recv K [I]    consume up to K RX descriptors of socket I (default 0) -> {"received": n}
    fill K [I]    post K more frames (returned ones first) -> {"filled": n}
    stats [I]     {"indices": {ring: [producer, consumer]}, "statistics": {...}}
    dup [I]       a second fd of socket I (os.dup) -> {"fd": fd}
    close [I]     unmap and close socket I -> {"closed": I}
    rebind [I [MS]]
                  close socket I (if open) and bind a new one on its queue, as a program
                  restarting a queue does, retrying EBUSY for MS milliseconds (default 2000);
                  F frames posted, back in the XSKMAP -> {"rebound": I, "inode", "fd",
                  "waited": seconds}, or {"rebound": null, "busy": message, "waited"}
    fork          a child that holds every fd and mapping until it is killed, or 60 s pass,
                  or this process is gone for 5 s -> {"child": pid}
    exit          leave (everything is closed by the exit) -> no answer

Ends when stdin closes, too. It never outlives the test by more than that.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

from flashctl.backends.afxdp import AfXdpError, Umem, XdpProgram, XskSocket

PR_SET_NAME = 15
REBIND_RETRY_MS = 2000
CHILD_LIFETIME = 60.0
ORPHAN_GRACE = 5.0  # seconds the child outlives this process (a test ends it earlier)


def _answer(data: object) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _hold_forever(parent: int) -> None:
    """The forked child: keep the inherited fds and mappings until killed (or orphaned)."""
    deadline = time.monotonic() + CHILD_LIFETIME
    orphaned_at: float | None = None
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            orphaned_at = orphaned_at or time.monotonic()
            if time.monotonic() - orphaned_at > ORPHAN_GRACE:
                break
        time.sleep(0.05)
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ifname")
    parser.add_argument("--queues", type=int, default=1)
    parser.add_argument("--rx", type=int, default=512)
    parser.add_argument("--tx", type=int, default=256)
    parser.add_argument("--fill", type=int, default=1024)
    parser.add_argument("--completion", type=int, default=512)
    parser.add_argument("--frames", type=int, default=32, help="frames posted per fill ring")
    parser.add_argument("--name", default="xskowner", help="process name (comm)")
    parser.add_argument("--no-program", action="store_true")
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(args.name.encode()[:15]), 0, 0, 0)

    per_socket = max(args.frames * 2, 64)
    umem = Umem(per_socket * args.queues)
    sockets: list[XskSocket | None] = []
    free: list[list[int]] = []

    def bind(queue: int, retry: float) -> XskSocket:
        made = XskSocket(
            umem,
            args.ifname,
            queue,
            rx_size=args.rx,
            tx_size=args.tx,
            fill_size=args.fill,
            completion_size=args.completion,
            bind_retry=retry,
        )
        frames = [umem.frame(queue * per_socket + i) for i in range(per_socket)]
        posted = made.fill_frames(frames[: args.frames])
        if queue < len(free):
            free[queue] = frames[posted:]
        else:
            free.append(frames[posted:])
        return made

    for queue in range(args.queues):
        sockets.append(bind(queue, 1.0))
    program = None
    if not args.no_program:
        program = XdpProgram(max_queues=max(64, args.queues))
        for queue, xsk in enumerate(sockets):
            assert xsk is not None
            program.insert(queue, xsk)
        program.attach(args.ifname)
    _answer(
        {
            "pid": os.getpid(),
            "procname": args.name[:15],
            "sockets": [
                {"inode": os.fstat(x.fd).st_ino, "fd": x.fd, "queue": q}
                for q, x in enumerate(sockets)
                if x is not None
            ],
        }
    )
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, numbers = words[0], [int(w) for w in words[1:]]
        if command == "exit":
            break
        if command == "fork":
            child = os.fork()
            if child == 0:
                _hold_forever(os.getppid())
            _answer({"child": child})
            continue
        counted = command in ("recv", "fill")
        count = numbers[0] if counted else 0
        rest = numbers[1:] if counted else numbers
        index = rest[0] if rest else 0
        current = sockets[index]
        if command == "rebind":
            if current is not None:
                current.close()
                sockets[index] = None
            retry = (rest[1] if len(rest) > 1 else REBIND_RETRY_MS) / 1000
            started = time.monotonic()
            try:
                made = bind(index, retry)
            except AfXdpError as exc:
                _answer({"rebound": None, "busy": str(exc), "waited": time.monotonic() - started})
                continue
            waited = time.monotonic() - started
            sockets[index] = made
            if program is not None:
                program.insert(index, made)
            inode = os.fstat(made.fd).st_ino
            _answer({"rebound": index, "inode": inode, "fd": made.fd, "waited": waited})
            continue
        xsk = current
        assert xsk is not None
        if command == "recv":
            descs = xsk.receive(count)
            free[index] += [d.addr - d.addr % umem.frame_size for d in descs]
            _answer({"received": len(descs)})
        elif command == "fill":
            posted = xsk.fill_frames(free[index][:count])
            del free[index][:posted]
            _answer({"filled": posted})
        elif command == "stats":
            rings = {"rx": xsk.rx, "tx": xsk.tx, "fill": xsk.fill, "completion": xsk.completion}
            indices = {n: [r.producer, r.consumer] for n, r in rings.items() if r is not None}
            _answer({"indices": indices, "statistics": xsk.statistics()})
        elif command == "dup":
            _answer({"fd": os.dup(xsk.fd)})
        elif command == "close":
            xsk.close()
            sockets[index] = None
            _answer({"closed": index})
        else:
            _answer({"error": f"unknown command {command!r}"})
    if program is not None:
        program.close()
    for xsk in sockets:
        if xsk is not None:
            xsk.close()
    umem.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
