"""The pipeline facts an ONNX model carries in its metadata_props: written by export (vocoder,
sample rate, hop, mel bands, where the weights came from), extended by clean (precision, fp16
share, precision file), read by build, validate and serving. Values are stored as JSON text."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from pipeline.errors import UserError
from runtime.errors import reason_of

# what every model of the pipeline carries from export on; clean, build and validate refuse a model without
REQUIRED = ("vocoder", "sampling_rate", "hop", "n_mels", "checkpoint", "checkpoint_sha256")


def missing_metadata(metadata: dict[str, Any]) -> list[str]:
    """The REQUIRED keys `metadata` lacks, in order (empty: the model came from python -m export)."""
    return [key for key in REQUIRED if key not in metadata]


def metadata_of(model: onnx.ModelProto) -> dict[str, Any]:
    values = {}
    for entry in model.metadata_props:
        try:
            values[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            values[entry.key] = entry.value  # plain strings such as "v3" are stored unquoted
    return values


def update_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Add or replace entries, keeping the others."""
    merged = {**metadata_of(model), **values}
    del model.metadata_props[:]
    for key, value in merged.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file, without loading its weights; an unreadable file is one line."""
    try:
        return metadata_of(onnx.load(str(path), load_external_data=False))
    except (DecodeError, ValueError, OSError) as error:
        raise UserError(f"{path} is not a readable ONNX model ({reason_of(error)}; truncated or corrupt?); "
                        "re-export it with `python -m export` or re-run `make engines`") from None
