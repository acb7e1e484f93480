"""Safe YAML parsing that remembers where every value came from, in bounded time and memory.

Documents are built from the parser's event stream by an explicit stack instead of PyYAML's
recursive composer, so that deeply nested input cannot exhaust the Python stack, duplicate
keys are reported instead of silently overwritten, and alias expansion is metered: an alias
re-uses the anchored value (no copy), but its expanded size is counted so that a "billion
laughs" document is refused before anything walks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from flashctl.errors import Diagnostic, Position

try:  # libyaml's parser is ~10x faster; the pure-Python one is a correct fallback
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]
Location = tuple[int, int]  # 1-based line, column

_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "merge")
)


class _MergeKey(str):
    """The YAML merge key `<<`; a distinct type so a quoted '<<' stays an ordinary key."""


_MERGE_KEY = _MergeKey("<<")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep hostile input cheap to refuse."""

    max_bytes: int = 8 << 20
    max_depth: int = 64
    max_values: int = 1_000_000  # after alias expansion
    max_documents: int = 10_000


@dataclass(slots=True)
class Document:
    """One YAML document: its data and the position of every value and key in it."""

    source: str
    index: int
    data: Any
    start: Location
    text: str = ""  # this document's own text (a file may hold several)
    values: dict[Path, Location] = field(default_factory=dict)
    keys: dict[Path, Location] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        probe = path
        while probe:
            where = table.get(probe) or self.values.get(probe)
            if where:
                return Position(self.source, *where)
            probe = probe[:-1]
        return Position(self.source, *self.start)


class SourceError(Exception):
    """The text is not acceptable YAML; carries one located diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.render())
        self.diagnostic = diagnostic


def _error(source: str, where: Location, message: str, hint: str | None = None) -> SourceError:
    return SourceError(Diagnostic("error", (), message, hint, Position(source, *where)))


def _loc(mark: Any) -> Location:
    return (mark.line + 1, mark.column + 1)


@dataclass(slots=True)
class _Frame:
    container: dict[Any, Any] | list[Any]
    path: Path
    anchor: str | None
    size: int = 1
    key: Any = None
    has_key: bool = False
    key_loc: Location = (0, 0)
    merges: list[tuple[dict[Any, Any], Location]] = field(default_factory=list)


class _Builder:
    """Turns one document's events into Python data plus its position tables."""

    def __init__(self, source: str, index: int, start: Location, limits: Limits) -> None:
        self.doc = Document(source, index, None, start)
        self.limits = limits
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.total = 0
        self.done = False
        self.plain: dict[str, Any] = {}

    def fail(self, where: Location, message: str, hint: str | None = None) -> SourceError:
        return _error(self.doc.source, where, message, hint)

    def count(self, size: int, where: Location) -> None:
        self.total += size
        if self.total > self.limits.max_values:
            raise self.fail(
                where,
                f"the document expands to more than {self.limits.max_values:,} values",
                "aliases (*name) multiply content; a chain file never needs this many",
            )

    def child_path(self, where: Location) -> Path:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        return (*top.path, top.key)

    def place(self, value: Any, size: int, where: Location, anchor: str | None) -> None:
        """Put a finished value into the enclosing container (or make it the document)."""
        if anchor is not None:
            self.anchors[anchor] = (value, size)
        if not self.stack:
            self.doc.data = value
            self.done = True
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if top.key is _MERGE_KEY:
            self.merge(top, value, where)
        else:
            top.container[top.key] = value
        top.has_key = False

    def merge(self, top: _Frame, value: Any, where: Location) -> None:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, dict) for s in sources):
            raise self.fail(where, "a merge key (<<) needs a mapping or a list of mappings")
        top.merges.extend((s, where) for s in sources)
        top.has_key = False

    def scalar(self, event: Any) -> None:
        where = _loc(event.start_mark)
        self.count(1, where)
        value = self.resolve(event, where)
        top = self.stack[-1] if self.stack else None
        if isinstance(top, _Frame) and isinstance(top.container, dict) and not top.has_key:
            self.take_key(top, value, where)
            return
        self.doc.values[self.child_path(where)] = where
        self.place(value, 1, where, event.anchor)

    def take_key(self, top: _Frame, key: Any, where: Location) -> None:
        if isinstance(key, float | bool) or key is None:
            key = str(event_text(key))
        assert isinstance(top.container, dict)
        if key in top.container and key is not _MERGE_KEY:
            first = self.doc.keys.get((*top.path, key), where)
            raise self.fail(
                where,
                f"duplicate key {key!r} (first at line {first[0]})",
                "each key may appear once in a mapping; remove or merge one of them",
            )
        top.key, top.has_key, top.key_loc = key, True, where
        self.doc.keys[(*top.path, key)] = where

    def resolve(self, event: Any, where: Location) -> Any:
        tag = event.tag
        if tag is None and event.style is None:
            # Plain scalars repeat a lot (interface names, policies, small numbers): resolving
            # one means a regex search per implicit type, so remember the answers.
            if event.value not in self.plain:
                self.plain[event.value] = self.convert(event, where)
            return self.plain[event.value]
        return self.convert(event, where)

    def convert(self, event: Any, where: Location) -> Any:
        tag = event.tag
        if tag in (None, "!"):
            tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag not in _ALLOWED_TAGS:
            raise self.fail(where, f"unsupported tag {event.tag!r}", "chain files use plain YAML")
        if tag == "tag:yaml.org,2002:merge":
            return _MERGE_KEY
        if tag == "tag:yaml.org,2002:str":
            return event.value
        # The constructor's per-type method, not construct_object: that one memoises every
        # node it builds in a table that is never cleared (a leak in a long-lived agent).
        node = yaml.ScalarNode(tag, event.value, style=event.style)
        try:
            return _SCALAR_CONSTRUCTORS[tag](node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.fail(where, f"cannot read value {event.value!r}: {exc}") from None

    def open(self, event: Any, container: dict[Any, Any] | list[Any]) -> None:
        where = _loc(event.start_mark)
        if event.tag not in (None, "!") and not str(event.tag).startswith("tag:yaml.org,2002:"):
            raise self.fail(where, f"unsupported tag {event.tag!r}", "chain files use plain YAML")
        if len(self.stack) >= self.limits.max_depth:
            raise _too_deep(self.doc.source, where, self.limits)
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.container, dict) and not top.has_key:
            raise self.fail(where, "a mapping key must be a plain value, not a collection")
        self.count(1, where)
        path = self.child_path(where)
        self.doc.values[path] = where
        self.stack.append(_Frame(container, path, event.anchor))

    def close(self, event: Any) -> None:
        frame = self.stack.pop()
        if isinstance(frame.container, dict):
            for extra, _where in frame.merges:
                for key, value in extra.items():
                    frame.container.setdefault(key, value)
        self.place(frame.container, frame.size, _loc(event.start_mark), frame.anchor)

    def alias(self, event: Any) -> None:
        where = _loc(event.start_mark)
        if event.anchor not in self.anchors:
            raise self.fail(where, f"unknown alias *{event.anchor}", "define &name before *name")
        value, size = self.anchors[event.anchor]
        self.count(size, where)
        top = self.stack[-1] if self.stack else None
        if isinstance(top, _Frame) and isinstance(top.container, dict) and not top.has_key:
            if isinstance(value, dict | list):
                raise self.fail(where, "a mapping key must be a plain value, not a collection")
            self.take_key(top, value, where)
            return
        self.doc.values[self.child_path(where)] = where
        self.place(value, size, where, None)


def event_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALAR_CONSTRUCTORS: dict[str, Callable[[yaml.ScalarNode], Any]] = {
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
}
_RESOLVER = yaml.resolver.Resolver()


def _events(text: str, source: str, limits: Limits) -> Iterator[Any]:
    try:
        yield from yaml.parse(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = _loc(mark) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "nesting depth" in problem:
            # Newer libyaml scans ahead and stops deep nesting itself: same refusal, our words.
            raise _too_deep(source, where, limits) from None
        raise _error(source, where, f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        raise _error(
            source,
            (1, 1),
            f"invalid YAML: {exc.reason} (character at offset {exc.position})",
            "is this a text file?",
        ) from None
    except yaml.YAMLError as exc:
        raise _error(source, (1, 1), f"invalid YAML: {exc}") from None


def _too_deep(source: str, where: Location, limits: Limits) -> SourceError:
    return _error(
        source,
        where,
        f"the document nests deeper than {limits.max_depth} levels",
        "a chain file is a few levels deep; is this the right file?",
    )


def _index(mark: Any) -> int:
    return int(mark.index) if mark is not None else 0


def _amount(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size} bytes"


def parse_documents(text: str, source: str, limits: Limits = Limits()) -> list[Document]:
    """Every non-empty YAML document of `text`, in order, with positions.

    Raises SourceError (one located diagnostic) for text that is not acceptable YAML.
    """
    if len(text) > limits.max_bytes:
        raise _error(
            source,
            (1, 1),
            f"the file is larger than {_amount(limits.max_bytes)}",
            "chain files are small; split it or check the path",
        )
    documents: list[Document] = []
    builder: _Builder | None = None
    begin = 0  # a document's text runs from the previous one's end: its leading comments too
    for event in _events(text, source, limits):
        if isinstance(event, yaml.DocumentStartEvent):
            if len(documents) >= limits.max_documents:
                raise _error(
                    source,
                    _loc(event.start_mark),
                    f"more than {limits.max_documents:,} documents in one file",
                )
            builder = _Builder(source, len(documents), _loc(event.start_mark), limits)
        elif isinstance(event, yaml.DocumentEndEvent):
            if builder is not None and builder.done and builder.doc.data is not None:
                builder.doc.text = text[begin : _index(event.end_mark)]
                documents.append(builder.doc)
            begin = _index(event.end_mark)
            builder = None
        elif builder is None:
            continue
        elif isinstance(event, yaml.ScalarEvent):
            builder.scalar(event)
        elif isinstance(event, yaml.MappingStartEvent):
            builder.open(event, {})
        elif isinstance(event, yaml.SequenceStartEvent):
            builder.open(event, [])
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            builder.close(event)
        elif isinstance(event, yaml.AliasEvent):
            builder.alias(event)
    for index, doc in enumerate(documents):
        doc.index = index
    return documents
