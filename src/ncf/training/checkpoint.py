"""Atomic per-epoch checkpoints: tensors via ``torch.save`` of plain state dicts (loaded with
``weights_only=True``) in ``checkpoint-EPOCH.pt``, and training state as JSON in
``state.json`` naming that file, each written to a temp file then ``os.replace``d. The
epoch's sampling and shuffling seeds derive from ``(seed, epoch)``, so a resumed run
reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ncf.errors import ModelFileError

CHECKPOINT = "checkpoint.pt"
STATE = "state.json"
FORMAT = 1


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(directory: str | Path, tensors: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``tensors`` (nested dicts of tensors: model, optimisers, best weights) and JSON
    ``state``.

    The tensors go to a new file named after the epoch; only then is ``state.json`` replaced
    to name it, and older tensor files are removed last. A crash at any point leaves
    ``state.json`` naming a complete tensor file, so a checkpoint is never lost.
    """
    directory = Path(directory)
    epoch = int(state.get("epoch", tensors.get("epoch", 0)))
    name = f"checkpoint-{epoch:05d}.pt"
    state = {**state, "format": FORMAT, "tensors": name}
    _atomic_write(directory / name, lambda fh: torch.save(tensors, fh))
    payload = json.dumps(state, indent=1, default=_json_default).encode()
    _atomic_write(directory / STATE, lambda fh: fh.write(payload))
    for old in directory.glob("checkpoint-*.pt"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(tensors, state) from ``directory``, or None when there is no checkpoint."""
    directory = Path(directory)
    if not (directory / STATE).is_file():
        return None
    try:
        state = json.loads((directory / STATE).read_text())
        name = state.get("tensors", CHECKPOINT)
        if not isinstance(name, str) or Path(name).name != name:
            raise ValueError(f"invalid tensor file name {name!r}")
        tensors = torch.load(directory / name, weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{directory}: unreadable checkpoint ({exc})") from exc
    if state.get("format") != FORMAT or tensors.get("epoch") != state.get("epoch"):
        raise ModelFileError(
            f"{directory}: checkpoint files disagree or have an unknown format "
            f"(expected format {FORMAT} with matching epochs)"
        )
    return tensors, state


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
