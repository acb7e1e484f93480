"""The `agent …` and `sim …` command groups: run, start, stop and inspect the agent, and
control the simulated NFs and sockets of the simulated backend.

Importing this module registers the groups on `flashctl.cli.app`; `flashctl.cli` imports
it (see the end of that module).
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flashctl.cli import ChainOption, TableFormat, app, call_agent, connect, show
from flashctl.errors import FlashctlError, InputError

agent_app = typer.Typer(help="Run or control the flashctl agent.", no_args_is_help=True)
sim_app = typer.Typer(
    help="Control simulated NFs and sockets (simulated backend).", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")
app.add_typer(sim_app, name="sim")


SysfsRoot = Annotated[
    str | None,
    typer.Option(
        "--sysfs-root",
        help="FLASH sysfs the native backend drives (default: $FLASHCTL_SYSFS_ROOT, "
        "else /sys/kernel/flash).",
        metavar="PATH",
    ),
]


SimKernel = Annotated[
    str | None,
    typer.Option(
        help="Simulated kernel of a new simulated host: flash (default), "
        "flash-no-self-loop, flash-single, exnfc.",
        metavar="KERNEL",
    ),
]


MonitorSocket = Annotated[
    Path | None,
    typer.Option(
        help="The FLASH monitor socket FLASH NFs connect to (native backend). "
        "Default: $FLASHCTL_MONITOR_SOCKET, else /tmp/flash/uds.sock.",
        metavar="PATH",
    ),
]
MonitorGroup = Annotated[
    str | None,
    typer.Option(help="Group that may attach NFs (the socket becomes 0660).", metavar="GROUP"),
]
NoMonitor = Annotated[
    bool, typer.Option("--no-monitor", help="Do not serve the FLASH monitor protocol.")
]
NoForeign = Annotated[
    bool,
    typer.Option("--no-foreign", help="Do not observe other processes' AF_XDP sockets."),
]


def _monitor_settings(
    backend: str, path: Path | None, group: str | None, off: bool, no_foreign: bool
) -> Any:
    """What the native agent serves; None on the simulated backend or with --no-monitor."""
    if backend != "native" or off:
        if path is not None or group is not None:
            raise InputError(
                "--monitor-socket and --monitor-group apply to the native backend's monitor",
                "add --backend native (and drop --no-monitor)",
            )
        return None
    from flashctl.backends.monitor import DEFAULT_SOCKET
    from flashctl.nfhost import MonitorSettings

    default = os.environ.get("FLASHCTL_MONITOR_SOCKET")
    chosen = path or (Path(default) if default else DEFAULT_SOCKET)
    if len(os.fsencode(str(chosen))) > 107:
        raise InputError(
            f"the monitor socket path {chosen} is longer than the 107 bytes Unix sockets allow",
            "pick a shorter --monitor-socket",
        )
    mode = 0o660 if group is not None else 0o600
    return MonitorSettings(chosen, mode=mode, group=group, watch_foreign=not no_foreign)


def _monitor_args(path: Path | None, group: str | None, off: bool, no_foreign: bool) -> list[str]:
    args = [] if path is None else ["--monitor-socket", str(path)]
    args += [] if group is None else ["--monitor-group", group]
    args += ["--no-monitor"] if off else []
    return args + (["--no-foreign"] if no_foreign else [])


@agent_app.command("run")
def agent_run(
    backend: Annotated[str, typer.Option(help="sim (default) or native.")] = "sim",
    kernel: SimKernel = None,
    sysfs_root: SysfsRoot = None,
    monitor_socket: MonitorSocket = None,
    monitor_group: MonitorGroup = None,
    no_monitor: NoMonitor = False,
    no_foreign: NoForeign = False,
) -> None:
    """Run the agent in the foreground (for systemd; see examples/flashctl-agent.service).

    On the native backend it also serves the FLASH monitor protocol, so unmodified FLASH
    NFs attach to it, runs the NFs chains give a `run` command, and observes every AF_XDP
    socket on the host for `status` and `top`."""
    from flashctl.agent import run_agent
    from flashctl.home import resolve_home

    if sysfs_root is not None and backend != "native":
        raise InputError("--sysfs-root applies to the native backend only", "add --backend native")
    settings = _monitor_settings(backend, monitor_socket, monitor_group, no_monitor, no_foreign)
    gc.enable()
    root = None if sysfs_root is None else Path(sysfs_root)
    run_agent(resolve_home(), backend, kernel, root, settings)


@agent_app.command("start")
def agent_start(
    backend: Annotated[str, typer.Option(help="sim (default) or native.")] = "sim",
    kernel: SimKernel = None,
    sysfs_root: SysfsRoot = None,
    monitor_socket: MonitorSocket = None,
    monitor_group: MonitorGroup = None,
    no_monitor: NoMonitor = False,
    no_foreign: NoForeign = False,
) -> None:
    """Start an agent in the background (CLI commands also start one when needed)."""
    from flashctl.client import start_agent
    from flashctl.home import lock_holder, resolve_home

    if sysfs_root is not None and backend != "native":
        raise InputError("--sysfs-root applies to the native backend only", "add --backend native")
    _monitor_settings(backend, monitor_socket, monitor_group, no_monitor, no_foreign)
    home = resolve_home()
    holder = lock_holder(home)
    if holder is not None:
        typer.echo(f"agent already running (pid {holder}, {home.root})")
        return
    extra = _monitor_args(monitor_socket, monitor_group, no_monitor, no_foreign)
    pid = start_agent(home, backend, sysfs_root, kernel, extra)
    typer.echo(f"started agent (pid {pid}, {backend} backend, {home.root})")


@agent_app.command("stop")
def agent_stop(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to exit.")] = 10.0,
) -> None:
    """Stop the agent. Rules stay in the kernel; a new agent takes them over."""
    import time

    from flashctl.home import lock_holder, resolve_home

    home = resolve_home()
    if lock_holder(home) is None:
        typer.echo(f"no agent is running for {home.root}")
        return
    with connect(autostart=False) as client:
        pid = client.call("agent", action="stop")["pid"]
    deadline = time.monotonic() + timeout
    while lock_holder(home) is not None:
        if time.monotonic() > deadline:
            raise FlashctlError(
                f"the agent (pid {pid}) did not stop within {timeout:g} s", f"kill {pid}"
            )
        time.sleep(0.02)
    typer.echo(f"stopped agent (pid {pid})")


@agent_app.command("status")
def agent_status(
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
) -> None:
    """Is an agent running; its pid, version, backend, uptime and chains."""
    from flashctl.home import lock_holder, resolve_home

    home = resolve_home()
    if lock_holder(home) is None:
        raise FlashctlError(
            f"no agent is running for {home.root}", "start one: `flashctl agent start`"
        )
    with connect(autostart=False) as client:
        info = client.call("agent", action="status")
    if output is TableFormat.json:
        typer.echo(
            json.dumps({"apiVersion": "flashctl/v1", "kind": "AgentStatus", **info}, indent=2)
        )
        return
    chains = ", ".join(info["chains"]) or "none"
    monitor = f", FLASH monitor at {info['monitor']}" if info.get("monitor") else ""
    typer.echo(
        f"agent pid {info['pid']}, flashctl {info['version']}, {info['backend']} backend "
        f"({info['variant']}), home {info['home']}, up {info['uptime']:.0f} s, "
        f"chains: {chains}{monitor}"
    )


NFArgument = Annotated[str, typer.Argument(help="The NF's name in its chain.", metavar="NF")]


def _sim(action: str, **args: Any) -> Any:
    return call_agent("sim", action=action, **args)


@sim_app.command("list")
def sim_list() -> None:
    """The simulated processes: NFs of applied chains and other AF_XDP users."""
    from flashctl.agentviews import sim_table

    show(sim_table(_sim("list")))


def _sim_nf(action: str, nf: str, chain: str | None, past: str) -> None:
    process = _sim(action, nf=nf, chain=chain)
    ids = " ".join(map(str, process["sockets"])) or "none"
    typer.echo(f"{past} {process['chain']}/{process['nf']} (pid {process['pid']}, flash-ids {ids})")


@sim_app.command("start")
def sim_start(nf: NFArgument, chain: ChainOption = None) -> None:
    """Start a stopped simulated NF (it binds its sockets again, with new flash-ids)."""
    _sim_nf("start", nf, chain, "started")


@sim_app.command("stop")
def sim_stop(nf: NFArgument, chain: ChainOption = None) -> None:
    """Stop a simulated NF gracefully: rules pointing at it are cleared first."""
    _sim_nf("stop", nf, chain, "stopped")


@sim_app.command("restart")
def sim_restart(nf: NFArgument, chain: ChainOption = None) -> None:
    """Restart a simulated NF: its flash-ids change; the agent re-points upstream rules."""
    _sim_nf("restart", nf, chain, "restarted")


@sim_app.command("kill")
def sim_kill(nf: NFArgument, chain: ChainOption = None) -> None:
    """Kill a simulated NF abruptly (no cleanup): the crash case the agent must repair."""
    _sim_nf("kill", nf, chain, "killed")


@sim_app.command("add-socket")
def sim_add_socket(
    interface: Annotated[str, typer.Option(help="Interface name.")] = "eth0",
    queue: Annotated[int, typer.Option(help="Queue id.")] = 0,
    procname: Annotated[str, typer.Option(help="Process name.")] = "xdpsock",
) -> None:
    """Bind a socket of another (non-chain) AF_XDP user: it takes a flash-id too."""
    process = _sim("add-socket", interface=interface, queue=queue, procname=procname)
    typer.echo(
        f"pid {process['pid']} '{process['procname']}' holds flash-id {process['sockets'][0]}"
    )
