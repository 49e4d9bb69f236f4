"""Atomic file writes (a crash never leaves a half-written checkpoint or result) and safe loading.

Checkpoints hold state dicts and plain data only (tensors, numbers, strings, lists, dicts) and are
read with ``torch.load(weights_only=True)``: a file whose pickle would import or call anything is
refused before anything in it runs. A truncated or corrupt file is a :class:`RunFileError` naming it.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import torch

from ..errors import RunFileError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide shared run directories


def atomic_write_bytes(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_json(obj, path: Path) -> None:
    data = json.dumps(obj, indent=1, default=float).encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def load_torch(path: Path):
    """A checkpoint (written by ``RunFiles.write_torch``), loaded with weights-only semantics (no code runs)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFileError(f"{path}: refused: the file holds Python objects other than tensors and plain "
                           f"data, and loading it could run code ({first[:200]})") from None
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:
        raise RunFileError(f"{path}: truncated or corrupt checkpoint, or not a torch checkpoint "
                           f"({type(e).__name__}: {str(e).strip()[:200]})") from None
