"""Downloaders for users who are online (never called by tests: no network here)."""
from __future__ import annotations

import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from ..errors import DataError


def fetch_file(url: str, dest: Path) -> Path:
    """Download ``url`` to ``dest`` through a temporary file (an interrupted download leaves nothing)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as out:
            shutil.copyfileobj(r, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {e}") from None
    tmp.replace(dest)
    return dest


def fetch_zip(url: str, dest: Path, member_dir: str) -> Path:
    """Download ``url`` (a zip) and extract it under ``dest``; returns ``dest / member_dir``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "data.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(zpath, "wb") as out:
                shutil.copyfileobj(r, out)
        except OSError as e:
            raise DataError(f"download of {url} failed: {e}") from None
        with zipfile.ZipFile(zpath) as z:
            z.extractall(dest)
    return dest / member_dir
