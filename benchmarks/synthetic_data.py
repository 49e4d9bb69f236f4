"""Generation and encoding cost of the ``synthetic`` recipe at scale.

Each size runs in its own subprocess so that peak RSS (``ru_maxrss``) figures do not mix::

    PYTHONPATH=src python benchmarks/synthetic_data.py --sizes 1000000 10000000

``--mode consume`` replaces ``encode(raw)`` by :func:`encode_consuming` (same vocabularies and ids,
built from the public steps of ``ctrgraph.data.encode``) to measure the peak that ``encode`` would
have with the memory changes proposed for it; ``--check`` also compares its arrays with ``encode``'s.

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


def encode_consuming(raw):
    """``encode(raw)`` as it could be with a ``consume`` option (the changes proposed for encode.py).

    Same vocabularies and ids as ``encode``, but (1) each raw column is dropped once encoded,
    (2) raw (non-embedded) sequences are copied chunk by chunk into one array, and (3) when the rows
    are already ordered train | valid | test, sequence columns are encoded in place, chunk by chunk
    (ids are int32, so an int32 raw array can hold them).
    """
    from types import SimpleNamespace

    import numpy as np

    from ctrgraph.data.dataset import EncodedDataset
    from ctrgraph.data.encode import CHUNK, build_vocabs, encode_columns
    from ctrgraph.data.raw import SPLIT_NAMES

    raw.validate("synthetic")
    vocabs = build_vocabs(raw)
    n = len(raw)
    identity = bool((np.diff(raw.split) >= 0).all())
    order = None if identity else np.argsort(raw.split, kind="stable")
    arrays = {}
    for f in raw.schema.fields:
        src = raw.columns.pop(f.name)
        if f.is_sequence_like and (not f.embed or (identity and src.dtype == np.int32)):
            ln = raw.lengths[f.name]
            inplace = identity and (not f.embed or src.dtype == np.int32)
            dst = src if inplace else np.empty((n, f.max_len), dtype=src.dtype if not f.embed else np.int32)
            for s in range(0, n, CHUNK):
                r = slice(s, s + CHUNK) if identity else order[s:s + CHUNK]
                a = src[r]
                if f.embed:
                    a = vocabs[f.table].encode(a)
                a[np.arange(f.max_len)[None, :] >= ln[r][:, None]] = 0
                dst[s:s + CHUNK] = a
            arrays[f.name] = dst
        else:
            rows = np.arange(n) if identity else order
            arrays.update(encode_columns({f.name: src}, raw.lengths, SimpleNamespace(fields=[f]), vocabs, rows=rows))
        del src
    counts = np.bincount(raw.split.astype(np.int64), minlength=3)
    starts = np.concatenate([[0], np.cumsum(counts)])
    bounds = {SPLIT_NAMES[k]: (int(starts[k]), int(starts[k + 1])) for k in (0, 1, 2)}
    return EncodedDataset(raw.schema, arrays, vocabs, bounds, dict(raw.meta))


def run_one(n: int, max_len: int, mode: str = "encode") -> dict:
    """Generate and encode one data set in this process; return timings and peaks."""
    from ctrgraph.data.encode import encode
    from ctrgraph.data.recipes import build_raw

    params = {"n_instances": n, "n_users": max(10, n // 20), "n_items": max(20_000, n // 50),
              "n_categories": 100, "max_len": max_len}
    base = _rss_gib()
    t0 = time.perf_counter()
    raw = build_raw("synthetic", params)
    t1 = time.perf_counter()
    gen_peak = _rss_gib()
    raw_gib = _nbytes(raw.columns)
    ds = encode(raw, source="synthetic") if mode == "encode" else encode_consuming(raw)
    t2 = time.perf_counter()
    return {"n": n, "max_len": max_len, "gen_s": t1 - t0, "enc_s": t2 - t1, "total_s": t2 - t0,
            "start_rss_gib": base, "gen_peak_gib": gen_peak, "peak_gib": _rss_gib(),
            "raw_gib": raw_gib, "encoded_gib": _nbytes(ds.arrays),
            "positives": float(ds.arrays["label"].mean())}


def check_consuming(n: int = 100_000) -> None:
    """``encode_consuming`` gives the same arrays, vocabularies and bounds as ``encode``."""
    import numpy as np

    from ctrgraph.data.encode import encode
    from ctrgraph.data.recipes import build_raw

    params = {"n_instances": n, "n_users": n // 20}
    for split in ("user", "time"):
        a = encode(build_raw("synthetic", dict(params, split=split)))
        b = encode_consuming(build_raw("synthetic", dict(params, split=split)))
        assert a.bounds == b.bounds and set(a.arrays) == set(b.arrays)
        for k in a.arrays:
            assert a.arrays[k].dtype == b.arrays[k].dtype and np.array_equal(a.arrays[k], b.arrays[k]), k
        for k in a.vocabs:
            assert np.array_equal(a.vocabs[k].values, b.vocabs[k].values), k
    print(f"check: encode_consuming == encode at {n:,} instances (user and time splits)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--mode", choices=["encode", "consume"], default="encode",
                    help="encode: ctrgraph.data.encode.encode; consume: free raw columns while encoding")
    ap.add_argument("--check", action="store_true", help="first check that consume mode encodes identically")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(run_one(a.one, a.max_len, a.mode)))
        return
    if a.check:
        check_consuming()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"max_len {a.max_len}, mode {a.mode}")
    hdr = ("instances", "gen s", "encode s", "total s", "gen peak GiB", "peak GiB", "raw GiB", "encoded GiB", "pos")
    print(" | ".join(f"{h:>12}" for h in hdr))
    for n in a.sizes:
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
