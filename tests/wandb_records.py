"""Read a W&B offline run file (`run-<id>.wandb`) without a server: its logged history and config.

The file is W&B's header (7 bytes) followed by LevelDB-style log blocks of 32 KiB whose records
(7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST) hold protobuf `Record`s.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _raw_records(data: bytes):
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def records(path: Path) -> list[pb.Record]:
    """Every protobuf record of an offline run file, in order (artifact, use_artifact, alert... records:
    `record.WhichOneof("record_type")` says which)."""
    out = []
    for raw in _raw_records(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        out.append(record)
    return out


def read_run(path: Path) -> tuple[list[dict], dict]:
    """(history rows, run config) of an offline run file."""
    history, config = [], {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
        elif kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    return history, config
