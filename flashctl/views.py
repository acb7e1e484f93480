"""Terminal and text renderings of chains and plans (rich tables and trees, dot, mermaid).

Only the CLI imports this module, and only for commands that print these views, so rich's
import cost is paid where it is used.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from flashctl.chains.planner import Plan
from flashctl.chains.spec import NIC, Chain
from flashctl.chains.topology import IndexEntry, expand


def _console() -> Console:
    return Console(highlight=False)


def _describe_nf(chain: Chain, name: str) -> str:
    nf = chain.spec.nfs[name]
    where = chain.interface_of(name) or "?"
    queues = ",".join(map(str, nf.queues)) if nf.queues is not None else "matched"
    threads = nf.thread_count
    umem = chain.umem_of(name)
    return (
        f"[bold]{name}[/] [dim]{threads} thread{'s' if threads != 1 else ''}, "
        f"{where} q{queues}, umem {umem}[/]"
    )


def _entry_label(entry: IndexEntry) -> str:
    if entry.count == 0:
        return f"{entry.output} -> [cyan]nic[/] (egress, next = -1)"
    span = (
        f"{entry.first}" if entry.count == 1 else f"{entry.first}-{entry.first + entry.count - 1}"
    )
    return f"{entry.output} [dim]\\[index {span}, {entry.mapping}][/] ->"


def tree(chain: Chain) -> Tree:
    """The chain from the NIC outwards; an NF reached twice is shown once, then referenced."""
    topology = expand(chain)
    root = Tree(f"[bold]{chain.name}[/] [dim](nic ingress)[/]")
    seen: set[str] = set()

    def grow(parent: Tree, name: str) -> None:
        if name in seen:
            parent.add(f"[bold]{name}[/] [dim](see above)[/]")
            return
        seen.add(name)
        node = parent.add(_describe_nf(chain, name))
        for entry in topology.index_table.get(name, ()):
            if entry.target == NIC:
                node.add(_entry_label(entry))
                continue
            mode = "zero-copy" if chain.umem_of(name) == chain.umem_of(entry.target) else "copy"
            branch = node.add(f"{_entry_label(entry)} [green]{mode}[/]")
            grow(branch, entry.target)

    for name in topology.ingress:
        grow(root, name)
    return root


def print_tree(chain: Chain) -> None:
    _console().print(tree(chain))


def _edges(chain: Chain) -> list[tuple[str, str, str, str]]:
    """(from, to, label, mode) NF-level edges, with `nic` at both ends."""
    topology = expand(chain)
    edges = [(NIC + "_in", name, "", "") for name in topology.ingress]
    for name, entries in topology.index_table.items():
        for entry in entries:
            if entry.target == NIC:
                edges.append((name, NIC + "_out", entry.output, ""))
            else:
                same = chain.umem_of(name) == chain.umem_of(entry.target)
                edges.append((name, entry.target, entry.output, "zero-copy" if same else "copy"))
    return edges


def dot(chain: Chain) -> str:
    lines = [f'digraph "{chain.name}" {{', "  rankdir=LR;", "  node [shape=box];"]
    lines += ['  nic_in [label="nic", shape=ellipse];', '  nic_out [label="nic", shape=ellipse];']
    groups: dict[str, list[str]] = {}
    for name in chain.spec.nfs:
        groups.setdefault(chain.umem_of(name), []).append(name)
    for index, (umem, members) in enumerate(groups.items()):
        lines.append(f'  subgraph cluster_{index} {{ label="umem {umem}";')
        for name in members:
            threads = chain.spec.nfs[name].thread_count
            lines.append(f'    "{name}" [label="{name}\\n{threads} thread(s)"];')
        lines.append("  }")
    for source, target, label, mode in _edges(chain):
        style = ", style=dashed" if mode == "copy" else ""
        text = f"{label} ({mode})" if mode else label
        lines.append(f'  "{source}" -> "{target}" [label="{text}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid(chain: Chain) -> str:
    lines = ["flowchart LR", "  nic_in((nic))", "  nic_out((nic))"]
    for name in chain.spec.nfs:
        lines.append(f'  {name}["{name} x{chain.spec.nfs[name].thread_count}"]')
    for source, target, label, mode in _edges(chain):
        arrow = "-.->" if mode == "copy" else "-->"
        text = " ".join(p for p in (label, mode) if p)
        lines.append(
            f"  {source} {arrow}|{text}| {target}" if text else f"  {source} {arrow} {target}"
        )
    return "\n".join(lines) + "\n"


def print_plans(plans: Sequence[Plan]) -> None:
    """Socket table, index table and hop modes of each plan."""
    console = _console()
    for plan in plans:
        console.print(socket_table(plan))
        console.print(index_table(plan))


def socket_table(plan: Plan) -> Table:
    table = Table(title=f"chain {plan.chain}: sockets", title_justify="left")
    for column in ("socket", "flash-id", "interface", "queue", "status", "next"):
        table.add_column(column, justify="right" if column in ("flash-id", "queue") else "left")
    rules = {rule.socket: rule for rule in plan.rules}
    for binding in plan.bindings:
        rule = rules.get(binding.socket)
        table.add_row(
            str(binding.socket),
            "-" if binding.flash_id is None else str(binding.flash_id),
            binding.interface or "?",
            "-" if binding.queue is None else str(binding.queue),
            binding.status if binding.status == "bound" else f"[yellow]{binding.status}[/]",
            _next_text(plan, rule) if rule is not None else f"[dim]{escape(binding.reason)}[/]",
        )
    return table


def _next_text(plan: Plan, rule: object) -> str:
    from flashctl.chains.planner import SocketRule

    assert isinstance(rule, SocketRule)
    if rule.next is None:
        return f"[yellow]pending[/]: {escape(rule.reason)}"
    if not rule.next:
        return (
            "-1 [dim](transmits to the NIC)[/]" if rule.socket.nf in plan.topology.egress else "-1"
        )
    parts = []
    for index, (flash_id, target, mode) in enumerate(
        zip(rule.next, rule.targets, rule.modes, strict=True)
    ):
        parts.append(f"{index}:{target}#{flash_id} [dim]{mode}[/]")
    return "  ".join(parts)


def index_table(plan: Plan) -> Table:
    table = Table(title=f"chain {plan.chain}: output indices (options >> 16)", title_justify="left")
    for column in ("nf", "output", "index", "to", "mapping", "hop"):
        table.add_column(column)
    modes = {(h.source.nf, h.output): h.mode for h in plan.topology.hops}
    for nf, entries in plan.topology.index_table.items():
        for entry in entries:
            if entry.count == 0:
                table.add_row(nf, entry.output, "-", "nic", "-", "egress (next = -1)")
                continue
            last = entry.first + entry.count - 1
            span = str(entry.first) if entry.count == 1 else f"{entry.first}-{last}"
            hop = modes.get((nf, entry.output), "-")
            table.add_row(nf, entry.output, span, entry.target, entry.mapping, hop)
    return table
