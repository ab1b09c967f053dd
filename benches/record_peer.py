"""Peer of examples/record_bench.rs: the same serialised messages written with Python `mcap`.

    python benches/record_peer.py BAG_DIR OUT_DIR [--chunk-size 1048576]

Reads every message of the bag in BAG_DIR (the recorder's paced zstd bag) into memory, then for
zstd, lz4 and none writes them to a fresh file OUT_DIR/peer_<compression>.mcap with
`mcap.writer.Writer` (profile ros2, the same schemas, channels and channel metadata, chunk size
as ours, chunk and data-section CRCs on as in the Rust `mcap` writer), and deletes it. Timed like
the Rust writer-only rows: wall (`time.perf_counter`) and process CPU (`time.process_time`)
around `start` ... `finish`, after `os.sync()`. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


def load(bag: Path):
    schemas, channels, messages = {}, {}, []
    for f in sorted(bag.glob("*.mcap")):
        with open(f, "rb") as fh:
            for schema, channel, message in make_reader(fh).iter_messages(log_time_order=False):
                schemas[schema.id] = schema
                channels[channel.id] = channel
                messages.append((channel.id, message.log_time, message.publish_time, message.sequence,
                                 message.data))
    return schemas, channels, messages


def write(path: Path, compression: CompressionType, chunk_size: int, schemas, channels, messages) -> dict:
    os.sync()  # as the Rust side: start from no dirty pages
    cpu0, t0 = time.process_time(), time.perf_counter()
    with open(path, "wb") as fh:
        w = Writer(fh, chunk_size=chunk_size, compression=compression, enable_data_crcs=True)
        w.start(profile="ros2", library="record_peer")
        schema_ids = {sid: w.register_schema(s.name, s.encoding, s.data) for sid, s in sorted(schemas.items())}
        channel_ids = {cid: w.register_channel(c.topic, c.message_encoding, schema_ids[c.schema_id], c.metadata)
                       for cid, c in sorted(channels.items())}
        for cid, log_time, publish_time, sequence, data in messages:
            w.add_message(channel_ids[cid], log_time=log_time, data=data, publish_time=publish_time,
                          sequence=sequence)
        w.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    size = path.stat().st_size
    payload = sum(len(m[4]) for m in messages)
    return {"compression": compression.name.lower(), "messages": len(messages), "payload_bytes": payload,
            "bag_bytes": size, "wall_s": wall, "cpu_s": cpu, "payload_mb_s": payload / 1e6 / wall,
            "bag_mb_s": size / 1e6 / wall, "ratio": payload / max(size, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--chunk-size", type=int, default=1 << 20)
    a = ap.parse_args()
    schemas, channels, messages = load(a.bag)
    a.out.mkdir(parents=True, exist_ok=True)
    import mcap
    results = []
    for name, c in COMPRESSIONS.items():
        path = a.out / f"peer_{name}.mcap"
        results.append(write(path, c, a.chunk_size, schemas, channels, messages))
        os.remove(path)
    print(json.dumps({"mcap_version": mcap.__version__, "writer": results}))


if __name__ == "__main__":
    main()
