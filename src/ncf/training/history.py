"""Saving training history (a list of per-epoch dicts) as JSON or CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def save_history(history: list[dict[str, Any]], path: str | Path) -> None:
    """JSON for ``.json`` paths, else CSV (flags joined with ';')."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(history, indent=1))
        return
    keys: list[str] = []
    for rec in history:
        keys.extend(k for k in rec if k not in keys)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for rec in history:
            writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in rec.items()})
