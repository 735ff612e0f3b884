"""Hypothesis strategies that mutate real frames: what a broken or hostile peer could send instead of them.

A seed is a real frame (text JSON from a recording, or a control message). `mutated(seeds)` draws one seed and
applies one to four mutations, structural ones on its decoded JSON tree (a value replaced by another type, a
huge number, a NaN/Infinity string or bare token, a deeply nested array or object; a key dropped or added; a list
element dropped, duplicated or moved) and then, sometimes, one on the encoded bytes (truncation, invalid UTF-8,
a flipped byte, two frames run together, an empty frame). The result is `str` when it is valid UTF-8 and the
draw says so (a websocket text frame), else `bytes` (a binary frame, the only way invalid UTF-8 arrives).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

# Values that break number parsing and range checks: what float() accepts but no venue means, and the
# numbers at the edges of int64, float64 and JSON.
NUMERIC_STRINGS = (
    "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "-inf", "1e999", "-1e999", "1e308", "4.9e-324",
    "0", "-0", "-1", "0.0", "", " ", "1_000", "0x10", "１２", "9" * 400, "1e-400", "null", "true",
)  # fmt: skip
HUGE_NUMBERS: tuple[Any, ...] = (
    2**63, 2**63 - 1, -(2**63), 2**64, 10**30, -(10**30), 10**400, 1.7976931348623157e308, -1.7976931348623157e308,
    5e-324, 0, -1, 0.0, -0.0, math.nan, math.inf, -math.inf,
)  # fmt: skip
# Placeholder strings swapped for raw JSON text after encoding (nesting json.dumps would refuse, duplicate keys).
_RAW_MARK = "\x00raw:"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(NUMERIC_STRINGS),
    st.sampled_from(HUGE_NUMBERS),
)
any_json = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    """Raw JSON text nested deeper than any parser should recurse (orjson stops at 1024)."""
    depth = draw(st.sampled_from((64, 500, 1023, 1025, 5000, 20000)))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON tree (the root is the empty path)."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(root, path[:-1])[path[-1]] = value
    return root


def _flipped(value: Any) -> Any:
    """The same value in the other representation: "123.4" -> 123.4, 123.4 -> "123.4", "BTC" -> ["BTC"]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return 0


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


# Half the mutations hit a number (a price, a size, a sequence id, a timestamp): the values a parser must range-
# check, and the ones that reach the books when it does not.
_KINDS = ("number",) * 9 + (
    "replace", "numeric_string", "huge", "flip", "deep", "drop", "add_key", "duplicate", "move", "any",
)  # fmt: skip


@st.composite
def mutate_tree(draw: st.DrawFn, tree: Any) -> Any:
    """One structural mutation of `tree` (already a private copy)."""
    paths = _paths(tree)
    kind = draw(st.sampled_from(_KINDS))
    if kind == "number":
        numbers = [p for p in paths if p and _is_number(_get(tree, p))]
        if numbers:
            path = draw(st.sampled_from(numbers))
            value = _get(tree, path)
            edge = draw(st.sampled_from(NUMERIC_STRINGS + HUGE_NUMBERS))
            # Keep the representation the venue uses half of the time (a string stays a string).
            if isinstance(value, str) and not isinstance(edge, str) and draw(st.booleans()):
                edge = str(edge) if not isinstance(edge, float) or math.isfinite(edge) else repr(edge)
            return _set(tree, path, edge)
        kind = "replace"
    path = draw(st.sampled_from(paths))
    target = _get(tree, path)
    if kind == "replace":
        return _set(tree, path, draw(scalars))
    if kind == "numeric_string":
        return _set(tree, path, draw(st.sampled_from(NUMERIC_STRINGS)))
    if kind == "huge":
        return _set(tree, path, draw(st.sampled_from(HUGE_NUMBERS)))
    if kind == "flip":
        return _set(tree, path, _flipped(target))
    if kind == "deep":
        return _set(tree, path, _RAW_MARK + draw(deep_nesting()))
    if kind == "any":
        return _set(tree, path, draw(any_json))
    if kind == "drop":
        if not path:
            return draw(st.sampled_from(([], {}, None, "", 0)))
        parent = _get(tree, path[:-1])
        del parent[path[-1]]
        return tree
    if kind == "add_key":
        if isinstance(target, dict):
            target[draw(st.text(max_size=8))] = draw(any_json)
        elif isinstance(target, list):
            target.append(draw(any_json))
        return tree
    if kind == "duplicate" and isinstance(target, list) and target:
        index = draw(st.integers(0, len(target) - 1))
        target.insert(index, json.loads(json.dumps(target[index])))
        return tree
    if kind == "move" and isinstance(target, list) and len(target) > 1:
        i = draw(st.integers(0, len(target) - 1))
        j = draw(st.integers(0, len(target) - 1))
        target.insert(j, target.pop(i))
        return tree
    return _set(tree, path, None)


def encode(tree: Any) -> bytes:
    """JSON text of a mutated tree: bare NaN/Infinity tokens allowed, raw placeholders spliced in."""
    text = json.dumps(tree, allow_nan=True, ensure_ascii=False)
    while _RAW_MARK in text:
        # json.dumps escapes the NUL of the marker: find the escaped form of one placeholder string literal.
        start = text.index('"\\u0000raw:')
        end = text.index('"', start + 1)
        raw = json.loads(text[start : end + 1])[len(_RAW_MARK) :]
        text = text[:start] + raw + text[end + 1 :]
    return text.encode("utf-8", "surrogatepass")


INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xe2\x28\xa1", b"\xf0\x90\x28\xbc", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80")


@st.composite
def mutate_bytes(draw: st.DrawFn, data: bytes, others: Sequence[bytes]) -> bytes:
    """One mutation of the encoded frame."""
    kind = draw(st.sampled_from(("truncate", "invalid_utf8", "flip_byte", "concat", "empty", "nul")))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "invalid_utf8":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    if kind == "flip_byte" and data:
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "concat":
        return data + draw(st.sampled_from(("", "\n", " "))).encode() + draw(st.sampled_from(others))
    if kind == "nul":
        at = draw(st.integers(0, len(data)))
        return data[:at] + b"\x00" + data[at:]
    return b""


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[str | bytes]) -> str | bytes:
    """A mutated copy of one of `seeds` (text JSON frames), as a text (`str`) or binary (`bytes`) frame."""
    seed = draw(st.sampled_from(seeds))
    raw = seed.encode() if isinstance(seed, str) else seed
    tree = json.loads(raw)
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(mutate_tree(tree))
    data = encode(tree)
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutate_bytes(data, [s.encode() if isinstance(s, str) else s for s in seeds]))
    if draw(st.booleans()):
        try:
            return data.decode("utf-8")  # a text frame: websockets delivers it decoded, so always valid UTF-8
        except UnicodeDecodeError:
            pass
    return data
