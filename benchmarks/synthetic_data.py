"""Generation and encoding cost of the ``synthetic`` recipe at scale.

Each size runs in its own subprocess so that peak RSS (``ru_maxrss``) figures do not mix::

    PYTHONPATH=src python benchmarks/synthetic_data.py --sizes 1000000 10000000

``--mode consume`` (default) encodes as ``load_dataset`` does, freeing each raw column once encoded;
``--mode encode`` keeps the raw columns alive (the peak of a caller that still needs them).

Scaling: ``n_users = N / 20``, ``n_items = max(20_000, N / 50)``, 100 categories, ``max_len`` 50
(override with ``--max-len``); all other parameters are the recipe defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _nbytes(arrays: dict) -> float:
    return sum(a.nbytes for a in arrays.values()) / 2**30


def run_one(n: int, max_len: int, mode: str = "encode") -> dict:
    """Generate and encode one data set in this process; return timings and peaks."""
    from ctrgraph.data.encode import encode
    from ctrgraph.registry import build_raw

    params = {"n_instances": n, "n_users": max(10, n // 20), "n_items": max(20_000, n // 50),
              "n_categories": 100, "max_len": max_len}
    base = _rss_gib()
    t0 = time.perf_counter()
    raw = build_raw("synthetic", params)
    t1 = time.perf_counter()
    gen_peak = _rss_gib()
    raw_gib = _nbytes(raw.columns)
    ds = encode(raw, source="synthetic", consume=(mode == "consume"))
    t2 = time.perf_counter()
    return {"n": n, "max_len": max_len, "gen_s": t1 - t0, "enc_s": t2 - t1, "total_s": t2 - t0,
            "start_rss_gib": base, "gen_peak_gib": gen_peak, "peak_gib": _rss_gib(),
            "raw_gib": raw_gib, "encoded_gib": _nbytes(ds.arrays),
            "positives": float(ds.arrays["label"].mean())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(',')], nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--mode", choices=["encode", "consume"], default="consume",
                    help="consume: free raw columns while encoding (as load_dataset); encode: keep them")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one, a.max_len, a.mode)))
        return
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"max_len {a.max_len}, mode {a.mode}")
    hdr = ("instances", "gen s", "encode s", "total s", "gen peak GiB", "peak GiB", "raw GiB", "encoded GiB", "pos")
    print(" | ".join(f"{h:>12}" for h in hdr))
    for n in [x for g in a.sizes for x in (g if isinstance(g, list) else [g])]:
        p = subprocess.run([sys.executable, __file__, "--one", str(n), "--max-len", str(a.max_len),
                            "--mode", a.mode],
                           capture_output=True, text=True, env=os.environ)
        if p.returncode != 0:
            print(f"{n:>12} | failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        row = (f"{n:,}", f"{r['gen_s']:.1f}", f"{r['enc_s']:.1f}", f"{r['total_s']:.1f}", f"{r['gen_peak_gib']:.2f}",
               f"{r['peak_gib']:.2f}", f"{r['raw_gib']:.2f}", f"{r['encoded_gib']:.2f}", f"{r['positives']:.3f}")
        print(" | ".join(f"{x:>12}" for x in row), flush=True)


if __name__ == "__main__":
    main()
