"""Scores of finished runs for per-row analyses: the recomputed test AUC equals metrics.json, the cache
is used, and a dg-* checkpoint saved before the served tables existed scores the same."""
import shutil

import numpy as np
import pytest
import torch

from ctrgraph.config import load_config
from ctrgraph.errors import ConfigError
from ctrgraph.runs.assemble import dataset_for, run_experiment
from ctrgraph.runs.scoring import read_run_config, score_test_split
from ctrgraph.train.run_files import RunFiles

PARAMS = ("data.params={n_instances: 3000, n_users: 200, n_items: 300, n_categories: 5, n_cities: 20, "
          "n_brands: 30, emit_true_prob: false}")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    for model in ("pnn", "dg-pnn"):
        cfg = load_config(None, ["data.name=synthetic", f"model.name={model}", "train.epochs=1", "train.progress=false",
                                 "train.num_threads=1", "embedding.dim=8", "train.seed=1", PARAMS])
        run_experiment(cfg, root / model)
    return root


def test_scores_match_metrics_and_are_cached(tiny_runs):
    data = dataset_for(read_run_config(tiny_runs / "pnn"))
    p, a, ref = score_test_split(tiny_runs / "pnn", data)
    assert p.shape == (data.num_rows("test"),) and a == pytest.approx(ref, abs=1e-6)
    assert (tiny_runs / "pnn" / "test_probs.npy").exists()
    np.testing.assert_array_equal(score_test_split(tiny_runs / "pnn", data)[0], p)


def test_old_dg_checkpoint_without_served_tables_scores_the_same(tiny_runs, tmp_path):
    """A dg-* run saved before the served tables existed: the provider is prepared from the train
    split and yields the same test scores as the checkpoint's own tables."""
    old = tmp_path / "old"
    shutil.copytree(tiny_runs / "dg-pnn", old)
    (old / "test_probs.npy").unlink(missing_ok=True)
    ck = torch.load(old / "best.pt", weights_only=True)
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("embedding.served_")}
    torch.save(ck, old / "best.pt")
    (old / "checksums.json").unlink()  # an older run directory: no manifest; the user adopts it
    RunFiles(old).adopt()
    data = dataset_for(read_run_config(old))
    new_p = score_test_split(tiny_runs / "dg-pnn", data)[0]
    old_p, a, ref = score_test_split(old, data)
    np.testing.assert_allclose(old_p, new_p, rtol=1e-5, atol=1e-6)
    assert a == pytest.approx(ref, abs=1e-5)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a run directory"):
        read_run_config(tmp_path)
