"""Saving training history (a list of per-epoch dicts) as JSON or CSV, atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def save_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """JSON for ``.json`` paths, else CSV (list values such as flags joined with ';').

    The file is written through a temporary file and a rename, so a reader never sees a
    partial history.
    """
    path = Path(path)
    if path.suffix == ".json":
        text = json.dumps(history, indent=1)
    else:
        keys: list[str] = []
        for rec in history:
            keys.extend(k for k in rec if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        for rec in history:
            writer.writerow({k: _cell(v) for k, v in rec.items()})
        text = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ";".join(map(str, value))
    return "" if value is None else value
