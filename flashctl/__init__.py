"""flashctl: the declarative service-chain orchestrator for FLASH.

Kept import-light on purpose: `flashctl --help` must start fast, so nothing here pulls in
pydantic, networkx or rich.
"""

__version__ = "0.1.0"
