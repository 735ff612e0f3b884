"""Fuzzing the config loader: random and mutated YAML documents and FLOWGAUGE_* environments.

`load_settings` must return Settings or raise ConfigError whose problems are each one non-empty line (what
`check-config` and `run` print before exiting 2); any other exception would be a traceback for the user.
Documents are the built-in defaults mutated (wrong types, huge numbers, NaN strings, deep nesting, dropped and
unknown keys), YAML-specific text (anchors, tags, duplicate keys, tabs) and raw bytes (invalid UTF-8, NUL);
environments name real keys (every leaf of Settings), sections and unknown ones, with arbitrary values.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fuzz.mutations import NUMERIC_STRINGS, deep_nesting, mutate_bytes, mutate_tree
from tests.fuzz.profiles import examples

from flowgauge.config import ConfigError, Settings, builtin_config, load_settings


def _leaf_keys(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for field in msgspec.structs.fields(cls):
        typ = field.type
        if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
            out += _leaf_keys(typ, (*prefix, field.name))
        elif getattr(typ, "__origin__", None) is dict:
            for venue in ("bybit", "okx", "deribit", "binanceusdm", "hyperliquid", "kraken"):
                out += _leaf_keys(typ.__args__[1], (*prefix, field.name, venue))
        else:
            out.append((*prefix, field.name))
    return out


ENV_KEYS = ["FLOWGAUGE_" + "__".join(key).upper() for key in _leaf_keys(Settings)]
ENV_NAMES = st.one_of(
    st.sampled_from(ENV_KEYS),
    st.sampled_from(["FLOWGAUGE_VENUES", "FLOWGAUGE_BUS", "FLOWGAUGE_BUS__NATS__ENABLED", "FLOWGAUGE_", "FLOWGAUGE__"]),
    st.text(alphabet="ABCXYZ_", max_size=12).map(lambda s: "FLOWGAUGE_" + s),
)
ENV_VALUES = st.one_of(
    st.text(max_size=20).filter(lambda s: "\x00" not in s),
    st.sampled_from(NUMERIC_STRINGS),
    deep_nesting(),
    st.sampled_from(["[", "[a, b", "{a: 1}", "a: b", "!!python/object:os.system", "*x", "&a [1]", "- 1", "~", "0x1F"]),
)
YAML_TEXT = st.sampled_from(
    [
        "", "---", "...", "venues:", "venues: []", "venues: {bybit: {symbols: [x, x]}}", "a: &x 1\nb: *x", "*x",
        "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\n  bybit:\n    symbols: []",
        "!!python/object/apply:os.system ['true']", "http:\n\tport: 1", "? [a]\n: 1", "{[1]: 2}", "- - - 1",
        "publish: {min_interval_ms: .nan}", "shard: {count: .inf}", "bus: !!binary aGVsbG8=", "%YAML 9.9\n---\na: 1",
        "a: 1\n---\nb: 2", "log_level: !!timestamp 2001-12-14",
    ]
)  # fmt: skip

DEFAULTS = builtin_config("default")
_counter = itertools.count()


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(("mutated", "mutated", "mutated", "text", "bytes")))
    if kind == "text":
        return draw(YAML_TEXT).encode()
    tree = yaml.safe_load(yaml.safe_dump(DEFAULTS))
    for _ in range(draw(st.integers(1, 4))):
        tree = draw(mutate_tree(tree))
    try:
        text = yaml.safe_dump(tree, allow_unicode=True).encode()
    except yaml.YAMLError:
        text = str(tree).encode()
    if draw(st.integers(0, 4)) == 0:
        text = text.replace(b"null", draw(deep_nesting()).encode(), 1)
    if kind == "bytes":
        text = draw(mutate_bytes(text, [b"a: 1", b"\xff\xfe"]))
    return text


def check(path: Path | None, environ: dict[str, str]) -> None:
    try:
        loaded = load_settings(path, environ)
    except ConfigError as exc:
        assert exc.problems, "ConfigError without a problem"
        for problem in exc.problems:
            assert problem.strip() and "\n" not in problem and "\r" not in problem, repr(problem)
        return
    assert isinstance(loaded, Settings)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


@settings(max_examples=examples())
@given(document=documents(), environ=st.dictionaries(ENV_NAMES, ENV_VALUES, max_size=4))
def test_config_file_and_environment(workdir: Path, document: bytes, environ: dict[str, str]) -> None:
    path = workdir / f"cfg-{next(_counter)}.yaml"
    path.write_bytes(document)
    check(path, environ)


@settings(max_examples=examples())
@given(environ=st.dictionaries(ENV_NAMES, ENV_VALUES, min_size=1, max_size=6))
def test_environment_only(environ: dict[str, str]) -> None:
    check(None, environ)


# Found by the fuzzer: each ended in a traceback or a problem spread over two lines.
@pytest.mark.parametrize(
    ("document", "environ", "expected"),
    [
        (b"bus:\n  embedded:\n    token: " + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"\n", {}, "nested more than"),
        (b"http:\n  port: " + b"[" * 40 + b"]" * 40 + b"\n", {}, "nested more than"),
        (b"log_level: INFO\nhttp: {host: \xc0\xaf}\n", {}, "invalid YAML: unacceptable character"),
        (b"log_level: INFO\n", {"FLOWGAUGE_VENUES__BYBIT__SYMBOLS": "[" * 3000 + "]" * 3000}, "nested more than"),
        (b'bus:\n  nats:\n    credentials_file: "\\0raw"\n', {}, "not a usable file path"),
        (b"log_level: INFO\n", {"FLOWGAUGE_HTTP__TOKEN_FILE": "/tmp/a\nb"}, "not a usable file path"),
    ],
    ids=["deep-mapping-recursion", "deep-list", "invalid-utf8", "deep-env-list", "nul-in-secret-path",
         "line-break-in-secret-path"],
)
def test_regressions(workdir: Path, document: bytes, environ: dict[str, str], expected: str) -> None:
    path = workdir / "regression.yaml"
    path.write_bytes(document)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems
    check(path, environ)
