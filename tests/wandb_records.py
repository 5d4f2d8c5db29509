"""Reads an offline wandb run file (`run-<id>.wandb`) back into `wandb_internal_pb2.Record` messages.

wandb ships no Python reader for this file any more. Its format is a LevelDB-style log: a 7-byte file header
(":W&B", magic 0xBEE1, version), then 32 KiB blocks of chunks, each chunk with a 7-byte header
(CRC-32 of type byte + data, length, type FULL/FIRST/MIDDLE/LAST) and a block's tail padded with zeros when fewer
than 7 bytes remain. A record is one FULL chunk or FIRST + MIDDLE* + LAST; its bytes are a serialized Record.
"""
from __future__ import annotations

import struct
import zlib

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str) -> list[wandb_internal_pb2.Record]:
    data = open(path, "rb").read()
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a wandb run file (header {ident!r}, magic {magic:#x})")
    records, pending, pos = [], b"", FILE_HEADER.size
    while pos + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER.size:  # zero padding at a block's end
            pos += left_in_block
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding / pre-allocated tail
            pos += left_in_block
            continue
        chunk = data[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += CHUNK_HEADER.size + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def read_finished_run(path: str, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of a run file once its `exit` record is there: `finish()` returns before wandb's service
    process has written everything, so a file read at once can lack the history."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_records(path)
        except ValueError:  # a chunk half written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(records: list[wandb_internal_pb2.Record]) -> list[dict[str, str]]:
    """History rows (one per logged step) as {key: JSON-encoded value}."""
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): item.value_json for item in r.history.item})
    return rows
