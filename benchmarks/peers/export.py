"""The encoded data set as one ``.npz`` that the peer workers read (numpy only: this module is also
imported inside the peers' virtual environment, which has no ctrgraph).

Layout: ``{split}/{field}`` for every field of every split (the integer arrays exactly as ctrgraph
encoded them; sequences and multi-valued fields padded with 0 at the end, as BatchLoader gets them),
and ``__meta__``: a JSON string with the fields (name, kind, role, shared vocabulary, vocabulary
size, max_len, target, embedded or not), the label, the splits and the row counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FORMAT = 1
SPLITS = ("train", "valid", "test")


def export_npz(data, path: str | Path) -> dict:
    """Write ``data`` (a ctrgraph ``EncodedDataset``) to ``path``; returns the meta dict."""
    schema = data.schema
    sizes = dict(data.vocab_sizes)
    fields = []
    for f in schema.fields:
        if f.name == schema.label:
            continue
        table = f.vocab or f.name
        fields.append({"name": f.name, "kind": f.kind.value, "role": f.role.value, "table": table,
                       "vocab_size": int(sizes[table]) if f.embed and table in sizes else None,
                       "max_len": int(f.max_len), "target": f.target, "embedded": bool(f.embed and table in sizes)})
    meta = {"format": FORMAT, "label": schema.label, "fields": fields, "vocab_sizes": {k: int(v) for k, v in sizes.items()},
            "splits": list(SPLITS), "rows": {s: int(data.num_rows(s)) for s in SPLITS}}
    arrays = {f"{s}/{k}": np.ascontiguousarray(v) for s in SPLITS for k, v in data.split(s).items()}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return meta


def load_npz(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({split: {field: array}}, meta)`` from a file written by :func:`export_npz`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: export format {meta.get('format')}, expected {FORMAT}")
        out: dict[str, dict[str, np.ndarray]] = {s: {} for s in meta["splits"]}
        for key in z.files:
            if key != "__meta__":
                split, name = key.split("/", 1)
                out[split][name] = z[key]
    return out, meta


def lengths(seq: np.ndarray) -> np.ndarray:
    """Number of non-padding entries per row of an end-padded id matrix."""
    return (seq != 0).sum(axis=1).astype(np.int64)
