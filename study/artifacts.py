"""Atomic writes of the small result files (JSON metrics, CSV histories).

A stage that fails half-way leaves the previous result in place: files are written to a temporary
name in the same directory and renamed over the old one only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bnn.checkpoint import atomic_write


def write_json(path: str | Path, data: dict) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
