"""Renderings of what the agent returns (plain JSON data): apply reports, status, history,
events. No pydantic or networkx here: these run on the client side, which must start fast.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "in-sync": "green",
    "drifted": "red",
    "pending": "yellow",
    "orphaned": "magenta",
    "standalone": "cyan",
}
DISRUPTION_STYLE = {
    "hitless": "green",
    "redirect-gap": "yellow",
    "copy-mode-change": "magenta",
    "index-reorder": "bold red",
}


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _ids(ids: Sequence[int] | None) -> str:
    if ids is None:
        return "-"
    return " ".join(str(i) for i in ids) if ids else "-1"


def write_lines(writes: Sequence[dict[str, Any]]) -> list[Text]:
    lines = []
    for write in writes:
        style = DISRUPTION_STYLE.get(write["disruption"], "")
        line = Text("  ")
        line.append(f"[{write['disruption']}]", style=style)
        line.append(f" flash-id {write['flashId']}: {_ids(write['old'])} -> {_ids(write['new'])}  ")
        line.append(write["reason"], style="dim")
        lines.append(line)
    return lines


def apply_report(report: dict[str, Any]) -> Group:
    parts: list[Text] = []
    for message in report.get("started", []):
        parts.append(Text(f"sim: {message}", style="cyan"))
    verb = "would write" if report["dryRun"] else "wrote"
    for chain in report["chains"]:
        writes = chain["writes"]
        revision = f" rev {chain['revision']}" if chain.get("revision") else ""
        if not writes and not chain["specChanged"]:
            parts.append(Text(f"chain {chain['chain']}: unchanged"))
            continue
        what = f"{verb} {len(writes)} rule{'s' if len(writes) != 1 else ''}"
        if not writes:
            what = "spec changed, no rule changes"
        parts.append(Text(f"chain {chain['chain']}{revision}: {what}", style="bold"))
        parts += write_lines(writes)
        for pending in chain.get("pending", []):
            parts.append(
                Text(f"  [pending] {pending['socket']}: {pending['reason']}", style="yellow")
            )
    for warning in report.get("warnings", []):
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def status_view(data: dict[str, Any]) -> Group:
    backend = data["backend"]
    header = Text(f"backend {backend['name']} ({backend['variant']}); {data['sockets']} sockets")
    if not backend.get("chaining", True):
        header.append(
            "\nstandalone mode: AF_XDP sockets work, chaining needs the FLASH kernel",
            style="yellow",
        )
    parts: list[Any] = [header]
    if not data["chains"]:
        parts.append(Text("no chains applied (flashctl apply CHAIN.yaml)", style="dim"))
    for chain in data["chains"]:
        table = Table(
            title=escape(
                f"chain {chain['name']} rev {chain['revision']}: {chain['state']} "
                f"(applied {_when(chain['appliedAt'])} by {chain['appliedBy']})"
            ),
            title_justify="left",
            title_style=STATE_STYLE.get(chain["state"], ""),
        )
        # Traffic figures only where the backend samples counters (the simulator's model).
        sampled = any("counters" in sock for sock in chain["sockets"])
        columns = ["socket", "flash-id", "queue", "next", "state", "reason / action"]
        for column in columns[:4] + (["pps in/out"] if sampled else []) + columns[4:]:
            table.add_column(column, justify="right" if column == "pps in/out" else "left")
        for sock in chain["sockets"]:
            state = sock["state"]
            reason = sock.get("reason", "")
            if sock.get("action"):
                reason = f"{reason} -> {sock['action']}"
            queue = "-" if sock.get("queue") is None else f"{sock['interface']} q{sock['queue']}"
            cells: list[str | Text] = [
                sock["socket"],
                "-" if sock.get("flashId") is None else str(sock["flashId"]),
                queue,
                _ids(sock.get("next")),
            ]
            if sampled:
                cells.append(_pps_in_out(sock.get("rates")))
            table.add_row(*cells, Text(state, style=STATE_STYLE.get(state, "")), Text(reason))
        parts.append(table)
    if data.get("orphans"):
        table = Table(title="orphaned rules", title_justify="left", title_style="magenta")
        for column in ("flash-id", "owner", "next", "reason / action"):
            table.add_column(column)
        for orphan in data["orphans"]:
            where = f"{orphan['interface']} q{orphan['queue']}"
            owner = f"pid {orphan['pid']} '{orphan['procname']}' ({where})"
            table.add_row(
                str(orphan["flashId"]),
                Text(owner),
                _ids(orphan["next"]),
                Text(f"{orphan['reason']} -> {orphan['action']}"),
            )
        parts.append(table)
    if data.get("monitor"):
        parts.append(monitor_table(data["monitor"]))
    if data.get("xsks"):
        parts.append(xsk_table(data["xsks"]))
    return Group(*parts)


def monitor_table(monitor: dict[str, Any]) -> Table | Text:
    """Which NFs are attached over the FLASH monitor socket, and their processes."""
    if not monitor["nfs"]:
        return Text(f"FLASH monitor at {monitor['socket']}: no NF seats", style="dim")
    table = Table(title=escape(f"FLASH monitor at {monitor['socket']}"), title_justify="left")
    for column in ("nf", "seat", "attached", "sockets", "process"):
        table.add_column(column)
    for nf in monitor["nfs"]:
        process = nf.get("process")
        if process is None:
            run = "started by someone else"
        else:
            run = f"{process['state']}" + (f" pid {process['pid']}" if process["pid"] else "")
            if process["restarts"]:
                run += f", {process['restarts']} restarts"
            if process.get("lastExit"):
                run += f" (last: {process['lastExit']})"
        attached = (
            Text(f"pid {nf['pid']}", style="green")
            if nf["attached"]
            else Text("waiting", style="yellow")
        )
        table.add_row(
            f"{nf['chain']}/{nf['nf']}",
            f"umem_id {nf['umemId']} nf_id {nf['nfId']}",
            attached,
            str(nf["sockets"]),
            Text(run),
        )
    return table


DROP_COUNTERS = ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs")


def xsk_owner(xsk: Mapping[str, Any]) -> str:
    """`chain/nf/thread` for the agent's own sockets, `procname (pids)` for others'."""
    if xsk["owner"] == "flashctl":
        return f"{xsk['chain']}/{xsk['nf']}/{xsk['thread']}"
    return f"{xsk['procname']} ({', '.join(map(str, xsk['pids']))})"


def xsk_where(xsk: Mapping[str, Any]) -> str:
    return "?" if xsk.get("queue") is None else f"{xsk['interface']} q{xsk['queue']}"


def ring_cells(rings: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """`used/size` of each ring in `order`; `-` for a ring the socket does not map."""
    return [f"{rings[r]}/{rings[r + '_size']}" if rings[r + "_size"] else "-" for r in order]


def xsk_table(xsks: Sequence[dict[str, Any]]) -> Table:
    """Every observed AF_XDP socket: ring occupancy (used/size) and packet counters."""
    table = Table(title="AF_XDP sockets", title_justify="left")
    for column in ("owner", "where", "rx", "tx", "fill", "compl", "rx pkts", "tx pkts", "drops"):
        table.add_column(column, justify="right" if column[0] in "rtfcd" else "left")
    for xsk in xsks:
        counters = xsk["counters"]
        table.add_row(
            Text(xsk_owner(xsk)),
            xsk_where(xsk),
            *ring_cells(xsk["rings"], ("rx", "tx", "fill", "completion")),
            _si(counters.get("rx_packets", 0)),
            _si(counters.get("tx_packets", 0)),
            _si(sum(counters.get(k, 0) for k in DROP_COUNTERS)),
        )
    return table


def _si(value: float) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{prefix}"
    return f"{value:.3g}" if value else "0"


def _pps_in_out(rates: dict[str, float] | None) -> str:
    """`5M/4.98M`: the agent's recent packets per second into RX and out; `-` before it has
    measured any."""
    if not rates:
        return "-"
    return f"{_si(rates.get('pps_in', 0.0))}/{_si(rates.get('pps_out', 0.0))}"


def history_table(chain: str, revisions: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=f"history of {chain}", title_justify="left")
    for column in ("rev", "state", "applied", "by", "hash", "message"):
        table.add_column(column)
    for revision in revisions:
        note = revision.get("message") or ""
        if revision.get("error"):
            note = f"{note} ({revision['error']})".strip()
        table.add_row(
            str(revision["revision"]),
            revision["state"],
            _when(revision["at"]),
            revision["who"],
            revision["hash"],
            Text(note),
        )
    return table


def event_line(event: dict[str, Any]) -> str:
    chain = f" [{event['chain']}]" if event.get("chain") else ""
    return f"{_when(event['at'])} {event['kind']:<11}{chain} {event['message']}"


def sim_table(processes: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="simulated processes", title_justify="left")
    for column in ("pid", "procname", "nf", "state", "flash-ids", "queues", "restarts"):
        table.add_column(column)
    for process in processes:
        nf = f"{process['chain']}/{process['nf']}" if process.get("nf") else "-"
        queues = ", ".join(f"{i} q{q}" for i, q in process["binds"])
        table.add_row(
            str(process["pid"]),
            process["procname"],
            nf,
            "running" if process["running"] else "stopped",
            " ".join(map(str, process["sockets"])) or "-",
            queues,
            str(process["restarts"]),
        )
    return table


def console() -> Console:
    return Console(highlight=False)
