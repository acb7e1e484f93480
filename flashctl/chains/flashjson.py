"""Conversion between chain documents and the FLASH monitor's JSON config.

The monitor (`load config <file>`, then `load route`) reads:

    {"umem": [{"umem_id", "ifname", "xdp_flags", "bind_flags", "mode", "poll_timeout"?,
               "custom_xsk", "frags_enabled", "umem_scale"?,
               "nf": [{"nf_id", "nf_ip", "nf_port", "thread": [{"thread_id", "queue"}]}]}],
     "route": {"<nf_id>": [<nf_id>, ...]}}

What the monitor does with it, and where flashctl means something else (each difference is
reported as a warning, never silently):

- An NF process identifies itself with (umem_id, nf_id) and the monitor uses both as array
  positions: the umem entry's position in `umem`, the NF's position in its entry's `nf`.
- `route` is keyed by nf id and every NF needs a key (the monitor refuses the file
  otherwise). `load route` writes each list verbatim to `/sys/kernel/flash/<nf_id>/next`,
  i.e. it takes nf ids as flash-ids, writes one rule per NF (not per thread), and does so
  for the first umem entry only. flashctl instead resolves every thread's socket by
  (interface, queue) and writes one rule per thread with the link's mapping policy.

Import rules (monitor JSON -> chain document):

- umem entry `umem_id: K` -> UMEM group `umemK`; nf `nf_id: N` -> NF `nfN`, its threads'
  queues in list order, its interface the entry's `ifname` (hoisted to `spec.interface`
  when every entry shares it or when the caller names a default).
- `xdp_flags` d/s/h -> `xdp: native/skb/hw`, `bind_flags` z/c -> `bind: zerocopy/copy` (both
  always written); `mode` ""/b/p/m -> `mode: wakeup/busy/poll/no-wakeup` with `poll_timeout`
  -> `pollTimeout`, `custom_xsk` -> `customXdp`, `frags_enabled` -> `frags`, `umem_scale` ->
  `scale`: each written only when it differs from the default, so documents stay minimal.
- `nf_ip` -> `address` unless it is the placeholder 0.0.0.0, `nf_port` -> `port` unless 0.
- `route["N"] = [A, B]` -> outputs `to_nfA`, `to_nfB` of `nfN` in that order (a target
  listed twice gets `to_nfA_2`, ...), each linked to its NF; an empty route -> a link
  `{from: nfN, to: nic}`; an NF that no route reaches -> `{from: nic, to: nfN}`.
- Route keys and values must name NFs of the file (the monitor's own files sometimes hold
  flash-ids there; flashctl cannot know which socket such a number meant).

Export rules (chain -> monitor JSON):

- One umem entry per UMEM group (in document order), then one per NF in no group. The entry's
  umem_id is its position; NFs are numbered 0, 1, 2, ... across entries in that order, so
  nf ids are unique (as `route` needs), equal the positions inside the first entry, and equal
  the flash-ids the kernel hands out when single-threaded NFs bind in that order on a host
  with no other AF_XDP socket (flash-ids start at 0: hence 0-based).
- `xdp: auto` -> "d" (native); `bind: auto` -> "z" (zero-copy), or "c" over skb XDP, since the
  monitor has no fallback. `mode`, `pollTimeout`, `customXdp`, `frags` and `scale` map back
  one to one (an NF in no group gets their defaults). An NF without `address` gets nf_ip
  "0.0.0.0", without `port` nf_port 0: the placeholders import reads back as "none".

Pure: data in, data out; no file I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flashctl.chains.spec import API_VERSION, NIC, Chain, Link, Umem
from flashctl.chains.topology import output_links
from flashctl.errors import InputError, format_path

# Flag letters the monitor accepts in each field, with what they mean.
_XDP_FLAGS = {"d": "native", "s": "skb", "h": "hardware offload"}
_BIND_FLAGS = {"z": "zero-copy", "c": "copy"}
_MODES = {"": "need-wakeup", "b": "busy poll", "p": "poll with poll_timeout", "m": "no need-wakeup"}
_XDP_TO_SPEC = {"d": "native", "s": "skb", "h": "hw"}
_BIND_TO_SPEC = {"z": "zerocopy", "c": "copy"}
_MODE_TO_SPEC = {"": "wakeup", "b": "busy", "p": "poll", "m": "no-wakeup"}
_XDP_FROM_SPEC = {spec: flag for flag, spec in _XDP_TO_SPEC.items()}
_BIND_FROM_SPEC = {spec: flag for flag, spec in _BIND_TO_SPEC.items()}
_MODE_FROM_SPEC = {spec: flag for flag, spec in _MODE_TO_SPEC.items()}
_POLL = "p"

_TOP_FIELDS = ("umem", "route")
_UMEM_FIELDS = (
    "umem_id",
    "ifname",
    "xdp_flags",
    "bind_flags",
    "mode",
    "poll_timeout",
    "custom_xsk",
    "frags_enabled",
    "umem_scale",
    "nf",
)
_NF_FIELDS = ("nf_id", "nf_ip", "nf_port", "thread")
_THREAD_FIELDS = ("thread_id", "queue")

_IFNAME = re.compile(r"^[^\s/:]{1,15}$")  # the rule of spec.InterfaceName (IFNAMSIZ - 1)
_ROUTE_KEY = re.compile(r"^(0|[1-9][0-9]*)$")
_MAX_QUEUE = 65535
_MAX_SCALE = 64  # spec.Umem.scale's limit
_MAX_POLL_TIMEOUT = 2**31 - 1  # poll() takes an int of milliseconds
_MONITOR_QUEUE_BITS = 8  # the monitor stores a thread's queue in a uint8_t

PLACEHOLDER_IP = "0.0.0.0"
PLACEHOLDER_PORT = 0

# What `load route` does to the sockets of a multi-threaded NF beyond its first: thread 1 of
# nf 0 usually takes flash-id 1, and the monitor writes nf 1's route there.
_OTHER_SOCKETS = (
    "its other sockets get no rule of their own, or the rule meant for a later nf id whose "
    "flash-id they took"
)

_BAD = -1  # stands in for an integer that failed validation; valid ids and queues are >= 0
_ABSENT = object()


class FlashJsonError(InputError):
    """A monitor config cannot be converted. `message` is the first problem, `problems` all.

    Each problem starts with the JSON path it is about (`umem[0].nf[1].thread[0].queue: ...`);
    on export the path is inside the chain document (`spec.nfs.fw: ...`).
    """

    def __init__(self, problems: Sequence[str], hint: str | None = None) -> None:
        if not problems:
            raise ValueError("FlashJsonError needs at least one problem")
        super().__init__(problems[0], hint)
        self.problems = tuple(problems)

    def lines(self) -> list[str]:
        """One complete `error: ...` line per problem (the contract of FlashctlError.lines).

        The CLI prints `hint` itself only under a one-line error, so with several problems
        the hint becomes the last line here instead of being lost.
        """
        lines = [f"error: {problem}" for problem in self.problems]
        if self.hint and len(lines) > 1:
            lines.append(f"hint: {self.hint}")
        return lines


@dataclass(frozen=True)
class Converted:
    """The result of a conversion: plain data (JSON/YAML-ready) and what it could not say.

    After an import `data` is a chain document (also readable as `document`); after an
    export it is the monitor's JSON config.
    """

    data: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def document(self) -> dict[str, Any]:
        return self.data


# ---------------------------------------------------------------------------------------------
# Reading the monitor's JSON strictly, collecting every problem with its path
# ---------------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """A value as a message shows it: strings quoted, JSON literals in JSON spelling."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str | int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python, but `true` is not a number in JSON
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(low: int, high: int | None) -> str:
    if high is None:
        return "a non-negative integer" if low == 0 else f"an integer of at least {low}"
    return f"an integer from {low} to {high}"


def _integer(value: object, path: str, problems: list[str], low: int, high: int | None) -> int:
    if not _is_int(value):
        problems.append(f"{path}: expected an integer, got {_describe(value)}")
        return _BAD
    assert isinstance(value, int)
    if value < low or (high is not None and value > high):
        problems.append(f"{path}: expected {_range_text(low, high)}, got {value}")
        return _BAD
    return value


def _object(value: object, path: str, problems: list[str]) -> Mapping[str, object] | None:
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return value
    problems.append(f"{path}: expected an object, got {_describe(value)}")
    return None


def _choices_text(choices: Mapping[str, str]) -> str:
    return ", ".join(f"{key!r} ({meaning})" for key, meaning in choices.items())


class _Reader:
    """Typed reads of one JSON object's fields, one recorded problem per bad field.

    A bad field yields a placeholder (-1, "", False, []) so that reading goes on and every
    problem is reported at once; the caller raises before a placeholder can be used.
    """

    def __init__(self, obj: Mapping[str, object], path: str, problems: list[str]) -> None:
        self.obj = obj
        self.path = path
        self.problems = problems

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> object:
        """The field's value, or `_ABSENT` after recording that it is missing."""
        value = self.obj.get(key, _ABSENT)
        if value is _ABSENT:
            self.problems.append(f"{self.at(key)}: required field is missing")
        return value

    def integer(self, key: str, low: int = 0, high: int | None = None) -> int:
        value = self.get(key)
        return _BAD if value is _ABSENT else _integer(value, self.at(key), self.problems, low, high)

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        if key not in self.obj:
            return None
        value = _integer(self.obj[key], self.at(key), self.problems, low, high)
        return None if value == _BAD else value

    def string(self, key: str) -> str:
        value = self.get(key)
        if isinstance(value, str):
            return value
        if value is not _ABSENT:
            self.problems.append(f"{self.at(key)}: expected a string, got {_describe(value)}")
        return ""

    def boolean(self, key: str) -> bool:
        value = self.get(key)
        if isinstance(value, bool):
            return value
        if value is not _ABSENT:
            self.problems.append(f"{self.at(key)}: expected true or false, got {_describe(value)}")
        return False

    def choice(self, key: str, choices: Mapping[str, str]) -> str | None:
        value = self.get(key)
        if isinstance(value, str) and value in choices:
            return value
        if value is not _ABSENT:
            self.problems.append(
                f"{self.at(key)}: expected one of {_choices_text(choices)}, got {_describe(value)}"
            )
        return None

    def array(self, key: str, item: str) -> list[object]:
        value = self.get(key)
        if isinstance(value, list):
            if not value:
                self.problems.append(f"{self.at(key)}: expected at least one {item}")
            return value
        if value is not _ABSENT:
            self.problems.append(f"{self.at(key)}: expected a list, got {_describe(value)}")
        return []

    def reject_unknown(self, known: Sequence[str]) -> None:
        # The monitor ignores unknown fields; flashctl reports them because a misspelt
        # optional field (`umem_scal`) silently falls back to its default in the monitor.
        for key in self.obj:
            if key not in known:
                self.problems.append(f"{self.at(key)}: unknown field")


@dataclass(frozen=True)
class _Thread:
    path: str
    thread_id: int
    queue: int


@dataclass(frozen=True)
class _Nf:
    path: str
    nf_id: int
    ip: str
    port: int
    threads: tuple[_Thread, ...]

    @property
    def name(self) -> str:
        return f"nf{self.nf_id}"


@dataclass(frozen=True)
class _UmemEntry:
    path: str
    umem_id: int
    ifname: str
    xdp: str | None
    bind: str | None
    mode: str | None
    poll_timeout: int | None
    custom_xsk: bool
    frags: bool
    scale: int | None
    nfs: tuple[_Nf, ...]


@dataclass(frozen=True)
class _Config:
    umems: tuple[_UmemEntry, ...]
    route: dict[int, tuple[int, ...]] | None  # None when `route` itself is missing or bad

    def nfs(self) -> Iterator[tuple[_UmemEntry, _Nf]]:
        for entry in self.umems:
            for nf in entry.nfs:
                yield entry, nf

    def targets(self, nf: _Nf) -> tuple[int, ...]:
        return self.route.get(nf.nf_id, ()) if self.route is not None else ()


def _parse_thread(value: object, path: str, problems: list[str]) -> _Thread | None:
    obj = _object(value, path, problems)
    if obj is None:
        return None
    reader = _Reader(obj, path, problems)
    thread_id = reader.integer("thread_id")
    queue = reader.integer("queue", high=_MAX_QUEUE)
    reader.reject_unknown(_THREAD_FIELDS)
    return _Thread(path, thread_id, queue)


def _parse_nf(value: object, path: str, problems: list[str]) -> _Nf | None:
    obj = _object(value, path, problems)
    if obj is None:
        return None
    reader = _Reader(obj, path, problems)
    nf_id = reader.integer("nf_id")
    ip = reader.string("nf_ip")
    if "nf_ip" in obj and isinstance(obj["nf_ip"], str) and not _is_ipv4(ip):
        problems.append(f"{reader.at('nf_ip')}: expected an IPv4 address, got {ip!r}")
    port = reader.integer("nf_port", high=65535)
    threads = tuple(
        thread
        for index, item in enumerate(reader.array("thread", "thread"))
        if (thread := _parse_thread(item, f"{path}.thread[{index}]", problems)) is not None
    )
    reader.reject_unknown(_NF_FIELDS)
    return _Nf(path, nf_id, ip, port, threads)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _parse_umem(value: object, path: str, problems: list[str]) -> _UmemEntry | None:
    obj = _object(value, path, problems)
    if obj is None:
        return None
    reader = _Reader(obj, path, problems)
    umem_id = reader.integer("umem_id")
    ifname = reader.string("ifname")
    if "ifname" in obj and isinstance(obj["ifname"], str) and not _IFNAME.match(ifname):
        problems.append(
            f"{reader.at('ifname')}: expected an interface name (1 to 15 characters, "
            f"no spaces, '/' or ':'), got {ifname!r}"
        )
    xdp = reader.choice("xdp_flags", _XDP_FLAGS)
    bind = reader.choice("bind_flags", _BIND_FLAGS)
    mode = reader.choice("mode", _MODES)
    poll_timeout = reader.optional_integer("poll_timeout", 0, _MAX_POLL_TIMEOUT)
    if mode == _POLL and "poll_timeout" not in obj:
        problems.append(f"{reader.at('poll_timeout')}: required field is missing (mode 'p')")
    custom_xsk = reader.boolean("custom_xsk")
    frags = reader.boolean("frags_enabled")
    scale = reader.optional_integer("umem_scale", 1, _MAX_SCALE)
    nfs = tuple(
        nf
        for index, item in enumerate(reader.array("nf", "nf"))
        if (nf := _parse_nf(item, f"{path}.nf[{index}]", problems)) is not None
    )
    reader.reject_unknown(_UMEM_FIELDS)
    if xdp == "s" and bind == "z":
        # Zero-copy needs the driver's XDP support; the monitor refuses this pair too.
        problems.append(
            f"{reader.at('bind_flags')}: 'z' (zero-copy) needs xdp_flags 'd' or 'h', got 's'"
        )
    return _UmemEntry(
        path, umem_id, ifname, xdp, bind, mode, poll_timeout, custom_xsk, frags, scale, nfs
    )


def _parse_route(value: object, problems: list[str]) -> dict[int, tuple[int, ...]] | None:
    obj = _object(value, "route", problems)
    if obj is None:
        return None
    route: dict[int, tuple[int, ...]] = {}
    for key, targets in obj.items():
        path = f'route["{key}"]'
        if not _ROUTE_KEY.match(key):
            problems.append(f"{path}: a key must be an nf id in decimal, got {key!r}")
            continue
        if not isinstance(targets, list):
            problems.append(f"{path}: expected a list of nf ids, got {_describe(targets)}")
            route[int(key)] = ()  # the entry exists: do not report it missing as well
            continue
        route[int(key)] = tuple(
            _integer(item, f"{path}[{index}]", problems, 0, None)
            for index, item in enumerate(targets)
        )
    return route


def _parse_config(config: object, problems: list[str]) -> _Config | None:
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        problems.append(f"top level: expected an object, got {_describe(config)}")
        return None
    reader = _Reader(config, "", problems)
    umems = tuple(
        entry
        for index, item in enumerate(reader.array("umem", "umem entry"))
        if (entry := _parse_umem(item, f"umem[{index}]", problems)) is not None
    )
    route_value = reader.get("route")
    route = None if route_value is _ABSENT else _parse_route(route_value, problems)
    reader.reject_unknown(_TOP_FIELDS)
    return _Config(umems, route)


# Checks that relate one part of the file to another ---------------------------------------


def _check_unique(items: Iterable[tuple[int, str]], field: str, problems: list[str]) -> None:
    """`items` are (id, path of its owner); a repeated id is reported at its second owner."""
    seen: dict[int, str] = {}
    for value, path in items:
        if value == _BAD:
            continue
        if value in seen:
            problems.append(f"{path}.{field}: {value} is already the id of {seen[value]}")
        else:
            seen[value] = path


def _check_ids(config: _Config, problems: list[str]) -> None:
    _check_unique(((u.umem_id, u.path) for u in config.umems), "umem_id", problems)
    # nf ids key the one global `route` object, so they must be unique across entries.
    _check_unique(((nf.nf_id, nf.path) for _, nf in config.nfs()), "nf_id", problems)
    for _, nf in config.nfs():
        _check_unique(((t.thread_id, t.path) for t in nf.threads), "thread_id", problems)


def _check_queues(config: _Config, problems: list[str]) -> None:
    # One AF_XDP socket per (interface, queue): a second one cannot bind.
    taken: dict[tuple[str, int], str] = {}
    for entry, nf in config.nfs():
        for thread in nf.threads:
            if thread.queue == _BAD or not entry.ifname:
                continue
            key = (entry.ifname, thread.queue)
            if key in taken:
                problems.append(
                    f"{thread.path}.queue: queue {thread.queue} of {entry.ifname} is already "
                    f"taken by {taken[key]} (one socket per interface and queue)"
                )
            else:
                taken[key] = thread.path


def _check_route(config: _Config, problems: list[str]) -> bool:
    """Report route ids that name no NF and NFs without a route; True if an id was unknown."""
    known = {nf.nf_id: nf for _, nf in config.nfs() if nf.nf_id != _BAD}
    if config.route is None or not known:
        return False  # without NFs every route id would be reported again; the cause is above
    before = len(problems)
    listing = ", ".join(str(i) for i in known)
    for key, targets in config.route.items():
        if key not in known:
            problems.append(f'route["{key}"]: nf {key} does not exist (nf ids: {listing})')
        for index, target in enumerate(targets):
            if target != _BAD and target not in known:
                problems.append(
                    f'route["{key}"][{index}]: nf {target} does not exist (nf ids: {listing})'
                )
    unknown = len(problems) > before
    for nf_id, nf in known.items():
        if nf_id not in config.route:
            problems.append(
                f"route: no entry for nf {nf_id} ({nf.path}); the monitor rejects the file "
                f'without one (use "{nf_id}": [] for an NF that sends to the wire)'
            )
    return unknown


# Some monitor files number route entries by socket (flash-id) instead of by NF: with a
# two-threaded nf 0, "2" means nf 1's socket. Only the author knows which NF was meant.
_FLASH_ID_HINT = (
    "route keys and values are nf ids; if this file numbers sockets (flash-ids, counted "
    "thread by thread) instead, rewrite each number as the nf_id of the NF it meant"
)


def _read(config: object) -> _Config:
    problems: list[str] = []
    parsed = _parse_config(config, problems)
    hint = None
    if parsed is not None:
        _check_ids(parsed, problems)
        _check_queues(parsed, problems)
        hint = _FLASH_ID_HINT if _check_route(parsed, problems) else None
    if problems or parsed is None:
        raise FlashJsonError(problems, hint)
    return parsed


# ---------------------------------------------------------------------------------------------
# Import: monitor JSON -> chain document
# ---------------------------------------------------------------------------------------------


def import_flash_json(
    config: object, *, name: str, interface_default: str | None = None
) -> Converted:
    """Turn a parsed monitor config into a chain document named `name`.

    `interface_default` becomes `spec.interface` (NFs on another ifname name theirs); without
    it the ifname shared by every umem entry is used, if there is one.
    Raises FlashJsonError listing every problem of the file.
    """
    parsed = _read(config)
    interface = interface_default or _shared_ifname(parsed)
    document = _document(parsed, name, interface)
    _validate(document)
    return Converted(document, tuple(_import_warnings(parsed)))


def _shared_ifname(config: _Config) -> str | None:
    names = {entry.ifname for entry in config.umems}
    return names.pop() if len(names) == 1 else None


def _document(config: _Config, name: str, interface: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if interface is not None:
        spec["interface"] = interface
    spec["umems"] = [_umem_group(entry) for entry in config.umems]
    spec["nfs"] = {
        nf.name: _nf_document(config, entry, nf, interface) for entry, nf in config.nfs()
    }
    spec["links"] = _links(config)
    return {"apiVersion": API_VERSION, "kind": "Chain", "metadata": {"name": name}, "spec": spec}


def _umem_group(entry: _UmemEntry) -> dict[str, Any]:
    # Reading succeeded, so the flags and the mode are valid; keys follow spec.Umem's order.
    group: dict[str, Any] = {
        "name": f"umem{entry.umem_id}",
        "nfs": [nf.name for nf in entry.nfs],
        "bind": _BIND_TO_SPEC[entry.bind or "z"],
        "xdp": _XDP_TO_SPEC[entry.xdp or "d"],
    }
    if entry.scale is not None and entry.scale != 1:
        group["scale"] = entry.scale
    if entry.mode:
        group["mode"] = _MODE_TO_SPEC[entry.mode]
    if entry.mode == _POLL:
        group["pollTimeout"] = entry.poll_timeout
    if entry.custom_xsk:
        group["customXdp"] = True
    if entry.frags:
        group["frags"] = True
    return group


def _nf_document(
    config: _Config, entry: _UmemEntry, nf: _Nf, interface: str | None
) -> dict[str, Any]:
    document: dict[str, Any] = {}
    if entry.ifname != interface:
        document["interface"] = entry.ifname
    document["queues"] = [thread.queue for thread in nf.threads]
    targets = config.targets(nf)
    if targets:
        document["outputs"] = _output_names(targets)
    if nf.ip != PLACEHOLDER_IP:
        document["address"] = nf.ip
    if nf.port != PLACEHOLDER_PORT:
        document["port"] = nf.port
    return document


def _output_names(targets: Sequence[int]) -> list[str]:
    """`to_nf2` per target, in route order; a repeated target gets `to_nf2_2`, `to_nf2_3`."""
    names: list[str] = []
    seen: dict[int, int] = {}
    for target in targets:
        seen[target] = seen.get(target, 0) + 1
        suffix = f"_{seen[target]}" if seen[target] > 1 else ""
        names.append(f"to_nf{target}{suffix}")
    return names


def _links(config: _Config) -> list[dict[str, str]]:
    reached = {target for _, nf in config.nfs() for target in config.targets(nf)}
    links = [{"from": NIC, "to": nf.name} for _, nf in config.nfs() if nf.nf_id not in reached]
    for _, nf in config.nfs():
        targets = config.targets(nf)
        if not targets:
            links.append({"from": nf.name, "to": NIC})
        for output, target in zip(_output_names(targets), targets, strict=True):
            links.append({"from": f"{nf.name}.{output}", "to": f"nf{target}"})
    return links


def _validate(document: dict[str, Any]) -> None:
    # The file passed its own checks; what can still fail is the caller's name or interface.
    try:
        Chain.model_validate(document)
    except ValidationError as exc:
        raise FlashJsonError(
            [f"{format_path(error['loc'])}: {error['msg']}" for error in exc.errors()]
        ) from None


def _import_warnings(config: _Config) -> list[str]:
    warnings: list[str] = []
    for entry in config.umems:
        warnings.extend(_dropped_umem_fields(entry))
    warnings.extend(
        _queue_wraps((thread.path, thread.queue) for _, nf in config.nfs() for thread in nf.threads)
    )
    if any(config.targets(nf) for _, nf in config.nfs()):
        warnings.append(
            "route: the monitor writes each list verbatim to /sys/kernel/flash/<nf_id>/next, "
            "taking nf ids as flash-ids; flashctl finds each NF's sockets by (interface, queue) "
            "and writes the flash-ids they have"
        )
    for entry in config.umems[1:]:
        routed = [str(nf.nf_id) for nf in entry.nfs if config.targets(nf)]
        if routed:
            warnings.append(
                f"{entry.path}: the monitor's `load route` writes the routes of the first umem "
                f"entry only, not those of nf {', '.join(routed)}; flashctl applies them"
            )
    for _, nf in config.nfs():
        if len(nf.threads) > 1 and config.targets(nf):
            warnings.append(
                f'route["{nf.nf_id}"]: nf {nf.nf_id} has {len(nf.threads)} threads but the '
                f"monitor writes one rule per NF (to flash-id {nf.nf_id}): {_OTHER_SOCKETS}; "
                "flashctl writes one per thread (affine: thread i to thread i mod n of the target)"
            )
    return warnings


def _dropped_umem_fields(entry: _UmemEntry) -> list[str]:
    # A chain document has `pollTimeout` only with `mode: poll`, as the monitor reads it.
    if entry.poll_timeout is None or entry.mode == _POLL:
        return []
    mode = entry.mode or ""
    return [
        f"dropped: {entry.path}.poll_timeout {entry.poll_timeout}: it goes with mode 'p' "
        f"(poll), not mode {mode!r} ({_MODES[mode]})"
    ]


def _queue_wraps(queues: Iterable[tuple[str, int]]) -> list[str]:
    limit = 1 << _MONITOR_QUEUE_BITS
    return [
        f"{where}: the monitor keeps only the low 8 bits of queue {queue} "
        f"(it would bind queue {queue % limit})"
        for where, queue in queues
        if queue >= limit
    ]


# ---------------------------------------------------------------------------------------------
# Export: chain -> monitor JSON
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One umem entry to write: a UMEM group, or the private UMEM of an NF in no group."""

    label: str  # how warnings name it: `group "front"` or `nf "web"`
    group: Umem | None
    nfs: tuple[str, ...]


@dataclass(frozen=True)
class _Export:
    chain: Chain
    entries: tuple[_Entry, ...]
    ids: dict[str, int]  # NF name -> nf id, in entry order
    routes: dict[str, tuple[int, ...]]  # NF name -> target nf ids, in output order

    def where(self, index: int) -> str:
        return f"umem[{index}] ({self.entries[index].label})"

    def nf(self, name: str) -> str:
        return f"nf {self.ids[name]} ({name})"


def export_flash_json(chain: Chain) -> Converted:
    """Write `chain` as a monitor config, with a warning for everything the monitor will do
    differently from flashctl. Raises FlashJsonError when the chain cannot be written at all
    (an NF without queues or interface, unknown NF names).
    """
    problems = _export_problems(chain)
    if problems:
        raise FlashJsonError(problems)
    entries = _entries(chain)
    ids = {name: index for index, name in enumerate(n for e in entries for n in e.nfs)}
    links = output_links(chain)
    routes = {name: _route_of(chain, name, links, ids) for name in ids}
    plan = _Export(chain, entries, ids, routes)
    data = {
        "umem": [_umem_json(plan, index) for index in range(len(entries))],
        "route": {str(ids[name]): list(routes[name]) for name in ids},
    }
    return Converted(data, tuple(_export_warnings(plan)))


def _export_problems(chain: Chain) -> list[str]:
    spec = chain.spec
    problems: list[str] = []
    for index, group in enumerate(spec.umems):
        for position, member in enumerate(group.nfs):
            if member not in spec.nfs:
                problems.append(f"spec.umems[{index}].nfs[{position}]: unknown NF {member!r}")
    for index, link in enumerate(spec.links):
        for field, endpoint in (("from", link.source_nf), ("to", link.to)):
            if endpoint != NIC and endpoint not in spec.nfs:
                problems.append(f"spec.links[{index}].{field}: unknown NF {endpoint!r}")
    for name, nf in spec.nfs.items():
        if nf.queues is None:
            problems.append(
                f"spec.nfs.{name}: no queues; the monitor creates each thread's socket on a "
                "listed queue, so give `queues`"
            )
        if chain.interface_of(name) is None:
            problems.append(
                f"spec.nfs.{name}: no interface; set spec.interface or spec.nfs.{name}.interface"
            )
    return problems


def _entries(chain: Chain) -> tuple[_Entry, ...]:
    entries: list[_Entry] = []
    for group in chain.spec.umems:
        # An NF listed in two groups belongs to the first (as Chain.umem_of decides).
        members = tuple(n for n in group.nfs if chain.umem_of(n) == group.name)
        if members:
            entries.append(_Entry(f'group "{group.name}"', group, members))
    grouped = {n for entry in entries for n in entry.nfs}
    for name in chain.spec.nfs:
        if name not in grouped:
            entries.append(_Entry(f'nf "{name}"', None, (name,)))
    return tuple(entries)


def _route_of(
    chain: Chain, name: str, links: Mapping[tuple[str, str], Link], ids: Mapping[str, int]
) -> tuple[int, ...]:
    # Output order is the index contract; an output to the NIC takes no index (see topology).
    targets: list[int] = []
    for output in chain.spec.nfs[name].outputs:
        link = links.get((name, output))
        if link is not None and link.to != NIC:
            targets.append(ids[link.to])
    return tuple(targets)


def _flags(group: Umem | None) -> tuple[str, str]:
    """(xdp_flags, bind_flags); the monitor has no `auto`, so choose what auto would try first."""
    xdp = group.xdp if group is not None else "auto"
    bind = group.bind if group is not None else "auto"
    xdp_flag = _XDP_FROM_SPEC.get(xdp, "d")
    bind_flag = _BIND_FROM_SPEC.get(bind, "c" if xdp_flag == "s" else "z")
    return xdp_flag, bind_flag


def _umem_json(plan: _Export, index: int) -> dict[str, Any]:
    entry = plan.entries[index]
    group = entry.group if entry.group is not None else Umem(name="private", nfs=list(entry.nfs))
    xdp, bind = _flags(entry.group)
    data: dict[str, Any] = {
        "umem_id": index,
        "ifname": plan.chain.interface_of(entry.nfs[0]),
        "xdp_flags": xdp,
        "bind_flags": bind,
        "mode": _MODE_FROM_SPEC[group.mode],
    }
    if group.poll_timeout is not None:
        data["poll_timeout"] = group.poll_timeout
    data["custom_xsk"] = group.custom_xdp
    data["frags_enabled"] = group.frags
    data["umem_scale"] = group.scale
    data["nf"] = [_nf_json(plan, name) for name in entry.nfs]
    return data


def _nf_json(plan: _Export, name: str) -> dict[str, Any]:
    nf = plan.chain.spec.nfs[name]
    return {
        "nf_id": plan.ids[name],
        "nf_ip": str(nf.address) if nf.address is not None else PLACEHOLDER_IP,
        "nf_port": nf.port if nf.port is not None else PLACEHOLDER_PORT,
        "thread": [{"thread_id": t, "queue": q} for t, q in enumerate(nf.queues or [])],
    }


def _export_warnings(plan: _Export) -> list[str]:
    warnings = _naming_warnings(plan)
    if any(plan.routes.values()):
        warnings.append(
            "route: the monitor writes each list to /sys/kernel/flash/<nf_id>/next, taking nf "
            "ids as flash-ids; that is right only if the sockets bind in nf-id order on a host "
            "with no other AF_XDP socket"
        )
    for index in range(len(plan.entries)):
        warnings.extend(_entry_warnings(plan, index))
    for name in plan.ids:
        warnings.extend(_nf_warnings(plan, name))
    for index, link in enumerate(plan.chain.spec.links):
        warnings.extend(_link_warnings(plan, index, link))
    warnings.extend(_dropped_spec_fields(plan.chain))
    return warnings


def _naming_warnings(plan: _Export) -> list[str]:
    # The monitor's file has no names; operators need the id of each NF to start it.
    if all(name == f"nf{nf_id}" for name, nf_id in plan.ids.items()):
        return []
    pairs = ", ".join(f"{nf_id} = {name}" for name, nf_id in plan.ids.items())
    return [f"nf ids: {pairs} (the monitor's config has no NF names)"]


def _entry_warnings(plan: _Export, index: int) -> list[str]:
    entry = plan.entries[index]
    where = plan.where(index)
    warnings = _auto_flag_warnings(entry.group, where)
    warnings.extend(_interface_warnings(plan, entry, where))
    counts = [plan.chain.spec.nfs[n].thread_count for n in entry.nfs]
    if len(set(counts)) > 1:
        listing = ", ".join(f"{n} {c}" for n, c in zip(entry.nfs, counts, strict=True))
        warnings.append(
            f"{where}: its NFs have different thread counts ({listing}); the monitor puts a "
            "thread at UMEM partition (nf position x thread count + thread), so partitions "
            "overlap or run past the UMEM"
        )
    if index > 0:
        warnings.extend(_later_entry_warnings(plan, entry, where))
    return warnings


def _auto_flag_warnings(group: Umem | None, where: str) -> list[str]:
    xdp, bind = _flags(group)
    chosen = []
    if group is None or group.xdp == "auto":
        chosen.append(f"xdp_flags {xdp!r} ({_XDP_FLAGS[xdp]}) for xdp auto")
    if group is None or group.bind == "auto":
        chosen.append(f"bind_flags {bind!r} ({_BIND_FLAGS[bind]}) for bind auto")
    if not chosen:
        return []
    return [f"{where}: the monitor has no automatic mode; wrote {' and '.join(chosen)}"]


def _interface_warnings(plan: _Export, entry: _Entry, where: str) -> list[str]:
    interfaces = {n: plan.chain.interface_of(n) for n in entry.nfs}
    if len(set(interfaces.values())) < 2:
        return []
    listing = ", ".join(f"{iface} ({n})" for n, iface in interfaces.items())
    return [
        f"{where}: its NFs use {listing}, but the monitor binds every socket of an entry to "
        f"one ifname; wrote {interfaces[entry.nfs[0]]}"
    ]


def _later_entry_warnings(plan: _Export, entry: _Entry, where: str) -> list[str]:
    starts = " and ".join(f"{n} with nf id {pos}" for pos, n in enumerate(entry.nfs))
    warnings = [
        f"{where}: the monitor looks up an NF by its position in its umem entry, so start "
        f"{starts} (the nf_id in this file only keys `route`)"
    ]
    routed = [plan.nf(n) for n in entry.nfs if plan.routes[n]]
    if routed:
        warnings.append(
            f"{where}: the monitor's `load route` writes the routes of the first umem entry "
            f"only and ignores those of {', '.join(routed)}"
        )
    return warnings


def _nf_warnings(plan: _Export, name: str) -> list[str]:
    nf = plan.chain.spec.nfs[name]
    warnings: list[str] = []
    if nf.thread_count > 1 and plan.routes[name]:
        warnings.append(
            f"{plan.nf(name)} has {nf.thread_count} threads but the monitor writes one rule per "
            f"NF (to flash-id {plan.ids[name]}): {_OTHER_SOCKETS} (flashctl writes one rule per "
            "thread)"
        )
    wrapped = _queue_wraps((f"{plan.nf(name)}", q) for q in nf.queues or [])
    return warnings + wrapped


def _link_warnings(plan: _Export, index: int, link: Link) -> list[str]:
    where = f"spec.links[{index}] ({link.source} -> {link.to})"
    if link.source == NIC:
        reached = any(plan.ids[link.to] in targets for targets in plan.routes.values())
        if not reached:
            return []  # importing the file back restores it: nothing routes to this NF
        return [
            f"{where}: the monitor has no ingress links (every socket receives from its "
            f"queue), and a route also reaches {link.to}, so this link is not in the file"
        ]
    if link.to == NIC:
        if not plan.routes[link.source_nf]:
            return []  # an empty route is exactly "send to the wire"
        return [
            f"{where}: a route has no entry for the wire (a socket with rules never transmits "
            "to it); left out"
        ]
    if link.mapping == "affine":
        return []
    return [
        f"{where}: mapping {link.mapping} has no monitor equivalent; the route names "
        f"nf {plan.ids[link.to]} once"
    ]


def _dropped_spec_fields(chain: Chain) -> list[str]:
    spec = chain.spec
    warnings: list[str] = []
    for name, nf in spec.nfs.items():
        if nf.match is not None:
            warnings.append(
                f"dropped: spec.nfs.{name}.match: the monitor creates every socket itself, on "
                "the NF's queues"
            )
    simulated = [f"spec.nfs.{n}.sim" for n, nf in spec.nfs.items() if "sim" in nf.model_fields_set]
    if spec.traffic:
        simulated.insert(0, "spec.traffic")
    if "sim" in spec.model_fields_set:
        simulated.insert(0, "spec.sim")
    if simulated:
        warnings.append(f"dropped: {', '.join(simulated)} (simulated backend only)")
    if spec.tx_tracking is not None:
        warnings.append("dropped: spec.txTracking: the monitor does not set it")
    return warnings
