"""In-process scoring of raw rows with a trained run: the run's model, schema, vocabularies and
calibration loaded once (every file checked against the run's manifest, checkpoints weights-only);
rows are encoded exactly as ``ctrgraph predict`` encodes a file (unseen values → the OOV id,
sequences truncated to the most recent ``max_len``, padded). Used by ``predict`` and the service."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.schema import Kind, Role
from ..errors import DataError
from ..train.trainer import predict_logits
from .assemble import load_calibrator, load_run
from .predict import encode_frame


class Scorer:
    """pCTR of raw rows (dicts or a DataFrame whose columns are the schema's fields)."""

    def __init__(self, run: str | Path, which: str = "best", batch_size: int = 2048):
        """``run``: a run directory (its ``which`` checkpoint, eager) or an export directory of
        ``ctrgraph export --format torchscript | onnx`` (``serving.json``; ``which`` is the export's)."""
        self.run = Path(run)
        self.exported = None
        if (self.run / "serving.json").exists():
            from .model_export import ExportedScorer

            self.exported = ExportedScorer(self.run)
            self.schema, self.vocabs = self.exported.schema, self.exported.vocabs
            self.calibrator = self.exported.calibrator
            self.model_name, self.dataset = self.exported.info["model"], self.exported.info.get("dataset", "?")
        else:
            cfg, self.model, self.schema, self.vocabs = load_run(self.run, which)
            self.calibrator = load_calibrator(self.run)
            self.model_name, self.dataset = cfg.model.name, cfg.data.name
        self.batch_size = batch_size
        needed = [f for f in self.schema.fields if f.role != Role.LABEL and f.embed]
        names = {f.name for f in needed} | {f.group for f in needed if f.group}
        self.fields = [f for f in self.schema.fields if f.name in names]

    def describe(self) -> dict:
        """The request contract: each input field, its kind and (sequences) maximum length."""
        return {"run": str(self.run), "model": self.model_name, "dataset": self.dataset,
                "format": self.exported.info["format"] if self.exported is not None else "run",
                "calibration": self.calibrator.method if self.calibrator else "none",
                "fields": [{"name": f.name, "kind": f.kind.value, "role": f.role.value,
                            **({"max_len": f.max_len, "list": True} if f.is_sequence_like else {})}
                           for f in self.fields]}

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Request rows → the text frame ``encode_frame`` reads (lists become "|"-joined strings),
        column by column. Missing or unknown fields and values of the wrong shape are
        :class:`DataError` naming the first bad row."""
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"row {bad + 1}: expected an object of field values, got {type(rows[bad]).__name__}")
        df = pd.DataFrame.from_records(rows)
        known = {f.name: f for f in self.fields}
        extra = [c for c in df.columns if c not in set(self.schema.names)]
        if extra:
            r = int(np.flatnonzero(df[extra].notna().any(axis=1).to_numpy())[0])
            raise DataError(f"row {r + 1}: unknown field(s) {[c for c in extra if pd.notna(df[c].iloc[r])]}; "
                            f"the model reads {list(known)}")
        absent = [n for n in known if n not in df.columns]
        if absent:
            raise DataError(f"row 1: missing field(s) {absent}")
        miss = df[list(known)].isna().to_numpy()
        if miss.any():
            r = int(np.flatnonzero(miss.any(axis=1))[0])
            raise DataError(f"row {r + 1}: missing field(s) {[n for n, m in zip(known, miss[r]) if m]}")
        cols = {}
        for name, f in known.items():
            s = df[name]
            kinds = s.map(type).to_numpy()
            if f.is_sequence_like:
                wrong = ~np.isin(kinds, [list, str])
                if wrong.any():
                    raise DataError(f"row {int(np.flatnonzero(wrong)[0]) + 1}: field {name!r} must be a list "
                                    f"(or a '|'-joined string)")
                lists = kinds == list
                if lists.any():  # lists -> "|"-joined strings, one explode + group join for the column
                    parts = s[lists].explode().dropna().astype(str)
                    joined = parts.groupby(level=0).agg("|".join)
                    s = s.copy()
                    s[lists] = ""
                    s[joined.index] = joined
                cols[name] = s.astype(str)
            else:
                wrong = np.isin(kinds, [list, dict])
                if wrong.any():
                    raise DataError(f"row {int(np.flatnonzero(wrong)[0]) + 1}: field {name!r} must be a single value")
                cols[name] = s if f.kind == Kind.NUMERIC else s.astype(str)
        return pd.DataFrame(cols)

    def score_frame(self, df: pd.DataFrame, source: str = "request") -> np.ndarray:
        arrays = encode_frame(df.reset_index(drop=True), self.schema, self.vocabs, source)
        if self.exported is not None:
            z = self.exported.logits_of(arrays, self.batch_size)  # calibrated
        else:
            z = predict_logits(self.model, arrays, self.schema, self.batch_size)
            z = self.calibrator.apply(z) if self.calibrator is not None else z.astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, rows: list[dict]) -> np.ndarray:
        return self.score_frame(self.frame(rows)) if rows else np.zeros(0)
