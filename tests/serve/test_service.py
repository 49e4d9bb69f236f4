"""The scoring service: single and batch scores equal `ctrgraph predict`'s, bad requests get 4xx
with a message naming the row and field, limits hold, health / schema / metrics answer."""
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from ctrgraph.cli import main  # noqa: E402
from ctrgraph.registry import build_raw  # noqa: E402
from ctrgraph.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    run = root / "din"
    assert main(["train", "--model", "din", "--set", "train.epochs=1", "--set", "train.progress=false",
                 "--set", "train.calibration=platt", "--out", str(run)]) == 0
    raw, n = build_raw("movielens"), 30
    rows = []
    for i in range(n):  # request rows as a client would send them (sequences as lists)
        r = {}
        for f in raw.schema.fields:
            v = raw.columns[f.name][i]
            r[f.name] = v[: raw.lengths[f.name][i]].tolist() if f.is_sequence_like else v.item()
        rows.append(r)
    pd.DataFrame({k: ["|".join(map(str, r[k])) if isinstance(r[k], list) else r[k] for r in rows]
                  for k in rows[0]}).to_csv(root / "rows.csv", index=False)
    assert main(["predict", "--run", str(run), "--input", str(root / "rows.csv"), "--output", str(root / "p.csv")]) == 0
    want = pd.read_csv(root / "p.csv")["pctr"].to_numpy()
    return TestClient(create_app(run, max_rows=20)), rows, want, run


def test_scores_equal_predict(served):
    client, rows, want, _ = served
    assert client.get("/health").json()["status"] == "ok"
    fields = {f["name"] for f in client.get("/schema").json()["fields"]}
    assert fields <= set(rows[0])
    one = client.post("/score", json=rows[3])
    assert one.status_code == 200, one.text
    assert one.json()["pctr"] == pytest.approx(want[3], rel=1e-6)
    batch = client.post("/score/batch", json={"rows": rows[:20]})
    assert batch.status_code == 200
    np.testing.assert_allclose(batch.json()["pctr"], want[:20], rtol=1e-6)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_export_serves_the_same_scores(served, fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    _, rows, want, run = served
    assert main(["export", "--run", str(run), "--out", str(tmp_path / fmt), "--format", fmt]) == 0
    client = TestClient(create_app(tmp_path / fmt, max_rows=20))
    health = client.get("/health").json()
    assert (health["format"], health["model"], health["calibration"]) == (fmt, "din", "platt")
    batch = client.post("/score/batch", json={"rows": rows[:20]})
    assert batch.status_code == 200, batch.text
    np.testing.assert_allclose(batch.json()["pctr"], want[:20], rtol=1e-5)
    bad = client.post("/score", json={k: v for k, v in rows[0].items() if k != "item_id"})
    assert bad.status_code == 422 and "missing field(s) ['item_id']" in bad.text


def test_bad_requests_get_clear_4xx(served):
    client, rows, _, _ = served
    name = next(k for k, v in rows[0].items() if isinstance(v, list))
    cases = [
        ({k: v for k, v in rows[0].items() if k != name}, 422, f"missing field(s) ['{name}']"),
        ({**rows[0], "nope": 1}, 422, "unknown field(s) ['nope']"),
        ({**rows[0], name: {"a": 1}}, 422, f"field {name!r} must be a list"),
        ([1, 2], 422, "expected one row"),
    ]
    for body, code, text in cases:
        r = client.post("/score", json=body)
        assert r.status_code == code and text in r.json()["error"], (body, r.text)
    r = client.post("/score/batch", json={"rows": rows[:2] + [{**rows[2], name: 5}]})
    assert r.status_code == 422 and "row 3" in r.json()["error"]
    r = client.post("/score/batch", json={"rows": rows * 2})
    assert r.status_code == 413 and "over the limit of 20" in r.json()["error"]
    r = client.post("/score/batch", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    metrics = client.get("/metrics").text
    assert 'ctrgraph_request_errors_total{endpoint="batch"}' in metrics and "ctrgraph_rows_scored_total" in metrics
