"""Parsing of the unit-bearing quantities of chain files: rates, sizes and durations.

Accepted forms (case of the SI prefix matters only for `m` = milli in durations):

- rates: `5Mpps`, `500kpps`, `1.2 Gpps`, `20000` (pps), or a bit rate `10Gbps` / `10Gbit/s`
  which needs a packet size to become pps (see `bits_to_pps`).
- sizes: `64`, `64B`, `1.5KB` (1000-based), `2KiB` (1024-based).
- durations: `200ns`, `1.5us`, `20µs`, `1ms`, `2s`; a unit is required.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"(?P<num>\d+(?:\.\d*)?|\.\d+)(?:[eE](?P<exp>[-+]?\d+))?"
_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_RATE_RE = re.compile(rf"^{_NUMBER}\s*(?P<prefix>[kKMGT]?)(?P<unit>pps|bps|bit/s|b/s)?$")
_SIZE_RE = re.compile(rf"^{_NUMBER}\s*(?P<prefix>[kKMG]i?)?(?P<unit>B)?$")
_SIZE_SCALE = {"": 1, "k": 1000, "K": 1000, "M": 10**6, "G": 10**9}
_SIZE_SCALE |= {"ki": 1024, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
_DURATION_RE = re.compile(rf"^{_NUMBER}\s*(?P<unit>ns|us|µs|μs|ms|s)$")
_DURATION_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9}

# Ethernet preamble + start delimiter + inter-frame gap: what a frame costs on the wire beyond
# its own bytes. 100 GbE at 64 B frames is 148.8 Mpps only when these 20 B are counted.
WIRE_OVERHEAD_BYTES = 20


class UnitError(ValueError):
    """A quantity could not be parsed; the message says what forms are accepted."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A traffic rate: packets per second, or bits per second awaiting a packet size."""

    value: float
    per_bit: bool = False

    def pps(self, packet_size: int) -> float:
        return bits_to_pps(self.value, packet_size) if self.per_bit else self.value


def _number(match: re.Match[str]) -> float:
    value = float(match["num"])
    if match["exp"]:
        value *= 10 ** int(match["exp"])
    return value


def _text(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnitError(f"expected a {what}, got {type(value).__name__}")
    return str(value).strip()


def parse_rate(value: object) -> Rate:
    """`5Mpps` -> Rate(5e6); `10Gbps` -> Rate(1e10, per_bit=True); a bare number is pps."""
    text = _text(value, "rate such as 5Mpps or 10Gbps")
    match = _RATE_RE.match(text)
    if not match:
        raise UnitError(f"cannot read rate {text!r}: write e.g. 5Mpps, 500kpps or 10Gbps")
    amount = _number(match) * _SI[match["prefix"]]
    if not math.isfinite(amount) or amount <= 0:
        raise UnitError(f"rate {text!r} must be a positive, finite number")
    per_bit = match["unit"] in ("bps", "bit/s", "b/s")
    return Rate(amount, per_bit)


def parse_size(value: object) -> int:
    """`64B` -> 64, `1.5KB` -> 1500, `2KiB` -> 2048; result is a whole number of bytes."""
    text = _text(value, "size such as 64B")
    match = _SIZE_RE.match(text)
    if not match:
        raise UnitError(f"cannot read size {text!r}: write e.g. 64B, 1500B or 2KiB")
    scale = _SIZE_SCALE[match["prefix"] or ""]
    amount = _number(match) * scale
    if not math.isfinite(amount) or amount != int(amount):
        raise UnitError(f"size {text!r} is not a whole number of bytes")
    return int(amount)


def parse_duration_ns(value: object) -> float:
    """`200ns` -> 200.0, `1.5us` -> 1500.0, `1ms` -> 1e6 (nanoseconds)."""
    text = _text(value, "duration such as 200ns or 1.5us")
    match = _DURATION_RE.match(text)
    if not match:
        raise UnitError(f"cannot read duration {text!r}: write e.g. 200ns, 1.5us or 2ms")
    amount = _number(match) * _DURATION_NS[match["unit"]]
    if not math.isfinite(amount):
        raise UnitError(f"duration {text!r} must be finite")
    return amount


def bits_to_pps(bits_per_second: float, packet_size: int) -> float:
    """Packets per second of `packet_size`-byte frames at a line rate, wire overhead counted."""
    return bits_per_second / ((packet_size + WIRE_OVERHEAD_BYTES) * 8)


def format_rate(pps: float) -> str:
    """148809523.8 -> `148.8Mpps`."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if pps >= scale:
            return f"{pps / scale:.4g}{prefix}pps"
    return f"{pps:.4g}pps"


def format_duration_ns(ns: float) -> str:
    """1500.0 -> `1.5us`."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.4g}{unit}"
    return f"{ns:.4g}ns"
