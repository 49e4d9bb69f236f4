"""``ctrgraph export --format torchscript``: a trained run as a TorchScript module plus the data
its preprocessing needs, so that serving needs neither the model classes nor the training data.

The export directory holds ``model.ts`` (``torch.jit.trace`` of the model's forward on the encoded
fields, in the order of ``serving.json``'s ``inputs``; a graph-enhanced run's tables are its
prepared buffers, traced as constants), ``data/`` (schema and vocabularies: the preprocessing),
``calibration.json`` when the run has one, ``serving.json`` and ``checksums.json``.
:class:`ExportedScorer` reads raw rows exactly as ``ctrgraph predict`` does (unseen values → the
out-of-vocabulary id 1, padding id 0, sequences truncated to the most recent ``max_len`` and
padded to it) and scores them with the TorchScript module. Sequences are not trimmed to the batch's
longest (the loader's optimisation): the models mask padding, so the scores are the same
(`tests/runs/test_torchscript.py` checks eager vs exported within 1e-5).

A TorchScript archive holds TorchScript code, not Python pickles; it is still loaded only after its
checksum matches the manifest.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from ..data.loader import BatchLoader
from ..errors import ConfigError, RunFileError
from ..train.run_files import RunFiles
from .assemble import load_calibrator, load_data_artifacts, load_run


class _Forward(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, xs))).logits


def export_torchscript(run: str | Path, out: str | Path, which: str = "best", example_rows: int = 64) -> dict:
    """Trace ``run``'s model into ``out`` (see the module docstring); returns ``serving.json``."""
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"export: {out} exists and is not empty")
    cfg, model, schema, vocabs = load_run(run, which)
    example = _example(schema, vocabs, example_rows)
    names = list(example)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(_Forward(model, names).eval(), tuple(example[n] for n in names),
                                     check_trace=False, strict=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    except (RuntimeError, TypeError) as e:  # e.g. graphfm (in-place scatter_), deminet (the C++ kernels)
        msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError(f"export: {cfg.model.name} cannot be traced to TorchScript yet ({msg[:200]}); "
                          f"serve the run itself (ctrgraph serve / predict)") from None
    files = RunFiles(out)
    files.write_bytes("model.ts", buf.getvalue())
    files.copy_from(RunFiles(run), "data", *(["calibration.json"] if (run / "calibration.json").exists() else []))
    info = {"format": "torchscript", "source_run": str(run), "model": cfg.model.name, "checkpoint": which,
            "inputs": [{"name": n, "dtype": str(example[n].dtype).replace("torch.", ""),
                        "shape": ["batch", *example[n].shape[1:]]} for n in names],
            "output": "logit (apply calibration.json if present, then the sigmoid)"}
    files.write_json("serving.json", info)
    return info


def _example(schema, vocabs, rows: int) -> dict[str, torch.Tensor]:
    """Encoded rows of the right dtypes and shapes (ids inside each vocabulary, full sequence length)."""
    import pandas as pd

    from .predict import encode_frame

    cols = {}
    rng = np.random.default_rng(0)
    for f in schema.fields:
        v = vocabs.get(f.table) if f.table else None
        vals = v.values[rng.integers(0, len(v.values), rows)] if v is not None and len(v.values) else np.zeros(rows)
        if f.is_sequence_like:
            k = max(1, f.max_len)
            cols[f.name] = ["|".join(map(str, np.resize(vals[i:i + 1], k))) for i in range(rows)]
        else:
            cols[f.name] = vals if f.kind.value != "numeric" else rng.random(rows)
    arrays = encode_frame(pd.DataFrame(cols).astype(str), schema, vocabs, "export example")
    return next(iter(BatchLoader(arrays, schema, rows, trim=False)))


class ExportedScorer:
    """Scores raw rows (a DataFrame as ``predict`` reads) with an exported directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        files = RunFiles(self.path)
        self.info = json.loads(files.verify("serving.json").read_text())
        if self.info.get("format") != "torchscript":
            raise RunFileError(f"{self.path / 'serving.json'}: not a TorchScript export")
        self.module = torch.jit.load(str(files.verify("model.ts")), map_location="cpu").eval()
        self.schema, self.vocabs = load_data_artifacts(self.path)
        self.calibrator = load_calibrator(self.path)
        self.names = [i["name"] for i in self.info["inputs"]]

    @torch.no_grad()
    def logits(self, df, batch_size: int = 2048) -> np.ndarray:
        from .predict import encode_frame

        arrays = encode_frame(df, self.schema, self.vocabs, "input")
        out = [self.module(*[b[n] for n in self.names]).float()
               for b in BatchLoader(arrays, self.schema, batch_size, trim=False)]
        z = torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
        return self.calibrator.apply(z) if self.calibrator is not None else z

    def score(self, df) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(df)))
