"""Data-parallel training (torchrun + DDP, gloo on CPU): two processes compute what one computes.

- shards of a global batch are disjoint, cover it, and their ``batch_scale`` makes DDP's gradient
  average the global batch's mean (checked against a brute-force split);
- after N optimiser steps of a dropout-free model, 2 processes hold the parameters one process holds
  with the same global batch; the gathered test AUC is the AUC of one process on the same model;
- a 2-process run stopped by its time limit is resumed by 1 process and ends where an uninterrupted
  run ends; every registry model and provider trains under DDP with equal replicas.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ctrgraph.data.loader import BatchLoader, shard_bounds
from ctrgraph.registry import MODELS
from ctrgraph.runs.assemble import load_run
from ctrgraph.train.checkpoint import load_torch
from ctrgraph.train.metrics import auc
from ctrgraph.train.trainer import predict_logits

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ["--dataset", "synthetic", "--model", "deepfm", "--set", "data.params.n_instances=12000",
         "--set", "data.params.n_users=300", "--set", "data.params.n_items=400", "--set", "model.dropout=0",
         "--set", "embedding.dim=8", "--set", "train.batch_size=2000", "--set", "train.patience=0",
         "--set", "train.num_threads=1", "--set", "train.progress=false", "--set", "train.lr=0.01"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _start(*args: str, nproc: int = 1) -> subprocess.Popen:
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "ctrgraph", *args]
    else:
        cmd = [sys.executable, "-m", "ctrgraph", *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _ctrgraph(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    return _finish(_start(*args, nproc=nproc))


def _ctrgraph_both(one: list[str], two: list[str]) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The one-process run ``one`` and the two-process run ``two`` (its ``--nproc 2``), launched together:
    independent runs of one thread per process, so the same results as one after the other."""
    p1, p2 = _start(*one), _start(*two)
    try:
        return _finish(p1), _finish(p2)
    finally:
        for p in (p1, p2):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_shards_cover_each_global_batch_and_scale_to_its_mean():
    for n in range(40):
        for world in (1, 2, 3, 5):
            parts = [shard_bounds(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))
            sizes = [e - s for s, e in parts]
            assert max(sizes) - min(sizes) <= 1
    from ctrgraph.data.schema import Field, Kind, Role, Schema

    schema = Schema([Field("x", Kind.CATEGORICAL, Role.CONTEXT), Field("y", Kind.NUMERIC, Role.LABEL)], label="y")
    arrays = {"x": np.arange(23, dtype=np.int64), "y": np.zeros(23, dtype=np.float32)}
    one = [b["x"] for b in BatchLoader(arrays, schema, 8, shuffle=True, seed=3)]
    for world in (2, 3):
        loaders = [BatchLoader(arrays, schema, 8, shuffle=True, seed=3, rank=r, world=world) for r in range(world)]
        per_rank = [[(b["x"], ld.batch_scale) for b in ld] for ld in loaders]
        assert len({len(p) for p in per_rank}) == 1  # every rank takes the same number of steps
        for i, whole in enumerate(one[: len(per_rank[0])]):
            got = torch.cat([p[i][0] for p in per_rank])
            assert torch.equal(got, whole)  # the global batch, split in rank order
            # mean over ranks of (shard mean x scale) == global mean (what DDP's average computes)
            scaled = [p[i][0].double().mean() * p[i][1] for p in per_rank]
            assert float(sum(scaled) / world) == pytest.approx(float(whole.double().mean()))
    # a last global batch with fewer rows than processes is skipped: 23 = 2 x 8 + 7 rows, world 8
    assert len(BatchLoader(arrays, schema, 8, rank=0, world=8)) == 2
    with pytest.raises(ValueError, match="rank 2 outside"):
        BatchLoader(arrays, schema, 8, rank=2, world=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same dropout-free DeepFM, 2 epochs of 5 steps of 2000 rows: one process and two (--nproc)."""
    root = tmp_path_factory.mktemp("ddp")
    _, two = _ctrgraph_both(["train", *PLAIN, "--set", "train.epochs=2", "--out", str(root / "one")],
                            ["train", *PLAIN, "--set", "train.epochs=2", "--out", str(root / "two"), "--nproc", "2"])
    assert two.stdout.count("test:  AUC") == 1, two.stdout  # rank 0 alone reports
    return root


def test_two_processes_hold_the_parameters_of_one(runs):
    one = load_torch(runs / "one" / "last.pt")
    two = load_torch(runs / "two" / "last.pt")
    assert one["state"]["epoch"] == two["state"]["epoch"] == 2
    for k, a in one["model"].items():
        torch.testing.assert_close(two["model"][k], a, rtol=1e-4, atol=1e-5, msg=k)
    # Adam's moments too: the optimiser saw the same averaged gradients
    sa, sb = one["optimizer"]["state"], two["optimizer"]["state"]
    for i in sa:
        torch.testing.assert_close(sb[i]["exp_avg_sq"], sa[i]["exp_avg_sq"], rtol=1e-3, atol=1e-9)
    h1 = [h["train_loss"] for h in json.loads((runs / "one" / "metrics.json").read_text())["history"]]
    h2 = [h["train_loss"] for h in json.loads((runs / "two" / "metrics.json").read_text())["history"]]
    assert h2 == pytest.approx(h1, rel=1e-5)


def test_sparse_embeddings_under_ddp_hold_the_parameters_of_one_process(tmp_path):
    """``embedding.sparse`` (sparse gradients, SparseAdam on the tables) under DDP: 2 processes end
    where one process ends with the same global batch (DDP all-reduces the sparse gradients)."""
    sparse = [*PLAIN, "--set", "embedding.sparse=true", "--set", "train.epochs=1"]
    _ctrgraph_both(["train", *sparse, "--out", str(tmp_path / "one")],
                   ["train", *sparse, "--out", str(tmp_path / "two"), "--nproc", "2"])
    one, two = load_torch(tmp_path / "one" / "last.pt"), load_torch(tmp_path / "two" / "last.pt")
    tables = [k for k in one["model"] if ".tables." in k]
    assert tables
    for k, a in one["model"].items():
        torch.testing.assert_close(two["model"][k], a, rtol=1e-4, atol=1e-5, msg=k)


def test_gathered_test_auc_is_one_processs_auc_on_the_same_model(runs):
    got = json.loads((runs / "two" / "metrics.json").read_text())
    assert got["processes"] == 2
    from ctrgraph.runs.assemble import dataset_for

    cfg, model, _, _ = load_run(runs / "two")
    data = dataset_for(cfg)
    logits = predict_logits(model, data.split("test"), data.schema)  # one process, all rows
    y = np.asarray(data.split("test")[data.schema.label])
    assert got["test"]["auc"] == pytest.approx(auc(y, logits), abs=1e-9)
    # and it is not the mean of per-rank AUCs (which is what averaging per rank would report)
    h = len(y) // 2
    per_rank = (auc(y[:h], logits[:h]) + auc(y[h:], logits[h:])) / 2
    assert abs(per_rank - got["test"]["auc"]) > 1e-6


def test_two_process_run_stopped_by_its_time_limit_resumes_in_one(runs, tmp_path):
    cut = tmp_path / "cut"
    p = _ctrgraph("train", *PLAIN, "--set", "train.epochs=2", "--set", "train.time_limit_minutes=1e-6",
                  "--out", str(cut), nproc=2)
    assert "continue with: ctrgraph train --resume" in p.stdout
    assert (cut / "last.pt").exists() and not (cut / "metrics.json").exists()
    assert load_torch(cut / "last.pt")["state"]["epoch"] == 1
    _ctrgraph("train", "--resume", "--out", str(cut))  # one process
    got = json.loads((cut / "metrics.json").read_text())
    want = json.loads((runs / "one" / "metrics.json").read_text())
    assert got["epochs_run"] == 2 and got["processes"] == 1
    assert got["test"]["auc"] == pytest.approx(want["test"]["auc"], abs=1e-4)


def test_every_model_and_provider_trains_under_ddp(tmp_path):
    names = sorted(MODELS) + ["dg-pnn", "dg-din", "res-din", "gcn-deepfm", "kgat-din", "hgat-dnn",
                              "node2vec-deepfm", "skipgram-din"]
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(ROOT / "tests" / "train" / "ddp_sweep.py"), str(out), ",".join(names)]
    p = subprocess.run(cmd, check=False, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    done = json.loads(out.read_text())
    failed = {k: v for k, v in done.items() if "error" in v or not v["same_on_every_rank"]}
    assert not failed and set(done) == set(names), failed
    assert all(v["processes"] == 2 and 0.0 < v["auc"] < 1.0 for v in done.values())
