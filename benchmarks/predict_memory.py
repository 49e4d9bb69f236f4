"""Peak memory and speed of ``ctrgraph predict`` on a large file: trains (or reuses) a run on the
bundled data, writes the bundled rows tiled to ``--rows`` rows as the raw CSV a user would score
(sequence columns joined with "|"), and runs ``ctrgraph predict`` in a subprocess, printing its
wall time, rows/s and peak resident memory (the child's ru_maxrss).

    PYTHONPATH=src python benchmarks/predict_memory.py --model din --rows 1000000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def raw_frame(rows: int) -> pd.DataFrame:
    """The bundled data's raw rows as a predict input (vectorised: loops over sequence positions)."""
    from ctrgraph.registry import build_raw

    raw = build_raw("movielens")
    cols = {}
    for f in raw.schema.fields:
        v = raw.columns[f.name]
        if f.is_sequence_like:
            ln = raw.lengths[f.name]
            s = np.where(ln > 0, v[:, 0].astype(str), "").astype(object)
            for j in range(1, v.shape[1]):
                s = s + np.where(j < ln, np.char.add("|", v[:, j].astype(str)), "").astype(object)
            cols[f.name] = s
        else:
            cols[f.name] = v
    df = pd.DataFrame(cols)
    reps = -(-rows // len(df))
    return pd.concat([df] * reps, ignore_index=True).iloc[:rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="din")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--run", help="an existing run directory (default: train one epoch of --model)")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="ctrgraph-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    run = Path(a.run) if a.run else work / f"run-{a.model}"
    if not (run / "metrics.json").exists():
        subprocess.run([sys.executable, "-m", "ctrgraph", "train", "--model", a.model, "--set", "train.epochs=1",
                        "--set", "train.progress=false", "--out", str(run)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    inp = work / f"rows-{a.rows}.csv"
    if not inp.exists():
        raw_frame(a.rows).to_csv(inp, index=False)
    # the predict process reports its own peak RSS (ru_maxrss of itself, not of the training child)
    code = ("import resource, runpy, sys\n"
            f"sys.argv = ['ctrgraph', 'predict', '--run', {str(run)!r}, '--input', {str(inp)!r}, "
            f"'--output', {str(work / 'pctr.csv')!r}]\n"
            "try:\n    runpy.run_module('ctrgraph', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    peak = int(res.stderr.split("PEAK")[-1].split()[0]) / 2**20  # KiB -> GiB (Linux)
    print(f"predict {a.model}: {a.rows:,} rows ({inp.stat().st_size / 2**20:,.0f} MiB CSV) in {wall:.1f} s "
          f"({a.rows / wall:,.0f} rows/s incl. start-up), peak RSS of the predict process {peak:.2f} GiB")


if __name__ == "__main__":
    main()
