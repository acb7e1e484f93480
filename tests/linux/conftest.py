"""Fixtures shared by the kernel tests: `link` (a namespace with a veth pair)."""

from tests.linux.netns import link

__all__ = ["link"]
