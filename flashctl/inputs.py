"""Reading chain files from disk: the I/O edge in front of the pure loader.

Paths may be files, directories (their `*.yaml` / `*.yml` files, sorted, not recursive) or
`-` for standard input. Every way a path can be wrong becomes one located diagnostic; reads
are bounded so that `/dev/zero` or a huge file costs no more than the size limit.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from flashctl.errors import ChainError, Diagnostic, Position

MAX_BYTES = 8 << 20
CHAIN_SUFFIXES = (".yaml", ".yml")


def _problem(source: str, message: str, hint: str | None) -> Diagnostic:
    """A problem with a path as a whole (no line): rendered as `path: error: message`."""
    return Diagnostic("error", (), message, hint, Position(source, 0, 0))


def _collect(
    result: tuple[str, str] | Diagnostic,
    sources: list[tuple[str, str]],
    problems: list[Diagnostic],
) -> None:
    if isinstance(result, Diagnostic):
        problems.append(result)
    else:
        sources.append(result)


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def decode(data: bytes, source: str) -> str:
    """UTF-8 text of a chain file, or ChainError saying where it stops being text."""
    nul = data.find(b"\0")
    if nul >= 0:
        line, col = _line_col(data, nul)
        raise ChainError(
            [
                Diagnostic(
                    "error",
                    (),
                    "binary data (a NUL byte), not a YAML chain file",
                    "pass a .yaml chain file",
                    Position(source, line, col),
                )
            ]
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise ChainError(
            [
                Diagnostic(
                    "error",
                    (),
                    f"not UTF-8 text (byte 0x{data[exc.start]:02x})",
                    "save the file as UTF-8",
                    Position(source, line, col),
                )
            ]
        ) from None


def _read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def _expand(name: str) -> tuple[list[Path], list[Diagnostic]]:
    path = Path(name)
    try:
        info = path.stat()
    except FileNotFoundError:
        return [], [_problem(name, "no such file or directory", "check the path")]
    except PermissionError:
        return [], [_problem(name, "permission denied", "check the file's permissions")]
    except OSError as exc:
        return [], [_problem(name, f"cannot open: {exc.strerror}", None)]
    if stat.S_ISDIR(info.st_mode):
        try:
            found = sorted(p for p in path.iterdir() if p.suffix in CHAIN_SUFFIXES and p.is_file())
        except OSError as exc:
            return [], [_problem(name, f"cannot list directory: {exc.strerror}", None)]
        if not found:
            return [], [
                _problem(name, "directory holds no chain files", "chain files end in .yaml or .yml")
            ]
        return found, []
    return [path], []


def _read_one(path: Path, limit: int) -> tuple[str, str] | Diagnostic:
    source = str(path)
    try:
        data = _read_bounded(path, limit)
    except IsADirectoryError:
        return _problem(source, "is a directory", None)
    except PermissionError:
        return _problem(source, "permission denied", "check the file's permissions")
    except OSError as exc:
        return _problem(source, f"cannot read: {exc.strerror}", None)
    if len(data) > limit:
        return Diagnostic(
            "error",
            (),
            f"larger than {limit >> 20} MiB; chain files are small",
            "check the path",
            Position(source, 1, 1),
        )
    try:
        return source, decode(data, source)
    except ChainError as exc:
        return exc.diagnostics[0]


def read_sources(
    names: Sequence[str], *, stdin: Iterable[bytes] | None = None, limit: int = MAX_BYTES
) -> list[tuple[str, str]]:
    """(display name, text) of every chain file named; ChainError listing every bad path."""
    sources: list[tuple[str, str]] = []
    problems: list[Diagnostic] = []
    for name in names:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1) if stdin is None else b"".join(stdin)
            result = _read_stdin(data, limit)
        else:
            paths, found = _expand(name)
            problems.extend(found)
            for path in paths:
                _collect(_read_one(path, limit), sources, problems)
            continue
        _collect(result, sources, problems)
    if problems:
        raise ChainError(problems)
    return sources


def _read_stdin(data: bytes, limit: int) -> tuple[str, str] | Diagnostic:
    if len(data) > limit:
        return _problem("<stdin>", f"larger than {limit >> 20} MiB", None)
    try:
        return "<stdin>", decode(data, "<stdin>")
    except ChainError as exc:
        return exc.diagnostics[0]
