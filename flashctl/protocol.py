"""The agent's wire protocol: newline-delimited JSON over a Unix stream socket.

A connection starts with a hello in each direction that names the protocol version, so a
client and an agent of different versions fail with a clear message instead of
misunderstanding each other. Then each request `{"id", "op", "args"}` gets one response
`{"id", "ok": true, "result"}` or `{"id", "ok": false, "error": {...}}`; streaming ops (`watch`)
send `{"id", "event": ...}` lines until the client closes. Standard library only: the client
side of every command imports this, and must start fast.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
MAX_LINE = 16 << 20  # a request carries chain file texts (each ≤ 8 MiB, but usually tiny)


class ProtocolError(Exception):
    """A peer sent something that is not a well-formed message of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message larger than {MAX_LINE >> 20} MiB")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def hello(role: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"hello": {"protocol": PROTOCOL_VERSION, "role": role, "version": version, **extra}}


def error_body(code: str, message: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    """Error codes: invalid (exit 2), rolled-back (4), conflict/failed/busy/version (1)."""
    return {"code": code, "message": message, "hint": hint, **extra}
