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
        self.run = Path(run)
        self.cfg, self.model, self.schema, self.vocabs = load_run(self.run, which)
        self.calibrator = load_calibrator(self.run)
        self.batch_size = batch_size
        needed = [f for f in self.schema.fields if f.role != Role.LABEL and f.embed]
        names = {f.name for f in needed} | {f.group for f in needed if f.group}
        self.fields = [f for f in self.schema.fields if f.name in names]

    def describe(self) -> dict:
        """The request contract: each input field, its kind and (sequences) maximum length."""
        return {"run": str(self.run), "model": self.cfg.model.name, "dataset": self.cfg.data.name,
                "calibration": self.calibrator.method if self.calibrator else "none",
                "fields": [{"name": f.name, "kind": f.kind.value, "role": f.role.value,
                            **({"max_len": f.max_len, "list": True} if f.is_sequence_like else {})}
                           for f in self.fields]}

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Request rows → the text frame ``encode_frame`` reads; lists become "|"-joined strings.
        Missing or unknown fields and values of the wrong shape are :class:`DataError` naming the row."""
        known = {f.name: f for f in self.fields}
        all_names = set(self.schema.names)  # fields the model does not read (label, raw timestamps) are ignored
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise DataError(f"row {i + 1}: expected an object of field values, got {type(r).__name__}")
            missing = [n for n in known if n not in r]
            if missing:
                raise DataError(f"row {i + 1}: missing field(s) {missing}")
            extra = [k for k in r if k not in all_names]
            if extra:
                raise DataError(f"row {i + 1}: unknown field(s) {extra}; the model reads {list(known)}")
        cols = {}
        for name, f in known.items():
            vals = [r[name] for r in rows]
            if f.is_sequence_like:
                bad = [i for i, v in enumerate(vals) if not isinstance(v, (list, str))]
                if bad:
                    raise DataError(f"row {bad[0] + 1}: field {name!r} must be a list (or a '|'-joined string)")
                vals = ["|".join(map(str, v)) if isinstance(v, list) else v for v in vals]
            else:
                bad = [i for i, v in enumerate(vals) if isinstance(v, (list, dict)) or v is None]
                if bad:
                    raise DataError(f"row {bad[0] + 1}: field {name!r} must be a single value")
                vals = [str(v) for v in vals] if f.kind != Kind.NUMERIC else vals
            cols[name] = vals
        return pd.DataFrame(cols)

    def score_frame(self, df: pd.DataFrame, source: str = "request") -> np.ndarray:
        arrays = encode_frame(df.reset_index(drop=True), self.schema, self.vocabs, source)
        z = predict_logits(self.model, arrays, self.schema, self.batch_size)
        z = self.calibrator.apply(z) if self.calibrator is not None else z.astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def score(self, rows: list[dict]) -> np.ndarray:
        return self.score_frame(self.frame(rows)) if rows else np.zeros(0)
