"""Trainer: determinism, checkpoints, resume, auxiliary losses, early stopping."""
import json

import pytest
import torch

from ctrgraph.config import TrainConfig
from ctrgraph.data.schema import FeatureSpec
from ctrgraph.embeddings import EmbeddingProvider
from ctrgraph.registry import build_model
from ctrgraph.train.trainer import Trainer


def _fit(planted, run_dir=None, resume=False, provider=None, **kw):
    torch.manual_seed(0)
    spec = FeatureSpec(planted.schema, planted.vocab_sizes)
    model = build_model("deepfm", spec, {"hidden": [16], "dropout": 0.1}, dim=4, init_std=0.01)
    if provider is not None:
        model.embedding = provider(spec, 4, init_std=0.01)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 512, "lr": 1e-2, "patience": 0, "progress": False, **kw})
    return model, Trainer(cfg, run_dir).fit(model, planted, resume=resume)


def test_same_seed_same_numbers(planted):
    m1, r1 = _fit(planted)
    m2, r2 = _fit(planted)
    assert r1["test"] == r2["test"] and r1["valid"] == r2["valid"]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoints_log_and_resume(planted, tmp_path):
    full, rf = _fit(planted, tmp_path / "full", epochs=4)
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["epoch"] == 1
    assert (tmp_path / "full" / "best.pt").exists() and (tmp_path / "full" / "last.pt").exists()
    assert not list((tmp_path / "full").glob("*.tmp"))
    # interrupted after 2 epochs, then resumed to 4: identical to the uninterrupted run
    _fit(planted, tmp_path / "cut", epochs=2)
    res, rr = _fit(planted, tmp_path / "cut", resume=True, epochs=4)
    assert rr["test"] == rf["test"] and rr["epochs_run"] == 4
    for (k, a), (_, b) in zip(full.state_dict().items(), res.state_dict().items()):
        assert torch.allclose(a, b), k


def test_early_stopping_restores_best(planted):
    _m, r = _fit(planted, epochs=30, patience=2, lr=0.05)
    h = r["history"]
    assert r["epochs_run"] < 30 and r["epochs_run"] - r["best_epoch"] == 2
    best = max(x["valid_auc"] for x in h)
    assert h[r["best_epoch"] - 1]["valid_auc"] == best
    assert abs(r["valid"]["auc"] - best) < 1e-9  # the best checkpoint was restored


class AuxProvider(EmbeddingProvider):
    """A provider with an auxiliary loss, as Res-embedding's L2 on R."""

    name = "testaux"

    def aux_losses(self, step):
        return {"item_norm": self.tables["item_id"].weight.pow(2).sum()}


def test_aux_losses_are_weighted_and_logged(planted):
    m1, r1 = _fit(planted, provider=AuxProvider, epochs=2)
    assert "aux_item_norm" in r1["history"][0] and r1["history"][0]["aux_item_norm"] > 0
    m0, _ = _fit(planted, provider=AuxProvider, epochs=2, aux_weights={"item_norm": 0.0})
    n1 = m1.embedding.tables["item_id"].weight.norm()
    n0 = m0.embedding.tables["item_id"].weight.norm()
    assert n1 < n0  # the penalty pulled the table towards zero only when weighted in
    m2, _ = _fit(planted, epochs=2, embedding_l2=1.0)
    m3, _ = _fit(planted, epochs=2)
    assert m2.embedding.tables["user_id"].weight.norm() < m3.embedding.tables["user_id"].weight.norm()


def test_num_threads_is_set_only_when_it_changes_the_count(planted, monkeypatch):
    # set_num_threads(n) with n == the current count still slows scaled_dot_product_attention
    # (PyTorch 2.13 CPU, docs/graphfm.md), so the trainer must not call it then
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    now = torch.get_num_threads()
    _fit(planted, epochs=1, num_threads=now)
    assert calls == []
    other = 1 if now != 1 else 2
    _fit(planted, epochs=1, num_threads=other)
    assert calls == [other, now] and torch.get_num_threads() == now  # set, then restored


def test_progress_off_a_terminal_prints_lines(planted, capsys, monkeypatch):
    """Under a log file or CI (stderr not a terminal): one line per epoch and rate-limited lines
    during an epoch; nothing with progress off."""
    monkeypatch.setenv("CTRGRAPH_PROGRESS_SECONDS", "0")
    _fit(planted, epochs=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("epoch 1: batch ") for line in err) >= 2
    assert any(line.startswith("epoch 2: loss ") and "valid auc" in line for line in err)
    monkeypatch.setenv("CTRGRAPH_PROGRESS_SECONDS", "3600")
    _fit(planted, epochs=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert not any(": batch " in line for line in err) and sum(": loss " in line for line in err) == 2
    _fit(planted, epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_auto_threads_leave_the_busy_cores(monkeypatch):
    """train.num_threads: auto = the cores other processes leave free, between 1 and the default."""
    import os

    from ctrgraph.train import threads as th

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for busy_share, want in ((0.0, 4), (0.5, 2), (0.9, 1), (1.0, 1)):
        samples = iter([(0, 0), (int(busy_share * 1000), 1000)])
        monkeypatch.setattr(th, "_cpu_times", lambda s=samples: next(s))
        assert th.auto_threads(4, interval=0) == want, busy_share
    monkeypatch.setattr(th, "_cpu_times", lambda: None)  # no /proc/stat: PyTorch's default
    assert th.auto_threads(3, interval=0) == 3


def test_auto_is_the_default_and_measured_once_per_process(monkeypatch):
    """The default thread count is ``auto``, measured at the first run of a process and reused by
    the later ones (one count for every row of a study), per PyTorch default count."""
    from ctrgraph.config import TrainConfig
    from ctrgraph.train import threads as th

    assert TrainConfig().num_threads == "auto"
    monkeypatch.setattr(th, "_PROCESS_CHOICE", {})
    measured = iter([1, 2, 2])
    monkeypatch.setattr(th, "auto_threads", lambda default, interval=0.2: min(default, next(measured)))
    assert [th.process_threads(2) for _ in range(3)] == [1, 1, 1]  # busy at the first run: kept
    assert th.process_threads(4) == 2  # another default count is measured on its own


def test_torch_compile_trains_to_the_eager_numbers(planted):
    """``train.compile``: the compiled training step computes what the eager one computes."""
    _, eager = _fit(planted, epochs=1)
    _, compiled = _fit(planted, epochs=1, compile=True)
    assert compiled["history"][0]["train_loss"] == pytest.approx(eager["history"][0]["train_loss"], rel=1e-4)
    assert compiled["test"]["auc"] == pytest.approx(eager["test"]["auc"], abs=2e-3)


def test_log_test_logs_test_metrics_per_epoch_without_selecting_on_them(planted):
    """train.log_test (Res-embedding Fig. 5): monitor_test_* per epoch; the run (best epoch, weights,
    valid and test metrics) is the one without it."""
    _m1, r1 = _fit(planted, patience=1, epochs=4)
    _m2, r2 = _fit(planted, patience=1, epochs=4, log_test=True)
    assert r1["best_epoch"] == r2["best_epoch"] and r1["test"] == r2["test"] and r1["valid"] == r2["valid"]
    assert all("monitor_test_logloss" in h and "monitor_test_auc" in h for h in r2["history"])
    assert not any(k.startswith("monitor_test") for h in r1["history"] for k in h)
    assert r2["history"][r2["best_epoch"] - 1]["monitor_test_auc"] == pytest.approx(r2["test"]["auc"], abs=1e-9)


def test_predict_logits_are_the_batches_logits_in_order(planted):
    """predict_logits writes each batch's logits into one preallocated array: the values and order of
    the per-batch outputs concatenated (a batch size that does not divide the rows, and one row)."""
    import numpy as np

    from ctrgraph.data.loader import BatchLoader
    from ctrgraph.train.trainer import predict_logits

    torch.manual_seed(0)
    model = build_model("deepfm", FeatureSpec(planted.schema, planted.vocab_sizes), {"hidden": [8]}, dim=4)
    model.eval()
    arrays = planted.split("test")
    for bs in (333, 1 << 20):
        with torch.no_grad():
            ref = torch.cat([model(b).logits.float() for b in BatchLoader(arrays, planted.schema, bs)]).numpy()
        got = predict_logits(model, arrays, planted.schema, bs)
        assert got.dtype == np.float32 and np.array_equal(got, ref)
    one = {k: v[:1] for k, v in arrays.items()}
    assert predict_logits(model, one, planted.schema, 7).shape == (1,)
