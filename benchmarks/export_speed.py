"""Scoring speed of a run's three serving forms, side by side in one process: the eager model
(``predict_logits``), its TorchScript export and its ONNX export (ONNX Runtime, CPU provider).
For each model: trains a short run on the bundled data (or reuses ``--root``), exports both formats,
then scores the same encoded rows of the test split (preprocessing excluded: the three share it) and
prints rows/s at ``--batch`` (median of ``--repeats`` passes over ``--rows`` rows) and the median /
p99 latency of a single row, plus the largest |logit difference| to eager.

    PYTHONPATH=src python benchmarks/export_speed.py --models din,deepfm,dien,graphfm,deminet
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="din,deepfm,dien,graphfm,deminet")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--singles", type=int, default=200, help="single-row calls timed per form")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and ONNX Runtime")
    ap.add_argument("--root", help="keep runs and exports here (default: a temporary directory)")
    a = ap.parse_args()

    import onnxruntime as ort

    from ctrgraph.cli import main as cli
    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.runs.assemble import dataset_for, load_run, read_run_config
    from ctrgraph.runs.model_export import ExportedScorer

    torch.set_num_threads(a.threads)
    root = Path(a.root or tempfile.mkdtemp(prefix="export-speed-"))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, {a.threads} thread(s); rows/s at batch {a.batch}, single-row ms")
    print(f"{'model':10s} {'form':12s} {'rows/s':>10s} {'1-row p50':>10s} {'1-row p99':>10s} {'max |dz|':>10s}")
    for model in a.models.split(","):
        run = root / model
        if not (run / "metrics.json").exists():
            with contextlib.redirect_stdout(io.StringIO()):  # the CLI's run summary
                assert cli(["train", "--model", model, "--set", "train.epochs=1", "--set", "train.progress=false",
                            "--set", f"train.num_threads={a.threads}", "--out", str(run)]) == 0
        _, m, schema, _ = load_run(run)
        arrays = {k: v[: a.rows] for k, v in dataset_for(read_run_config(run)).split("test").items()}
        forms = {"eager": None}
        for fmt in ("torchscript", "onnx"):
            if not (root / f"{model}.{fmt}").exists():
                with contextlib.redirect_stdout(io.StringIO()):  # its serving.json
                    assert cli(["export", "--run", str(run), "--out", str(root / f"{model}.{fmt}"),
                                "--format", fmt]) == 0
            forms[fmt] = ExportedScorer(root / f"{model}.{fmt}", threads=a.threads)
        batches = list(BatchLoader(arrays, schema, a.batch, trim=False))
        singles = list(BatchLoader({k: v[: a.singles] for k, v in arrays.items()}, schema, 1, trim=False))
        ref = None
        for name, exp in forms.items():
            if exp is None:
                def call(b, m=m):
                    with torch.no_grad():
                        return m(b).logits.double().numpy()
            else:
                def call(b, exp=exp):
                    return exp.module(b, exp.names)
            z = np.concatenate([call(b) for b in batches])  # also the warm-up
            ref = z if ref is None else ref
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                for b in batches:
                    call(b)
                times.append(time.perf_counter() - t0)
            lat = []
            for b in singles:
                t0 = time.perf_counter()
                call(b)
                lat.append(time.perf_counter() - t0)
            lat_ms = np.asarray(lat) * 1e3
            print(f"{model:10s} {name:12s} {len(z) / np.median(times):10.0f} {np.median(lat_ms):10.2f} "
                  f"{np.percentile(lat_ms, 99):10.2f} {np.abs(z - ref).max():10.2e}", flush=True)


if __name__ == "__main__":
    main()
