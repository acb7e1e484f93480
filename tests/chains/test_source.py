"""YAML parsing with positions: what users see for malformed or hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.chains.source import Limits, SourceError, parse_documents


def _error(text: str, limits: Limits = Limits()) -> str:
    with pytest.raises(SourceError) as info:
        parse_documents(text, "c.yaml", limits)
    return info.value.diagnostic.render()


def test_positions_of_values_and_keys_are_one_based() -> None:
    (doc,) = parse_documents("a: 1\nb:\n  - x\n  - {c: 2}\n", "c.yaml")
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert doc.values[("a",)] == (1, 4)
    assert doc.values[("b", 1, "c")] == (4, 9)
    assert doc.keys[("b",)] == (2, 1)
    assert doc.keys[("b", 1, "c")] == (4, 6)


def test_several_documents_skip_empty_ones_and_are_numbered() -> None:
    docs = parse_documents("a: 1\n---\n---\nb: 2\n", "c.yaml")
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert [d.index for d in docs] == [0, 1]
    assert docs[1].start == (3, 1)  # the `---` that opens it


def test_merge_keys_apply_and_explicit_keys_win() -> None:
    text = "d: &d {threads: 2, outputs: [a]}\nnf:\n  <<: *d\n  threads: 4\n"
    (doc,) = parse_documents(text, "c.yaml")
    assert doc.data["nf"] == {"threads": 4, "outputs": ["a"]}


def test_quoted_merge_key_is_an_ordinary_key() -> None:
    (doc,) = parse_documents("'<<': 3\n", "c.yaml")
    assert doc.data == {"<<": 3}


def test_locate_falls_back_to_the_nearest_ancestor() -> None:
    (doc,) = parse_documents("a:\n  b: 1\n", "c.yaml")
    assert str(doc.locate(("a", "b", "missing"))) == "c.yaml:2:6"
    assert str(doc.locate(("a", "b"), key=True)) == "c.yaml:2:3"


LOL = ", ".join(['"lol"'] * 9)
BILLION_LAUGHS = f"a: &a [{LOL}]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a: 1\na: 2\n",
            "c.yaml:2:1: error: duplicate key 'a' (first at line 1) "
            "(each key may appear once in a mapping; remove or merge one of them)",
        ),
        (
            "a: [1,\n",
            "c.yaml:2:1: error: invalid YAML: did not find expected node content",
        ),
        (
            "a: !!python/object:os.system x\n",
            "c.yaml:1:4: error: unsupported tag 'tag:yaml.org,2002:python/object:os.system' "
            "(chain files use plain YAML)",
        ),
        (
            "a: !custom 1\n",
            "c.yaml:1:4: error: unsupported tag '!custom' (chain files use plain YAML)",
        ),
        (
            "a: &x [1]\nb: *y\n",
            "c.yaml:2:4: error: unknown alias *y (define &name before *name)",
        ),
        (
            "? [a]\n: 1\n",
            "c.yaml:1:3: error: a mapping key must be a plain value, not a collection",
        ),
        (
            "a: \x07\n",
            "c.yaml:1:1: error: invalid YAML: control characters are not allowed "
            "(character at offset 3) (is this a text file?)",
        ),
        (
            "[" * 100 + "]" * 100,
            "c.yaml:1:65: error: the document nests deeper than 64 levels "
            "(a chain file is a few levels deep; is this the right file?)",
        ),
        (
            BILLION_LAUGHS,
            "c.yaml:7:8: error: the document expands to more than 1,000,000 values "
            "(aliases (*name) multiply content; a chain file never needs this many)",
        ),
    ],
    ids=[
        "duplicate",
        "syntax",
        "python-tag",
        "custom-tag",
        "alias",
        "complex-key",
        "control",
        "deep",
        "alias-bomb",
    ],
)
def test_malformed_yaml_is_one_located_error(text: str, expected: str) -> None:
    assert _error(text) == expected


def test_oversized_text_is_refused_before_parsing() -> None:
    assert _error("a: 1\n" * 10, Limits(max_bytes=20)) == (
        "c.yaml:1:1: error: the file is larger than 20 bytes "
        "(chain files are small; split it or check the path)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200_000, "the document nests deeper than 64 levels"),
        ("x: [" + "1, " * 20_000 + "1]\n", "the document expands to more than 10,000 values"),
    ],
    ids=["very-deep", "very-wide"],
)
def test_hostile_inputs_are_refused_by_their_bound(text: str, message: str) -> None:
    # Refused by the limit itself (not by running out of stack or memory later).
    with pytest.raises(SourceError) as info:
        parse_documents(text, "c.yaml", Limits(max_values=10_000))
    assert info.value.diagnostic.message == message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_source_error(text: str) -> None:
    try:
        parse_documents(text, "c.yaml")
    except SourceError as exc:
        assert exc.diagnostic.position is not None
        assert exc.diagnostic.render().startswith("c.yaml:")
