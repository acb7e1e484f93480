"""The chain document model (`apiVersion: flashctl/v1`, `kind: Chain`), validated by pydantic.

Field-level rules live here (types, ranges, units, unknown fields). Rules that relate one
part of a document to another (references, cycles, queue conflicts, limits) live in
`flashctl.chains.graph`, which reports them with their document paths.

YAML keys are camelCase where they have several words (`maxSockets`); Python attributes are
snake_case. The JSON Schema (`flashctl schema`) is generated from these models.
"""

from __future__ import annotations

import shlex
import string
from functools import cached_property
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from flashctl.chains.units import Rate, UnitError, parse_duration_ns, parse_rate, parse_size

API_VERSION = "flashctl/v1"
NIC = "nic"  # the reserved endpoint name for the wire (ingress in `from`, egress in `to`)
KERNEL_MAX_SOCKETS = 64  # flash-ids are 0..63 in the FLASH kernel
DEFAULT_OUTPUT = "out"

_IDENT = r"[A-Za-z][A-Za-z0-9_-]{0,62}"


def _wrap_unit_error(parse: Any) -> Any:
    """Turn UnitError into ValueError so pydantic reports it as a value error with our text."""

    def run(value: object) -> object:
        try:
            return parse(value)
        except UnitError as exc:
            raise ValueError(str(exc)) from None

    return run


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError(f"{value} is not a power of two; AF_XDP ring sizes must be (e.g. 2048)")
    return value


def _not_nic(value: str) -> str:
    if value == NIC:
        raise ValueError(f"'{NIC}' is reserved for the wire; give the NF another name")
    return value


_RATE_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^[0-9.]+(e[-+]?[0-9]+)?\s*[kKMGT]?(pps|bps|bit/s|b/s)?$"},
    ],
    "description": "packets per second (5Mpps, 500kpps) or a line rate (10Gbps)",
}
_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^[0-9.]+\s*([kKMG]i?)?B?$"},
    ],
    "description": "bytes (64, 64B, 1.5KB, 2KiB)",
}
_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^[0-9.]+(e[-+]?[0-9]+)?\s*(ns|us|µs|μs|ms|s)$",
    "description": "a duration with its unit (200ns, 1.5us, 2ms)",
}

RateValue = Annotated[
    Rate, BeforeValidator(_wrap_unit_error(parse_rate)), WithJsonSchema(_RATE_SCHEMA)
]
SizeValue = Annotated[
    int, BeforeValidator(_wrap_unit_error(parse_size)), WithJsonSchema(_SIZE_SCHEMA)
]
DurationNs = Annotated[
    float, BeforeValidator(_wrap_unit_error(parse_duration_ns)), WithJsonSchema(_DURATION_SCHEMA)
]
Name = Annotated[str, Field(pattern=rf"^{_IDENT}$")]
NFName = Annotated[str, Field(pattern=rf"^{_IDENT}$"), AfterValidator(_not_nic)]
ChainName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
InterfaceName = Annotated[str, Field(pattern=r"^[^\s/:]{1,15}$")]  # IFNAMSIZ - 1
Endpoint = Annotated[str, Field(pattern=rf"^{_IDENT}(\.{_IDENT})?$")]
RingSize = Annotated[int, Field(ge=64, le=1 << 16), AfterValidator(_power_of_two)]
PollMode = Literal["busy", "interrupt", "smart"]
MappingPolicy = Literal["affine", "spread", "pinned"]


class Model(BaseModel):
    """Strict, frozen base: unknown fields are errors, values never change after loading."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, validate_default=False
    )


class Metadata(Model):
    name: ChainName = Field(description="chain name, a DNS label; unique on the host")
    description: str | None = None
    labels: dict[Name, str] = Field(default_factory=dict)


class Match(Model):
    """How to recognise the sockets of an app that binds its own AF_XDP sockets."""

    procname: str | None = Field(
        default=None, max_length=15, description="process name as the kernel records it"
    )
    pid: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_given(self) -> Match:
        if self.procname is None and self.pid is None:
            raise ValueError("give `procname` or `pid` (or drop `match` to bind by queue)")
        return self


class NFSim(Model):
    """Service model of one NF thread, for the simulated backend."""

    capacity: RateValue | None = Field(
        default=None, description="packets a thread can process per second"
    )
    cost: DurationNs | None = Field(default=None, description="processing time per packet")
    batch_cost: DurationNs | None = Field(
        default=None, alias="batchCost", description="fixed time per batch (poll + kick)"
    )
    batch: int = Field(default=64, ge=1, le=4096, description="descriptors per batch")
    poll: PollMode | None = Field(default=None, description="overrides spec.sim.poll")

    @model_validator(mode="after")
    def _capacity_or_cost(self) -> NFSim:
        if self.capacity is not None and self.cost is not None:
            raise ValueError("give `capacity` or `cost`, not both: each implies the other")
        if self.capacity is not None and self.capacity.per_bit:
            raise ValueError("`capacity` is a packet rate (e.g. 5Mpps), not a bit rate")
        return self


RUN_FIELDS = ("umem_id", "nf_id", "socket", "chain", "nf")


class Run(Model):
    """How the agent starts an NF (native backend): it runs `command`, restarts it when it
    exits (with backoff) and stops it before the chain goes. The command may name its seat
    with `{umem_id}` and `{nf_id}`, the monitor socket with `{socket}`, and `{chain}`,
    `{nf}`; `{{` and `}}` are literal braces."""

    command: list[Annotated[str, Field(min_length=1)]] | str = Field(
        description="argv as a list, or one string split like a shell would (no shell runs)"
    )
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}\$?$")] | None = Field(
        default=None, description="run as this user (the agent runs as root); default: root"
    )
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict, description="extra environment variables"
    )

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | str) -> list[str] | str:
        argv = shlex.split(value) if isinstance(value, str) else value
        if not argv:
            raise ValueError("`command` is empty; give the program to run and its arguments")
        for arg in argv:
            for field_name in _placeholders(arg):
                if field_name not in RUN_FIELDS:
                    raise ValueError(
                        f"unknown placeholder {{{field_name}}} in {arg!r}; use "
                        + ", ".join(f"{{{f}}}" for f in RUN_FIELDS)
                        + " (or {{ }} for literal braces)"
                    )
        return value

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.command) if isinstance(self.command, str) else self.command)


def _placeholders(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:  # a lone brace
        raise ValueError(f"{text!r}: {exc}; write {{{{ or }}}} for a literal brace") from None


class NF(Model):
    """A network function: `threads` AF_XDP sockets, one per thread."""

    threads: int | None = Field(default=None, ge=1, le=1024, description="default: len(queues)")
    interface: InterfaceName | None = Field(default=None, description="default: spec.interface")
    queues: list[Annotated[int, Field(ge=0, le=65535)]] | None = Field(
        default=None, description="queue of each thread's socket, in thread order"
    )
    outputs: list[Name] = Field(
        default_factory=lambda: [DEFAULT_OUTPUT],
        description="named outputs; position = index in the next list (options >> 16)",
    )
    match: Match | None = None
    address: IPv4Address | None = Field(
        default=None, description="the NF's own IPv4 address (handed to NFs that ask for it)"
    )
    port: int | None = Field(default=None, ge=0, le=65535, description="the NF's own port")
    run: Run | None = Field(
        default=None, description="the command the agent runs for this NF (native backend)"
    )
    sim: NFSim = Field(default_factory=NFSim)

    @model_validator(mode="after")
    def _threads_and_queues(self) -> NF:
        if self.queues is not None:
            if self.threads is not None and self.threads != len(self.queues):
                raise ValueError(
                    f"`threads` is {self.threads} but {len(self.queues)} queues are listed; "
                    "give one queue per thread"
                )
            if len(set(self.queues)) != len(self.queues):
                raise ValueError("`queues` lists a queue twice; each thread needs its own queue")
        elif self.match is None:
            raise ValueError(
                "give `queues` (one per thread) or a `match`: sockets are found by "
                "(interface, queue), or by procname/pid for apps that bind their own"
            )
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError("`outputs` names an output twice")
        return self

    @property
    def thread_count(self) -> int:
        if self.threads is not None:
            return self.threads
        return len(self.queues) if self.queues is not None else 1


class Umem(Model):
    """A UMEM group: NFs inside one group pass packets zero-copy; across groups, one copy."""

    name: Name
    nfs: list[NFName] = Field(min_length=1)
    bind: Literal["auto", "zerocopy", "copy"] = Field(
        default="auto", description="AF_XDP bind mode (XDP_ZEROCOPY / XDP_COPY)"
    )
    xdp: Literal["auto", "native", "skb", "hw"] = Field(
        default="auto", description="XDP attach mode of the redirect program (hw: offload)"
    )
    scale: int = Field(default=1, ge=1, le=64, description="ring and frame multiplier")
    mode: Literal["wakeup", "busy", "poll", "no-wakeup"] = Field(
        default="wakeup",
        description=(
            "how the NFs drive their sockets: need-wakeup kicks, busy polling, poll() with "
            "`pollTimeout`, or kicks without need-wakeup (FLASH monitor mode '', b, p, m)"
        ),
    )
    poll_timeout: int | None = Field(
        default=None, ge=0, alias="pollTimeout", description="poll() timeout in ms (mode: poll)"
    )
    custom_xdp: bool = Field(
        default=False, alias="customXdp", description="the NFs load their own XDP program"
    )
    frags: bool = Field(default=False, description="multi-buffer (XDP frags) packets")

    @model_validator(mode="after")
    def _poll_timeout(self) -> Umem:
        if (self.mode == "poll") != (self.poll_timeout is not None):
            raise ValueError("`pollTimeout` goes with `mode: poll`, and poll needs `pollTimeout`")
        if self.xdp == "skb" and self.bind == "zerocopy":
            raise ValueError("`bind: zerocopy` needs a driver-mode attach; `xdp: skb` is copy-only")
        return self


class Link(Model):
    """An NF output to an NF (or `nic`), or the wire (`from: nic`) to an ingress NF."""

    source: Endpoint = Field(alias="from", description="`nf.output`, `nf` (one output) or `nic`")
    to: Name = Field(description="an NF name, or `nic` to leave the chain on the wire")
    mapping: MappingPolicy = Field(
        default="affine",
        description=(
            "affine: thread i -> thread i mod n; spread: the output covers every target thread "
            "(n consecutive indices); pinned: every thread -> `thread`"
        ),
    )
    thread: int | None = Field(default=None, ge=0, description="target thread for `pinned`")

    @model_validator(mode="after")
    def _pinned_thread(self) -> Link:
        if (self.mapping == "pinned") != (self.thread is not None):
            raise ValueError("`thread` goes with `mapping: pinned`, and pinned needs `thread`")
        if self.source == NIC and self.to == NIC:
            raise ValueError("a link from `nic` to `nic` does nothing; link the NIC to an NF")
        if NIC in (self.source, self.to) and self.mapping != "affine":
            raise ValueError(
                f"`mapping: {self.mapping}` has no effect on a link from or to the NIC; drop it"
            )
        return self

    @property
    def source_nf(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def source_output(self) -> str | None:
        return self.source.split(".", 1)[1] if "." in self.source else None


class Traffic(Model):
    """A traffic source for the simulated backend: packets arriving from the NIC."""

    name: Name | None = None
    into: NFName = Field(description="the ingress NF that receives it")
    rate: RateValue
    size: SizeValue = Field(default=64, ge=42, le=3840)
    pattern: Literal["constant", "bursty", "ramp"] = "constant"
    burst: int | None = Field(default=None, ge=1, le=1 << 20, description="packets per burst")
    ramp: DurationNs | None = Field(default=None, description="time to reach `rate`")

    @model_validator(mode="after")
    def _pattern_fields(self) -> Traffic:
        if self.burst is not None and self.pattern != "bursty":
            raise ValueError("`burst` goes with `pattern: bursty`")
        if self.ramp is not None and self.pattern != "ramp":
            raise ValueError("`ramp` goes with `pattern: ramp`")
        return self

    @property
    def pps(self) -> float:
        return self.rate.pps(self.size)


class Rings(Model):
    rx: RingSize = 2048
    tx: RingSize = 2048
    fill: RingSize = 4096
    completion: RingSize = 2048


class SimSpec(Model):
    """Parameters of the simulated kernel and data plane."""

    rings: Rings = Field(default_factory=Rings)
    poll: PollMode = "smart"
    max_sockets: int = Field(
        default=KERNEL_MAX_SOCKETS,
        ge=1,
        le=1 << 20,
        alias="maxSockets",
        description="socket limit; the FLASH kernel has 64, the simulator can have more",
    )
    tx_budget: int = Field(default=32, ge=1, le=4096, alias="txBudget")


class ChainSpec(Model):
    interface: InterfaceName | None = Field(default=None, description="default for every NF")
    nfs: dict[NFName, NF] = Field(min_length=1)
    links: list[Link] = Field(min_length=1)
    umems: list[Umem] = Field(default_factory=list)
    traffic: list[Traffic] = Field(default_factory=list)
    sim: SimSpec = Field(default_factory=SimSpec)
    tx_tracking: bool | None = Field(
        default=None,
        alias="txTracking",
        description="set /sys/kernel/flash/tx_tracking where the kernel has it",
    )


class Chain(Model):
    """One chain document."""

    api_version: Literal["flashctl/v1"] = Field(alias="apiVersion")
    kind: Literal["Chain"]
    metadata: Metadata
    spec: ChainSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    def interface_of(self, nf: str) -> str | None:
        return self.spec.nfs[nf].interface or self.spec.interface

    @cached_property
    def _umem_groups(self) -> dict[str, str]:
        # First listing wins; an NF listed twice is a graph error reported elsewhere.
        groups: dict[str, str] = {}
        for group in self.spec.umems:
            for nf in group.nfs:
                groups.setdefault(nf, group.name)
        return groups

    def umem_of(self, nf: str) -> str:
        """The UMEM group of an NF; an NF in no group has a private UMEM named after it."""
        return self._umem_groups.get(nf) or f"{nf}(private)"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a chain document, as editors and `flashctl schema` use it."""
    schema = Chain.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://flashctl.dev/schema/flashctl-v1-chain.json"
    schema["title"] = "flashctl Chain (flashctl/v1)"
    return schema
