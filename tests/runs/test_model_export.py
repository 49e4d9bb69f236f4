"""TorchScript and ONNX export of every registry model and embedding provider: the exported file
with its vocabularies scores raw rows as the eager run does (within 1e-5), for batch sizes other
than the traced one and rows of every history length (empty included), with the run's calibration;
a tampered export is refused; an export that would differ from the eager model is not written."""
import numpy as np
import pandas as pd
import pytest

from ctrgraph.cli import main
from ctrgraph.errors import ConfigError, RunFileError
from ctrgraph.registry import MODELS, build_raw
from ctrgraph.runs import model_export
from ctrgraph.runs.assemble import load_calibrator, load_run
from ctrgraph.runs.model_export import ExportedScorer, export_model
from ctrgraph.runs.predict import encode_frame
from ctrgraph.train.trainer import predict_logits

PROVIDED = ["dg-pnn", "dg-din", "res-din", "gcn-deepfm", "kgat-din", "hgat-dnn", "node2vec-deepfm", "skipgram-din"]
ALL = sorted(MODELS) + PROVIDED
SETS = ["train.epochs=1", "train.progress=false", "train.num_threads=1", "data.train_fraction=0.02",
        "train.calibration=platt"]
FORMATS = ["torchscript", "onnx"]
EXTRA = {"node2vec-deepfm": ["embedding.params.num_walks=1", "embedding.params.walk_length=5",
                             "embedding.params.epochs=1"]}  # a short pre-training (the default takes ~90 s)


@pytest.fixture(scope="module")
def rows():
    raw, n = build_raw("movielens"), 37  # histories of length 0 .. 36
    return pd.DataFrame({f.name: (["|".join(map(str, raw.columns[f.name][i, : raw.lengths[f.name][i]]))
                                   for i in range(n)] if f.is_sequence_like else raw.columns[f.name][:n])
                         for f in raw.schema.fields}).astype(str)


def _train(model, path):
    sets = SETS + EXTRA.get(model, [])
    assert main(["train", "--model", model, *[x for s in sets for x in ("--set", s)], "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("model", ALL)
def test_exported_scores_equal_eager(model, rows, tmp_path):
    run = _train(model, tmp_path / "run")
    _, m, schema, vocabs = load_run(run)
    cal = load_calibrator(run)
    eager = predict_logits(m, encode_frame(rows, schema, vocabs), schema, batch_size=16)  # raw logits
    for fmt in FORMATS:
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
        assert main(["export", "--run", str(run), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
        exp = ExportedScorer(tmp_path / fmt)
        assert exp.info["parity"]["max_abs_diff"] <= 1e-5
        np.testing.assert_allclose(exp.logits(rows), cal.apply(exp.module(*_batch(exp, rows))), rtol=1e-12)
        exp.calibrator = None  # the model's own logits (Platt's slope would scale float32 rounding)
        for bs in (1, 5, 64):
            np.testing.assert_allclose(exp.logits(rows, batch_size=bs), eager, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{model} {fmt} batch {bs}")


def _batch(exp, rows):
    from ctrgraph.data.loader import BatchLoader

    arrays = encode_frame(rows, exp.schema, exp.vocabs)
    return next(iter(BatchLoader(arrays, exp.schema, len(rows), trim=False))), exp.names


@pytest.fixture(scope="module")
def din_run(tmp_path_factory):
    return _train("din", tmp_path_factory.mktemp("export") / "din")


@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_export_is_refused(din_run, fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / fmt
    info = export_model(din_run, out, fmt)
    path = out / info["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=info["file"]):
        ExportedScorer(out)


def test_export_that_differs_from_eager_is_not_written(din_run, tmp_path, monkeypatch):
    call = model_export._Module.__call__
    monkeypatch.setattr(model_export._Module, "__call__", lambda self, *a, **k: call(self, *a, **k) + 1e-3)
    with pytest.raises(ConfigError, match="differs from the eager model"):
        export_model(din_run, tmp_path / "ts", "torchscript")
    assert not (tmp_path / "ts" / "model.ts").exists()


def test_unknown_format_and_non_empty_target_are_clear_errors(din_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="format must be one of"):
        export_model(din_run, tmp_path / "x", "tflite")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert main(["export", "--run", str(din_run), "--out", str(tmp_path / "full"), "--format", "onnx"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
