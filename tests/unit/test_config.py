"""Tests for flowgauge/config.py: files, the merge over the built-in defaults, environment overrides, and
"every problem reported at once"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flowgauge.config import (
    BUILTIN_CONFIGS,
    ConfigError,
    builtin_config,
    check_config_main,
    default_book_depth,
    load_settings,
    parse_settings,
    redacted,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "config" / "default.yaml"
OFFLINE_YAML = REPO / "config" / "offline-demo.yaml"
EXAMPLE_ENV = REPO / "config" / "example.env"
DEFAULT_CONFIG = builtin_config("default")


def _write(tmp_path: Path, text: str, name: str = "flowgauge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(data: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, environ)  # type: ignore[arg-type]
    return info.value.problems


# ------------------------------------------------------------------------------------------- files


def test_built_in_configs_are_the_files_in_config() -> None:
    """One source of truth: in a checkout the built-in configs are config/*.yaml themselves."""
    assert BUILTIN_CONFIGS == ("default", "offline-demo")
    assert builtin_config("default") == yaml.safe_load(DEFAULT_YAML.read_text(encoding="utf-8"))
    assert builtin_config("offline-demo") == yaml.safe_load(OFFLINE_YAML.read_text(encoding="utf-8"))


def test_default_settings_content() -> None:
    settings = load_settings(None, {})

    assert settings == load_settings(DEFAULT_YAML, {}) == parse_settings(DEFAULT_CONFIG)
    bybit = settings.venues["bybit"]
    assert list(settings.venues) == ["bybit", "binanceusdm", "okx", "deribit", "hyperliquid"]
    for venue in ("binanceusdm", "okx", "deribit", "hyperliquid"):
        assert len(settings.venues[venue].symbols) == 2  # BTC and ETH perpetuals on every venue
    assert bybit.symbols == ("BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT")
    assert bybit.ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert bybit.rest_url == "https://api.bybit.com"
    assert (settings.bus.embedded.host, settings.bus.embedded.port) == ("127.0.0.1", 8765)
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9464)


def test_struct_and_venue_defaults_match_default_yaml() -> None:
    """Omitted keys fall back to the struct defaults and the venue's URLs: they must equal default.yaml."""
    minimal = {
        "venues": {venue: {"symbols": list(body["symbols"])} for venue, body in DEFAULT_CONFIG["venues"].items()}
    }

    assert parse_settings(minimal) == load_settings(DEFAULT_YAML, {})


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\nbus:\nhttp:\nrecord:\n")

    settings = load_settings(path, {})

    assert settings.http.port == 9464
    assert settings.bus.embedded.enabled is True
    assert settings.record.dir is None


def test_offline_demo_loads() -> None:
    settings = load_settings(OFFLINE_YAML, {})

    bybit = settings.venues["bybit"]
    assert bybit.symbols == ("BTC/USDT:USDT", "ETH/USDT:USDT")
    assert bybit.ws_url == "ws://127.0.0.1:9780/v5/public/linear"
    assert bybit.rest_url == "http://127.0.0.1:9780"
    assert bybit.stale_after_s == 10
    assert settings.bus.embedded.port == 8765


def test_settings_are_frozen() -> None:
    settings = load_settings(None, {})

    with pytest.raises(AttributeError):
        settings.log_level = "DEBUG"  # type: ignore[misc]


def test_config_env_var_names_the_file_and_explicit_path_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, "venues:\n  bybit:\n    symbols: [XRP/USDT:USDT]\n")

    assert load_settings(None, {"FLOWGAUGE_CONFIG": str(path)}).venues["bybit"].symbols == ("XRP/USDT:USDT",)
    from_flag = load_settings(OFFLINE_YAML, {"FLOWGAUGE_CONFIG": str(path)})
    assert from_flag.venues["bybit"].symbols == ("BTC/USDT:USDT", "ETH/USDT:USDT")


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load_settings(missing, {})

    assert info.value.problems == [f"{missing}: file not found"]


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT\nhttp:\n  port: 1\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path, {})

    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4:")  # the scanner notices the unclosed list on line 4
    assert "invalid YAML" in problem


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\n  bybit:\n    symbols: [ETH/USDT:USDT]\n"
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_settings(path, {})

    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:4:")
    assert "duplicate key 'bybit'" in problem


def test_empty_file_means_the_defaults(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, ""), {}) == load_settings(None, {})


def test_explicitly_empty_venues_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "venues: {}\n")

    with pytest.raises(ConfigError) as info:
        load_settings(path, {})

    assert info.value.problems == ["venues: at least one venue with at least one symbol is required"]


# ------------------------------------------------------------------------------------------- merge over defaults


def test_a_file_that_sets_only_http_runs_the_default_venues(tmp_path: Path) -> None:
    path = _write(tmp_path, "http:\n  port: 1234\n")

    settings = load_settings(path, {})

    defaults = load_settings(None, {})
    assert settings.http.port == 1234
    assert settings.http.host == "127.0.0.1"  # the sibling key keeps its default
    assert settings.venues == defaults.venues
    assert (settings.bus, settings.publish, settings.record) == (defaults.bus, defaults.publish, defaults.record)


def test_nested_mappings_merge_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0k3n\n")
    text = f"bus:\n  embedded:\n    port: 0\n    token_file: {tmp_path / 'token'}\nrecord:\n  rotate_s: 60\n"
    path = _write(tmp_path, text)

    settings = load_settings(path, {})

    embedded = settings.bus.embedded
    assert (embedded.port, embedded.token) == (0, "t0k3n")
    assert (embedded.enabled, embedded.host, embedded.client_queue) == (True, "127.0.0.1", 10000)
    assert (settings.record.rotate_s, settings.record.rotate_mb, settings.record.dir) == (60, 64, None)


def test_listed_venues_are_the_ones_tracked_each_merged_over_its_defaults(tmp_path: Path) -> None:
    text = (
        "venues:\n"
        "  okx:\n    stale_after_s: 5\n"  # no symbols: the default okx symbols
        "  bybit:\n    symbols: [XRP/USDT:USDT]\n"  # a list replaces the default list
    )
    settings = load_settings(_write(tmp_path, text), {})

    defaults = load_settings(None, {})
    assert list(settings.venues) == ["okx", "bybit"]  # the file's venues, in its order; no others
    assert settings.venues["okx"].symbols == defaults.venues["okx"].symbols
    assert settings.venues["okx"].stale_after_s == 5
    assert settings.venues["okx"].ws_url == defaults.venues["okx"].ws_url
    assert settings.venues["bybit"].symbols == ("XRP/USDT:USDT",)
    assert settings.venues["bybit"].book_depth == 200


def test_a_partial_file_keeps_one_line_per_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "http:\n  prot: 1\nbus:\n  embedded:\n    port: x\nvenues:\n  okx:\n    book_depth: 5\n")

    code = check_config_main(str(path), False, {})

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "venues.okx.book_depth: must be one of 400 (got 5)",
        "bus.embedded.port: expected int, got str",
        "http.prot: unknown key",
    ]


def test_a_section_of_the_wrong_shape_is_still_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, "http: 9000\nvenues: [bybit]\n"), {})

    assert info.value.problems == [
        "venues: expected a mapping of ccxt exchange id -> venue settings, got list",
        "http: expected a mapping, got int",
    ]


def test_offline_demo_is_unchanged_by_the_merge() -> None:
    """It spells out every section, so the merge adds nothing the venue and struct defaults did not."""
    assert load_settings(OFFLINE_YAML, {}) == parse_settings(builtin_config("offline-demo"))


# ------------------------------------------------------------------------------------------- built-in names


def test_bare_names_select_the_built_in_configs() -> None:
    assert load_settings("offline-demo", {}) == load_settings(OFFLINE_YAML, {})
    assert load_settings("default", {}) == load_settings(None, {})
    assert load_settings(None, {"FLOWGAUGE_CONFIG": "offline-demo"}) == load_settings(OFFLINE_YAML, {})


def test_an_existing_file_wins_over_a_built_in_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "http:\n  port: 4321\n", name="default")
    monkeypatch.chdir(tmp_path)

    assert load_settings("default", {}).http.port == 4321


def test_unknown_bare_name_names_the_built_in_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main("offline-dmeo", False, {}) == 2

    assert capsys.readouterr().err.splitlines() == [
        "offline-dmeo: no such file, and not a built-in config (default, offline-demo)"
    ]


def test_replay_default_depths_are_the_default_configs() -> None:
    for venue, body in DEFAULT_CONFIG["venues"].items():
        assert default_book_depth(venue) == body["book_depth"], venue


# ------------------------------------------------------------------------------------------- environment


def test_env_overrides_int_list_nested_and_none(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\n"
        "record:\n  dir: /tmp/rec\n"
        "bus:\n  embedded:\n    port: 1\n",
    )
    environ = {
        "FLOWGAUGE_HTTP__PORT": "9000",
        "FLOWGAUGE_VENUES__BYBIT__SYMBOLS": "BTC/USDT:USDT, ETH/USDT:USDT",
        "FLOWGAUGE_VENUES__BYBIT__BACKOFF_INITIAL_S": "0.25",
        "FLOWGAUGE_BUS__EMBEDDED__PORT": "0",
        "FLOWGAUGE_BUS__EMBEDDED__ENABLED": "false",
        "FLOWGAUGE_RECORD__DIR": "null",
        "FLOWGAUGE_LOG_LEVEL": "debug",
        "FLOWGAUGE_TESTS_TIMEOUT_FACTOR": "3",  # a test-harness knob, not a settings key
        "PATH": "/usr/bin",  # unrelated variables are ignored
    }

    settings = load_settings(path, environ)

    assert settings.http.port == 9000
    assert settings.venues["bybit"].symbols == ("BTC/USDT:USDT", "ETH/USDT:USDT")
    assert settings.venues["bybit"].backoff_initial_s == 0.25
    assert settings.bus.embedded.port == 0  # env wins over the file's 1
    assert settings.bus.embedded.enabled is False
    assert settings.record.dir is None  # env null clears the file's value
    assert settings.log_level == "DEBUG"


def test_env_string_values_are_verbatim() -> None:
    """A token that YAML would read as an int or a mapping must arrive as the exact text."""
    for token in ("0123", "a: b", "[x]", "#hash"):
        settings = load_settings(None, {"FLOWGAUGE_BUS__EMBEDDED__TOKEN": token})
        assert settings.bus.embedded.token == token


def test_env_can_add_a_venue_section_missing_from_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "http:\n  port: 1234\n")

    settings = load_settings(path, {"FLOWGAUGE_VENUES__BYBIT__SYMBOLS": "[SOL/USDT:USDT]"})

    assert settings.venues["bybit"].symbols == ("SOL/USDT:USDT",)
    assert settings.venues["bybit"].ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert settings.http.port == 1234


def test_core_and_fuzz_profile_variables_are_not_settings_keys() -> None:
    """`FLOWGAUGE_CORE=python flowgauge run` must run the reference core, not fail as an unknown key."""
    settings = parse_settings(DEFAULT_CONFIG, {"FLOWGAUGE_CORE": "python", "FLOWGAUGE_FUZZ_PROFILE": "long"})

    assert settings.venues  # loaded: neither variable is taken for a key


def test_unknown_env_key_is_named() -> None:
    problems = _problems(DEFAULT_CONFIG, {"FLOWGAUGE_HTTP__PROT": "9000", "FLOWGAUGE_COLOUR": "red"})

    assert problems == [
        "colour: unknown key (set by FLOWGAUGE_COLOUR)",
        "http.prot: unknown key (set by FLOWGAUGE_HTTP__PROT)",
    ]


def test_env_naming_a_section_is_an_error() -> None:
    (problem,) = _problems(DEFAULT_CONFIG, {"FLOWGAUGE_BUS__EMBEDDED": "x"})

    assert problem.startswith("bus.embedded: names a section, not a key")
    assert "FLOWGAUGE_BUS__EMBEDDED" in problem


def test_bad_env_value_names_the_variable() -> None:
    (problem,) = _problems(DEFAULT_CONFIG, {"FLOWGAUGE_HTTP__PORT": "ninety"})

    assert problem == "http.port: expected int, got str (set by FLOWGAUGE_HTTP__PORT)"


def test_example_env_is_valid() -> None:
    environ = {}
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            environ[name] = value
    assert "FLOWGAUGE_VENUES__BYBIT__SYMBOLS" in environ

    settings = load_settings(None, environ)

    assert settings.bus.embedded.token == "change-me"
    assert len(settings.venues["bybit"].symbols) == 4


# ------------------------------------------------------------------------------------------- validation


def test_all_problems_are_reported_together() -> None:
    data = {
        "venues": {
            "bybit": {
                "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT", "BTCUSDT"],
                "book_depth": 25,
                "ping_interval_s": 0,
                "backoff_initial_s": 5,
                "backoff_max_s": 1,
                "subscribe_batch": 101,
            },
        },
        "bus": {"embedded": {"colour": "red", "port": 70000, "client_queue": 0}},
        "http": {"port": "9464"},
        "publish": {"min_interval_ms": -1},
        "log_level": "LOUD",
        "shutdown_timeout_s": 0,
    }

    problems = _problems(data)

    assert sorted(problems) == sorted([
        'venues.bybit.symbols[2]: "BTCUSDT" is not a ccxt unified symbol like BTC/USDT:USDT',
        "venues.bybit.book_depth: must be one of 1, 50, 200, 1000 (got 25)",
        "venues.bybit.ping_interval_s: must be a finite number > 0 (got 0)",
        "venues.bybit.backoff_max_s: must be >= backoff_initial_s (5) (got 1)",
        "venues.bybit.subscribe_batch: must be between 1 and 100 (got 101)",
        "bus.embedded.colour: unknown key",
        "bus.embedded.port: must be between 0 and 65535 (got 70000)",
        "bus.embedded.client_queue: must be >= 1 (got 0)",
        "http.port: expected int, got str",
        "publish.min_interval_ms: must be >= 0 (got -1)",
        "log_level: must be one of DEBUG, INFO, WARNING, ERROR (got 'LOUD')",
        "shutdown_timeout_s: must be a finite number > 0 (got 0)",
    ])


def test_config_error_message_lists_each_problem(tmp_path: Path) -> None:
    text = "venues:\n  bybit:\n    symbols: [BTC/USDT:USDT]\n    book_depth: 25\nhttp:\n  port: x\n"
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_settings(path, {})

    message = str(info.value)
    assert str(path) in message
    assert "  venues.bybit.book_depth: must be one of 1, 50, 200, 1000 (got 25)" in message
    assert "  http.port: expected int, got str" in message


def test_a_type_error_does_not_hide_a_sibling_range_error() -> None:
    data = {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"], "stale_after_s": "soon", "book_depth": 7}}}

    assert sorted(_problems(data)) == [
        "venues.bybit.book_depth: must be one of 1, 50, 200, 1000 (got 7)",
        "venues.bybit.stale_after_s: expected float, got str",
    ]


def test_unsupported_venue() -> None:
    data = {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}, "kraken": {"symbols": ["BTC/USD:BTC"]}}}

    assert _problems(data) == [
        "venues.kraken: venue kraken not supported yet; supported: bybit, binanceusdm, okx, deribit, hyperliquid"
    ]


def test_each_venue_gets_its_own_default_depth_and_urls() -> None:
    settings = parse_settings(
        {"venues": {"binanceusdm": {"symbols": ["BTC/USDT:USDT"]}, "hyperliquid": {"symbols": ["BTC/USDC:USDC"]}}}
    )
    assert settings.venues["binanceusdm"].book_depth == 1000
    assert settings.venues["binanceusdm"].rest_url == "https://fapi.binance.com"
    assert settings.venues["hyperliquid"].book_depth == 20
    assert _problems({"venues": {"okx": {"symbols": ["BTC/USDT:USDT"], "book_depth": 200}}}) == [
        "venues.okx.book_depth: must be one of 400 (got 200)"
    ]


def test_bad_symbols() -> None:
    symbols = ["BTC/USDT:USDT", "BTC/USDT", "ETH/USDT:USDT", "BTC/USDT:USDT", 5, "BTC/USD:BTC-251399"]

    problems = _problems({"venues": {"bybit": {"symbols": symbols}}})

    assert problems == ["venues.bybit.symbols[4]: expected str, got int"]  # types first; shape needs strs

    del symbols[4]
    problems = _problems({"venues": {"bybit": {"symbols": symbols}}})
    assert problems == [
        'venues.bybit.symbols[1]: "BTC/USDT": spot markets are not supported'
        " (perpetuals and dated futures only, like BTC/USDT:USDT)",
        'venues.bybit.symbols[3]: "BTC/USDT:USDT" duplicates symbols[0]',
        'venues.bybit.symbols[4]: "BTC/USD:BTC-251399" is not a ccxt unified symbol like BTC/USDT:USDT',
    ]


def test_spot_symbols_are_named_as_such() -> None:
    problems = _problems({"venues": {"deribit": {"symbols": ["BTC/USD:BTC", "ETH/USDC", "ETH-USDC"]}}})

    assert problems == [
        'venues.deribit.symbols[1]: "ETH/USDC": spot markets are not supported'
        " (perpetuals and dated futures only, like BTC/USDT:USDT)",
        'venues.deribit.symbols[2]: "ETH-USDC" is not a ccxt unified symbol like BTC/USDT:USDT',
    ]


def test_dated_future_and_numeric_base_symbols_are_accepted() -> None:
    symbols = ["BTC/USD:BTC-251226", "1000PEPE/USDT:USDT"]

    settings = parse_settings({"venues": {"bybit": {"symbols": symbols}}})

    assert settings.venues["bybit"].symbols == tuple(symbols)


def test_venue_needs_symbols_and_valid_urls() -> None:
    assert _problems({"venues": {"bybit": {}}}) == ["venues.bybit.symbols: required"]
    assert _problems({"venues": {"bybit": {"symbols": []}}}) == [
        "venues.bybit.symbols: at least one symbol is required"
    ]
    assert _problems({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"], "ws_url": "https://x"}}}) == [
        "venues.bybit.ws_url: must be a ws:// or wss:// URL (got 'https://x')"
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert _problems(["venues"]) == ["<top level>: expected a mapping, got list"]


# ------------------------------------------------------------------------------------------- CLI support


def test_redacted_hides_the_token_only() -> None:
    settings = load_settings(None, {"FLOWGAUGE_BUS__EMBEDDED__TOKEN": "s3cret"})
    assert settings.bus.embedded.token == "s3cret"

    data = redacted(settings)

    assert data["bus"]["embedded"]["token"] == "***"
    assert "s3cret" not in repr(data)
    assert data["venues"]["bybit"]["symbols"] == ["BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"]
    assert redacted(load_settings(None, {}))["bus"]["embedded"]["token"] is None


def test_check_config_ok_and_print(capsys: pytest.CaptureFixture[str]) -> None:
    code = check_config_main(str(DEFAULT_YAML), True, {"FLOWGAUGE_BUS__EMBEDDED__TOKEN": "s3cret"})

    out = capsys.readouterr().out
    assert code == 0
    first, _, rest = out.partition("\n")
    assert first == "config OK: 5 venues, 11 symbols"
    printed = yaml.safe_load(rest)
    assert printed["bus"]["embedded"]["token"] == "***"
    assert "s3cret" not in out
    # The printed config, secrets aside (they come from the environment), loads to the same settings.
    printed["bus"]["embedded"]["token"] = None
    environ = {"FLOWGAUGE_BUS__EMBEDDED__TOKEN": "s3cret"}
    assert parse_settings(printed, environ) == load_settings(DEFAULT_YAML, environ)


def test_check_config_reports_problems_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "venues:\n  kraken: {symbols: [BTC/USD:BTC]}\nhttp:\n  port: -1\n")

    code = check_config_main(str(path), False, {})

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "venues.kraken: venue kraken not supported yet; supported: bybit, binanceusdm, okx, deribit, hyperliquid",
        "http.port: must be between 0 and 65535 (got -1)",
    ]



def test_urls_that_cannot_be_parsed_are_reported_not_raised() -> None:
    problems = _problems(
        {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"], "ws_url": "wss://[::1", "rest_url": "https://h:abc/"}}}
    )
    assert len(problems) == 2
    assert problems[0].startswith("venues.bybit.ws_url: not a valid URL")
    assert problems[1].startswith("venues.bybit.rest_url: not a valid URL")


# ------------------------------------------------------------------------------------------- conflation


def test_conflation_keys_default_and_accept_an_unquoted_off(tmp_path: Path) -> None:
    assert load_settings(None, {}).publish.conflate == "auto"
    assert load_settings(None, {}).publish.conflate_after_ms == 50.0
    # YAML reads a bare `off` as false: it still means off
    path = _write(tmp_path, "publish:\n  conflate: off\n  conflate_after_ms: 5\n")
    publish = load_settings(path, {}).publish
    assert (publish.conflate, publish.conflate_after_ms) == ("off", 5.0)
    assert load_settings(None, {"FLOWGAUGE_PUBLISH__CONFLATE": "off"}).publish.conflate == "off"


def test_bad_conflation_keys_are_each_reported() -> None:
    problems = _problems(
        DEFAULT_CONFIG,
        {"FLOWGAUGE_PUBLISH__CONFLATE": "sometimes", "FLOWGAUGE_PUBLISH__CONFLATE_AFTER_MS": "0"},
    )
    assert sorted(problems) == [
        "publish.conflate: must be auto or off (got 'sometimes') (set by FLOWGAUGE_PUBLISH__CONFLATE)",
        "publish.conflate_after_ms: must be a finite number > 0 (got 0) (set by FLOWGAUGE_PUBLISH__CONFLATE_AFTER_MS)",
    ]
    (problem,) = _problems({**DEFAULT_CONFIG, "publish": {"conflate": True}})
    assert problem == "publish.conflate: must be auto or off (got True)"
