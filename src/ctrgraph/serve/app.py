"""The scoring service: a FastAPI app around :class:`ctrgraph.runs.scorer.Scorer` (a run directory,
or an export of ``ctrgraph export --format torchscript | onnx``: the same requests, the same scores).

Endpoints:

- ``GET /health``: ready, the run, model, data set, format and calibration; ``GET /schema``: the fields a
  row must carry (sequences as lists, most recent last);
- ``POST /score``: one row (a JSON object of field values) → ``{"pctr": p}``;
- ``POST /score/batch``: ``{"rows": [...]}`` (at most ``max_rows``) → ``{"pctr": [...]}``;
- ``GET /metrics``: Prometheus text (requests and errors per endpoint, rows scored, latency sum).

Bad requests are 4xx with a message naming the row and field: 413 for a body over ``max_body``
bytes or more than ``max_rows`` rows, 422 for rows that do not fit the schema. Scoring runs in a
worker thread (one at a time: the model is not re-entrant across threads' intra-op pools).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from ..errors import CtrGraphError
from ..runs.scorer import Scorer


def create_app(run: str | Path, max_rows: int = 10_000, max_body: int = 32 << 20, which: str = "best"):
    scorer = Scorer(run, which)
    app = FastAPI(title="ctrgraph scoring", description=f"pCTR of {scorer.model_name} ({run})")
    lock = threading.Lock()
    stats = {"requests": defaultdict(int), "errors": defaultdict(int), "seconds": defaultdict(float), "rows": 0}

    def _score(rows: list) -> list[float]:
        with lock:
            return scorer.score(rows).tolist()

    async def _body(request: Request):
        size = request.headers.get("content-length")
        if size is not None and int(size) > max_body:
            raise HTTPException(413, f"request body of {size} bytes is over the limit of {max_body}")
        raw = await request.body()
        if len(raw) > max_body:
            raise HTTPException(413, f"request body of {len(raw)} bytes is over the limit of {max_body}")
        import json

        try:
            return json.loads(raw)
        except ValueError as e:
            raise HTTPException(400, f"the body is not JSON ({e})") from None

    async def _run(endpoint: str, rows) -> list[float]:
        t0 = time.perf_counter()
        stats["requests"][endpoint] += 1
        try:
            if not isinstance(rows, list):
                raise HTTPException(422, "expected a JSON object (one row) or {\"rows\": [...]}")
            if len(rows) > max_rows:
                raise HTTPException(413, f"{len(rows)} rows is over the limit of {max_rows} per request")
            try:
                out = await run_in_threadpool(_score, rows)
            except CtrGraphError as e:
                raise HTTPException(422, str(e)) from None
            stats["rows"] += len(rows)
            return out
        except HTTPException:
            stats["errors"][endpoint] += 1
            raise
        finally:
            stats["seconds"][endpoint] += time.perf_counter() - t0

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/health")
    def health() -> dict:
        d = scorer.describe()
        return {"status": "ok", **{k: d[k] for k in ("run", "model", "dataset", "format", "calibration")}}

    @app.get("/schema")
    def schema() -> dict:
        return scorer.describe()

    @app.post("/score")
    async def score_one(request: Request) -> dict:
        row = await _body(request)
        if not isinstance(row, dict):
            stats["errors"]["score"] += 1
            raise HTTPException(422, "expected one row: a JSON object of field values")
        return {"pctr": (await _run("score", [row]))[0]}

    @app.post("/score/batch")
    async def score_batch(request: Request) -> dict:
        body = await _body(request)
        rows = body.get("rows") if isinstance(body, dict) else None
        return {"pctr": await _run("batch", rows)}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        lines = ["# TYPE ctrgraph_requests_total counter"]
        lines += [f'ctrgraph_requests_total{{endpoint="{k}"}} {v}' for k, v in sorted(stats["requests"].items())]
        lines += ["# TYPE ctrgraph_request_errors_total counter"]
        lines += [f'ctrgraph_request_errors_total{{endpoint="{k}"}} {v}' for k, v in sorted(stats["errors"].items())]
        lines += ["# TYPE ctrgraph_request_seconds_total counter"]
        lines += [f'ctrgraph_request_seconds_total{{endpoint="{k}"}} {v:.6f}'
                  for k, v in sorted(stats["seconds"].items())]
        lines += ["# TYPE ctrgraph_rows_scored_total counter", f"ctrgraph_rows_scored_total {stats['rows']}"]
        return "\n".join(lines) + "\n"

    return app
