"""Typed configuration: one YAML file plus `FLOWGAUGE_*` environment overrides -> a frozen `Settings`.

Sits beside the pipeline, not in it: `cli` calls `load_settings` once at startup and `app` hands the
resulting structs to each component. This module must not read `os.environ` itself (the caller passes the
environment, so tests pass a dict), must not open sockets, and must not import anything from `flowgauge`
above `types`. Apart from reading the config files it is pure.

Precedence, lowest first: the built-in defaults (`config/default.yaml`, the only copy of them: a wheel ships
it as `flowgauge/config_files/default.yaml`), the YAML file merged over them, then the environment. The
merge: mappings merge key by key, lists and scalars replace, a section left empty keeps its defaults, and
`venues` names the venues to track (a file that lists only okx tracks only okx; each venue it lists is
merged over that venue's defaults). A file that sets only `http:` therefore runs the default venues.
`-c NAME` with a bare name (no `.yaml`, not an existing file) names a built-in config: `default` or
`offline-demo`. `FLOWGAUGE_A__B__C=value` sets key `a.b.c`: a double underscore nests, names
are lower-cased, values are parsed as YAML scalars (`9000` is an int, `null` is None), list keys take a
comma-separated list, and string keys take the text verbatim so that tokens survive unharmed.

Secrets (`bus.embedded.token`, `http.token`, `bus.nats.password`, `bus.nats.token`, `bus.redis.password`, and a
password or token inside `bus.nats.url` / `bus.redis.url`) come from the environment or from a file, never from a
config file: each secret key has a `<key>_file` sibling naming a file that holds the secret alone, read here at
load time (trailing newline stripped); a secret or a URL holding one written in the config file is a problem
naming both ways. `redacted` and `secret_values` keep them out of what is printed and logged.

Validation never stops at the first problem: every problem in the file and the environment is collected
into one `ConfigError`, each as `<dotted.key>: <why>`, so an operator fixes them all in one round.
"""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import ipaddress
import json
import math
import os
import re
import stat
import sys
import types
import typing
import zlib
from collections.abc import Callable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

import msgspec
import yaml

__all__ = [
    "BUILTIN_CONFIGS",
    "ENV_CONFIG_FILE",
    "ENV_PREFIX",
    "LOG_LEVELS",
    "SUPPORTED_VENUES",
    "BusSettings",
    "ConfigError",
    "EmbeddedBusSettings",
    "HttpSettings",
    "MetricsSettings",
    "NatsBusSettings",
    "PublishSettings",
    "RecordSettings",
    "RedisBusSettings",
    "Settings",
    "ShardSettings",
    "VenueSettings",
    "builtin_config",
    "check_config_main",
    "default_book_depth",
    "env_name",
    "load_settings",
    "parse_settings",
    "redact_url",
    "redacted",
    "secret_values",
    "shard_of",
    "shard_venues",
    "url_has_secret",
]

ENV_PREFIX: Final = "FLOWGAUGE_"
"""Every environment variable that configures flowgauge starts with this."""

ENV_CONFIG_FILE: Final = "FLOWGAUGE_CONFIG"
"""Names the YAML file when no path is given explicitly. Not a settings key."""

# Keys that existed once: naming one (in the file or the environment) is a problem that says what replaced it.
_RETIRED_KEYS: Final = {
    "bus.nats.enabled": "no longer a key: NATS publishing is on exactly when bus.nats.url is set (remove it; "
                        "url null or unset = off)",
    "bus.redis.enabled": "no longer a key: Redis publishing is on exactly when bus.redis.url is set (remove it; "
                         "url null or unset = off)",
}

# FLOWGAUGE_* names that are not settings keys and must not be rejected as unknown ones.
# FLOWGAUGE_CORE picks the hot core (cli.py) and FLOWGAUGE_FUZZ_PROFILE the fuzz profile (tests/fuzz): both reach
# daemons started under them, which must not refuse them as unknown settings keys.
_ENV_RESERVED: Final = frozenset({ENV_CONFIG_FILE, "FLOWGAUGE_CORE", "FLOWGAUGE_FUZZ_PROFILE"})
_ENV_RESERVED_PREFIXES: Final = ("FLOWGAUGE_TESTS_",)  # test-harness knobs (FLOWGAUGE_TESTS_TIMEOUT_FACTOR)

BUILTIN_CONFIGS: Final = ("default", "offline-demo")
"""Configs that ship with flowgauge (`config/<name>.yaml`); `-c <name>` names one."""

# Where a built wheel carries config/*.yaml inside the package (setup.py's build_py copies them there).
_PACKAGED_CONFIG_DIR: Final = "config_files"

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
REDACTED: Final = "***"


class _VenueFacts(NamedTuple):
    ws_url: str  # default public websocket endpoint for the instruments we track
    rest_url: str  # default REST base URL (snapshots, instrument metadata)
    book_depths: tuple[int, ...]  # order-book depths the venue accepts (stream depth or REST snapshot limit)
    default_depth: int


_VENUES: Final[dict[str, _VenueFacts]] = {
    # https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook (linear: 1, 50, 200, 1000)
    "bybit": _VenueFacts(
        ws_url="wss://stream.bybit.com/v5/public/linear",
        rest_url="https://api.bybit.com",
        book_depths=(1, 50, 200, 1000),
        default_depth=200,
    ),
    # Diff-depth stream plus a REST snapshot whose `limit` is this depth; the base URL's routed
    # /public and /market paths are derived by the connector.
    "binanceusdm": _VenueFacts(
        ws_url="wss://fstream.binance.com",
        rest_url="https://fapi.binance.com",
        book_depths=(5, 10, 20, 50, 100, 500, 1000),
        default_depth=1000,
    ),
    # `books` (400 levels, with seqId/prevSeqId and the REST bootstrap).
    "okx": _VenueFacts(
        ws_url="wss://ws.okx.com:8443/ws/v5/public",
        rest_url="https://www.okx.com",
        book_depths=(400,),
        default_depth=400,
    ),
    # `book.<instrument>.100ms` is the full book; the depth setting is not a stream parameter.
    "deribit": _VenueFacts(
        ws_url="wss://www.deribit.com/ws/api/v2",
        rest_url="https://www.deribit.com",
        book_depths=(1000,),
        default_depth=1000,
    ),
    # `l2Book` pushes at most 20 levels per side.
    "hyperliquid": _VenueFacts(
        ws_url="wss://api.hyperliquid.xyz/ws",
        rest_url="https://api.hyperliquid.xyz",
        book_depths=(20,),
        default_depth=20,
    ),
}

SUPPORTED_VENUES: Final = tuple(_VENUES)
"""ccxt exchange ids that have a connector. Any other key under `venues` is a config error."""


def default_book_depth(venue: str) -> int:
    """The book depth a venue gets when its config does not set one (1000 for an unknown venue)."""
    facts = _VENUES.get(venue)
    return facts.default_depth if facts is not None else 1000


# --------------------------------------------------------------------------------------------- schema


class VenueSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One venue's connection and subscription settings (the key under `venues` is its ccxt id)."""

    symbols: tuple[str, ...]  # ccxt unified symbols, e.g. "BTC/USDT:USDT"; unique, at least one
    ws_url: str  # public websocket endpoint; the loader fills the venue's default
    rest_url: str  # REST base URL; the loader fills the venue's default
    book_depth: int = 200  # levels per side requested from the venue stream
    subscribe_batch: int = 10  # topics per subscribe request
    ping_interval_s: float = 20.0  # application-level ping period
    stale_after_s: float = 30.0  # no frame for this long on a connection => reconnect
    connect_timeout_s: float = 10.0  # TCP + TLS + websocket handshake deadline
    backoff_initial_s: float = 0.5  # first reconnect delay (jittered)
    backoff_max_s: float = 30.0  # reconnect delay cap
    # |ts_recv - ts_exchange| (a robust estimate over recent frames) beyond this flags the venue's payloads CLOCK_SKEW
    clock_skew_max_s: float = 2.0
    # Instrument metadata is loaded again this often to notice expired and delisted instruments (their books retire)
    markets_refresh_s: float = 600.0
    # Subscribe the venue's best-quote stream (Binance @bookTicker, Bybit orderbook.1, OKX bbo-tbt, Deribit quote) for
    # the L1 OFI fields; false, or a venue without one here (Hyperliquid), derives them from the book's top
    best_quote: bool = True


class EmbeddedBusSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The in-process websocket fan-out that strategies subscribe to."""

    enabled: bool = True
    host: str = "127.0.0.1"  # listen address
    port: int = 8765  # listen port; 0 = ephemeral (tests)
    # Bearer token clients must present. A secret: from FLOWGAUGE_BUS__EMBEDDED__TOKEN or token_file only (the
    # loader refuses it written in a config file); redacted when printed.
    token: str | None = None
    token_file: str | None = None  # file holding the token (read at start, trailing newline stripped)
    allow_unauthenticated: bool = False  # needed to listen beyond loopback without a token
    client_queue: int = 10000  # per-client queue bound (payloads) before the slow-client policy applies
    client_queue_bytes: int = 8388608  # a client whose queue holds more bytes than this is disconnected (slow)
    client_max_lag_s: float = 10.0  # a client whose oldest queued payload is older than this is disconnected
    max_clients: int = 1024  # websocket connections beyond which upgrades are refused (503, counted)


class NatsBusSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Publishing to NATS (bus.nats): core publish on the topic names, optionally JetStream state and history
    streams. On exactly when `url` is set."""

    # nats:// or tls://; comma-separated for a cluster; None = off. Credentials in it only when the URL comes from
    # FLOWGAUGE_BUS__NATS__URL (a config file's URL holding one is refused).
    url: str | None = None
    user: str | None = None  # user name of user/password authentication (not a secret)
    password: str | None = None  # a secret: FLOWGAUGE_BUS__NATS__PASSWORD or password_file only
    password_file: str | None = None  # file holding the password (read at start, trailing newline stripped)
    token: str | None = None  # token authentication; a secret: FLOWGAUGE_BUS__NATS__TOKEN or token_file only
    token_file: str | None = None  # file holding the token
    credentials_file: str | None = None  # NATS .creds file (user JWT + NKey seed), read by nats-py at each connect
    queue_size: int = 10000  # outbox bound (payloads); beyond it the oldest is dropped and counted
    pending_bytes: int = 8388608  # nats-py's own buffer bound while reconnecting (its pending_size), bytes
    reconnect_wait_s: float = 1.0  # pause between reconnect attempts to one server
    connect_timeout_s: float = 2.0  # deadline of one connection attempt
    jetstream: bool = False  # also keep the JetStream state stream (current value of every subject)
    stream: str = "FLOWGAUGE_STATE"  # name of the state stream
    duplicate_window_s: float = 120.0  # the streams' Nats-Msg-Id de-duplication window
    history: bool = False  # also keep the JetStream history stream (recent updates, for replay); needs jetstream
    history_stream: str = "FLOWGAUGE_HISTORY"  # its name
    history_max_age_s: float = 3600.0  # updates older than this are discarded from it
    history_max_bytes: int = 1073741824  # beyond this size its oldest updates are discarded
    replica: bool = False  # another daemon publishes the same instruments to the same JetStream (active-active)

    @property
    def enabled(self) -> bool:
        """NATS publishing is on: a URL is set."""
        return self.url is not None


class RedisBusSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Publishing to Redis (bus.redis): PUBLISH on the topic names, last values, optional streams. On exactly when
    `url` is set."""

    # redis:// or rediss://; None = off. A password in it only when the URL comes from FLOWGAUGE_BUS__REDIS__URL
    # (a config file's URL holding one is refused); a user name in it is fine.
    url: str | None = None
    password: str | None = None  # a secret: FLOWGAUGE_BUS__REDIS__PASSWORD or password_file only
    password_file: str | None = None  # file holding the password (read at start, trailing newline stripped)
    queue_size: int = 10000  # outbox bound (payloads); beyond it the oldest is dropped and counted
    connect_timeout_s: float = 2.0  # deadline of one connection attempt (and of one command batch)
    reconnect_max_s: float = 5.0  # cap of the retry delay while Redis is unreachable
    last_key_prefix: str = "flowgauge:last:"  # the last value of topic T is the string key <prefix>T
    last_ttl_s: float = 30.0  # TTL of a last-value key, refreshed while the daemon runs
    streams: bool = False  # also XADD every payload to the stream key <stream_key_prefix>T
    stream_key_prefix: str = "flowgauge:stream:"
    stream_maxlen: int = 10000  # approximate MAXLEN (~) of each stream

    @property
    def enabled(self) -> bool:
        """Redis publishing is on: a URL is set."""
        return self.url is not None


class BusSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Pub/sub backends; several may run at once."""

    embedded: EmbeddedBusSettings = msgspec.field(default_factory=EmbeddedBusSettings)
    nats: NatsBusSettings = msgspec.field(default_factory=NatsBusSettings)
    redis: RedisBusSettings = msgspec.field(default_factory=RedisBusSettings)


class HttpSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The HTTP server for /metrics, /healthz, /readyz and /status."""

    host: str = "127.0.0.1"
    port: int = 9464  # 0 = ephemeral (tests)
    # Bearer token for /metrics and /status (/healthz, /readyz stay open). A secret: FLOWGAUGE_HTTP__TOKEN or
    # token_file only; redacted when printed.
    token: str | None = None
    token_file: str | None = None  # file holding the token (read at start, trailing newline stripped)
    allow_unauthenticated: bool = False  # needed to listen beyond loopback without a token
    # Metric families whose headline gauges /metrics exports (README "Observability"; telemetry.family_gauges):
    # "all" = every one, [] = none; a family is exported only if publish.families publishes it. Core's are always.
    metrics_families: tuple[str, ...] = ("ofi_l1", "microprice", "risk")


CONFLATE_MODES: Final = ("auto", "off")

# The metric families (metrics.families.FAMILIES, in that order; a unit test holds the two equal: this module
# imports nothing above types) and the ones published when `publish.families` is not set.
METRIC_FAMILIES: Final = (
    "core", "ofi_l1", "ofi_ext", "mlofi", "depth_ext", "microprice", "trade_flow", "positioning", "fragility", "ew",
    "risk",
)  # fmt: skip
DEFAULT_METRIC_FAMILIES: Final = ("core", "ofi_l1", "microprice", "risk")


class AggregateSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Cross-venue aggregates on flowgauge.v1.agg.<BASE> (publish.aggregates; metrics.aggregate)."""

    enabled: bool = True  # false: no aggregates are built or published
    interval_ms: float = 1000.0  # one aggregate per base per this much exchange time (while its venues publish)
    stale_s: float = 5.0  # a venue whose latest payload is older than this at the aggregate's time is excluded
    min_venues: int = 2  # a base is aggregated only while its perpetuals span at least this many venues


class BarSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Clock bars on flowgauge.v1.bars.<venue>.<slug> (publish.bars; metrics.bar_feed)."""

    enabled: bool = True  # false: no bars are built or published
    interval_s: float = 1.0  # bar length, exchange time; bars align to UTC epoch multiples of it
    # Live only: a bar no event closed is closed by a timer this long after its end (exchange time, by the venue's
    # clock offset), so late events can still land in it. Replay closes bars on events only (deterministic).
    close_delay_ms: float = 2000.0
    z_half_life_s: float = 86400.0  # EW statistics of the bars' z-scores (ofi_z, ret_z, spread_z)
    z_min_samples: int = 30  # bars before a z-score is published (>= 2)


class PublishSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    min_interval_ms: int = 0  # per-instrument throttle of book-triggered payloads; 0 = every event
    # Backlog conflation: "auto" sheds book payloads when frames wait longer than conflate_after_ms, "off"
    # never. `bool` only because YAML reads an unquoted `off` as false; validation stores "off" then.
    conflate: str | bool = "auto"
    conflate_after_ms: float = 50.0  # a frame handled this long after it arrived means the loop is behind
    heartbeat_s: float = 5.0  # period of the per-book status heartbeat; 0 = off
    # Also publish every normalized trade and liquidation on flowgauge.v1.trades.<venue>.<slug> (off: the
    # metrics only). Trades can outnumber book messages; they share the publishers' bounded queues.
    trades: bool = False
    # Metric families in every metrics payload (README "Metric families"); "all" = every one; core is always in.
    families: tuple[str, ...] = DEFAULT_METRIC_FAMILIES
    aggregates: AggregateSettings = msgspec.field(default_factory=AggregateSettings)
    bars: BarSettings = msgspec.field(default_factory=BarSettings)


# Parameters of the metric families (config `metrics`). The same fields and defaults as metrics.params (a unit
# test holds them equal; app converts one into the other): metrics.md section 9's defaults.


class OfiExtSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    depth_half_life_s: float = 1800.0  # H_AD of AD_ew, the time-weighted EW mean of the L1 depth
    cks_window_s: float = 1800.0  # CKS regression window W over 1 s / 10 s / 60 s clock bars (EW, H = W ln 2)
    z_half_life_s: float = 86400.0  # ofi_z_T: half-life of the EW mean / variance of the T-long bars
    z_min_samples: int = 30  # ofi_z_T: bars before a z-score is published (>= 2)


class MlofiSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    levels: int = 10  # M, levels per side, 1..50
    min_depth: float = 1e-9  # floor of the common denominator Q^{M,h} (base units), FLOORED_DENOM when hit


class IntegratedOfiSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    weights: tuple[float, ...] = ()  # M weights (an offline PC1 fit); empty = equal weights (the simple average)


class DepthExtSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    level_decay: float = 3.0  # kappa of the level weights exp(-(m-1)/kappa)
    distance_scale_bps: float = 10.0  # l of the distance weights exp(-d/l)


class MicropriceSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    imbalance_buckets: int = 10  # n_imb
    max_spread_ticks: int = 4  # n_spread: wider spreads publish micro_price null
    iterations: int = 6  # terms of G*
    sample_ms: int = 1000  # state sampling clock (exchange time)
    min_samples: int = 3600  # transitions before the first fit
    refit_s: float = 86400.0  # refit period
    memory_days: float = 7.0  # half-life of the transition counts


class FragilitySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    slope_levels: int = 10  # L, levels per side in book_slope_* (1..1000)
    resiliency_half_life_s: float = 3600.0  # EW mean of ln depth_total_10bps and its AR(1) regression


class EwSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    z_half_life_s: float = 86400.0  # EW mean/variance behind spread_z, depth_z, fragility_index (24 h)
    z_min_samples: int = 30  # 1-second samples before a z-score is published (>= 2)


class RiskSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """risk_scale / hedge_urgency penalties: weight * max(0, (x - threshold) / scale) (docs/metrics.md)."""

    vol_half_life_s: float = 41.58883083359672  # vol_1m: EW of squared 1 s returns, 60 s ln 2
    vol_ref_half_life_s: float = 3600.0  # vol_1m's long-run level, the reference of hedge_urgency's vol ratio
    vol_min_samples: int = 10  # 1-second returns before vol_1m is published
    toxicity_threshold: float = 0.4  # flow_toxicity
    toxicity_scale: float = 0.2
    toxicity_weight: float = 1.0
    stress_threshold: float = 1.0  # ofi_stress_10s: the 10 s net flow equals all the depth within 10 bps
    stress_scale: float = 1.0
    stress_weight: float = 1.0
    fragility_threshold: float = 0.25  # fragility_index
    fragility_scale: float = 0.25
    fragility_weight: float = 1.0
    oi_threshold: float = 0.2  # |oi_buildup_score_5m|
    oi_scale: float = 0.2
    oi_weight: float = 1.0
    vol_threshold: float = 1.5  # vol_1m / its long-run level
    vol_scale: float = 1.0
    vol_weight: float = 1.0
    floor: float = 0.05  # risk_scale's lower bound, in (0, 1]


class ToxicitySettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """flow_toxicity* (metrics.md 5.2; metrics.flow_params.ToxicityParams)."""

    buckets_per_day: int = 50  # n_day: bucket volume V = ADV / n_day
    window_buckets: int = 50  # n: buckets averaged
    adv_days: int = 7  # ADV = mean of this many rolling-24 h volumes, taken at 00:00 UTC
    bootstrap_daily_notional: float = 1e9  # quote; the daily volume assumed until 24 h have been observed
    bvc_bar_s: int = 60  # BVC time bars
    bvc_sigma_half_life_s: float = 86400.0  # EW std of the bar price changes
    cdf_days: float = 30.0  # flow_toxicity_cdf against the trailing cdf_days
    cdf_min_values: int = 50  # flow_toxicity_cdf null until this many bucket values


class KyleSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """kyle_* (metrics.md 5.3; metrics.flow_params.KyleParams)."""

    bar_s: int = 60
    half_life_s: float = 1800.0
    min_bars: int = 10


class TradeFlowSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Family trade_flow (metrics.md 5; metrics.flow_params.TradeFlowParams)."""

    include_forced: bool = False  # forced prints in tfi_*, flow_toxicity*, kyle_* (5.1: off)
    depth_half_life_s: float = 1800.0  # H_AD of the L1 depth behind ti_depthnorm_T
    toxicity: ToxicitySettings = msgspec.field(default_factory=ToxicitySettings)
    kyle: KyleSettings = msgspec.field(default_factory=KyleSettings)


class PositioningSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Family positioning (metrics.md 6; metrics.flow_params.PositioningParams)."""

    rho_min: float = 0.05  # regime threshold on oi_open_ratio, in [0, 1)
    d_min: float = 0.05  # regime threshold on the taker imbalance, in [0, 1)
    regime_confirm_windows: int = 2  # consecutive windows a new regime must hold (>= 1)
    liquidation_share: float = 0.2  # LONG_LIQUIDATION above this liquidated-long share of volume, in [0, 1]
    consistency_tolerance: float = 0.02  # OI_INCONSISTENT above |dOI| / V = 1 + tol (>= 0)
    funding_base_8h: float = 0.0001  # F_base per 8 h (any sign)
    funding_scale: float = 0.0005  # F_scale (> 0)
    funding_z_half_life_s: float = 604800.0  # 7 d
    ls_z_half_life_s: float = 2592000.0  # 30 d
    oi_price_corr_half_life_s: float = 14400.0  # oi_price_corr_4h EW half-life (4 h)
    z_min_weight: float = 0.95  # z-scores null below this EW weight, in (0, 1)
    sampled_liquidation_venues: tuple[str, ...] = ("binanceusdm",)  # liq_* carry SAMPLED_INPUT there


class MetricsSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Parameters of the metric families; a parameter never changes which fields exist."""

    ofi_ext: OfiExtSettings = msgspec.field(default_factory=OfiExtSettings)
    mlofi: MlofiSettings = msgspec.field(default_factory=MlofiSettings)
    integrated_ofi: IntegratedOfiSettings = msgspec.field(default_factory=IntegratedOfiSettings)
    depth_ext: DepthExtSettings = msgspec.field(default_factory=DepthExtSettings)
    microprice: MicropriceSettings = msgspec.field(default_factory=MicropriceSettings)
    fragility: FragilitySettings = msgspec.field(default_factory=FragilitySettings)
    ew: EwSettings = msgspec.field(default_factory=EwSettings)
    risk: RiskSettings = msgspec.field(default_factory=RiskSettings)
    trade_flow: TradeFlowSettings = msgspec.field(default_factory=TradeFlowSettings)
    positioning: PositioningSettings = msgspec.field(default_factory=PositioningSettings)


class ShardSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """This process's share of the configured instruments: those with `shard_of(venue, symbol, count) == index`."""

    index: int = 0  # 0 <= index < count; e.g. a StatefulSet pod's ordinal
    count: int = 1  # processes sharing the configured instruments; 1 = this one runs them all


class RecordSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    dir: str | None = None  # when set, raw frames are recorded under this directory
    rotate_mb: float = 64.0  # start a new file after this many MiB (compressed)
    rotate_s: float = 3600.0  # ... or after this many seconds, whichever comes first


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Everything the daemon reads from configuration. Build it with `load_settings` or `parse_settings`,
    which validate; constructing it directly skips validation (fine in tests, never in the daemon)."""

    venues: dict[str, VenueSettings] = msgspec.field(default_factory=dict)  # ccxt id -> settings
    bus: BusSettings = msgspec.field(default_factory=BusSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    publish: PublishSettings = msgspec.field(default_factory=PublishSettings)
    shard: ShardSettings = msgspec.field(default_factory=ShardSettings)
    record: RecordSettings = msgspec.field(default_factory=RecordSettings)
    log_level: str = "INFO"  # one of LOG_LEVELS; accepted in any case, stored upper-case
    shutdown_timeout_s: float = 5.0  # graceful-stop deadline; orchestrator grace periods must exceed it
    book_max_levels: int = 5000  # levels kept per book side, both cores; beyond it the worst is dropped, counted
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)  # the families' parameters


class ConfigError(ValueError):
    """The configuration is unusable. `problems` lists every problem found, each `<dotted.key>: <why>`
    (file-level problems such as YAML syntax errors read `<file>:<line>:<column>: <why>`)."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:  # one line: what a container log or a terminal shows best
            super().__init__(f"invalid configuration{where}: {self.problems[0]}")
            return
        count = f"{len(self.problems)} problems"
        super().__init__(f"invalid configuration{where} ({count}):\n" + "\n".join(
            f"  {p}" for p in self.problems
        ))


# --------------------------------------------------------------------------------------------- loading


def load_settings(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Load the YAML file merged over the built-in defaults, apply `FLOWGAUGE_*` overrides from `environ`,
    validate, and return `Settings`.

    Args:
        path: The YAML file, or the bare name of a built-in config (`default`, `offline-demo`) when no
            file of that name exists. When None, `environ["FLOWGAUGE_CONFIG"]` names it; when that is unset
            too, the built-in defaults are used as they are.
        environ: The process environment (pass `os.environ`) or, in tests, a plain dict.

    Returns:
        Validated, frozen settings.

    Raises:
        ConfigError: The file is missing or not valid YAML, or the merged configuration has problems; all
            of the latter are reported together.
    """
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = environ[ENV_CONFIG_FILE]
    defaults_file = _builtin_config_file("default")
    defaults = _read_yaml(defaults_file)
    if path is None:
        return _settings_from(defaults, environ, str(defaults_file))
    file = _resolve_config(path)
    return _settings_from(_over_defaults(_read_yaml(file), defaults), environ, str(file))


def parse_settings(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Validate an already-parsed configuration mapping (the YAML document as a dict).

    The same checks as `load_settings`, without a file and without the merge over the built-in defaults:
    `data` must be complete (at least `venues`). Meant for tests and embedding.

    Raises:
        ConfigError: With every problem found.
    """
    return _settings_from(data, environ or {}, None)


def builtin_config(name: str) -> Any:
    """The parsed YAML of a built-in config (one of BUILTIN_CONFIGS), e.g. the defaults as a dict."""
    return _read_yaml(_builtin_config_file(name))


def _settings_from(data: Any, environ: Mapping[str, str], source: str | None) -> Settings:
    problems: list[tuple[str, str]] = []
    merged, origins = _apply_env(data, environ, problems)
    _shard_index_from_hostname(merged, environ, origins, problems)
    _resolve_secrets(merged, origins, problems)
    settings = _build(Settings, merged, "", problems)
    if problems or not isinstance(settings, Settings):
        raise ConfigError([_format(key, why, origins) for key, why in problems], source)
    return settings


def _resolve_config(path: str | Path) -> Path | Traversable:
    """The file `-c` names: an existing file, else a built-in config's bare name, else the path as given
    (whose reading then reports it missing)."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    name = str(path)
    if candidate.name == name and not name.endswith((".yaml", ".yml")):  # a bare name, no directory part
        if name not in BUILTIN_CONFIGS:
            known = ", ".join(BUILTIN_CONFIGS)
            raise ConfigError([f"{name}: no such file, and not a built-in config ({known})"], name)
        return _builtin_config_file(name)
    return candidate


def _builtin_config_file(name: str) -> Path | Traversable:
    """`config/<name>.yaml`: the checkout's when this module runs from one (an editable install, so an
    edit there takes effect without a rebuild), else the copy the wheel ships inside the package."""
    root = Path(__file__).resolve().parents[2]
    # Requiring pyproject.toml beside config/ keeps an unrelated site-packages/config/ from being picked up.
    if (root / "pyproject.toml").is_file() and (root / "config" / "default.yaml").is_file():
        return root / "config" / f"{name}.yaml"
    packaged = importlib.resources.files(__package__ or "flowgauge") / _PACKAGED_CONFIG_DIR / f"{name}.yaml"
    if not packaged.is_file():
        raise ConfigError([f"{packaged}: built-in config missing from this installation: reinstall flowgauge"])
    return packaged


def _over_defaults(data: Any, defaults: Any) -> Any:
    """A config file's data merged over the built-in defaults (see the module docstring for the rules)."""
    if data is None:  # an empty file
        return copy.deepcopy(defaults)
    if not isinstance(data, Mapping) or not isinstance(defaults, Mapping):
        return data  # validation reports the shape
    merged = _merge(defaults, {key: value for key, value in data.items() if key != "venues"})
    venues = data.get("venues")
    if isinstance(venues, Mapping):
        # The file's venues are the ones tracked: a merge could never drop a default venue.
        default_venues = defaults.get("venues") or {}
        merged["venues"] = {name: _merge(default_venues.get(name), body) for name, body in venues.items()}
    elif venues is not None:
        merged["venues"] = venues  # not a mapping: validation reports it
    return merged


def _merge(base: Any, override: Any) -> Any:
    """`override` over `base`: mappings merge key by key, an empty section (None) over a mapping keeps the
    mapping, anything else replaces (lists included)."""
    if isinstance(base, Mapping):
        if override is None:
            return copy.deepcopy(dict(base))
        if isinstance(override, Mapping):
            out = copy.deepcopy(dict(base))
            for key, value in override.items():
                out[key] = _merge(base.get(key), value)
            return out
    return copy.deepcopy(override)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, which PyYAML would otherwise resolve silently
    to the last one (two `bybit:` blocks would quietly lose the first)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is legitimate
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key; construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path | Traversable) -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"], str(path)) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: builds plain data only
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError([f"{path}: invalid YAML: {_TOO_DEEP}"], str(path)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        why = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([f"{where}: invalid YAML: {why}"], str(path)) from None
    except yaml.YAMLError as exc:  # e.g. a reader error on undecodable bytes
        raise ConfigError([f"{path}: invalid YAML: {_one_line(exc)}"], str(path)) from None
    if _too_deep(data):
        raise ConfigError([f"{path}: {_TOO_DEEP}"], str(path))
    return data


# No setting nests more than a few levels; the merge, the copies and the validation recurse once per level, so a
# document nested hundreds deep would end in a RecursionError (a traceback) instead of a problem line.
_MAX_DEPTH: Final = 32
_TOO_DEEP: Final = f"nested more than {_MAX_DEPTH} levels deep"


def _too_deep(data: Any) -> bool:
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(node, Mapping):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((child, depth + 1) for child in node)
    return False


# --------------------------------------------------------------------------------------------- secrets

# Each secret key and the key of the file it may be read from instead. A secret comes from the environment
# (FLOWGAUGE_<KEY>) or from its file, never from a config file: config files get copied, committed and printed.
_SECRET_KEYS: Final = (
    ("bus.embedded.token", "bus.embedded.token_file"),
    ("http.token", "http.token_file"),
    ("bus.nats.password", "bus.nats.password_file"),
    ("bus.nats.token", "bus.nats.token_file"),
    ("bus.redis.password", "bus.redis.password_file"),
)
# URLs that may hold a secret (userinfo, or a `password=` query parameter): accepted from the environment only.
_SECRET_URLS: Final = {
    "bus.nats.url": "bus.nats.user with bus.nats.password_file, or bus.nats.token_file, or bus.nats.credentials_file",
    "bus.redis.url": "bus.redis.password_file",
}
_CREDENTIALS_FILE: Final = "bus.nats.credentials_file"
_CREDENTIALS_MARK: Final = "-----BEGIN NATS USER JWT-----"
_MAX_SECRET_FILE_BYTES: Final = 65536
_MISSING: Final = object()


def env_name(key: str) -> str:
    """The environment variable that sets dotted `key`: `http.token` -> `FLOWGAUGE_HTTP__TOKEN`."""
    return ENV_PREFIX + key.upper().replace(".", "__")


def _get_path(data: Any, key: str) -> Any:
    node = data
    for seg in key.split("."):
        if not isinstance(node, Mapping) or seg not in node:
            return _MISSING
        node = node[seg]
    return node


def _resolve_secrets(merged: Any, origins: Mapping[str, str], problems: _Problems) -> None:
    """Refuse secrets written in the config file, and read the `*_file` secrets into their keys.

    A secret key set by the environment is taken as it is; one present otherwise came from the config file (or
    the mapping given to `parse_settings`) and is refused, naming its variable and its file key. A file key names
    a regular file holding the secret alone: it is read now (UTF-8, trailing newlines stripped), and a file that
    cannot be read, is empty, or holds more than one line is a problem. URLs with a password are refused from
    the config file likewise. Problems never echo a secret.
    """
    for key, file_key in _SECRET_KEYS:
        value = _get_path(merged, key)
        if value is not _MISSING and value is not None and key not in origins:
            problems.append((key, f"a secret is not read from a config file: set {env_name(key)}, or {file_key} "
                                  "(a file holding only the secret)"))
            # A stand-in, so that the checks that need the secret (a NATS user needs a password) add no second line.
            _set_path(merged, key.split("."), REDACTED)
            continue
        path = _get_path(merged, file_key)
        if not isinstance(path, str) or not path:
            continue  # unset; a wrong type or an empty path is reported by validation
        if value not in (_MISSING, None):
            problems.append((file_key, f"set either {file_key} or {env_name(key)}, not both"))
            continue
        secret, why = _read_secret_file(path)
        if why is not None:
            problems.append((file_key, why))
        # On failure the stand-in again: the file's problem is the one line to fix.
        _set_path(merged, key.split("."), secret if why is None else REDACTED)
    for key, alternative in _SECRET_URLS.items():
        url = _get_path(merged, key)
        if isinstance(url, str) and key not in origins and url_has_secret(url, nats=key == "bus.nats.url"):
            problems.append((key, f"holds a password or token: a secret is not read from a config file: set the "
                                  f"URL in {env_name(key)}, or keep it without the secret and set {alternative}"))
    path = _get_path(merged, _CREDENTIALS_FILE)
    if isinstance(path, str) and path:
        text, why = _read_secret_file(path, one_line=False)
        if why is None and _CREDENTIALS_MARK not in (text or ""):
            why = f"{path} is not a NATS credentials file (no {_CREDENTIALS_MARK} block)"
        # nats-py signs the server's nonce with the nkeys package, an optional extra it imports only at connect
        # time: without it every connection attempt would fail, and NATS publishing would stop, after start.
        if why is None and _get_path(merged, "bus.nats.url") not in (_MISSING, None) and not _importable("nkeys"):
            why = "needs the nkeys package, which nats-py uses to sign with a .creds file: pip install 'nats-py[nkeys]'"
        if why is not None:
            problems.append((_CREDENTIALS_FILE, why))


def _importable(module: str) -> bool:
    """True if `module` can be imported (found, not loaded)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read_secret_file(path: str, *, one_line: bool = True) -> tuple[str | None, str | None]:
    """(the secret, None) or (None, why not): a bounded read of a regular file, trailing newlines stripped."""
    if not path.isprintable():
        # A NUL byte makes os.open raise ValueError, and a line break would split the problem line: such a path is
        # a mistake (or a secret pasted where its path goes), named without echoing it.
        return None, "not a usable file path (it holds a NUL byte or a control character such as a line break)"
    try:
        # One bounded read, of a regular file only (not a FIFO or a device). O_NONBLOCK: opening a FIFO for reading
        # would otherwise wait for a writer forever, before fstat could refuse it (no effect on a regular file).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                return None, f"cannot read {path}: {'Is a directory' if stat.S_ISDIR(mode) else 'not a regular file'}"
            raw = file.read(_MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or type(exc).__name__}"
    if len(raw) > _MAX_SECRET_FILE_BYTES:
        return None, f"{path} is larger than {_MAX_SECRET_FILE_BYTES // 1024} KiB: not a secret file"
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None, f"{path} is not UTF-8 text"
    text = text.rstrip("\r\n")
    if not text.strip():
        return None, f"{path} is empty"
    if one_line and ("\n" in text or "\r" in text):
        return None, f"{path} holds more than one line: the file must hold the secret alone"
    return text, None


# The userinfo of one server: everything up to its last `@`, even past a raw / ? or # (an unencoded password such as
# base64's `ab/cd` still counts as one, and is hidden whole), with or without a scheme.
_URL_USERINFO: Final = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*://)?)(.*)@", re.DOTALL)
_URL_QUERY_SECRET: Final = re.compile(r"([?&](?:password|token)=)([^&#]*)", re.IGNORECASE)


def url_has_secret(url: str, *, nats: bool) -> bool:
    """True if any server of `url` (comma-separated) carries a password, a token, or a `password=`/`token=`
    parameter. For NATS a user name alone in the URL is a token (nats-py sends it as one); for Redis it is a
    user name, not a secret."""
    for part in url.split(","):
        match = _URL_USERINFO.match(part.strip())
        if match is not None:
            _, colon, password = match.group(2).partition(":")
            if password or (nats and not colon and match.group(2)):
                return True
        if _URL_QUERY_SECRET.search(part):
            return True
    return False


def _url_secrets(url: str, *, nats: bool) -> list[str]:
    """The secret strings inside `url` (each server's password or NATS token, query secrets), raw and decoded."""
    out: list[str] = []
    for part in url.split(","):
        match = _URL_USERINFO.match(part.strip())
        if match is not None:
            user, colon, password = match.group(2).partition(":")
            out.append(password if colon else user if nats else "")
        out.extend(m.group(2) for m in _URL_QUERY_SECRET.finditer(part))
    return [form for secret in out if secret for form in dict.fromkeys((secret, unquote(secret)))]


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold (tokens, passwords, the secret parts of broker URLs), for redaction."""
    bus = settings.bus
    values = [bus.embedded.token, settings.http.token, bus.nats.password, bus.nats.token, bus.redis.password]
    out = [value for value in values if value]
    for url, nats in ((bus.nats.url, True), (bus.redis.url, False)):
        if url:
            out.extend(_url_secrets(url, nats=nats))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------- environment


def _apply_env(
    data: Any, environ: Mapping[str, str], problems: list[tuple[str, str]]
) -> tuple[Any, dict[str, str]]:
    """Return a copy of `data` with the FLOWGAUGE_* overrides set, and dotted key -> variable name for
    each override applied (so later problems about that key can name the variable)."""
    merged = copy.deepcopy(data)
    origins: dict[str, str] = {}
    if merged is None:  # an empty file
        merged = {}
    for name in sorted(environ):  # sorted: the same environment always yields the same problem order
        if not name.startswith(ENV_PREFIX) or name in _ENV_RESERVED:
            continue
        if name.startswith(_ENV_RESERVED_PREFIXES):
            continue
        segments = name[len(ENV_PREFIX):].lower().split("__")
        key = ".".join(segments) or name
        target = _env_target(segments)
        if isinstance(target, str):
            problems.append((key, f"{_RETIRED_KEYS.get(key, target)} (set by {name})"))
            continue
        try:
            # os.environ holds undecodable bytes as lone surrogates: such a token would pass here and fail later
            # (an HTTP 500 and a traceback per request, a traceback from check-config --print).
            environ[name].encode()
        except UnicodeEncodeError:
            problems.append((key, f"not UTF-8 text (set by {name})"))
            continue
        try:
            value = _env_value(environ[name], target)
        except yaml.YAMLError as exc:
            problems.append((key, f"not a YAML scalar: {_one_line(exc)} (set by {name})"))
            continue
        except RecursionError:  # a flow list nested deeper than PyYAML's recursion allows
            problems.append((key, f"{_TOO_DEEP} (set by {name})"))
            continue
        if _too_deep(value):
            problems.append((key, f"{_TOO_DEEP} (set by {name})"))
            continue
        _set_path(merged, segments, value)
        origins[key] = name
    return merged, origins


def _env_target(segments: list[str]) -> Any:
    """The type of the leaf field `segments` names, or a string saying why it names none."""
    cls: Any = Settings
    i = 0
    while True:
        fields = _fields(cls)
        seg = segments[i]
        if seg not in fields:
            return "unknown key"
        typ = fields[seg].type
        i += 1
        if typing.get_origin(typ) is dict:  # venues.<ccxt id>.<field>
            if i == len(segments):
                return "names a section, not a key: set its keys, e.g. FLOWGAUGE_VENUES__BYBIT__SYMBOLS"
            typ = typing.get_args(typ)[1]
            i += 1
        if _is_struct(typ):
            if i >= len(segments):
                return "names a section, not a key: set the keys inside it"
            cls = typ
            continue
        return typ if i == len(segments) else "unknown key"


_NULLS: Final = frozenset({"", "null", "Null", "NULL", "~"})


def _env_value(raw: str, typ: Any) -> Any:
    """Parse one environment value for a field of type `typ`."""
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (tuple, list):
        if raw.lstrip().startswith("["):  # a YAML flow list is accepted too
            return yaml.safe_load(raw)
        item_type = args[0] if args else Any
        return [_env_value(item.strip(), item_type) for item in raw.split(",") if item.strip()]
    if typ is str or (_is_union(typ) and str in args):
        # Strings are taken verbatim: YAML would turn a token like `0123` into an int or `a: b` into a
        # mapping. An empty value or `null` clears an optional string (e.g. FLOWGAUGE_RECORD__DIR=).
        return None if _is_union(typ) and type(None) in args and raw in _NULLS else raw
    value = yaml.safe_load(raw)
    return value


def _set_path(data: Any, segments: list[str], value: Any) -> None:
    node = data
    for seg in segments[:-1]:
        if not isinstance(node, dict):
            return  # the file has a scalar where a section belongs; validation reports that section
        child = node.get(seg)
        if child is None:
            child = node[seg] = {}
        node = child
    if isinstance(node, dict):
        node[segments[-1]] = value


# --------------------------------------------------------------------------------------------- validation

S = TypeVar("S", bound=msgspec.Struct)
_Problems = list[tuple[str, str]]
_Check = Callable[[dict[str, Any], str, _Problems], None]


class _Failed:
    """Marker: this value or section had problems (already recorded)."""


_FAILED: Final = _Failed()


def _build(
    cls: type[S],
    raw: Any,
    key: str,
    problems: _Problems,
    *,
    defaults: Mapping[str, Any] | None = None,
    check: _Check | None = None,
) -> S | _Failed:
    """Type-check `raw` against `cls` field by field, recurse into sections, run the semantic checks, and
    build the struct. Every problem is recorded; a bad field never hides a problem in another one."""
    if raw is None:  # `http:` with nothing under it means "all defaults"
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append((key or "<top level>", f"expected a mapping, got {_type_name(raw)}"))
        return _FAILED
    fields = _fields(cls)
    failed = False
    for name in raw:
        if name not in fields:
            sub = _join(key, str(name))
            problems.append((sub, _RETIRED_KEYS.get(sub, "unknown key")))
            failed = True

    values: dict[str, Any] = {}
    bad: set[str] = set()
    for name, info in fields.items():
        sub = _join(key, name)
        present = name in raw
        value = raw[name] if present else (defaults or {}).get(name, msgspec.NODEFAULT)
        if typing.get_origin(info.type) is dict:
            built: Any = _build_venues(raw.get(name), sub, problems)
        elif _is_struct(info.type):
            built = _build(info.type, raw.get(name), sub, problems)
        elif value is msgspec.NODEFAULT:
            if info.default is msgspec.NODEFAULT and info.default_factory is msgspec.NODEFAULT:
                problems.append((sub, "required"))
                built = _FAILED
            else:
                continue  # the struct's own default applies
        else:
            built = _convert(value, info.type, sub, problems)
        if built is _FAILED:
            bad.add(name)
            failed = True
        else:
            values[name] = built

    # Semantic checks see only fields that are present and well-typed (plus defaults), so a range
    # problem is still reported when a sibling field has the wrong type.
    checked = {name: values.get(name, _default_of(info)) for name, info in fields.items() if name not in bad}
    n_before = len(problems)
    (check or _CHECKS.get(cls, _no_check))(checked, key, problems)
    if failed or len(problems) > n_before:
        return _FAILED
    return cls(**{name: checked[name] for name in values if name in checked})


def _build_venues(raw: Any, key: str, problems: _Problems) -> dict[str, VenueSettings] | _Failed:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        why = f"expected a mapping of ccxt exchange id -> venue settings, got {_type_name(raw)}"
        problems.append((key, why))
        return _FAILED
    if not raw:
        problems.append((key, "at least one venue with at least one symbol is required"))
        return _FAILED
    out: dict[str, VenueSettings] = {}
    failed = False
    for venue, body in raw.items():
        sub = _join(key, str(venue))
        facts = _VENUES.get(venue) if isinstance(venue, str) else None
        if facts is None:
            supported = ", ".join(SUPPORTED_VENUES)
            problems.append((sub, f"venue {venue} not supported yet; supported: {supported}"))
            failed = True
            continue

        def check(values: dict[str, Any], at: str, probs: _Problems, facts: _VenueFacts = facts) -> None:
            _check_venue(values, at, probs, facts)

        built = _build(
            VenueSettings, body, sub, problems,
            defaults={"ws_url": facts.ws_url, "rest_url": facts.rest_url, "book_depth": facts.default_depth},
            check=check,
        )
        if isinstance(built, VenueSettings):
            out[venue] = built
        else:
            failed = True
    return _FAILED if failed else out


def _convert(value: Any, typ: Any, key: str, problems: _Problems) -> Any:
    if typing.get_origin(typ) is tuple and isinstance(value, list):
        # Item by item, because msgspec stops at the first bad item and we want every one reported.
        item_type = typing.get_args(typ)[0]
        items = [_convert(item, item_type, f"{key}[{i}]", problems) for i, item in enumerate(value)]
        return _FAILED if any(item is _FAILED for item in items) else tuple(items)
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        # msgspec says "Expected `str`, got `int` - at `$[2]`": move the location into the key.
        text = str(exc)
        where = ""
        at = re.search(r" - at `\$(.*)`$", text)
        if at:
            where, text = at.group(1), text[: at.start()]
        text = text.replace("`", "")
        for theirs, ours in (("array", "list"), ("object", "mapping"), ("null", "null (None)")):
            text = re.sub(rf"\b{theirs}\b", ours, text)
        problems.append((key + where, text[:1].lower() + text[1:]))
        return _FAILED


# Symbol shape: BASE/QUOTE:SETTLE, plus -YYMMDD for dated futures. Spot (no :SETTLE) is not tracked.
_SYMBOL_RE: Final = re.compile(
    r"[A-Za-z0-9]+/[A-Za-z0-9]+:[A-Za-z0-9]+(-\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01]))?"
)
# A ccxt spot symbol: BASE/QUOTE with no settle currency.
_SPOT_SYMBOL_RE: Final = re.compile(r"[A-Za-z0-9]+/[A-Za-z0-9]+")


_VENUE_DURATIONS: Final = (
    "ping_interval_s", "stale_after_s", "connect_timeout_s", "backoff_initial_s", "backoff_max_s", "clock_skew_max_s",
    "markets_refresh_s",
)


def _check_venue(v: dict[str, Any], key: str, problems: _Problems, facts: _VenueFacts) -> None:
    if "symbols" in v:
        symbols = v["symbols"]
        if not symbols:
            problems.append((_join(key, "symbols"), "at least one symbol is required"))
        first_at: dict[str, int] = {}
        for i, symbol in enumerate(symbols):
            at = f"{_join(key, 'symbols')}[{i}]"
            if _SPOT_SYMBOL_RE.fullmatch(symbol):
                why = "spot markets are not supported (perpetuals and dated futures only, like BTC/USDT:USDT)"
                problems.append((at, f"{json.dumps(symbol)}: {why}"))
            elif not _SYMBOL_RE.fullmatch(symbol):
                problems.append((at, f"{json.dumps(symbol)} is not a ccxt unified symbol like BTC/USDT:USDT"))
            elif symbol in first_at:
                problems.append((at, f"{json.dumps(symbol)} duplicates symbols[{first_at[symbol]}]"))
            else:
                first_at[symbol] = i
    _url(v, "ws_url", ("ws", "wss"), key, problems)
    _url(v, "rest_url", ("http", "https"), key, problems)
    if "book_depth" in v and v["book_depth"] not in facts.book_depths:
        allowed = ", ".join(str(d) for d in facts.book_depths)
        problems.append((_join(key, "book_depth"), f"must be one of {allowed} (got {v['book_depth']})"))
    _between(v, "subscribe_batch", 1, 100, key, problems)
    for name in _VENUE_DURATIONS:
        _positive(v, name, key, problems)
    lo, hi = v.get("backoff_initial_s"), v.get("backoff_max_s")
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and 0 < hi < lo:
        problems.append((_join(key, "backoff_max_s"), f"must be >= backoff_initial_s ({lo:g}) (got {hi:g})"))


def _check_embedded(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _non_empty(v, "host", key, problems)
    _between(v, "port", 0, 65535, key, problems)
    if v.get("token") == "":
        problems.append((_join(key, "token"), "must be null or a non-empty string"))
    _file_key(v, "token_file", key, problems)
    _between(v, "client_queue", 1, None, key, problems)
    _between(v, "client_queue_bytes", 1024, None, key, problems)
    _positive(v, "client_max_lag_s", key, problems)
    _between(v, "max_clients", 1, None, key, problems)


# JetStream stream names may not contain these (nor whitespace).
_BAD_STREAM_NAME: Final = re.compile(r"[.*>/\\\s]")


def _check_nats(v: dict[str, Any], key: str, problems: _Problems) -> None:
    if v.get("url") is not None:
        servers = [part.strip() for part in v["url"].split(",")]
        if not all(servers):
            why = f"must be one or more comma-separated URLs (got {redact_url(v['url'])!r})"
            problems.append((_join(key, "url"), why))
        for server in (s for s in servers if s):
            _url({"url": server}, "url", ("nats", "tls"), key, problems)
    _check_nats_auth(v, key, problems)
    _between(v, "queue_size", 1, None, key, problems)
    _between(v, "pending_bytes", 1, None, key, problems)
    for name in ("reconnect_wait_s", "connect_timeout_s", "duplicate_window_s", "history_max_age_s"):
        _positive(v, name, key, problems)
    # nats-server refuses these stream configurations; said here rather than as a stream error at run time.
    window, max_age = v.get("duplicate_window_s"), v.get("history_max_age_s")
    if window is not None and math.isfinite(window) and 0 < window < 0.1:
        problems.append((_join(key, "duplicate_window_s"), f"must be >= 0.1 (NATS's minimum) (got {window:g})"))
    elif v.get("history") and window is not None and max_age is not None and 0 < max_age < window:
        why = f"must be >= duplicate_window_s ({window:g}) (NATS's rule) (got {max_age:g})"
        problems.append((_join(key, "history_max_age_s"), why))
    _between(v, "history_max_bytes", 1, None, key, problems)
    for name in ("stream", "history_stream"):
        stream = v.get(name)
        if stream is not None and (not stream or _BAD_STREAM_NAME.search(stream)):
            why = f"must be a non-empty name without . * > / \\ or spaces (got {stream!r})"
            problems.append((_join(key, name), why))
    if v.get("history") and v.get("stream") is not None and v.get("stream") == v.get("history_stream"):
        problems.append((_join(key, "history_stream"), f"must differ from stream (both are {v['stream']!r})"))
    # Both need the JetStream streams; without them they would silently do nothing.
    for name, what in (("history", "the history stream is a JetStream stream"),
                       ("replica", "replicas publish each update once only through JetStream de-duplication")):
        if v.get(name) and v.get("jetstream") is False:
            problems.append((_join(key, name), f"needs bus.nats.jetstream: true ({what})"))


def _check_nats_auth(v: dict[str, Any], key: str, problems: _Problems) -> None:
    """One way to authenticate at most: user and password, a token, a .creds file, or credentials in the URL."""
    for name in ("user", "password", "token"):
        if v.get(name) == "":
            problems.append((_join(key, name), "must be null or a non-empty string"))
    for name in ("password_file", "token_file", "credentials_file"):
        _file_key(v, name, key, problems)
    user, password = v.get("user"), v.get("password")
    if user and not password:
        problems.append((_join(key, "user"), f"needs a password: set {_join(key, 'password_file')} or "
                                             f"{env_name(_join(key, 'password'))}"))
    if password and not user:
        source = f"{_join(key, 'password_file')} or {env_name(_join(key, 'password'))}"
        problems.append((_join(key, "password"), f"needs {_join(key, 'user')} (the password came from {source})"))
    url = v.get("url")
    ways = [way for way, on in (("user/password", user or password), ("token", v.get("token")),
                                ("credentials_file", v.get("credentials_file")),
                                ("credentials in the URL", isinstance(url, str) and url_has_secret(url, nats=True)))
            if on]
    if len(ways) > 1:
        problems.append((key, f"set one way to authenticate, not several (got {', '.join(ways)})"))


def _check_redis(v: dict[str, Any], key: str, problems: _Problems) -> None:
    if v.get("url") is not None:
        _url(v, "url", ("redis", "rediss"), key, problems)
    if v.get("password") == "":
        problems.append((_join(key, "password"), "must be null or a non-empty string"))
    _file_key(v, "password_file", key, problems)
    url = v.get("url")
    if v.get("password") and isinstance(url, str) and url_has_secret(url, nats=False):
        problems.append((_join(key, "password"), "the URL holds a password too: set one of them"))
    _between(v, "queue_size", 1, None, key, problems)
    for name in ("connect_timeout_s", "reconnect_max_s", "last_ttl_s"):
        _positive(v, name, key, problems)
    _non_empty(v, "last_key_prefix", key, problems)
    _non_empty(v, "stream_key_prefix", key, problems)
    _between(v, "stream_maxlen", 1, None, key, problems)


def _check_http(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _non_empty(v, "host", key, problems)
    _between(v, "port", 0, 65535, key, problems)
    if v.get("token") == "":
        problems.append((_join(key, "token"), "must be null or a non-empty string"))
    _file_key(v, "token_file", key, problems)
    _check_families(v, key, problems, "metrics_families")


def _file_key(v: dict[str, Any], name: str, key: str, problems: _Problems) -> None:
    if v.get(name) == "":
        problems.append((_join(key, name), "must be null or the path of a file"))


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP addresses; any other name or address may be reachable from outside."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def open_listeners(bus: BusSettings, http: HttpSettings) -> list[tuple[str, str, bool]]:
    """Listeners beyond loopback without a token: (section, host, allowed by `allow_unauthenticated`)."""
    out = []
    embedded = bus.embedded
    if embedded.enabled and embedded.token is None and not is_loopback(embedded.host):
        out.append(("bus.embedded", embedded.host, embedded.allow_unauthenticated))
    if http.token is None and not is_loopback(http.host):
        out.append(("http", http.host, http.allow_unauthenticated))
    return out


def _check_exposure(v: dict[str, Any], problems: _Problems) -> None:
    """Refuse a listener beyond loopback without a token, unless the config allows it explicitly: one line,
    naming both fixes, whichever listeners are open (the container image sets both hosts to 0.0.0.0)."""
    bus, http = v.get("bus"), v.get("http")
    if not isinstance(bus, BusSettings) or not isinstance(http, HttpSettings):
        return
    refused = [(section, host) for section, host, allowed in open_listeners(bus, http) if not allowed]
    if not refused:
        return
    hosts = " / ".join(dict.fromkeys(host for _, host in refused))
    tokens = " and ".join(f"FLOWGAUGE_{section.upper().replace('.', '__')}__TOKEN" for section, _ in refused)
    files = " / ".join(f"{section}.token_file" for section, _ in refused)
    tokens += f" (or {files}, a file holding the token)"
    allows = " and ".join(f"{section}.allow_unauthenticated: true" for section, _ in refused)
    key = ", ".join(f"{section}.host" for section, _ in refused)
    problems.append((key, f"{hosts} is not a loopback address and no token is set: set {tokens}, or set "
                          f"{allows} to run open on purpose"))


def _check_publish(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _between(v, "min_interval_ms", 0, None, key, problems)
    mode = v.get("conflate")
    if mode is False:
        v["conflate"] = "off"  # YAML 1.1 reads an unquoted `off` as false
    elif mode is not None and mode not in CONFLATE_MODES:
        problems.append((_join(key, "conflate"), f"must be auto or off (got {mode!r})"))
    _positive(v, "conflate_after_ms", key, problems)
    beat = v.get("heartbeat_s")
    if beat is not None and not (math.isfinite(beat) and beat >= 0):
        why = f"must be a finite number > 0, or 0 to turn the status heartbeat off (got {beat:g})"
        problems.append((_join(key, "heartbeat_s"), why))
    _check_families(v, key, problems)


def _check_aggregates(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "interval_ms", key, problems)
    _positive(v, "stale_s", key, problems)
    _between(v, "min_venues", 1, None, key, problems)


def _check_families(v: dict[str, Any], key: str, problems: _Problems, field: str = "families") -> None:
    """publish.families, http.metrics_families: known names only ("all" allowed), one problem line naming the
    unknown ones."""
    names = v.get(field)
    if names is None:
        return
    unknown = [name for name in names if name not in METRIC_FAMILIES and name != "all"]
    if unknown:
        known = ", ".join((*METRIC_FAMILIES, "all"))
        names = ", ".join(map(repr, unknown))
        why = f"unknown metric famil{'ies' if len(unknown) > 1 else 'y'} {names}; known: {known}"
        problems.append((_join(key, field), why))


def _check_ofi_ext(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "depth_half_life_s", key, problems)
    _positive(v, "cks_window_s", key, problems)
    _positive(v, "z_half_life_s", key, problems)
    _between(v, "z_min_samples", 2, None, key, problems)


def _check_mlofi(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _between(v, "levels", 1, 50, key, problems)
    _positive(v, "min_depth", key, problems)


def _check_integrated_ofi(v: dict[str, Any], key: str, problems: _Problems) -> None:
    weights = v.get("weights", ())
    if any(not math.isfinite(w) for w in weights) or (weights and not any(w != 0.0 for w in weights)):
        problems.append((_join(key, "weights"), "must be finite numbers, not all zero (or empty: equal weights)"))


def _check_depth_ext(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "level_decay", key, problems)
    _positive(v, "distance_scale_bps", key, problems)


def _check_microprice(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _between(v, "imbalance_buckets", 2, 100, key, problems)
    _between(v, "max_spread_ticks", 1, 20, key, problems)
    _between(v, "iterations", 1, 50, key, problems)
    _between(v, "sample_ms", 1, None, key, problems)
    _between(v, "min_samples", 1, None, key, problems)
    _positive(v, "refit_s", key, problems)
    _positive(v, "memory_days", key, problems)


def _check_fragility(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _between(v, "slope_levels", 1, 1000, key, problems)
    _positive(v, "resiliency_half_life_s", key, problems)


def _check_ew(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "z_half_life_s", key, problems)
    _between(v, "z_min_samples", 2, None, key, problems)


_RISK_INPUTS: Final = ("toxicity", "stress", "fragility", "oi", "vol")


def _check_risk(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "vol_half_life_s", key, problems)
    _positive(v, "vol_ref_half_life_s", key, problems)
    _between(v, "vol_min_samples", 1, None, key, problems)
    for name in _RISK_INPUTS:
        _positive(v, f"{name}_scale", key, problems)
        for field in (f"{name}_threshold", f"{name}_weight"):
            if field in v and not math.isfinite(v[field]):
                problems.append((_join(key, field), f"must be a finite number (got {v[field]:g})"))
        weight = v.get(f"{name}_weight")
        if weight is not None and math.isfinite(weight) and weight < 0:
            problems.append((_join(key, f"{name}_weight"), f"must be >= 0 (got {weight:g})"))
    floor = v.get("floor")
    if floor is not None and not (0.0 < floor <= 1.0):
        problems.append((_join(key, "floor"), f"must be in (0, 1] (got {floor:g})"))


def _check_bars(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "interval_s", key, problems)
    interval = v.get("interval_s")
    if interval is not None and math.isfinite(interval) and interval > 0 and round(interval * 1e9) < 1_000_000:
        problems.append((_join(key, "interval_s"), f"must be at least 0.001 (got {interval:g})"))
    delay = v.get("close_delay_ms")
    if delay is not None and not (math.isfinite(delay) and delay >= 0):
        problems.append((_join(key, "close_delay_ms"), f"must be a finite number >= 0 (got {delay:g})"))
    _positive(v, "z_half_life_s", key, problems)
    _between(v, "z_min_samples", 2, None, key, problems)


def _check_toxicity(v: dict[str, Any], key: str, problems: _Problems) -> None:
    for name in ("buckets_per_day", "window_buckets", "adv_days", "bvc_bar_s", "cdf_min_values"):
        _between(v, name, 1, None, key, problems)
    for name in ("bootstrap_daily_notional", "bvc_sigma_half_life_s", "cdf_days"):
        _positive(v, name, key, problems)


def _check_trade_flow(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _positive(v, "depth_half_life_s", key, problems)


def _check_kyle(v: dict[str, Any], key: str, problems: _Problems) -> None:
    _between(v, "bar_s", 1, None, key, problems)
    _between(v, "min_bars", 2, None, key, problems)
    _positive(v, "half_life_s", key, problems)


def _check_positioning(v: dict[str, Any], key: str, problems: _Problems) -> None:
    for name, lo, hi, closed in (("rho_min", 0.0, 1.0, False), ("d_min", 0.0, 1.0, False),
                                 ("liquidation_share", 0.0, 1.0, True), ("z_min_weight", 0.0, 1.0, False)):  # fmt: skip
        value = v.get(name)
        if value is not None and not (lo <= value <= hi if closed else lo <= value < hi):
            rule = f"in [{lo:g}, {hi:g}" + ("]" if closed else ")")
            problems.append((_join(key, name), f"must be a number {rule} (got {value:g})"))
    _between(v, "regime_confirm_windows", 1, None, key, problems)
    tol = v.get("consistency_tolerance")
    if tol is not None and not (math.isfinite(tol) and tol >= 0):
        problems.append((_join(key, "consistency_tolerance"), f"must be a finite number >= 0 (got {tol:g})"))
    base = v.get("funding_base_8h")
    if base is not None and not math.isfinite(base):
        problems.append((_join(key, "funding_base_8h"), f"must be a finite number (got {base:g})"))
    for name in ("funding_scale", "funding_z_half_life_s", "ls_z_half_life_s", "oi_price_corr_half_life_s"):
        _positive(v, name, key, problems)


def _check_metrics(v: dict[str, Any], key: str, problems: _Problems) -> None:
    mlofi, integrated = v.get("mlofi"), v.get("integrated_ofi")
    if isinstance(mlofi, MlofiSettings) and isinstance(integrated, IntegratedOfiSettings):
        n = len(integrated.weights)
        if n and n != mlofi.levels:
            why = f"must hold metrics.mlofi.levels ({mlofi.levels}) numbers, or none (got {n})"
            problems.append((_join(key, "integrated_ofi.weights"), why))


def _check_shard(v: dict[str, Any], key: str, problems: _Problems) -> None:
    count = v.get("count")
    if count is not None and count < 1:
        problems.append((_join(key, "count"), f"must be >= 1 (got {count})"))
        count = None  # the index cannot be checked against it
    index = v.get("index")
    if index is not None and (index < 0 or (count is not None and index >= count)):
        rule = f"must be between 0 and {count - 1} (shard.count is {count})" if count is not None else "must be >= 0"
        problems.append((_join(key, "index"), f"{rule} (got {index})"))


def _check_record(v: dict[str, Any], key: str, problems: _Problems) -> None:
    if v.get("dir") == "":
        problems.append((_join(key, "dir"), "must be null (no recording) or a directory path"))
    _positive(v, "rotate_mb", key, problems)
    _positive(v, "rotate_s", key, problems)


def _check_settings(v: dict[str, Any], key: str, problems: _Problems) -> None:
    if "log_level" in v:
        level = v["log_level"].upper()
        if level in LOG_LEVELS:
            v["log_level"] = level  # normalised so that FLOWGAUGE_LOG_LEVEL=debug works
        else:
            allowed = ", ".join(LOG_LEVELS)
            problems.append((_join(key, "log_level"), f"must be one of {allowed} (got {v['log_level']!r})"))
    _positive(v, "shutdown_timeout_s", key, problems)
    _between(v, "book_max_levels", 1, None, key, problems)
    _check_replica(v, problems)
    _check_exposure(v, problems)


def _check_replica(v: dict[str, Any], problems: _Problems) -> None:
    """With `bus.nats.replica`, refuse what makes two replicas publish different subsets of the book updates.

    JetStream de-duplication stores one copy of an update both replicas publish; it cannot restore an update
    one replica skipped. Conflation skips according to each process's own load, and the throttle according to
    its own wall clock, so with either on the stored updates would depend on which replica happened to send.
    """
    bus, publish = v.get("bus"), v.get("publish")
    if not isinstance(bus, BusSettings) or not isinstance(publish, PublishSettings) or not bus.nats.replica:
        return
    if publish.conflate != "off":
        why = (f"must be off when bus.nats.replica is true (got {publish.conflate}): each replica conflates by its "
               "own load, so replicas would publish different subsets of book updates, which de-duplication "
               "cannot fix")
        problems.append(("publish.conflate", why))
    if publish.min_interval_ms > 0:
        why = (f"must be 0 when bus.nats.replica is true (got {publish.min_interval_ms}): each replica throttles by "
               "its own clock, so replicas would publish different subsets of book updates, which de-duplication "
               "cannot fix")
        problems.append(("publish.min_interval_ms", why))


def _no_check(v: dict[str, Any], key: str, problems: _Problems) -> None:
    return None


_CHECKS: Final[dict[type, _Check]] = {
    EmbeddedBusSettings: _check_embedded,
    HttpSettings: _check_http,
    NatsBusSettings: _check_nats,
    RedisBusSettings: _check_redis,
    PublishSettings: _check_publish,
    AggregateSettings: _check_aggregates,
    ShardSettings: _check_shard,
    OfiExtSettings: _check_ofi_ext,
    MlofiSettings: _check_mlofi,
    IntegratedOfiSettings: _check_integrated_ofi,
    DepthExtSettings: _check_depth_ext,
    MicropriceSettings: _check_microprice,
    FragilitySettings: _check_fragility,
    EwSettings: _check_ew,
    RiskSettings: _check_risk,
    ToxicitySettings: _check_toxicity,
    KyleSettings: _check_kyle,
    TradeFlowSettings: _check_trade_flow,
    PositioningSettings: _check_positioning,
    BarSettings: _check_bars,
    MetricsSettings: _check_metrics,
    RecordSettings: _check_record,
    Settings: _check_settings,
}


def _between(v: dict[str, Any], name: str, lo: int, hi: int | None, key: str, problems: _Problems) -> None:
    if name not in v:
        return
    value = v[name]
    if value < lo or (hi is not None and value > hi):
        rule = f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}"
        problems.append((_join(key, name), f"{rule} (got {value})"))


def _positive(v: dict[str, Any], name: str, key: str, problems: _Problems) -> None:
    if name in v and not (math.isfinite(v[name]) and v[name] > 0):
        problems.append((_join(key, name), f"must be a finite number > 0 (got {v[name]:g})"))


def _non_empty(v: dict[str, Any], name: str, key: str, problems: _Problems) -> None:
    if name in v and not v[name].strip():
        problems.append((_join(key, name), "must not be empty"))


def _url(v: dict[str, Any], name: str, schemes: tuple[str, ...], key: str, problems: _Problems) -> None:
    if name not in v:
        return
    want = " or ".join(f"{s}://" for s in schemes)
    url = v[name]
    shown = redact_url(url)
    # A raw / ? or # in a password ends the userinfo early: the "host" is then a piece of the secret.
    misplaced: bool | None = None  # None: the URL did not even split
    try:
        parts = urlsplit(url)
        misplaced = "@" in url and "@" not in parts.netloc
        parts.port  # noqa: B018 - parsing the port is the check: a bad one raises here, not at connect time
    except ValueError as exc:
        # The parser's text may quote a piece of the userinfo ("... integer value as 'ab'" of `user:ab/cd@host`,
        # or a netloc it refuses): shown only when it cannot (no userinfo, or a port after a whole userinfo).
        detail = f" ({exc})" if "@" not in url or misplaced is False else ""
        hint = _misplaced_hint(schemes) if misplaced else ""
        problems.append((_join(key, name), f"not a valid URL{detail} (got {shown!r}){hint}"))
        return
    if parts.scheme not in schemes or not parts.hostname:
        problems.append((_join(key, name), f"must be a {want} URL (got {shown!r})"))
    elif misplaced:
        hint = _misplaced_hint(schemes)
        problems.append((_join(key, name), f"the host part is not where it seems (got {shown!r}){hint}"))


def _misplaced_hint(schemes: tuple[str, ...]) -> str:
    if "nats" in schemes:  # nats-py sends the URL's userinfo as it is, %-escapes included: they cannot help
        return (": a password or token holding / ? # cannot go in a NATS URL: set bus.nats.user with "
                "bus.nats.password_file (or FLOWGAUGE_BUS__NATS__PASSWORD), or bus.nats.token_file")
    return ": a user name or password holding / ? # must be percent-encoded (%2F %3F %23)"


# --------------------------------------------------------------------------------------------- helpers


def _fields(cls: type) -> dict[str, msgspec.structs.FieldInfo]:
    return {f.encode_name: f for f in msgspec.structs.fields(cls)}


def _default_of(info: msgspec.structs.FieldInfo) -> Any:
    if info.default_factory is not msgspec.NODEFAULT:
        return info.default_factory()
    return info.default


def _is_struct(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, msgspec.Struct)


def _is_union(typ: Any) -> bool:
    return typing.get_origin(typ) in (typing.Union, types.UnionType)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _type_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _format(key: str, why: str, origins: Mapping[str, str]) -> str:
    """`key: why`, naming the environment variables that set this key or something inside it."""
    names = [
        name for path, name in origins.items()
        if path == key or path.startswith((key + ".", key + "[")) or key.startswith((path + ".", path + "["))
    ]
    suffix = f" (set by {', '.join(names)})" if names else ""
    return f"{key}: {why}{suffix}"


# --------------------------------------------------------------------------------------------- sharding

SHARD_INDEX_FROM_HOSTNAME: Final = "from_hostname"
_ORDINAL: Final = re.compile(r"-(\d{1,6})$")


def _shard_index_from_hostname(
    merged: Any, environ: Mapping[str, str], origins: dict[str, str], problems: _Problems
) -> None:
    """`shard.index: from_hostname` (or FLOWGAUGE_SHARD__INDEX=from_hostname) becomes the ordinal that ends the
    host name in `environ["HOSTNAME"]`: a StatefulSet pod `flowgauge-a-3` runs shard 3, so one pod template serves
    every shard. Kubernetes and Docker set HOSTNAME to the pod's (container's) name. A name with no `-<n>` ending is
    one problem line; the range check against shard.count is the usual one. Either line names the host name (in
    `origins`): `got 3` alone would not tell an operator that a StatefulSet was scaled past shard.count."""
    shard = merged.get("shard") if isinstance(merged, dict) else None
    if not isinstance(shard, dict) or shard.get("index") != SHARD_INDEX_FROM_HOSTNAME:
        return
    hostname = environ.get("HOSTNAME", "")
    if hostname:
        variable = origins.get("shard.index")
        how = f"{variable}={SHARD_INDEX_FROM_HOSTNAME}" if variable else f"shard.index: {SHARD_INDEX_FROM_HOSTNAME}"
        origins["shard.index"] = f"{how} with HOSTNAME={hostname[:80]}"
    match = _ORDINAL.search(hostname)
    if match is None:
        shown = repr(hostname[:80]) if hostname else "unset"
        problems.append(("shard.index", f"from_hostname needs HOSTNAME ending in -<ordinal> (a StatefulSet pod's "
                                        f"name, e.g. flowgauge-2); HOSTNAME is {shown}"))
        shard["index"] = 0  # reported above; keeps the type check from adding a second line
        return
    shard["index"] = int(match.group(1))


def shard_of(venue: str, symbol: str, count: int) -> int:
    """The shard (0 .. count-1) that runs `symbol` on `venue`: CRC-32 of the UTF-8 text `venue:symbol`, modulo
    `count`. Stable across processes, machines and Python versions (Python's own `hash()` of a string is
    salted per process, so two processes would disagree); it depends on nothing else, so every process of a
    deployment computes the same split from the same list, whatever order the venues and symbols come in."""
    return zlib.crc32(f"{venue}:{symbol}".encode()) % count


def shard_venues(settings: Settings) -> dict[str, VenueSettings]:
    """The venues this process runs, each with only its shard's symbols (in their configured order); a venue
    with no symbol in this shard is left out (it is not connected at all). With `shard.count` 1, every venue."""
    shard = settings.shard
    if shard.count == 1:
        return dict(settings.venues)
    out: dict[str, VenueSettings] = {}
    for venue, venue_settings in settings.venues.items():
        symbols = tuple(s for s in venue_settings.symbols if shard_of(venue, s, shard.count) == shard.index)
        if symbols:
            out[venue] = msgspec.structs.replace(venue_settings, symbols=symbols)
    return out


# --------------------------------------------------------------------------------------------- CLI support


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings as plain JSON-able data with secrets replaced by "***", for printing and /status."""
    # A JSON round trip turns tuples into lists, so the result also dumps as plain YAML.
    data: dict[str, Any] = json.loads(msgspec.json.encode(settings))
    for key, _ in _SECRET_KEYS:
        *path, name = key.split(".")
        section = data
        for seg in path:
            section = section[seg]
        if section[name] is not None:
            section[name] = REDACTED
    for backend in ("nats", "redis"):
        section = data["bus"][backend]
        if section["url"] is not None:
            section["url"] = redact_url(section["url"])
    return data


def redact_url(url: str) -> str:
    """`url` (comma-separated servers too) with each password, or lone user name (a NATS token), replaced by
    "***", and so are `password=` / `token=` query parameters."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:{REDACTED}@" if colon else f"{match.group(1)}{REDACTED}@"

    parts = (_URL_QUERY_SECRET.sub(rf"\g<1>{REDACTED}", _URL_USERINFO.sub(hide, part)) for part in url.split(","))
    return ",".join(parts)


def check_config_main(path: str | None, print_config: bool, environ: Mapping[str, str]) -> int:
    """`flowgauge check-config -c FILE [--print]`: validate and report.

    Prints `config OK: <n> venue(s), <n> symbol(s)` (then, with `print_config`, the effective settings as
    YAML with secrets redacted) and returns 0; or prints each problem on stderr and returns 2.
    """
    try:
        settings = load_settings(path, environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    n_venues = len(settings.venues)
    n_symbols = sum(len(v.symbols) for v in settings.venues.values())
    shard = settings.shard
    mine = shard_venues(settings)
    n_mine = sum(len(v.symbols) for v in mine.values())
    runs = f"; shard {shard.index} of {shard.count} runs {n_mine} of them" if shard.count > 1 else ""
    if shard.count > 1 and not n_mine:
        runs += " (nothing to do: it will run idle)"
    print(f"config OK: {_count(n_venues, 'venue')}, {_count(n_symbols, 'symbol')}{runs}")
    if print_config:
        print(yaml.safe_dump(redacted(settings), sort_keys=False), end="")
        # As YAML comments, so that the printed document still loads as a config file.
        print(f"# shard {shard.index} of {shard.count} (crc32 of venue:symbol mod count) runs "
              f"{_count(n_mine, 'instrument')}{':' if mine else ''}")
        for venue, venue_settings in mine.items():
            print(f"#   {venue}: {', '.join(venue_settings.symbols)}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
