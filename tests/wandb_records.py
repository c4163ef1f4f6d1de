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


def _nested(update_items) -> dict:
    """Protobuf key/value items as a nested dict: `nested_key` ["pipeline/flow", "path"] goes to
    out["pipeline/flow"]["path"] (W&B keeps a logged key whole and nests the fields of its value)."""
    out: dict = {}
    for item in update_items:
        keys = list(item.nested_key) or [item.key]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


def _merged(path: Path, record_type: str, items) -> dict:
    values: dict = {}
    for record in records(path):
        if record.WhichOneof("record_type") == record_type:
            values.update(_nested(items(record)))
    return values


def logged_values(path: Path) -> dict:
    """Every logged key's last value, media as their JSON descriptions ({"_type": "table-file", "path":
    ...} for a wandb.Table, {"_type": "histogram", "values", "bins"} for a wandb.Histogram)."""
    return _merged(path, "history", lambda record: record.history.item)


def summary(path: Path) -> dict:
    return _merged(path, "summary", lambda record: record.summary.update)


def nested_config(path: Path) -> dict:
    """The run's config with W&B's own nested entries (`_wandb.visualize.<key>`: the custom charts)."""
    config: dict = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            for key, value in _nested(items).items():
                if isinstance(value, dict) and isinstance(config.get(key), dict):
                    config[key].update(value)
                else:
                    config[key] = value
    return config


def _table_file(run_folder: Path, value: dict) -> dict:
    assert value["_type"] == "table-file", value
    return json.loads((Path(run_folder) / "files" / value["path"]).read_text(encoding="utf-8"))


def read_table(run_folder: Path, value: dict) -> list[dict]:
    """The rows (dicts by column) of a logged wandb.Table, from its file under the run folder's files/."""
    table = _table_file(run_folder, value)
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def table_columns(run_folder: Path, value: dict) -> list[str]:
    return _table_file(run_folder, value)["columns"]
