"""Load test of ``ctrgraph serve`` on loopback, bounded in count and time: trains (or reuses) a run
on the bundled data, starts the service in a subprocess, and for batch sizes 1 and 256 sends
requests from ``--clients`` concurrent clients until ``--requests`` are done or ``--seconds`` have
passed; prints p50 / p95 / p99 latency (ms) and rows/s, next to the same model's in-process scoring
(`runs.scorer.Scorer.score`) of the same payloads.

    PYTHONPATH=src python benchmarks/service_load.py --model din --requests 300 --seconds 60
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def request_rows(n: int) -> list[dict]:
    """The bundled data's first ``n`` rows as a client sends them (sequences as lists)."""
    from ctrgraph.registry import build_raw

    raw = build_raw("movielens")
    rows = []
    for i in range(n):
        r = {}
        for f in raw.schema.fields:
            v = raw.columns[f.name][i]
            r[f.name] = v[: raw.lengths[f.name][i]].tolist() if f.is_sequence_like else v.item()
        rows.append(r)
    return rows


def pct(lat: list[float]) -> str:
    a = np.asarray(lat) * 1e3
    return f"p50 {np.percentile(a, 50):7.2f}  p95 {np.percentile(a, 95):7.2f}  p99 {np.percentile(a, 99):7.2f} ms"


def main() -> None:
    import httpx

    from ctrgraph.runs.scorer import Scorer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="din")
    ap.add_argument("--run")
    ap.add_argument("--requests", type=int, default=300, help="requests per batch size (upper bound)")
    ap.add_argument("--seconds", type=float, default=60, help="time bound per batch size")
    ap.add_argument("--clients", type=int, default=1)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ctrgraph-serve-"))
    run = Path(a.run) if a.run else work / a.model
    if not (run / "metrics.json").exists():
        subprocess.run([sys.executable, "-m", "ctrgraph", "train", "--model", a.model, "--set", "train.epochs=1",
                        "--set", "train.progress=false", "--out", str(run)], check=True, stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen([sys.executable, "-m", "ctrgraph", "serve", "--run", str(run), "--port", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    rows = request_rows(512)
    scorer = Scorer(run)
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"the service did not start: {srv.stderr.read().decode()[-2000:]}")
        print(f"# {a.model} ({run}); service on loopback, {a.clients} client(s); at most {a.requests} requests or "
              f"{a.seconds:g} s per batch size; {os.cpu_count()} cores")
        for bs in (1, 256):
            payloads = [rows[(i * bs) % 256:(i * bs) % 256 + bs] for i in range(a.requests)]
            lat, lock, it = [], threading.Lock(), iter(range(a.requests))
            stop = time.perf_counter() + a.seconds

            def client():
                with httpx.Client(base_url=url, timeout=60) as c:
                    while time.perf_counter() < stop:
                        with lock:
                            i = next(it, None)
                        if i is None:
                            return
                        body = payloads[i][0] if bs == 1 else {"rows": payloads[i]}
                        t0 = time.perf_counter()
                        r = c.post("/score" if bs == 1 else "/score/batch", json=body)
                        dt = time.perf_counter() - t0
                        assert r.status_code == 200, r.text
                        with lock:
                            lat.append(dt)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(a.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            local = []
            for p in payloads[:len(lat)]:
                t1 = time.perf_counter()
                scorer.score(p)
                local.append(time.perf_counter() - t1)
            print(f"batch {bs:>3d}  service    {len(lat):>4d} requests  {pct(lat)}  {len(lat) * bs / wall:>9,.0f} rows/s")
            print(f"batch {bs:>3d}  in-process {len(local):>4d} calls     {pct(local)}  "
                  f"{len(local) * bs / sum(local):>9,.0f} rows/s")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
