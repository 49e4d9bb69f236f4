"""Scores of a finished run on its test split, for analyses that need per-row predictions (DG-ENN's
sparsity buckets, user bootstraps): the run's ``best.pt`` on the data set its config names.

The probabilities are cached next to the checkpoint (``test_probs.npy``, written atomically once the
run has finished), and the recomputed test AUC is returned with the ``metrics.json`` one, so that a
mismatch (another data set version, a changed model) is visible instead of silent.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.dataset import EncodedDataset
from ..data.schema import FeatureSpec
from ..errors import ConfigError
from ..train.checkpoint import load_torch
from ..train.metrics import auc
from ..train.run_files import RunFiles
from ..train.trainer import predict_logits
from .assemble import load_data_artifacts, load_state, model_for, read_run_config


def load_scoring_model(run: Path, data: EncodedDataset):
    """``best.pt`` of ``run`` in eval mode. A ``dg-*`` checkpoint written before the served tables
    were saved (no ``embedding.served_*`` buffers) loads without them, and the provider is then
    prepared on ``data`` (train split) so that eval recomputes the enhanced tables from the graphs:
    the same computation that produced them at test time in the run."""
    run = Path(run)
    cfg = read_run_config(run)
    schema, vocabs = load_data_artifacts(run)
    model = model_for(cfg, FeatureSpec(schema, {k: len(v) for k, v in vocabs.items()}))
    if not (run / "best.pt").exists():
        raise ConfigError(f"{run} has no best.pt checkpoint")
    res = load_state(model, load_torch(RunFiles(run).verify("best.pt")), run / "best.pt", strict=False)
    missing = [k for k in res.missing_keys if not k.startswith("embedding.served_")]
    if missing or res.unexpected_keys:
        raise ConfigError(f"{run}: checkpoint does not match the model: missing {missing}, "
                          f"unexpected {res.unexpected_keys}")
    if res.missing_keys:  # an older dg-* run: rebuild the graphs from the train split
        model.prepare(data)
    return model.eval()


def score_test_split(run: Path, data: EncodedDataset) -> tuple[np.ndarray, float, float]:
    """(probabilities of every test row, their AUC, the test AUC of ``metrics.json`` or NaN)."""
    run = Path(run)
    cache = run / "test_probs.npy"
    finished = (run / "metrics.json").exists()
    test = data.split("test")
    probs = None
    files = RunFiles(run)
    if finished and cache.exists():
        probs = np.load(files.verify(cache.name), allow_pickle=False)
        if probs.shape[0] != data.num_rows("test"):
            probs = None
    if probs is None:
        logits = predict_logits(load_scoring_model(run, data), test, data.schema)
        probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        if finished:
            files.write_npy(cache.name, probs)
    ref = json.loads(files.verify("metrics.json").read_text())["test"]["auc"] if finished else float("nan")
    return probs, auc(np.asarray(test[data.schema.label]), probs), float(ref)
