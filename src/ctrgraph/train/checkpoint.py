"""Atomic file writes: a crash never leaves a half-written checkpoint or result."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj, path: Path) -> None:
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def save_json(obj, path: Path) -> None:
    data = json.dumps(obj, indent=1, default=float).encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def load_torch(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False)
