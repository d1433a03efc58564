"""Model directories: ``model.safetensors`` (tensors) + ``config.json`` (everything else).

Nothing is ever unpickled: tensors load through safetensors, the rest is plain JSON whose keys
and types are checked. ``config.json`` records the SHA-256 of the weights file, so a truncated
or edited file is refused. Saves are atomic: the new directory is written beside the target
and swapped in with renames, so a crash mid-save leaves the previous model loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ncf import __version__
from ncf.errors import ModelFileError

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MAX_CONFIG_BYTES = 256 * 2**20
REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "library_version": str,
    "model": dict,
    "weights_sha256": str,
}
ALLOWED_KEYS = {
    *REQUIRED_KEYS,
    "training",
    "data",
    "metrics",
}


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_directory(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Atomically write ``tensors`` and ``config`` as a model directory at ``path``."""
    path = Path(path)
    parent = path.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ModelFileError(f"cannot write model to {path}: {exc.strerror or exc}") from None
    try:
        weights = staging / WEIGHTS
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(weights))
        full = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            **config,
            "weights_sha256": _sha256(weights),
        }
        with open(staging / CONFIG, "w", encoding="utf-8") as handle:
            json.dump(full, handle, indent=1, sort_keys=True, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        with open(weights, "rb+") as handle:
            os.fsync(handle.fileno())
        _swap_in(staging, path)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ModelFileError(
                f"cannot write model to {path}: {exc.strerror or exc}; any previous model "
                "there is unchanged"
            ) from None
        raise
    return path


def _swap_in(staging: Path, path: Path) -> None:
    backup = path.with_name(f".{path.name}.previous")
    if backup.exists():
        shutil.rmtree(backup)
    if path.exists():
        os.replace(path, backup)
    os.replace(staging, path)
    _fsync_dir(path.parent)
    shutil.rmtree(backup, ignore_errors=True)


def load_directory(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a model directory; return ``(tensors, config)``."""
    path = Path(path)
    if not path.exists():
        backup = path.with_name(f".{path.name}.previous")
        if backup.is_dir():  # a save was interrupted between its two renames
            path = backup
        else:
            raise ModelFileError(f"{path}: no model directory here")
    if not path.is_dir():
        raise ModelFileError(f"{path}: expected a model directory with {CONFIG} and {WEIGHTS}")
    root = path.resolve()
    files = {}
    for name in (CONFIG, WEIGHTS):
        candidate = path / name
        if not candidate.exists():
            raise ModelFileError(f"{path}: missing {name}")
        if candidate.is_symlink() or root not in candidate.resolve().parents:
            raise ModelFileError(f"{candidate}: symbolic links are refused in a model directory")
        if not candidate.is_file():
            raise ModelFileError(f"{candidate}: not a regular file")
        files[name] = candidate
    config = _read_config(files[CONFIG])
    if _sha256(files[WEIGHTS]) != config["weights_sha256"]:
        raise ModelFileError(
            f"{files[WEIGHTS]}: checksum does not match {CONFIG}; the file is truncated, "
            "edited or from another model"
        )
    try:
        tensors = load_file(str(files[WEIGHTS]))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{files[WEIGHTS]}: not a valid safetensors file ({exc})") from None
    return tensors, config


def _read_config(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: expected a JSON object at the top level")
    version = config.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {version} is newer than this library supports "
            f"({FORMAT_VERSION}); upgrade ncf to load it"
        )
    for key, kind in REQUIRED_KEYS.items():
        if key not in config:
            raise ModelFileError(f"{path}: missing key {key!r}")
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise ModelFileError(f"{path}: key {key!r} has the wrong type")
    unexpected = sorted(set(config) - ALLOWED_KEYS)
    if unexpected:
        raise ModelFileError(f"{path}: unexpected key(s) {unexpected}")
    if version < 1:
        raise ModelFileError(f"{path}: invalid format version {version}")
    return config


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")
