"""Build the trimmed Binance USD-M sample the benchmark ships in `service/flowgauge/bench/data/` (run once, by hand).

Reads the full shared recording (74k frames, 2.6 MB) and writes a small file in the same recording format
holding only what the book benchmark needs: the header, the ETHUSDT entry of `exchangeInfo`, the connect
line, the REST depth snapshot, and `--frames` depth updates starting at the one that bridges the snapshot
(`U <= lastUpdateId <= u`), so every frame in the sample is applied by every book under test. The benchmark
itself never reads ../shared.

    python benchmarks/make_bench_data.py ../shared/fixtures/recordings/binance-usdm-ethusdt-2024-08.jsonl.zst
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import orjson
import zstandard

from flowgauge.recording import Connect, Header, Http, Recv, iter_records

DATA = Path(__file__).resolve().parent.parent / "service" / "flowgauge" / "bench" / "data"
OUT = DATA / "binance-usdm-ethusdt-2024-08-depth.jsonl.zst"


def trim(source: Path, out: Path, frames: int, symbol: str = "ETHUSDT") -> int:
    """Write the trimmed sample; returns the number of depth frames written."""
    header: Header | None = None
    info: Http | None = None
    connect: Connect | None = None
    snapshot: Http | None = None
    depth: list[Recv] = []
    for record in iter_records(source):
        if isinstance(record, Header):
            header = record
        elif isinstance(record, Connect) and connect is None:
            connect = record
        elif isinstance(record, Http) and "exchangeInfo" in record.url:
            body = orjson.loads(record.data)
            body["symbols"] = [s for s in body["symbols"] if s["symbol"] == symbol]
            body["assets"] = []
            info = Http(record.conn, record.ts, record.url, orjson.dumps(body).decode())
        elif isinstance(record, Http) and "/depth" in record.url:
            snapshot = record
        elif isinstance(record, Recv) and '"depthUpdate"' in record.data:
            depth.append(record)
    if header is None or info is None or connect is None or snapshot is None:
        raise SystemExit(f"{source}: header, exchangeInfo, connect or depth snapshot missing")
    last_update_id = orjson.loads(snapshot.data)["lastUpdateId"]
    start = next(
        i for i, r in enumerate(depth) if (d := orjson.loads(r.data)["data"])["U"] <= last_update_id <= d["u"]
    )
    chosen = depth[start : start + frames]
    encoder = msgspec.json.Encoder()
    lines = [encoder.encode(r) for r in (header, info, connect, snapshot, *chosen)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(zstandard.ZstdCompressor(level=19).compress(b"\n".join(lines) + b"\n"))
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--frames", type=int, default=3000)
    args = parser.parse_args()
    n = trim(args.source, args.out, args.frames)
    print(f"wrote {n} depth frames to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
