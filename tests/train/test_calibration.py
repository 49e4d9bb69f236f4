"""Calibration: ECE equals a per-bin reference; Platt / temperature scaling recover a planted
miscalibration and keep AUC; a calibrated run stores its calibration and predict applies it."""
import json

import numpy as np
import pandas as pd
import pytest

from ctrgraph.cli import main
from ctrgraph.train.calibration import Calibrator, ece, sigmoid
from ctrgraph.train.metrics import auc, logloss


def test_ece_matches_a_per_bin_reference():
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p ** 2).astype(float)
    ref = 0.0
    for b in range(15):
        m = (p >= b / 15) & ((p < (b + 1) / 15) | (b == 14))
        if m.any():
            ref += m.sum() / p.size * abs(y[m].mean() - p[m].mean())
    assert ece(y, p) == pytest.approx(ref, abs=1e-12)
    assert ece(y, p ** 2) < ece(y, p) / 3  # the planted truth is (nearly) calibrated


def test_scaling_recovers_planted_miscalibration_and_keeps_auc():
    rng = np.random.default_rng(1)
    z_true = rng.normal(0, 1.5, 40000)
    y = (rng.random(z_true.size) < sigmoid(z_true)).astype(float)
    z_model = 3.0 * z_true + 1.0  # over-confident and shifted
    platt = Calibrator.fit("platt", z_model[:20000], y[:20000])
    assert platt.a == pytest.approx(1 / 3, rel=0.05) and platt.b == pytest.approx(-1 / 3, abs=0.05)
    temp = Calibrator.fit("temperature", z_model[:20000], y[:20000])
    assert temp.b == 0 and 0 < temp.a < 1
    te = slice(20000, None)
    raw, t, pl = (logloss(y[te], sigmoid(c)) for c in (z_model[te], temp.apply(z_model[te]), platt.apply(z_model[te])))
    assert pl < t < raw
    assert auc(y[te], sigmoid(platt.apply(z_model[te]))) == pytest.approx(auc(y[te], sigmoid(z_model[te])))
    np.testing.assert_array_equal(Calibrator.fit("none", z_model, y).apply(z_model), z_model)
    with pytest.raises(ValueError):
        Calibrator.from_dict({"method": "platt", "a": -1.0, "b": 0.0})


def test_calibrated_run_stores_and_applies_its_calibration(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--model", "lr", "--set", "train.epochs=1", "--set", "train.progress=false",
                 "--set", "train.calibration=platt", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["method"] == "platt" and m["calibration"] == cal
    assert m["test"]["auc"] == pytest.approx(m["test_uncalibrated"]["auc"])
    assert m["valid"]["logloss"] <= m["valid_uncalibrated"]["logloss"] + 1e-9  # fitted on valid
    assert {"ece"} <= set(m["test"]) and {"ece"} <= set(m["test_uncalibrated"])
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--reliability", str(tmp_path / "rel.png")]) == 0
    out = capsys.readouterr().out
    assert "calibrated (platt)" in out and (tmp_path / "rel.png").exists()
    rel = pd.read_csv(tmp_path / "rel.csv")
    assert set(rel["score"]) == {"model", "calibrated (platt)"}
    assert rel.groupby("score")["count"].sum().nunique() == 1
    # predict applies the calibration: its pctr equals σ(a·z + b) of the raw logits
    from ctrgraph.registry import build_raw
    from ctrgraph.runs.assemble import load_run
    from ctrgraph.runs.predict import encode_frame
    from ctrgraph.train.trainer import predict_logits

    raw, n = build_raw("movielens"), 40
    rows = {f.name: (["|".join(map(str, raw.columns[f.name][i, : raw.lengths[f.name][i]])) for i in range(n)]
                     if f.is_sequence_like else raw.columns[f.name][:n]) for f in raw.schema.fields}
    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", "--run", str(run), "--input", str(tmp_path / "rows.csv"),
                 "--output", str(tmp_path / "p.csv")]) == 0
    _, model, schema, vocabs = load_run(run)
    z = predict_logits(model, encode_frame(pd.read_csv(tmp_path / "rows.csv", dtype=str, keep_default_na=False),
                                           schema, vocabs), schema)
    got = pd.read_csv(tmp_path / "p.csv")["pctr"].to_numpy()
    np.testing.assert_allclose(got, sigmoid(cal["a"] * z + cal["b"]), rtol=1e-6)
    assert not np.allclose(got, sigmoid(z), atol=1e-3)
