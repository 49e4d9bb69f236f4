"""Score raw rows with a trained run: the run's saved vocabularies encode the file (unseen values
map to the out-of-vocabulary id; in a hashed table, to their hash bucket), so serving never needs the
training data set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.encode import encode_columns
from ..data.hashing import HashedVocab
from ..data.io import numeric_column, read_table, split_joined
from ..data.schema import Kind, Role
from ..errors import DataError
from ..train.metrics import all_metrics
from ..train.trainer import predict_logits
from .assemble import load_calibrator, load_run


def encode_frame(df: pd.DataFrame, schema, vocabs, path: str = "input", sep: str = "|",
                 first_row: int = 0) -> dict[str, np.ndarray]:
    """Encode a DataFrame whose columns are named after the schema's fields. Sequence and
    multi-valued columns hold ``sep``-joined values (most recent last). The label is optional.
    Errors name the row as ``first_row`` + the row's position + 1 (chunks of a larger file)."""
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
            vocab = vocabs.get(f.table)
            vtype = vocab.values.dtype if vocab is not None else None
            # a hashed table parses its own values (an integer table: unparsable text -> OOV)
            if vtype is not None and vtype.kind in "iu" and not isinstance(vocab, HashedVocab):
                ok = pd.to_numeric(pd.Series(vals.ravel()), errors="coerce").to_numpy()
                vals = np.where(np.isnan(ok), -1, ok).astype(np.int64).reshape(vals.shape)
            cols[f.name], lengths[f.name] = vals, ln
        elif f.kind == Kind.NUMERIC:
            cols[f.name] = numeric_column(df, f.name, path, dtype=np.float64, first_row=first_row)
        else:
            cols[f.name] = df[f.name].to_numpy()
    for f in schema.fields:  # parallel sequences (item ids, their categories ...) must line up
        if f.group and f.name in lengths and f.group in lengths and {f.name, f.group} <= needed_names:
            full = [split_joined(df[c].to_numpy(dtype=object), sep)[1] for c in (f.name, f.group)]
            bad = np.flatnonzero(full[0] != full[1])
            if bad.size:
                r = int(bad[0])
                raise DataError(f"{path}: row {first_row + r + 1}: column {f.name!r} has {full[0][r]} values but {f.group!r} "
                                f"has {full[1][r]}; parallel sequences need one value per behaviour")
            lengths[f.name] = np.minimum(lengths[f.name], lengths[f.group])
    return encode_columns(cols, lengths, schema, vocabs)


def _chunks(path: Path, rows: int):
    """DataFrames of at most ``rows`` rows: CSV read as text (values keep their exact spelling, e.g.
    zip codes such as "012"; each vocabulary compares in its own type), parquet batch by batch."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.exists():
            raise DataError(f"predict input: file not found: {path}")
        try:
            f = pq.ParquetFile(path)
        except Exception as e:  # pyarrow's errors for a file that is not parquet
            raise DataError(f"predict input: cannot read {path} as parquet ({str(e)[:200]})") from None
        names = f.schema_arrow.names
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise DataError(f"predict input: {path}: duplicate column name(s) {dup}")
        for batch in f.iter_batches(batch_size=rows):
            yield batch.to_pandas()
        return
    read_table(path, "predict input", dtype=str, keep_default_na=False, nrows=1)  # header, duplicates, empty
    try:
        yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=rows)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"predict input: cannot parse {path}: {str(e)[:300]}") from None


def predict_file(run: str | Path, input_path: str | Path, output: str | Path, sep: str = "|",
                 which: str = "best", batch_size: int = 2048, chunk_rows: int = 10_000,
                 progress: bool = True) -> dict:
    """Write ``row,pctr`` for every row of ``input_path`` (CSV or parquet of any size: read, checked,
    encoded and scored ``chunk_rows`` rows at a time, so memory is bounded by the chunk, not the file);
    returns metrics when a label column exists. The output appears only when every row was scored:
    a bad row anywhere leaves no output file and names the row."""
    import sys
    import time

    _, model, schema, vocabs = load_run(run, which)
    cal = load_calibrator(run)  # the run's post-hoc calibration (train.calibration), if any
    path, out = Path(input_path), Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n, ys, zs, t0, last = 0, [], [], time.perf_counter(), time.perf_counter()
    try:
        with open(tmp, "w") as fh:
            fh.write("row,pctr\n")
            for df in _chunks(path, chunk_rows):
                df = df.reset_index(drop=True)
                arrays = encode_frame(df, schema, vocabs, str(path), sep, first_row=n)
                if schema.label in df.columns:
                    y = numeric_column(df, schema.label, path, dtype=np.float64, first_row=n)
                    bad = np.flatnonzero(~np.isin(y, [0, 1]))
                    if bad.size:
                        r = int(bad[0])
                        raise DataError(f"{path}: label column {schema.label!r}, row {n + r + 1}: {float(y[r])!r} "
                                        f"is not 0 or 1 (drop the column to score without metrics)")
                    ys.append(y)
                logits = predict_logits(model, arrays, schema, batch_size)
                logits = cal.apply(logits) if cal is not None else logits.astype(np.float64)
                zs.append(logits if schema.label in df.columns else np.zeros(0))
                pctr = 1.0 / (1.0 + np.exp(-logits))
                pd.DataFrame({"row": np.arange(n, n + len(df)), "pctr": pctr}).to_csv(fh, header=False, index=False)
                n += len(df)
                if progress and time.perf_counter() - last >= 10:
                    last = time.perf_counter()
                    print(f"predict: {n:,} rows scored ({n / (last - t0):,.0f} rows/s)", file=sys.stderr, flush=True)
        if n == 0:
            raise DataError(f"predict input: {path} has a header but no rows")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    result = {"rows": n, "output": str(out)}
    if ys and len(ys) == len(zs):
        result.update(all_metrics(np.concatenate(ys), np.concatenate(zs)))
    return result
