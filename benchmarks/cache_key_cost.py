"""Cost of the data cache's content-hash key (`ctrgraph.data.io.file_fingerprint`: SHA-256 of every
source file, once per process) on each data set under a data folder and on a generated file of
``--gib`` GiB, against the size + mtime key it replaced (which trained on stale data after an edit
that kept both). Prints seconds and GB/s.

    python benchmarks/cache_key_cost.py --data-dir ../shared/data --gib 1
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ctrgraph.data import io


def _time(paths: list[Path]) -> tuple[float, float]:
    io._DIGESTS.clear()
    t0 = time.perf_counter()
    io.file_fingerprint(paths)
    hashed = time.perf_counter() - t0
    t0 = time.perf_counter()
    ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in paths)
    return hashed, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--gib", type=float, default=1.0, help="size of the generated file (0: skip)")
    a = ap.parse_args()
    rows = []
    root = Path(a.data_dir)
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        files = sorted(f for f in d.rglob("*") if f.is_file())
        size = sum(f.stat().st_size for f in files)
        rows.append((d.name, size, *_time(files)))
    if a.gib > 0:
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "big.bin"
            chunk = os.urandom(1 << 24)
            with open(f, "wb") as fh:
                fh.writelines(chunk for _ in range(int(a.gib * 64)))
            rows.append((f"generated {a.gib:g} GiB", f.stat().st_size, *_time([f])))
    print(f"{'data set':<34s} {'bytes':>14s} {'sha256 s':>9s} {'GB/s':>6s} {'size+mtime s':>13s}")
    for name, size, hashed, stat in rows:
        print(f"{name:<34s} {size:>14,d} {hashed:>9.3f} {size / 1e9 / max(hashed, 1e-9):>6.2f} {stat:>13.5f}")


if __name__ == "__main__":
    main()
