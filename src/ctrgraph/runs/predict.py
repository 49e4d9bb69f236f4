"""Score raw rows with a trained run: the run's saved vocabularies encode the file (unseen values
map to the out-of-vocabulary id), so serving never needs the training data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.encode import encode_columns
from ..data.io import numeric_column, read_table, split_joined
from ..data.schema import Kind, Role
from ..errors import DataError
from ..train.metrics import all_metrics
from ..train.trainer import predict_logits
from .assemble import load_calibrator, load_run


def encode_frame(df: pd.DataFrame, schema, vocabs, path: str = "input", sep: str = "|") -> dict[str, np.ndarray]:
    """Encode a DataFrame whose columns are named after the schema's fields. Sequence and
    multi-valued columns hold ``sep``-joined values (most recent last). The label is optional."""
    needed = [f for f in schema.fields if f.role != Role.LABEL and f.embed]
    groups = {f.group for f in needed if f.group}
    needed_names = {f.name for f in needed} | groups
    missing = [n for n in schema.names if n in needed_names and n not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} needed by the model; it has {list(df.columns)}")
    n = len(df)
    cols, lengths = {}, {}
    for f in schema.fields:
        if f.name not in needed_names:
            if f.role == Role.LABEL:
                cols[f.name] = np.zeros(n, dtype=np.float32)
            else:
                cols[f.name] = np.zeros((n, f.max_len) if f.is_sequence_like else n, dtype=np.int64)
                if f.is_sequence_like:
                    lengths[f.name] = np.zeros(n, dtype=np.int64)
            continue
        if f.is_sequence_like:
            vals, ln = split_joined(df[f.name].to_numpy(dtype=object), sep, f.max_len,
                                    keep="last" if f.kind == Kind.SEQUENCE else "first")
            vtype = vocabs[f.table].values.dtype if f.table in vocabs else None
            if vtype is not None and vtype.kind in "iu":
                ok = pd.to_numeric(pd.Series(vals.ravel()), errors="coerce").to_numpy()
                vals = np.where(np.isnan(ok), -1, ok).astype(np.int64).reshape(vals.shape)
            cols[f.name], lengths[f.name] = vals, ln
        elif f.kind == Kind.NUMERIC:
            cols[f.name] = numeric_column(df, f.name, path, dtype=np.float64)
        else:
            cols[f.name] = df[f.name].to_numpy()
    for f in schema.fields:  # parallel sequences (item ids, their categories ...) must line up
        if f.group and f.name in lengths and f.group in lengths:
            full = [split_joined(df[c].to_numpy(dtype=object), sep)[1] for c in (f.name, f.group)]
            bad = np.flatnonzero(full[0] != full[1])
            if bad.size:
                r = int(bad[0])
                raise DataError(f"{path}: row {r + 1}: column {f.name!r} has {full[0][r]} values but {f.group!r} "
                                f"has {full[1][r]}; parallel sequences need one value per behaviour")
            lengths[f.name] = np.minimum(lengths[f.name], lengths[f.group])
    return encode_columns(cols, lengths, schema, vocabs)


def predict_file(run: str | Path, input_path: str | Path, output: str | Path, sep: str = "|",
                 which: str = "best", batch_size: int = 8192) -> dict:
    """Write ``row,pctr`` for every row of ``input_path``; returns metrics when a label column exists."""
    cfg, model, schema, vocabs = load_run(run, which)
    # read every column as text so that values keep their exact spelling (zip codes such as "012"),
    # then let each vocabulary compare in its own type
    df = read_table(input_path, "predict input", dtype=str, keep_default_na=False) \
        if not str(input_path).endswith(".parquet") else read_table(input_path, "predict input")
    arrays = encode_frame(df, schema, vocabs, str(input_path), sep)
    y = None
    if schema.label in df.columns:  # checked before anything is written
        y = numeric_column(df, schema.label, input_path, dtype=np.float64)
        bad = np.flatnonzero(~np.isin(y, [0, 1]))
        if bad.size:
            r = int(bad[0])
            raise DataError(f"{input_path}: label column {schema.label!r}, row {r + 1}: {float(y[r])!r} is not 0 or 1 "
                            f"(drop the column to score without metrics)")
    logits = predict_logits(model, arrays, schema, batch_size)
    cal = load_calibrator(run)
    if cal is not None:  # the run's post-hoc calibration (train.calibration)
        logits = cal.apply(logits)
    pctr = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pd.DataFrame({"row": np.arange(len(df)), "pctr": pctr}).to_csv(tmp, index=False)
    tmp.replace(out)
    result = {"rows": len(df), "output": str(out)}
    if y is not None:
        result.update(all_metrics(y, logits))
    return result
