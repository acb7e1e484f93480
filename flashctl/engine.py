"""The desired-state engine: apply, reconcile, delete, rollback and status of chains.

The agent serialises calls into one Engine (it is not thread-safe by design). Each call reads
the backend afresh: inventory and rules are cheap to read, and flash-ids change under us.

Guarantees, and how:
- A rejected spec never replaces the running one: everything is loaded, checked (also
  against the other running chains) and planned before the first write.
- All or nothing: every write is read back; if one fails, the writes already made are undone
  in reverse order and the revision is stored as rolled back.
- A crash mid-apply leaves the revision `pending` in the store; on restart it is marked
  interrupted and the reconcile pass brings the kernel back to the last committed revision.
- Reconcile repairs whatever churn or drift it finds, one pass at a time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flashctl.backends.base import (
    Backend,
    BackendError,
    XskSample,
    by_flash_id,
    read_rules,
    write_rule,
)
from flashctl.chains import graph
from flashctl.chains.diff import Changes, Write, diff, teardown
from flashctl.chains.loader import LoadedChain, load_sources
from flashctl.chains.planner import Inventory, Plan, SocketRule, plan
from flashctl.chains.spec import Chain
from flashctl.chains.topology import Topology, expand
from flashctl.errors import ChainError, ExitCode, FlashctlError, InputError
from flashctl.store import Revision, Store

EBUSY_RETRIES = 3
Prepare = Callable[[Chain], list[str]]  # starts what a chain needs (sim: its NFs); messages


class RolledBack(FlashctlError):
    """A write failed during apply; the previous rules were restored."""

    exit_code = ExitCode.ROLLED_BACK


class NotFound(FlashctlError):
    exit_code = ExitCode.INVALID


@dataclass(frozen=True, slots=True)
class Running:
    chain: Chain
    revision: Revision
    topology: Topology

    @classmethod
    def of(cls, chain: Chain, revision: Revision) -> Running:
        return cls(chain, revision, expand(chain))


@dataclass(slots=True)
class ChainReport:
    name: str
    revision: int | None
    changes: Changes
    spec_changed: bool


@dataclass(slots=True)
class ApplyReport:
    chains: list[ChainReport]
    dry_run: bool
    started: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(c.spec_changed or not c.changes.empty for c in self.chains)


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Engine:
    def __init__(
        self,
        backend: Backend,
        store: Store,
        *,
        prepare: Prepare | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.store = store
        self.prepare = prepare
        self.clock = clock
        self.running: dict[str, Running] = {}
        self.last_ids: frozenset[int] | None = None

    # --- start-up ------------------------------------------------------------------------

    def load_active(self) -> None:
        """Take up the committed revisions (after a restart); mark crashed applies."""
        interrupted = self.store.interrupt_pending()
        for revision in interrupted:
            self.store.add_event(
                "interrupted",
                f"rev {revision.rev} of {revision.chain} was interrupted before it committed; "
                "reconciling to the last committed revision",
                chain=revision.chain,
            )
        for revision in self.store.active_all():
            source = revision.source or f"{revision.chain}@rev{revision.rev}"
            try:
                loaded = load_sources([(source, revision.spec_text)])
            except ChainError as exc:
                self.store.add_event(
                    "error",
                    f"stored rev {revision.rev} no longer loads: {exc.lines()[0]}",
                    chain=revision.chain,
                )
                continue
            for item in loaded.chains:
                if item.chain.name == revision.chain:
                    self.running[revision.chain] = Running.of(item.chain, revision)
        for revision in interrupted:
            self._clear_interrupted(revision)

    def _clear_interrupted(self, revision: Revision) -> None:
        """A crashed apply may have written rules on sockets that the chain's committed
        revision does not own (every socket, for a new chain): nothing would reconcile them,
        so clear them, upstream first. The committed revision's sockets are left to the
        reconcile pass."""
        source = revision.source or f"{revision.chain}@rev{revision.rev}"
        try:
            loaded = load_sources([(source, revision.spec_text)])
        except ChainError:
            return
        for item in loaded.chains:
            if item.chain.name != revision.chain:
                continue
            inventory, observed = self.observe()
            crashed = plan(item.chain, inventory)
            running = self.running.get(revision.chain)
            kept = (
                plan(running.chain, inventory, running.topology).owned_ids
                if running is not None
                else frozenset()
            )
            changes = teardown(crashed, observed, crashed.owned_ids - kept)
            with contextlib.suppress(BackendError):  # logged as an event; shown as orphans
                self._perform(changes.writes, revision.chain, [])

    # --- reading the host ----------------------------------------------------------------

    def observe(self) -> tuple[Inventory, dict[int, tuple[int, ...]]]:
        inventory = self.backend.inventory()
        rules = read_rules(self.backend, [s.flash_id for s in inventory.sockets])
        return inventory, rules

    def plans(self, inventory: Inventory) -> dict[str, Plan]:
        return {
            name: plan(r.chain, inventory, r.topology) for name, r in sorted(self.running.items())
        }

    # --- writing -------------------------------------------------------------------------

    def _write(self, write: Write) -> None:
        """One write with read-back; EBUSY (socket not ready, torn rewrite) is retried."""
        for attempt in range(EBUSY_RETRIES):
            try:
                write_rule(self.backend, write.flash_id, write.new)
                return
            except BackendError as exc:
                if exc.errno != errno.EBUSY or attempt == EBUSY_RETRIES - 1:
                    raise

    def _perform(self, writes: Sequence[Write], chain: str | None, done: list[Write]) -> None:
        """Perform writes in order, appending each to `done`; the first failure is raised
        (after logging it), leaving the caller to decide whether to undo `done`."""
        for write in writes:
            try:
                self._write(write)
            except BackendError as exc:
                self.store.add_event(
                    "error",
                    f"write to flash-id {write.flash_id} failed: {exc.message}",
                    chain=chain,
                )
                raise
            done.append(write)
            self.store.add_event(
                "write",
                f"{write.text().strip()} -> flash-id {write.flash_id}: {write.reason}",
                chain=chain,
                data={
                    "flashId": write.flash_id,
                    "old": list(write.old),
                    "new": list(write.new),
                    "disruption": write.disruption,
                },
            )

    def _undo(self, done: Sequence[Write], chain: str | None) -> list[int]:
        failed = []
        for write in reversed(done):
            try:
                self._write(
                    Write(
                        write.flash_id,
                        write.socket,
                        write.new,
                        write.old,
                        write.disruption,
                        f"restore {write.socket}",
                    )
                )
            except BackendError:
                failed.append(write.flash_id)
        restored = len(done) - len(failed)
        self.store.add_event("rollback", f"restored {restored} of {len(done)} rules", chain=chain)
        return failed

    # --- apply ---------------------------------------------------------------------------

    def check(self, sources: Sequence[tuple[str, str]]) -> list[LoadedChain]:
        """Load and check sources, also against the chains already running."""
        loaded = load_sources(sources)
        names = {c.chain.name for c in loaded.chains}
        others = [r for n, r in sorted(self.running.items()) if n not in names]
        chains = [r.chain for r in others] + [c.chain for c in loaded.chains]
        labels = [f"running chain '{r.chain.name}'" for r in others]
        labels += [str(c.document.locate(())) for c in loaded.chains]
        found = []
        for index, diagnostic in graph.check_across(chains, labels):
            if index >= len(others):
                document = loaded.chains[index - len(others)].document
                found.append(replace(diagnostic, position=document.locate(diagnostic.path)))
        if any(d.is_error for d in found):
            raise ChainError(found)
        return list(loaded.chains)

    def apply(
        self,
        sources: Sequence[tuple[str, str]],
        *,
        who: str,
        message: str | None = None,
        dry_run: bool = False,
    ) -> ApplyReport:
        items = self.check(sources)
        # Expanded once: the kernel check, the plan and the running chain all use it.
        topologies = {item.chain.name: expand(item.chain) for item in items}
        for item in items:
            self._check_kernel(item.chain, topologies[item.chain.name])
        self._check_tx_tracking(items)
        report = ApplyReport([], dry_run)
        if not dry_run and self.prepare is not None:
            for item in items:
                report.started += self.prepare(item.chain)
        inventory, observed = self.observe()
        work: list[tuple[LoadedChain, Plan, Changes, bool]] = []
        for item in items:
            current = self.running.get(item.chain.name)
            digest = spec_hash(item.document.text)
            changed = current is None or current.revision.spec_hash != digest
            planned = plan(item.chain, inventory, topologies[item.chain.name])
            changes = diff(planned, observed)
            work.append((item, planned, changes, changed))
            report.chains.append(ChainReport(item.chain.name, None, changes, changed))
        if dry_run or not report.changed:
            return report
        self._commit(work, report, who, message)
        return report

    def _check_kernel(self, chain: Chain, topology: Topology) -> None:
        """Refuse what this kernel cannot hold: older kernels keep one id in `next`."""
        if self.backend.info().table:
            return
        targets = Counter(hop.source for hop in topology.hops)
        for socket, count in sorted(targets.items()):
            if count > 1:
                raise InputError(
                    f"chain {chain.name}: {socket} needs {count} targets, "
                    "but this kernel's next holds a single id (older FLASH/exnfc kernel)",
                    "give each NF socket one output, or use a kernel with multi-target next",
                )

    def _check_tx_tracking(self, items: Sequence[LoadedChain]) -> None:
        """`tx_tracking` is one file for the whole host: chains that would run together must
        not ask for different values."""
        names = {item.chain.name for item in items}
        chains = [r.chain for n, r in sorted(self.running.items()) if n not in names]
        chains += [item.chain for item in items]
        asked = [(c.name, c.spec.tx_tracking) for c in chains if c.spec.tx_tracking is not None]
        for name, value in asked[1:]:
            first, wanted = asked[0]
            if value != wanted:
                running = "running chain" if first not in names else "chain"
                raise InputError(
                    f"chain {name} asks for txTracking {str(value).lower()}, but {running} "
                    f"{first} asks for {str(wanted).lower()}: tx_tracking is host-global",
                    "give every chain the same txTracking, or leave it out of all but one",
                )

    def _set_tx_tracking(self, items: Sequence[LoadedChain], report: ApplyReport) -> None:
        """Set the host-global tx_tracking as the applied chains ask (they agree, see
        `_check_tx_tracking`); a kernel without the file is a warning, not a failure."""
        asked = [i.chain for i in items if i.chain.spec.tx_tracking is not None]
        if not asked:
            return
        enabled = bool(asked[0].spec.tx_tracking)
        names = ", ".join(c.name for c in asked)
        if self.backend.set_tx_tracking(enabled):
            self.store.add_event(
                "tx_tracking",
                f"tx_tracking set to {int(enabled)} ({names})",
                data={"enabled": enabled, "chains": [c.name for c in asked]},
            )
            return
        warning = (
            f"txTracking {str(enabled).lower()} of {names} not set: this kernel has no "
            "tx_tracking file"
        )
        report.warnings.append(warning)
        self.store.add_event("warning", warning, data={"enabled": enabled})

    def _commit(
        self,
        work: list[tuple[LoadedChain, Plan, Changes, bool]],
        report: ApplyReport,
        who: str,
        message: str | None,
    ) -> None:
        revisions = []
        for (item, planned, _changes, _changed), chain_report in zip(
            work, report.chains, strict=True
        ):
            from flashctl.serialize import plan_data

            text = item.document.text
            revision = self.store.begin_revision(
                item.chain.name,
                text,
                spec_hash(text),
                plan_data(planned),
                who,
                message,
                item.source,
            )
            chain_report.revision = revision.rev
            revisions.append((item, revision))
        done: list[Write] = []
        try:
            for item, _planned, changes, _changed in work:
                self._perform(changes.writes, item.chain.name, done)
            self._set_tx_tracking([item for item, *_rest in work], report)
        except BackendError as exc:
            failed = self._undo(done, None) if done else []
            for item, revision in revisions:
                self.store.fail_revision(item.chain.name, revision.rev, "rolled-back", exc.message)
            restored = "previous rules restored"
            if failed:
                restored = f"could not restore flash-ids {failed}; the agent keeps reconciling"
            raise RolledBack(f"apply rolled back: {exc.message}; {restored}", exc.hint) from None
        topologies = {item.chain.name: planned.topology for item, planned, *_rest in work}
        for item, revision in revisions:
            committed = self.store.commit_revision(item.chain.name, revision.rev)
            topology = topologies[item.chain.name]
            self.running[item.chain.name] = Running(item.chain, committed, topology)
            writes = next(len(c.changes) for c in report.chains if c.name == item.chain.name)
            self.store.add_event(
                "apply",
                f"applied rev {revision.rev} of {item.chain.name} ({writes} writes)",
                chain=item.chain.name,
                data={"rev": revision.rev, "writes": writes},
            )

    # --- reconcile -----------------------------------------------------------------------

    def reconcile(self) -> list[Write]:
        """One pass: re-plan every running chain against the host and repair differences."""
        inventory, observed = self.observe()
        self._note_churn(inventory)
        performed: list[Write] = []
        for name, planned in self.plans(inventory).items():
            changes = diff(planned, observed)
            # No undo on failure: the writes are ordered make-before-break, so a prefix of
            # them is a consistent state; the next pass continues from it.
            with contextlib.suppress(BackendError):  # each failure is logged as an event
                self._perform(changes.writes, name, performed)
            for write in performed:
                observed[write.flash_id] = write.new
        return performed

    def _note_churn(self, inventory: Inventory) -> None:
        ids = inventory.ids()
        if self.last_ids is not None and ids != self.last_ids:
            by_id = inventory.by_id()
            added = sorted(ids - self.last_ids)
            removed = sorted(self.last_ids - ids)
            parts = [
                f"+{i} ({by_id[i].interface} q{by_id[i].qid} {by_id[i].holder()})" for i in added
            ] + [f"-{i}" for i in removed]
            self.store.add_event(
                "churn", "sockets " + ", ".join(parts), data={"added": added, "removed": removed}
            )
        self.last_ids = ids

    # --- delete, rollback, stop ----------------------------------------------------------

    def _running(self, name: str) -> Running:
        if name not in self.running:
            known = ", ".join(sorted(self.running)) or "none"
            raise NotFound(f"no chain named {name!r} is applied", f"applied chains: {known}")
        return self.running[name]

    def delete(self, name: str, *, who: str) -> Changes:
        running = self._running(name)
        inventory, observed = self.observe()
        changes = teardown(plan(running.chain, inventory, running.topology), observed)
        # A failure leaves the chain applied: the reconcile pass puts its rules back.
        self._perform(changes.writes, name, [])
        self.store.mark_deleted(name, who)
        del self.running[name]
        self.store.add_event("delete", f"deleted {name} ({len(changes)} rules cleared)", chain=name)
        return changes

    def clear_upstream_of(self, name: str, nf: str) -> Changes:
        """Before an NF of `name` stops: clear the rules that point at its sockets."""
        running = self._running(name)
        inventory, observed = self.observe()
        planned = plan(running.chain, inventory, running.topology)
        doomed = {
            b.flash_id for b in planned.bindings if b.socket.nf == nf and b.flash_id is not None
        }
        upstream = [r.flash_id for r in planned.rules if set(observed.get(r.flash_id, ())) & doomed]
        changes = teardown(planned, observed, upstream)
        self._perform(changes.writes, name, [])
        return changes

    def rollback(self, name: str, to: int | None, *, who: str) -> ApplyReport:
        current = self._running(name)
        history = self.store.history(name)
        if to is None:
            earlier = [
                r for r in history if r.rev < current.revision.rev and r.state == "superseded"
            ]
            if not earlier:
                raise NotFound(
                    f"{name} has no earlier revision to roll back to",
                    "see `flashctl history " + name + "`",
                )
            target = earlier[0]
        else:
            found = self.store.revision(name, to)
            if found is None or found.state not in ("superseded", "active"):
                raise NotFound(
                    f"{name} has no applied revision {to}", "see `flashctl history " + name + "`"
                )
            target = found
        source = target.source or f"{name}@rev{target.rev}"
        return self.apply(
            [(source, target.spec_text)], who=who, message=f"rollback to rev {target.rev}"
        )

    # --- status --------------------------------------------------------------------------

    def status(self, name: str | None = None) -> dict[str, Any]:
        if name is not None:
            self._running(name)
        inventory, observed = self.observe()
        sampled = self.backend.sample()
        sample = by_flash_id(sampled, inventory)
        # Without a FLASH kernel the agent's own sockets stand in for the chain's bindings.
        standalone: dict[str, dict[tuple[str, int], XskSample]] = {}
        if not self.backend.info().chaining:
            for x in sampled.xsks:
                if x.owner == "flashctl" and x.chain and x.nf and x.thread is not None:
                    standalone.setdefault(x.chain, {})[(x.nf, x.thread)] = x
        chains = []
        owned: set[int] = set()
        for chain_name, planned in self.plans(inventory).items():
            owned |= planned.owned_ids
            if name is not None and chain_name != name:
                continue
            own = standalone.get(chain_name, {})
            chains.append(_chain_status(self.running[chain_name], planned, observed, sample, own))
        live = inventory.ids()
        orphans = [
            {
                "flashId": s.flash_id,
                "interface": s.interface,
                "queue": s.qid,
                "pid": s.pid,
                "procname": s.procname,
                "next": list(observed.get(s.flash_id, ())),
                "reason": _orphan_reason(observed.get(s.flash_id, ()), live),
                "action": f"apply the chain that owns it, or write -1 to flash-id {s.flash_id}",
            }
            for s in inventory.sockets
            if s.flash_id not in owned and observed.get(s.flash_id)
        ]
        info = self.backend.info()  # probed once; cached by the backend
        return {
            "backend": {
                "name": info.name,
                "variant": info.variant,
                "chaining": info.chaining,
                "detail": info.detail,
            },
            "chains": chains,
            "orphans": orphans if name is None else [],
            "sockets": len(inventory.sockets),
            "xsks": [xsk_data(x) for x in sampled.xsks if name is None or x.chain == name],
        }


def xsk_data(xsk: XskSample) -> dict[str, Any]:
    """One observed AF_XDP socket as `status -o json` and `top` carry it."""
    return {
        "owner": xsk.owner,
        "pids": list(xsk.pids),
        "procname": xsk.procname,
        "interface": xsk.ifname,
        "queue": xsk.queue,
        "chain": xsk.chain,
        "nf": xsk.nf,
        "thread": xsk.thread,
        "inode": xsk.inode,
        "rings": asdict(xsk.rings),
        "counters": dict(xsk.counters),
    }


def _orphan_reason(rule: Sequence[int], live: frozenset[int]) -> str:
    dead = [i for i in rule if i not in live]
    if dead:
        return (
            f"no applied chain owns this socket; its rule points at closed ids {dead} "
            "(its TX stalls)"
        )
    return "no applied chain owns this socket, but it redirects to other sockets"


def _targets_text(planned: Plan, rule: SocketRule) -> str:
    if not rule.targets:
        if rule.socket.nf in planned.topology.egress:
            return "transmits to the NIC"
        return "no linked outputs"
    hops = zip(rule.targets, rule.modes, strict=True)
    return "-> " + ", ".join(f"{target} ({mode})" for target, mode in hops)


def _chain_status(
    running: Running,
    planned: Plan,
    observed: dict[int, tuple[int, ...]],
    sample: dict[int, Any],
    standalone: dict[tuple[str, int], XskSample],
) -> dict[str, Any]:
    """`standalone`: the agent's own sockets of this chain by (nf, thread), when the backend
    cannot chain (no FLASH kernel): bound and working, but without flash-ids or rules."""
    sockets = []
    for binding in planned.bindings:
        entry: dict[str, Any] = {
            "socket": str(binding.socket),
            "nf": binding.socket.nf,
            "thread": binding.socket.thread,
            "interface": binding.interface,
            "queue": binding.queue,
            "flashId": binding.flash_id,
        }
        rule = planned.rule_for(binding.flash_id) if binding.flash_id is not None else None
        own = standalone.get((binding.socket.nf, binding.socket.thread))
        if own is not None:
            entry.update(
                state="standalone",
                reason=f"bound by the agent for pid {', '.join(map(str, own.pids))}; "
                "without the FLASH kernel it has no flash-id and no rules",
                action="",
                counters=dict(own.counters),
            )
        elif binding.status != "bound" or rule is None:
            entry.update(
                state="pending",
                reason=binding.reason,
                action=f"start {binding.socket.nf}"
                if binding.status == "pending"
                else "free the queue or fix the chain's match",
            )
        else:
            current = observed.get(rule.flash_id, ())
            entry.update(next=list(current), desired=None if rule.next is None else list(rule.next))
            if rule.next is None:
                entry.update(
                    state="pending",
                    reason=rule.reason,
                    action="start the missing NFs; rules follow within one pass",
                )
            elif tuple(current) == rule.next:
                entry.update(state="in-sync", reason=_targets_text(planned, rule), action="")
            else:
                entry.update(
                    state="drifted",
                    reason=f"next is {list(current) or -1}, should be {list(rule.next) or -1}",
                    action="the agent repairs this on its next pass",
                )
            socket_sample = sample.get(rule.flash_id)
            if socket_sample is not None:
                entry["counters"] = dict(socket_sample.counters)
                if socket_sample.rates:
                    entry["rates"] = dict(socket_sample.rates)
        sockets.append(entry)
    states = [s["state"] for s in sockets]
    if all(s == "in-sync" for s in states):
        overall = "in-sync"
    elif "drifted" in states:
        overall = "drifted"
    elif all(s == "standalone" for s in states):
        overall = "standalone"
    else:
        overall = "pending"
    return {
        "name": running.chain.name,
        "revision": running.revision.rev,
        "appliedAt": running.revision.at,
        "appliedBy": running.revision.who,
        "state": overall,
        "sockets": sockets,
    }
