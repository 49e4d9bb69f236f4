"""The checksum manifest of a run directory (``DIR/checksums.json``) and its exclusive lock.

Every file ctrgraph writes into a run directory (config, schema, vocabularies, checkpoints, metrics)
is recorded with its size and SHA-256 when it is written; every file ctrgraph reads back from a run
directory is checked against that record first. A file that was changed, truncated, swapped for
another run's or dropped in from elsewhere is a :class:`~ctrgraph.errors.RunFileError` naming it,
before any byte of it is parsed. A directory written before manifests existed is refused with the
command that adopts it (``ctrgraph verify --adopt DIR``): checkpoints load with weights-only
semantics either way, so adopting a directory can never run code, but it is the user's statement
that its contents are the ones they trust.

The lock (``DIR/.lock``, ``fcntl.flock``) is held by the one process that trains into the directory;
a second process asking for it gets a :class:`~ctrgraph.errors.ConfigError` naming the holder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from ..errors import ConfigError, RunFileError
from .checkpoint import atomic_write_bytes, save_json

MANIFEST = "checksums.json"
LOCK = ".lock"
_UNTRACKED = {MANIFEST, LOCK}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class RunFiles:
    """Record and check the files of the run directory ``root`` (paths relative to it)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / MANIFEST

    def _rel(self, path: str | Path) -> str:
        p = Path(path)
        p = p if p.is_absolute() or p.parts[:len(self.root.parts)] == self.root.parts else self.root / p
        try:
            return p.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise RunFileError(f"{path}: not inside the run directory {self.root}") from None

    def exists(self) -> bool:
        return self.path.exists()

    def entries(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
            files = doc["files"]
            assert isinstance(files, dict) and all(isinstance(v, dict) and "sha256" in v for v in files.values())
            return files
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise RunFileError(f"{self.path}: the run's checksum manifest is unreadable or corrupt") from None

    def _save(self, files: dict[str, dict]) -> None:
        save_json({"format": 1, "algorithm": "sha256", "files": dict(sorted(files.items()))}, self.path)

    def record(self, *paths: str | Path) -> None:
        """Add (or refresh) the size and SHA-256 of ``paths`` (files under ``root``)."""
        files = self.entries()
        for p in paths:
            rel = self._rel(p)
            full = self.root / rel
            files[rel] = {"bytes": full.stat().st_size, "sha256": sha256_file(full)}
        self._save(files)

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write ``root/rel`` atomically and record it. The new checksum enters the manifest before
        the file is replaced, with the old one kept as ``previous`` until the replacement is done,
        so a process killed at any point leaves a directory whose every file verifies."""
        rel = self._rel(rel)
        full = self.root / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        files = self.entries()
        new = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        old = files.get(rel)
        if old is not None and old["sha256"] != new["sha256"]:
            self._save({**files, rel: {**new, "previous": {"bytes": old["bytes"], "sha256": old["sha256"]}}})
        elif old is None:
            self._save({**files, rel: new})
        atomic_write_bytes(full, lambda f: f.write(data))
        files[rel] = new
        self._save(files)
        return full

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj) -> Path:
        return self.write_bytes(rel, json.dumps(obj, indent=1, default=float).encode())

    def write_torch(self, rel: str, obj) -> Path:
        """A checkpoint (state dicts and plain data only: it is read back weights-only)."""
        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.write_bytes(rel, buf.getvalue())

    def write_npy(self, rel: str, array) -> Path:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        return self.write_bytes(rel, buf.getvalue())

    def copy_from(self, src: RunFiles, *rels: str) -> None:
        """Copy files of another run directory here, each verified against ``src``'s manifest
        (a tampered source is not copied); a folder copies every file under it."""
        for rel in rels:
            d = src.root / rel
            names = [p.relative_to(src.root).as_posix() for p in sorted(d.rglob("*")) if p.is_file()] \
                if d.is_dir() else [rel]
            for name in names:
                self.write_bytes(name, src.verify(name).read_bytes())

    def verify(self, path: str | Path) -> Path:
        """``path`` (relative to ``root`` or absolute) if it is what the run wrote; otherwise a
        :class:`RunFileError` that names it and says what is wrong."""
        rel = self._rel(path)
        full = self.root / rel
        if not self.path.exists():
            raise RunFileError(
                f"{self.root}: no {MANIFEST}: the run directory was written by an older ctrgraph or copied "
                f"without it, so {rel} cannot be checked; if you trust its files, "
                f"`ctrgraph verify --adopt {self.root}` records their checksums")
        entry = self.entries().get(rel)
        if entry is None:
            raise RunFileError(f"{full}: not a file this run wrote (absent from {self.path}); refusing to load it")
        if not full.exists():
            raise RunFileError(f"{full}: missing (the run wrote it; {MANIFEST} lists it)")
        size = full.stat().st_size
        ok = [entry] + ([entry["previous"]] if isinstance(entry.get("previous"), dict) else [])
        if all(size != e.get("bytes", size) for e in ok):
            raise RunFileError(f"{full}: {size} bytes where the run wrote {entry['bytes']}: truncated, extended "
                               f"or replaced after it was written; refusing to load it")
        if sha256_file(full) not in {e.get("sha256") for e in ok}:
            raise RunFileError(f"{full}: its contents changed after the run wrote it (SHA-256 differs from "
                               f"{MANIFEST}); refusing to load it")
        return full

    def check_all(self) -> list[tuple[str, str]]:
        """(relative path, status) for every recorded file and every unrecorded one:
        ``ok``, ``missing``, ``modified``, ``not recorded``."""
        files = self.entries()
        out = []
        for rel in sorted(files):
            full = self.root / rel
            if not full.exists():
                out.append((rel, "missing"))
                continue
            try:
                self.verify(rel)
                out.append((rel, "ok"))
            except RunFileError:
                out.append((rel, "modified"))
        for p in sorted(q for q in self.root.rglob("*") if q.is_file()):
            rel = p.relative_to(self.root).as_posix()
            if rel not in files and rel not in _UNTRACKED and not rel.endswith(".tmp"):
                out.append((rel, "not recorded"))
        return out

    def adopt(self) -> list[str]:
        """Record every file of a directory written before manifests (refused when one exists)."""
        if self.path.exists():
            raise ConfigError(f"{self.root} already has {MANIFEST}; `ctrgraph verify {self.root}` checks it")
        found = sorted(p for p in self.root.rglob("*") if p.is_file() and p.name not in _UNTRACKED
                       and not p.name.endswith(".tmp"))
        if not (self.root / "config.yaml").exists():
            raise ConfigError(f"{self.root} is not a run directory (no config.yaml)")
        self.record(*found)
        return [p.relative_to(self.root).as_posix() for p in found]


class RunLock:
    """Exclusive, non-blocking lock on a run directory for the life of a ``with`` block."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"{self.root} is in use by another ctrgraph process (pid {holder}); "
                              f"wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
