"""Instrument metadata (tick size, contract size, linear/inverse) through ccxt.

Two sources, one parser: live, ccxt's async client asks the venue's REST API at a configurable base
URL (the simulator in tests and demos); offline, ccxt's own market parsing runs over the REST
responses a recording holds, answered by `RecordedTransport` instead of the network. Either way
the venue's JSON is interpreted by ccxt, so unified symbols match what every ccxt user sees.

Lifecycle: `retirement` reads from one market (or its absence) whether the instrument stopped trading, and
`retire_time` when it will (a dated future's expiry, a perpetual's scheduled delisting). Pure functions over ccxt's
market and the venue's own fields in it (`info`), as each venue marks them:
* bybit: `status` Delivering / Closed (PreLaunch is not retired: it has not started); `deliveryTime` (ms, "0" for
  none) is a future's delivery and, on a perpetual, its delisting time.
* binanceusdm: `status` (USD-M's field; `contractStatus` on COIN-M) DELIVERING / DELIVERED / PRE_SETTLE / SETTLING /
  CLOSE (PENDING_TRADING has not started); `deliveryDate` (ms; 4133404800000 on perpetuals means none).
* okx: `state` (`suspend` is temporary: not retired); `expTime` (ms, "" for none); expired instruments leave the list.
* deribit: `is_active` false; `expiration_timestamp` (ms; 32503708800000 on perpetuals means none).
* hyperliquid: `isDelisted` true.
An instrument that is no longer listed at all is delisted, on every venue, but only once `UnlistedGuard` confirms it:
an answer can omit an instrument for reasons that have nothing to do with the instrument (a truncated page, a
filter, a glitch), and a retired book never comes back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from flowgauge.connectors.failures import HttpStatusError, cause_class, describe
from flowgauge.types import ContractKind, Instrument, RetireReason

log = logging.getLogger(__name__)

# ccxt's fetchMarkets market families per venue; spot is never tracked (flowgauge is for derivatives).
_MARKET_TYPES: dict[str, list[str]] = {"bybit": ["linear", "inverse"]}
# Hyperliquid: perps only (ccxt then asks /info for spotMeta and metaAndAssetCtxs, skipping spot and HIP-3).
_MARKET_TYPES["hyperliquid"] = ["swap"]
# Binance USD-M: `linear` makes ccxt ask `/fapi/v1/exchangeInfo` only (USDT/USDC perps and quarterlies).
_MARKET_TYPES["binanceusdm"] = ["linear"]
# OKX: SWAP and FUTURES only (ccxt then asks /api/v5/public/instruments?instType=SWAP and =FUTURES).
_MARKET_TYPES["okx"] = ["swap", "future"]
# Query parameters that only page or size a request; a recorded answer matches regardless of them.
_PAGING_PARAMS = frozenset({"limit"})


class MarketsError(RuntimeError):
    """Instrument metadata could not be loaded (`cause` is its cause class, see `failures`), or a configured
    symbol does not exist (`cause` None: a configuration error, retrying cannot help)."""

    def __init__(self, message: str, *, cause: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after_s = retry_after_s  # rate limited (429/418): wait at least this long before asking again


# Venues whose ccxt market needs a venue-specific mapping (module:function taking the market).
_VENUE_MAPPERS = {
    "hyperliquid": "flowgauge.connectors.hyperliquid:instrument_from_market",
    "okx": "flowgauge.connectors.okx:okx_instrument",  # ctVal x ctMult, ctType
}


def instrument_from_market(venue: str, market: Mapping[str, Any]) -> Instrument:
    """Map one ccxt unified market to our `Instrument` (the venue's own mapper where it has one)."""
    mapper = _VENUE_MAPPERS.get(venue)
    if mapper is not None:
        import importlib

        module_name, _, function = mapper.partition(":")
        return getattr(importlib.import_module(module_name), function)(market)  # type: ignore[no-any-return]
    return generic_instrument_from_market(venue, market)


def generic_instrument_from_market(venue: str, market: Mapping[str, Any]) -> Instrument:
    """ccxt's unified fields only; venue mappers start from this."""
    linear = bool(market.get("linear"))
    inverse = bool(market.get("inverse"))
    spot = bool(market.get("spot"))
    if spot:
        category = "spot"
    elif inverse:
        category = "inverse"
    else:
        category = "linear"
    tick = market.get("precision", {}).get("price")
    return Instrument(
        venue=venue,
        symbol=str(market["symbol"]),
        venue_id=str(market["id"]),
        category=category,
        kind=ContractKind.INVERSE if inverse and not linear else ContractKind.LINEAR,
        contract_size=float(market.get("contractSize") or 1.0),
        tick_size=float(tick) if tick else 0.0,
        base=str(market["base"]),
        quote=str(market["quote"]),
        settle=market.get("settle"),
        derivative=bool(market.get("swap") or market.get("future")),
    )


def select(venue: str, markets: Iterable[Mapping[str, Any]], symbols: Sequence[str]) -> list[Instrument]:
    """The instruments for `symbols`, in order; raises MarketsError naming every unknown symbol."""
    by_symbol = {m["symbol"]: m for m in markets}
    missing = [s for s in symbols if s not in by_symbol]
    if missing:
        raise MarketsError(f"{venue}: unknown symbol(s) {', '.join(missing)}")
    chosen = [instrument_from_market(venue, by_symbol[s]) for s in symbols]
    not_derivative = [i.symbol for i in chosen if not i.derivative]
    if not_derivative:
        raise MarketsError(f"{venue}: not a perpetual or future: {', '.join(not_derivative)}")
    return chosen


def _ccxt_options(venue: str) -> dict[str, Any]:
    types = _MARKET_TYPES.get(venue)
    return {"fetchMarkets": {"types": types}} if types else {}


def point_ccxt_at(exchange: Any, rest_url: str | None) -> None:
    """Swap scheme and host (plus any path prefix of `rest_url`) into every REST URL ccxt holds, keeping
    each URL's own path: ccxt's Binance bases carry the API prefix (`https://fapi.binance.com/fapi/v1`)."""
    if not rest_url:
        return
    target = urlsplit(rest_url.rstrip("/"))
    urls = exchange.urls["api"]
    for name, url in list(urls.items()):
        if not isinstance(url, str):
            continue
        parts = urlsplit(url)
        if not parts.scheme.startswith("http"):
            continue  # websocket entries are not REST
        urls[name] = urlunsplit((target.scheme, target.netloc, target.path + parts.path, parts.query, ""))


async def load_markets(
    venue: str,
    rest_url: str | None,
    timeout_s: float = 10.0,
    on_response: Callable[[str, str], None] | None = None,
) -> list[dict[str, Any]]:
    """All markets of `venue` from its REST API at `rest_url` (None: ccxt's production URL).

    `on_response(url, body)` sees every REST answer, so a recorder can keep the metadata a replay
    of the session will need.
    """
    import ccxt.async_support as ccxt_async  # heavy import, only needed by the live daemon

    exchange_class = getattr(ccxt_async, venue, None)
    if exchange_class is None:
        raise MarketsError(f"ccxt has no exchange {venue!r}")
    options = {"timeout": int(timeout_s * 1000), "options": _ccxt_options(venue)}
    observer = on_response

    class _Observed(exchange_class):  # type: ignore[misc, valid-type]
        async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            answer = await super().fetch(url, method, headers, body)
            if observer is not None:
                observer(url, orjson.dumps(answer).decode())
            return answer

        def handle_errors(self, code: int, reason: str, url: str, method: str, *args: Any) -> Any:
            # ccxt maps an error status to its own types (Bybit's 403 becomes RateLimitExceeded) and drops
            # the status; a user behind a geo-block needs to see "HTTP 403", so it is kept here.
            if code is not None and code >= 400:
                retry_after = None
                if code in (418, 429):  # rate limited: the venue says how long to wait (Retry-After)
                    from flowgauge.connectors.rest import retry_after_s

                    headers = args[0] if args and isinstance(args[0], Mapping) else {}
                    header = next((str(v) for k, v in headers.items() if str(k).lower() == "retry-after"), None)
                    retry_after = retry_after_s(code, header)
                raise HttpStatusError(code, reason or "", url.split("?")[0], retry_after)
            return super().handle_errors(code, reason, url, method, *args)

    exchange = _Observed(options)
    point_ccxt_at(exchange, rest_url)
    try:
        markets = await exchange.load_markets()
    except Exception as exc:
        cause = cause_class(exc)
        raise MarketsError(
            f"{venue}: loading markets from {rest_url or 'production'} failed ({cause}): {describe(exc)}",
            cause=cause,
            retry_after_s=getattr(exc, "retry_after_s", None),
        ) from exc
    finally:
        await exchange.close()
    return list(markets.values())


# Expiry times at or beyond this (2100-01-01, ms) are placeholders for "never" (Binance perpetuals 4133404800000,
# Deribit perpetuals 32503708800000).
NEVER_MS = 4_102_444_800_000
# The venue's own fields, in ccxt's `info`, holding a status, and the statuses that mean "no longer trading".
_STATUS_FIELD: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "bybit": (("status",), frozenset({"Delivering", "Closed"})),
    "binanceusdm": (
        ("status", "contractStatus"),
        frozenset({"DELIVERING", "DELIVERED", "PRE_SETTLE", "SETTLING", "CLOSE"}),
    ),
}
# The venue's own field, in ccxt's `info`, with a perpetual's scheduled delisting time (ccxt reads it for dated
# futures only, as `expiry`).
_DELIST_TIME_FIELD = {"bybit": "deliveryTime", "binanceusdm": "deliveryDate", "okx": "expTime"}


def _ms(value: object) -> int | None:
    """A venue time in ms (int or numeric string), None for none ("0", "", placeholders of "never")."""
    if isinstance(value, bool):
        return None
    try:
        ms = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return ms if 0 < ms < NEVER_MS else None


def retire_time(venue: str, market: Mapping[str, Any]) -> int | None:
    """When the instrument stops trading (ms since the epoch): a dated future's expiry, or a perpetual's scheduled
    delisting time; None when there is none."""
    expiry = _ms(market.get("expiry"))
    if expiry is not None:
        return expiry
    field = _DELIST_TIME_FIELD.get(venue)
    info = market.get("info")
    if field is None or not isinstance(info, Mapping):
        return None
    return _ms(info.get(field))


def retirement(
    venue: str, symbol: str, market: Mapping[str, Any] | None, now_ms: int
) -> tuple[RetireReason, str] | None:
    """Whether `symbol` stopped trading, judged from its current `market` (None: the venue no longer lists it) at
    `now_ms`: (reason, one-line detail), or None while it trades (or has not started)."""
    if market is None:
        return RetireReason.DELISTED, f"{venue} no longer lists {symbol}"
    at = retire_time(venue, market)
    if at is not None and at <= now_ms:
        return RetireReason.EXPIRED, f"expired at {_iso(at)}"
    info = market.get("info")
    info = info if isinstance(info, Mapping) else {}
    status_field = _STATUS_FIELD.get(venue)
    if status_field is not None:
        fields, dead = status_field
        for field in fields:
            status = info.get(field)
            if isinstance(status, str) and status in dead:  # anything else (a list from a broken answer) is no status
                return RetireReason.DELISTED, f"{venue} {field} is {status}"
    elif venue == "deribit" and info.get("is_active") is False:
        return RetireReason.DELISTED, "deribit is_active is false"
    elif venue == "hyperliquid" and info.get("isDelisted") is True:
        return RetireReason.DELISTED, "hyperliquid isDelisted is true"
    return None


class UnlistedGuard:
    """Decides when "no longer listed" may retire a book, since a retired book never comes back: an instrument
    missing from a metadata answer is delisted only when it is missing from two consecutive usable answers. An
    answer is usable when it is not empty and holds at least half as many markets as the last usable one (a
    truncated page or a filtered answer is not usable); an unusable answer neither starts nor confirms an absence.
    A venue that really shrinks its listing by half is believed at its `SHRUNK_TO_BELIEVE`-th such answer in a row.

    `listed`: the number of markets in the answer the instruments were loaded from."""

    MIN_FRACTION = 0.5
    SHRUNK_TO_BELIEVE = 3

    def __init__(self, listed: int) -> None:
        self._baseline = listed
        self._shrunk = 0  # consecutive non-empty answers below MIN_FRACTION of the baseline
        self.missing_once: set[str] = set()  # missing from the last usable answer (still live)

    def unlisted(self, markets: Mapping[str, Any], symbols: Iterable[str]) -> tuple[list[str], list[str]]:
        """Of the live `symbols`, those one answer (`markets`: unified symbol -> market) no longer lists:
        (confirmed: missing from two usable answers in a row, to retire as delisted; first: missing for the first
        time, to wait for the next answer). Both empty when the answer is not usable."""
        self.missing_once.difference_update([s for s in self.missing_once if s in markets])
        if not markets:
            return [], []
        if len(markets) < self._baseline * self.MIN_FRACTION:
            self._shrunk += 1
            if self._shrunk < self.SHRUNK_TO_BELIEVE:
                return [], []
        self._shrunk = 0
        self._baseline = len(markets)
        absent = [s for s in symbols if s not in markets]
        confirmed = [s for s in absent if s in self.missing_once]
        first = [s for s in absent if s not in self.missing_once]
        self.missing_once = set(first)
        return confirmed, first


# A dated contract's ccxt unified symbol: BASE/QUOTE:SETTLE-YYMMDD (its delivery date).
_DATED_SYMBOL = re.compile(r"(?P<base>[^/:\s]+)/(?P<quote>[^/:\s]+):(?P<settle>[^/:\s-]+)-(?P<date>\d{6})")


def delivered_by_name(symbol: str, now_ms: int) -> str | None:
    """A dated contract whose delivery date (in its unified symbol) is before today (UTC): surely delivered, whatever
    the venue still lists; its date (YYYY-MM-DD), else None. Venues drop delivered contracts from their listing
    (OKX, Deribit, Bybit), so such a configured symbol is expired, not unknown."""
    import datetime

    match = _DATED_SYMBOL.fullmatch(symbol)
    if match is None:
        return None
    try:
        day = datetime.datetime.strptime(match["date"], "%y%m%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    today = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return day.date().isoformat() if day < today else None


def delivered_instrument(venue: str, symbol: str) -> Instrument:
    """A stand-in `Instrument` for a configured dated contract the venue no longer lists (`delivered_by_name`): its
    book is retired at once and never subscribed, so only its names matter (venue id unknown: empty)."""
    match = _DATED_SYMBOL.fullmatch(symbol)
    if match is None:
        raise ValueError(f"{symbol!r} is not a dated contract's unified symbol")
    inverse = match["settle"] != match["quote"]
    return Instrument(
        venue=venue,
        symbol=symbol,
        venue_id="",
        category="inverse" if inverse else "linear",
        kind=ContractKind.INVERSE if inverse else ContractKind.LINEAR,
        contract_size=1.0,
        tick_size=0.0,
        base=match["base"],
        quote=match["quote"],
        settle=match["settle"],
        derivative=True,
    )


def _iso(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class RecordedTransport:
    """Answers ccxt's REST requests from recorded (url, body) pairs instead of the network."""

    def __init__(self, responses: Iterable[tuple[str, str]]) -> None:
        self._responses: list[tuple[str, dict[str, str], str]] = []
        for url, body in responses:
            parts = urlsplit(url)
            self._responses.append((parts.path, dict(parse_qsl(parts.query)), body))
        self.unanswered: list[str] = []

    def answer(self, url: str) -> Any:
        parts = urlsplit(url)
        asked = {k: v for k, v in parse_qsl(parts.query) if k not in _PAGING_PARAMS}
        for path, recorded, body in self._responses:
            if path != parts.path:
                continue
            recorded_keys = {k: v for k, v in recorded.items() if k not in _PAGING_PARAMS}
            if all(recorded_keys.get(k) == v for k, v in asked.items()):
                return orjson.loads(body)
        # Not recorded (e.g. a pre-launch listing or a second page): answer "nothing there".
        self.unanswered.append(url)
        return {}


def markets_from_recording(venue: str, responses: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Run ccxt's market loading for `venue` over recorded REST responses."""
    import ccxt

    exchange_class = getattr(ccxt, venue, None)
    if exchange_class is None:
        raise MarketsError(f"ccxt has no exchange {venue!r}")
    transport = RecordedTransport(responses)

    class _Recorded(exchange_class):  # type: ignore[misc, valid-type]
        def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            return transport.answer(url)

    exchange = _Recorded({"options": _ccxt_options(venue)})
    try:
        markets = exchange.load_markets()
    except Exception as exc:
        raise MarketsError(f"{venue}: recorded instrument metadata unusable: {exc}") from exc
    if transport.unanswered:
        log.debug("recorded markets: %d requests had no recorded answer", len(transport.unanswered))
    return list(markets.values())
