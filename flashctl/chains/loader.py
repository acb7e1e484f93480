"""From chain text to validated `Chain` models, with every problem located at file:line:col.

`load_sources` takes already-read text (reading files is the caller's job, so this module
stays pure) and returns the chains and their warnings, or raises `ChainError` carrying all
errors of all sources at once.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from flashctl.chains import graph
from flashctl.chains.source import Document, Limits, SourceError, parse_documents
from flashctl.chains.spec import API_VERSION, Chain
from flashctl.errors import ChainError, Diagnostic, Position

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class LoadedChain:
    chain: Chain
    document: Document

    @property
    def source(self) -> str:
        return self.document.source


@dataclass(frozen=True, slots=True)
class Loaded:
    chains: tuple[LoadedChain, ...]
    warnings: tuple[Diagnostic, ...]


# What a pattern-constrained string is, in words a user can act on.
_PATTERN_WORDS = {
    "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": (
        "is not a valid chain name",
        "a DNS label: lowercase letters, digits and '-', at most 63 characters",
    ),
    r"^[^\s/:]{1,15}$": (
        "is not a valid interface name",
        "Linux interface names have 1-15 characters and no spaces, '/' or ':'",
    ),
}
_IDENT_WORDS = (
    "is not a valid name",
    "start with a letter, then letters, digits, '_' or '-'; at most 63 characters",
)
_ENDPOINT_WORDS = (
    "is not a valid link endpoint",
    "write `nf.output`, `nf` for an NF with one output, or `nic`",
)


def _type_name(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    names |= {int: "an integer", float: "a number", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _strip(annotation: Any) -> Any:
    """Remove Annotated[...] and Optional[...] wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        else:
            return annotation


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation one path step below `annotation`, or None if the step leaves the model."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if origin is list:
        return typing.get_args(annotation)[0] if isinstance(part, int) else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, info in annotation.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
    return None


def fields_at(path: Path) -> list[str]:
    """The YAML keys allowed at `path` of a chain document (for "did you mean" hints)."""
    annotation: Any = Chain
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _strip(annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _strip_prefix(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[0].lower() + message[1:] if message else message


def _translate(error: ErrorDetails) -> tuple[Path, str, str | None, bool]:
    """(path, message, hint, located at the key?) for one pydantic error."""
    loc: Path = tuple(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        if kind == "value_error":
            return loc, _strip_prefix(error["msg"]), None, True
        words = _PATTERN_WORDS.get(str(ctx.get("pattern")), _IDENT_WORDS)
        return loc, f"{_show(loc[-1])} {words[0]}", words[1], True
    field = loc[-1] if loc else "document"
    if kind == "missing":
        hint = (
            f"start the document with `apiVersion: {API_VERSION}`"
            if field == "apiVersion"
            else None
        )
        return loc, f"missing required field {field!r}", hint, False
    if kind == "extra_forbidden":
        allowed = fields_at(loc[:-1])
        hint = _suggest(str(field), allowed) or (
            f"allowed here: {', '.join(allowed)}" if allowed else None
        )
        return loc, f"unknown field {field!r}", hint, True
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",")]
        hint = _suggest(str(value), options) if isinstance(value, str) else None
        return loc, f"{_show(value)} is not allowed; expected {expected}", hint, False
    if kind == "string_pattern_mismatch":
        default = _ENDPOINT_WORDS if field == "from" else _IDENT_WORDS
        words = _PATTERN_WORDS.get(str(ctx.get("pattern")), default)
        return loc, f"{_show(value)} {words[0]}", words[1], False
    return loc, _generic_message(kind, value, ctx, error["msg"]), None, False


def _generic_message(kind: str, value: Any, ctx: dict[str, Any], msg: str) -> str:
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {_show(value)}"
    if kind in ("string_type", "bool_type", "bool_parsing", "float_type", "float_parsing"):
        wanted = {"s": "a string", "b": "true or false", "f": "a number"}[kind[0]]
        return f"expected {wanted}, got {_type_name(value)} {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_type_name(value)}"
    if kind == "list_type":
        return f"expected a list, got {_type_name(value)}"
    bounds = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit}, got {_show(value)}"
    if kind in ("too_short", "too_long"):
        least = "at least" if kind == "too_short" else "at most"
        count = ctx.get("min_length", ctx.get("max_length"))
        return f"needs {least} {count} item{'s' if count != 1 else ''}"
    if kind in ("string_too_long", "string_too_short"):
        return _strip_prefix(msg).replace("string should", "must")
    return _strip_prefix(msg)


def _model_diagnostics(exc: ValidationError, doc: Document) -> list[Diagnostic]:
    out = []
    for error in exc.errors(include_url=False):
        path, message, hint, at_key = _translate(error)
        out.append(Diagnostic("error", path, message, hint, doc.locate(path, key=at_key)))
    return out


def _place(diagnostic: Diagnostic, doc: Document) -> Diagnostic:
    # Graph checks point at values (the misspelt NF name, the conflicting queue).
    position = doc.locate(diagnostic.path)
    return Diagnostic(
        diagnostic.severity, diagnostic.path, diagnostic.message, diagnostic.hint, position
    )


def _validate(doc: Document) -> tuple[Chain | None, list[Diagnostic]]:
    if not isinstance(doc.data, dict):
        message = f"a chain document must be a mapping, not {_type_name(doc.data)}"
        hint = "start it with `apiVersion: flashctl/v1` and `kind: Chain`"
        return None, [Diagnostic("error", (), message, hint, doc.locate(()))]
    try:
        chain = Chain.model_validate(doc.data)
    except ValidationError as exc:
        return None, _model_diagnostics(exc, doc)
    return chain, [_place(d, doc) for d in graph.check(chain)]


def load_sources(sources: Sequence[tuple[str, str]], limits: Limits = Limits()) -> Loaded:
    """Load (name, text) pairs; raise ChainError with every error of every source."""
    diagnostics: list[Diagnostic] = []
    loaded: list[LoadedChain] = []
    for name, text in sources:
        try:
            documents = parse_documents(text, name, limits)
        except SourceError as exc:
            diagnostics.append(exc.diagnostic)
            continue
        if not documents:
            diagnostics.append(_empty(name))
        for doc in documents:
            chain, found = _validate(doc)
            diagnostics.extend(found)
            if chain is not None and not any(d.is_error for d in found):
                loaded.append(LoadedChain(chain, doc))
    labels = [str(c.document.locate(())) for c in loaded]
    for index, diagnostic in graph.check_across([c.chain for c in loaded], labels):
        diagnostics.append(_place(diagnostic, loaded[index].document))
    if any(d.is_error for d in diagnostics):
        raise ChainError(diagnostics)
    return Loaded(tuple(loaded), tuple(diagnostics))


def _empty(name: str) -> Diagnostic:
    return Diagnostic(
        "error",
        (),
        "no chain document in this file",
        f"a chain starts with `apiVersion: {API_VERSION}` and `kind: Chain`",
        Position(name, 1, 1),
    )
