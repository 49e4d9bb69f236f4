"""``ctrgraph export --format torchscript | onnx``: a trained run as a self-contained model file plus
the data its preprocessing needs, so that serving needs neither the model classes nor the training
data.

The export directory holds ``model.ts`` (``torch.jit.trace`` of the forward on the encoded fields)
or ``model.onnx`` (the ONNX exporter of the same trace, opset 17, a dynamic batch dimension), ``data/``
(schema and vocabularies: the preprocessing), ``calibration.json`` when the run has one,
``serving.json`` (the format, the inputs in order with dtypes and shapes, the parity check) and
``checksums.json``. A graph-enhanced run's tables are its prepared buffers, recorded as constants.

:class:`ExportedScorer` reads raw rows exactly as ``ctrgraph predict`` does (unseen values → the
out-of-vocabulary id 1, padding id 0, sequences truncated to the most recent ``max_len`` and
padded to it) and scores them with the exported module. Sequences are not trimmed to the batch's
longest (the loader's optimisation): the models mask padding, so the scores are the same.

While a model is traced (``torch.jit.is_tracing()``, also true inside the ONNX exporter) the few
training-speed paths that cannot be recorded take the plain ops they are tested equal to: the
native C++ kernels (:func:`ctrgraph.graphs.native.kernel` is None), the custom autograd functions
of GraphFM, DemiNet's banded sums and bucketed pair attention, Res-embedding's and GIN's
``torch.unique`` bookkeeping, and Dice's batch norm (its running-statistics map). Every export is
checked before it is written: eager and exported logits on rows of other lengths and another batch
size must agree within 1e-5 (``serving.json``'s ``parity``), else the export is refused;
``tests/runs/test_model_export.py`` runs every registry model and provider through both formats.

A TorchScript archive holds TorchScript code and an ONNX file a protobuf graph, not Python pickles;
each is still loaded only after its checksum matches the manifest.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..data.hashing import HashedVocab
from ..data.loader import BatchLoader
from ..errors import ConfigError, RunFileError
from ..train.run_files import RunFiles
from .assemble import load_calibrator, load_data_artifacts, load_run

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
TOLERANCE = 1e-5
OPSET = 17


class _Forward(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, xs))).logits


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"ONNX needs onnx and onnxruntime: pip install 'ctrgraph[onnx]' ({e})") from None
    return onnxruntime


def export_model(run: str | Path, out: str | Path, fmt: str = "torchscript", which: str = "best",
                 example_rows: int = 64) -> dict:
    """Export ``run``'s model into ``out`` as ``fmt`` (see the module docstring); returns ``serving.json``."""
    if fmt not in FORMATS:
        raise ConfigError(f"export: format must be one of {sorted(FORMATS)}, got {fmt!r}")
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"export: {out} exists and is not empty")
    cfg, model, schema, vocabs = load_run(run, which)
    example = _example(schema, vocabs, example_rows, seed=0)
    names = list(example)
    forward = _Forward(model, names).eval()
    args = tuple(example[n] for n in names)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on shapes: the parity check below is the test
            if fmt == "torchscript":
                traced = torch.jit.trace(forward, args, check_trace=False, strict=False)
                buf = io.BytesIO()
                torch.jit.save(traced, buf)
            else:
                _onnxruntime()
                buf = io.BytesIO()
                torch.onnx.export(forward, args, buf, dynamo=False, input_names=names, output_names=["logit"],
                                  dynamic_axes={**{n: {0: "batch"} for n in names}, "logit": {0: "batch"}},
                                  opset_version=OPSET)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 -- any tracer / exporter failure becomes one clear error
        msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError(f"export: {cfg.model.name} cannot be exported as {fmt} ({type(e).__name__}: {msg[:300]}); "
                          f"serve the run itself (ctrgraph serve / predict)") from None
    module = _Module(fmt, buf.getvalue())
    check = _example(schema, vocabs, 7, seed=1)  # other rows, lengths and batch size than the trace's
    with torch.no_grad():
        eager = forward(*[check[n] for n in names]).double().numpy()
    diff = float(np.abs(module(check) - eager).max())
    if not diff <= TOLERANCE:
        raise ConfigError(f"export: the {fmt} module of {cfg.model.name} differs from the eager model by {diff:.3g} "
                          f"(> {TOLERANCE}) on rows other than the traced ones; not written")
    files = RunFiles(out)
    files.write_bytes(FORMATS[fmt], buf.getvalue())
    files.copy_from(RunFiles(run), "data", *(["calibration.json"] if (run / "calibration.json").exists() else []))
    info = {"format": fmt, "file": FORMATS[fmt], "source_run": str(run), "model": cfg.model.name,
            "dataset": cfg.data.name, "checkpoint": which,
            "inputs": [{"name": n, "dtype": str(example[n].dtype).replace("torch.", ""),
                        "shape": ["batch", *example[n].shape[1:]]} for n in module.inputs(names)],
            "output": "logit (apply calibration.json if present, then the sigmoid)",
            "parity": {"max_abs_diff": diff, "tolerance": TOLERANCE, "rows": 7},
            **({"opset": OPSET} if fmt == "onnx" else {})}
    files.write_json("serving.json", info)
    return info


class _Module:
    """An exported model file behind one call: encoded batch (dict of tensors) -> logits [B] float64."""

    def __init__(self, fmt: str, data: bytes, names: list[str] | None = None, threads: int | None = None):
        self.fmt = fmt
        if fmt == "torchscript":  # (threads: torch's own setting applies)
            self.ts = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
            self.names = names
        else:
            ort = _onnxruntime()
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = opts.inter_op_num_threads = threads
            self.session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]  # the exporter drops unused inputs

    def inputs(self, names: list[str]) -> list[str]:
        return names if self.fmt == "torchscript" else self.names

    def __call__(self, batch: dict[str, torch.Tensor], names: list[str] | None = None) -> np.ndarray:
        if self.fmt == "torchscript":
            with torch.no_grad():
                return self.ts(*[batch[n] for n in (names or self.names or list(batch))]).double().numpy()
        return self.session.run(None, {n: batch[n].numpy() for n in self.names})[0].astype(np.float64)


def _example(schema, vocabs, rows: int, seed: int) -> dict[str, torch.Tensor]:
    """Encoded rows of the right dtypes and shapes: ids inside each vocabulary, sequences of lengths
    0 .. max_len (so that tracing records no length-specific branch and the check sees padding)."""
    import pandas as pd

    from .predict import encode_frame

    cols = {}
    rng = np.random.default_rng(seed)
    for f in schema.fields:
        v = vocabs.get(f.table) if f.table else None
        vals = v.values[rng.integers(0, len(v.values), rows)] if v is not None and len(v.values) else np.zeros(rows)
        if isinstance(v, HashedVocab):  # no stored values: any values, spread over the buckets
            vals = rng.integers(0, 1 << 40, rows)
        if f.is_sequence_like:
            k = max(1, f.max_len)
            lens = (np.arange(rows) + seed) % (k + 1)
            pool = vals if len(vals) else np.zeros(1)
            cols[f.name] = ["|".join(map(str, pool[rng.integers(0, len(pool), n)])) for n in lens]
        else:
            cols[f.name] = vals if f.kind.value != "numeric" else rng.random(rows)
    arrays = encode_frame(pd.DataFrame(cols).astype(str), schema, vocabs, "export example")
    return next(iter(BatchLoader(arrays, schema, rows, trim=False)))


class ExportedScorer:
    """Scores raw rows (a DataFrame as ``predict`` reads) with an export directory of either format."""

    def __init__(self, path: str | Path, threads: int | None = None):
        """``threads``: ONNX Runtime's intra- and inter-op threads (default: its own choice)."""
        self.path = Path(path)
        files = RunFiles(self.path)
        self.info = json.loads(files.verify("serving.json").read_text())
        fmt = self.info.get("format")
        if fmt not in FORMATS:
            raise RunFileError(f"{self.path / 'serving.json'}: not a model export (format {fmt!r})")
        self.names = [i["name"] for i in self.info["inputs"]]
        self.module = _Module(fmt, files.verify(FORMATS[fmt]).read_bytes(), self.names, threads)
        self.schema, self.vocabs = load_data_artifacts(self.path)
        self.calibrator = load_calibrator(self.path)

    def logits_of(self, arrays: dict[str, np.ndarray], batch_size: int = 2048) -> np.ndarray:
        """Calibrated logits of encoded arrays (as ``encode_frame`` returns them)."""
        out = [self.module(b, self.names) for b in BatchLoader(arrays, self.schema, batch_size, trim=False)]
        z = np.concatenate(out) if out else np.zeros(0)
        return self.calibrator.apply(z) if self.calibrator is not None else z

    def logits(self, df, batch_size: int = 2048) -> np.ndarray:
        from .predict import encode_frame

        return self.logits_of(encode_frame(df, self.schema, self.vocabs, "input"), batch_size)

    def score(self, df) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(df)))
