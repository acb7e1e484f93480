"""Chain files the agent tests apply (all on eth0, each on its own queues unless a test wants
a clash)."""

from __future__ import annotations

import itertools

from tests.agent.harness import ROOT

LINEAR = (ROOT / "examples" / "linear.yaml").read_text()  # firewall q0 -> router q1
LB = (ROOT / "examples" / "load-balancer.yaml").read_text()  # balancer q2 -> web q3, api q4

# One NF on queue 1 of eth0, which linear's router holds.
CLASH = """\
apiVersion: flashctl/v1
kind: Chain
metadata: {name: clash}
spec:
  interface: eth0
  nfs:
    x: {queues: [1]}
  links:
    - {from: nic, to: x}
    - {from: x, to: nic}
"""


def pipeline(name: str, nfs: dict[str, list[int]], order: list[str] | None = None) -> str:
    """A chain nic -> nf1 -> nf2 -> ... -> nic (affine links; NFs started in `nfs` order)."""
    order = list(nfs) if order is None else order
    hops = ["nic", *order, "nic"]
    links = "\n".join(f"    - {{from: {a}, to: {b}}}" for a, b in itertools.pairwise(hops))
    declared = "\n".join(f"    {nf}: {{queues: {queues}}}" for nf, queues in nfs.items())
    return f"""\
apiVersion: flashctl/v1
kind: Chain
metadata: {{name: {name}}}
spec:
  interface: eth0
  nfs:
{declared}
  links:
{links}
"""


# a -> b -> c, one thread each, on queues 10, 11, 12 (flash-ids 0, 1, 2 on an idle host).
ABC = pipeline("abc", {"a": [10], "b": [11], "c": [12]})


def fan(mapping: str) -> str:
    """src (3 threads) -> dst (3 threads) with one link mapping: each gives other rules.

    `mapping` is `affine`, `spread`, or `pinned-K`.
    """
    if mapping.startswith("pinned-"):
        link = f"{{from: src, to: dst, mapping: pinned, thread: {mapping.removeprefix('pinned-')}}}"
    else:
        link = f"{{from: src, to: dst, mapping: {mapping}}}"
    return f"""\
apiVersion: flashctl/v1
kind: Chain
metadata: {{name: fan}}
spec:
  interface: eth0
  nfs:
    src: {{queues: [20, 21, 22]}}
    dst: {{queues: [23, 24, 25]}}
  links:
    - {{from: nic, to: src}}
    - {link}
    - {{from: dst, to: nic}}
"""


# With src on flash-ids 0-2 and dst on 3-5: src thread i's next list under each mapping.
FAN_RULES = {
    "affine": {0: [3], 1: [4], 2: [5]},
    "spread": {0: [3, 4, 5], 1: [3, 4, 5], 2: [3, 4, 5]},
    "pinned-0": {0: [3], 1: [3], 2: [3]},
    "pinned-1": {0: [4], 1: [4], 2: [4]},
    "pinned-2": {0: [5], 1: [5], 2: [5]},
}
