"""The pipeline's vocabulary: typed, immutable events passed from venue parsers to the engine.

Lowest layer of the package: imports nothing from `service` and no I/O. Every event carries
`venue` (ccxt exchange id), `symbol` (ccxt unified symbol), `ts_exchange` and `ts_recv`
(integer nanoseconds since the epoch). Sizes are in base-asset units and prices in quote
currency: parsers convert venue contracts with the instrument's contract size, so nothing
downstream ever sees raw venue contracts.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

# A price level: (price in quote currency, size in base units). Size 0 deletes the level.
Level = tuple[float, float]

BUY: Literal[1] = 1
SELL: Literal[-1] = -1


class ContractKind(enum.StrEnum):
    LINEAR = "linear"  # size and P&L in base / quote; base size = contracts * contract_size
    INVERSE = "inverse"  # contracts are worth contract_size quote units; base size = that / price


class BookState(enum.StrEnum):
    SYNCING = "SYNCING"
    VALID = "VALID"
    INVALID = "INVALID"
    # Terminal: the instrument expired or was delisted. No resync, no payload after its final status, not counted
    # by readiness; added to schema v1 after its first release (README "Book lifecycle").
    RETIRED = "RETIRED"


class InvalidReason(enum.StrEnum):
    GAP = "GAP"
    CROSSED = "CROSSED"
    STALE = "STALE"
    RESET = "RESET"
    TICK_CHANGE = "TICK_CHANGE"
    BAD_FRAME = "BAD_FRAME"  # a malformed frame touched this book: assume an update was lost
    CHECKSUM = "CHECKSUM"  # the venue's book checksum disagrees with ours
    OVERFLOW = "OVERFLOW"  # too many deltas buffered while waiting for a snapshot


class RetireReason(enum.StrEnum):
    """Why a book is RETIRED (the status payload's `reason`; added to schema v1 with that state)."""

    EXPIRED = "EXPIRED"  # a dated future (or a perpetual with a scheduled delisting time) reached that time
    DELISTED = "DELISTED"  # the venue no longer lists the instrument as trading (metadata or stream signal)


class Instrument(msgspec.Struct, frozen=True):
    """Static facts about one tradable instrument, from the venue's REST metadata (via ccxt)."""

    venue: str  # ccxt exchange id, e.g. "bybit"
    symbol: str  # ccxt unified symbol, e.g. "BTC/USDT:USDT"
    venue_id: str  # the venue's own id, e.g. "BTCUSDT"
    category: str  # venue market family used to pick the stream, e.g. Bybit "linear" / "spot"
    kind: ContractKind
    contract_size: float  # linear: base units per contract; inverse: quote units per contract
    tick_size: float  # minimum price increment, quote currency
    base: str
    quote: str
    settle: str | None  # None for spot
    derivative: bool  # perpetual or dated future (spot is tracked by nobody here)

    @property
    def slug(self) -> str:
        """Topic-safe form of the unified symbol: `BTC/USDT:USDT` -> `BTC-USDT-USDT`."""
        return self.symbol.replace("/", "-").replace(":", "-")

    def base_size(self, contracts: float, price: float) -> float:
        """Convert a venue quantity in contracts to base-asset units at `price`."""
        if self.kind is ContractKind.LINEAR:
            return contracts * self.contract_size
        return contracts * self.contract_size / price if price > 0 else 0.0


class BookSnapshot(msgspec.Struct, frozen=True, gc=False):
    """Full replacement of one instrument's book (venue snapshot, or a venue reset such as Bybit `u=1`)."""

    venue: str
    symbol: str
    bids: tuple[Level, ...]  # any order; sizes in base units
    asks: tuple[Level, ...]
    seq: int | None  # venue's sequence id of this state (Bybit `u`); None if the venue has none
    ts_exchange: int
    ts_recv: int


class BookDelta(msgspec.Struct, frozen=True, gc=False):
    """Incremental change of one instrument's book. A level with size 0 is deleted."""

    venue: str
    symbol: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    seq: int  # venue's sequence id after applying this delta (Bybit `u`, Binance `u`)
    prev_seq: int | None  # the id the venue says must precede it (Binance `pu`); None where implied
    ts_exchange: int
    ts_recv: int
    first_seq: int | None = None  # first id covered by this delta (Binance `U`); None where not sent


class BestQuote(msgspec.Struct, frozen=True, gc=False):
    """One state of the venue's real-time best-quote (L1) stream: Binance `@bookTicker`, Bybit `orderbook.1`,
    OKX `bbo-tbt`, Deribit `quote` (README Venues). Feeds the L1 OFI accumulators only, never the book, and
    publishes no payload of its own. An empty side is None price and size (metrics.md 1.4 "empty side")."""

    venue: str
    symbol: str
    bid_px: float | None
    bid_sz: float | None  # base units
    ask_px: float | None
    ask_sz: float | None
    seq: int | None  # the stream's own update id (bookTicker `u`, orderbook.1 `u`, bbo-tbt `seqId`); None if none
    ts_exchange: int
    ts_recv: int
    # The stream restarted from a fresh state (Bybit `u == 1`): no flow across it, the next quote is a first state.
    reset: bool = False


class Trade(msgspec.Struct, frozen=True, gc=False):
    venue: str
    symbol: str
    price: float
    size: float  # base units
    side: int  # taker side: +1 buy, -1 sell
    trade_id: str
    forced: bool  # venue marks it as block / liquidation / ADL print: excluded from TFI
    ts_exchange: int
    ts_recv: int


class OpenInterest(msgspec.Struct, frozen=True, gc=False):
    venue: str
    symbol: str
    open_interest: float  # ONE-SIDED, base units (two-sided venue figures are halved by the parser)
    ts_exchange: int
    ts_recv: int


class FundingRate(msgspec.Struct, frozen=True, gc=False):
    """Funding, mark and index as last seen; fields the venue did not send are None."""

    venue: str
    symbol: str
    rate: float | None  # predicted / current funding rate for one interval, as a fraction
    interval_hours: float | None
    next_funding_ts: int | None  # ns
    mark_price: float | None
    index_price: float | None
    ts_exchange: int
    ts_recv: int
    # The venue's rolling 24 h traded volume in base units, where its ticker carries one (Bybit `volume24h`):
    # the flow_toxicity bucket size starts from it (metrics.toxicity). None: not sent.
    volume_24h: float | None = None


class Liquidation(msgspec.Struct, frozen=True, gc=False):
    venue: str
    symbol: str
    liquidated_side: Literal["long", "short"]  # the POSITION that was closed (venues disagree on S)
    price: float
    size: float  # base units
    ts_exchange: int
    ts_recv: int


class LongShortRatio(msgspec.Struct, frozen=True, gc=False):
    venue: str
    symbol: str
    kind: str  # "accounts", "top_positions", ...
    ratio: float  # longs / shorts
    ts_exchange: int
    ts_recv: int


class BadFrame(msgspec.Struct, frozen=True, gc=False):
    """A frame the parser could not use. `symbol` is set when the frame touched that instrument's book."""

    venue: str
    reason: str
    symbol: str | None
    touches_book: bool
    ts_recv: int
    # Why the book must be resynced when `touches_book`: BAD_FRAME, or CHECKSUM when the venue's own
    # checksum disagrees with our book.
    invalid_reason: InvalidReason | None = None


class BookStatus(msgspec.Struct, frozen=True, gc=False):
    """A book's sync state changed."""

    venue: str
    symbol: str
    state: BookState
    reason: InvalidReason | RetireReason | None
    detail: str
    ts_exchange: int
    ts_recv: int


class InstrumentRetired(msgspec.Struct, frozen=True, gc=False):
    """The venue says on its stream that an instrument stopped trading (Deribit's instrument state channel):
    its book is retired (`reason` EXPIRED or DELISTED)."""

    venue: str
    symbol: str
    reason: RetireReason
    detail: str
    ts_exchange: int
    ts_recv: int


MarketEvent = BookSnapshot | BookDelta | BestQuote | Trade | OpenInterest | FundingRate | Liquidation | LongShortRatio
Event = MarketEvent | BadFrame | BookStatus | InstrumentRetired
