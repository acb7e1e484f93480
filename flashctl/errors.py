"""The one error hierarchy of flashctl, and its stable exit codes.

Errors are raised anywhere and caught only at the CLI edge, which prints one line per
problem (plus a hint) and exits with the error's code. Nothing here imports anything heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (see README, "Exit codes")."""

    OK = 0
    FAILURE = 1  # a runtime failure: backend, agent, I/O that is not the user's input
    INVALID = 2  # bad input: chain files, CLI arguments, imported configs; apply: rejected
    UNCHANGED = 3  # apply / diff: nothing to change, the host already matches
    ROLLED_BACK = 4  # apply: a write failed and the previous rules were restored
    PENDING = 5  # diff / apply --dry-run: changes would be made
    INTERRUPTED = 130


class FlashctlError(Exception):
    """Base of every error flashctl reports to a user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        """The lines printed for this error, each complete (`error: ...`)."""
        return [f"error: {self.message}"]


class InputError(FlashctlError):
    """The user's input is wrong; retrying will not help until it is fixed."""

    exit_code = ExitCode.INVALID


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column inside a named source."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        # Line 0 means "the path as a whole" (missing file, directory): no line to point at.
        if self.line <= 0:
            return self.source
        return f"{self.source}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a chain document.

    `path` is the location inside the document (keys and list indices, e.g.
    `("spec", "links", 2, "to")`); `position` is where that path sits in the file, when known.
    """

    severity: str  # "error" | "warning"
    path: tuple[str | int, ...]
    message: str
    hint: str | None = None
    position: Position | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def dotted_path(self) -> str:
        return format_path(self.path)

    def render(self) -> str:
        """`file:line:col: severity: path: message (hint)` on one line."""
        where = f"{self.position}: " if self.position else ""
        path = f"{self.dotted_path()}: " if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.severity}: {path}{self.message}{hint}"


def format_path(path: Sequence[str | int]) -> str:
    """`("spec", "links", 2, "to")` -> `spec.links[2].to`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class ChainError(InputError):
    """One or more chain documents are invalid; carries every diagnostic at once."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        errors = [d for d in diagnostics if d.is_error]
        first = errors[0] if errors else None
        super().__init__(first.render() if first else "invalid chain")
        self.diagnostics = tuple(diagnostics)

    def lines(self) -> list[str]:
        return [d.render() for d in self.diagnostics]
