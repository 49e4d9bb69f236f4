"""DG-ENN Fig. 1 (§1): how sparse a data set's features and behaviours are, from its **train split**::

    ctrgraph dg-analysis fig1 --dataset ml100k --data-dir DIR --out OUT \\
        [--fields user_id,item_id,...] [--edges 1,5,10,20,50,100] [--len-edges 1,5,10,20,50,100]

Feature sparsity: every value of each listed categorical field (default: every encoded categorical
field) is bucketed by its train frequency (the number of train rows carrying it; values never seen
in train are not counted), reported as values per bucket and their share of the field's seen values.
Behaviour sparsity: every train user is bucketed by the length of its behaviour sequence (the
time-ordered items of its train histories, as the item transition graph sees them; 0 for a user
without one). The paper plots both for Tmall and Alimama; its point is that most feature values are
rare and many users have few behaviours. Writes ``OUT/fig1.md``, ``fig1.csv`` and ``fig1.png``.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from ..data.schema import Kind, Role
from ..errors import ConfigError, CtrGraphError
from .dg_sparsity import _categorical, _ints, behaviour_field, bucket_index, bucket_names

DEFAULT_EDGES = [1, 5, 10, 20, 50, 100]


def value_frequency_rows(data, fields: list[str], edges=DEFAULT_EDGES) -> list[dict]:
    """One row per (field, frequency bucket): seen values in the bucket and their share."""
    tr = data.split("train")
    rows = []
    for f in _categorical(data.schema, fields, "fig1"):
        counts = np.bincount(np.asarray(tr[f], dtype=np.int64), minlength=data.vocab_sizes[data.schema[f].table])
        seen = counts[counts > 0]
        per = np.bincount(bucket_index(seen, edges), minlength=len(edges) + 1)
        first = 1 if edges[0] <= 1 else 0  # the bucket below 1 is empty: unseen values are not counted
        for name, n in zip(bucket_names(edges)[first:], per[first:]):
            rows.append({"panel": "feature frequency", "field": f, "bucket": name, "count": int(n),
                         "share": float(n / max(1, seen.size))})
    return rows


def behaviour_lengths(data) -> np.ndarray:
    """Train behaviour-sequence length of every user with a train row."""
    from ..graphs import user_sequences

    s, tr = data.schema, data.split("train")
    user = s.first(Role.USER)
    if user is None:
        raise ConfigError("fig1 needs a user field")
    hist = behaviour_field(s)
    ts = next((f for f in s.fields if f.group == hist and not f.embed), None)
    _, offs, uids = user_sequences(tr[user.name], tr[hist], tr[ts.name] if ts is not None else None)
    users = np.unique(np.asarray(tr[user.name], dtype=np.int64))
    length = np.zeros(int(max(users.max(initial=0), np.max(uids, initial=0))) + 1, dtype=np.int64)
    length[np.asarray(uids, dtype=np.int64)] = np.diff(offs)
    return length[users]


def behaviour_rows(data, edges=DEFAULT_EDGES) -> list[dict]:
    """One row per behaviour-length bucket: users in it and their share."""
    length = behaviour_lengths(data)
    per = np.bincount(bucket_index(length, edges), minlength=len(edges) + 1)
    return [{"panel": "behaviour length", "field": "users", "bucket": name, "count": int(n),
             "share": float(n / max(1, length.size))} for name, n in zip(bucket_names(edges), per)]


def write_fig1(rows: list[dict], out: Path, title: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Fig. 1: feature frequency and behaviour length ({title}, train split)", "",
             "| panel | field | bucket | count | share |", "|---|---|---|---|---|"]
    lines += [f"| {r['panel']} | {r['field']} | {r['bucket']} | {r['count']:,} | {r['share']:.1%} |" for r in rows]
    md = "\n".join(lines) + "\n"
    (out / "fig1.md").write_text(md)
    with open(out / "fig1.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["panel", "field", "bucket", "count", "share"])
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = [r for r in rows if r["panel"] == "feature frequency"]
    beh = [r for r in rows if r["panel"] == "behaviour length"]
    fields = list(dict.fromkeys(r["field"] for r in feats))
    buckets = list(dict.fromkeys(r["bucket"] for r in feats))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(1, len(fields))
    for k, f in enumerate(fields):
        share = [r["share"] for r in feats if r["field"] == f]
        a1.bar(np.arange(len(buckets)) + k * width, share, width, label=f)
    a1.set_xticks(np.arange(len(buckets)) + 0.4 - width / 2, buckets, rotation=30)
    a1.set_xlabel("train frequency of the value")
    a1.set_ylabel("share of the field's values")
    a1.set_title("feature frequency")
    a1.legend(fontsize=7)
    a2.bar(np.arange(len(beh)), [r["share"] for r in beh])
    a2.set_xticks(np.arange(len(beh)), [r["bucket"] for r in beh], rotation=30)
    a2.set_xlabel("behaviour-sequence length")
    a2.set_ylabel("share of users")
    a2.set_title("behaviour length")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / "fig1.png", dpi=110)
    plt.close(fig)
    return md


def main(argv: list[str]) -> int:
    import sys

    from ..config import load_config
    from ..train.run import dataset_for

    p = argparse.ArgumentParser(prog="ctrgraph dg-analysis fig1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["fig1"])
    p.add_argument("--dataset", default="ml100k")
    p.add_argument("--data-dir")
    p.add_argument("--fields", help="categorical fields (default: every encoded categorical field)")
    p.add_argument("--edges", help=f"frequency bucket edges (default {','.join(map(str, DEFAULT_EDGES))})")
    p.add_argument("--len-edges", help="behaviour-length bucket edges (default: the same)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="data overrides")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        cfg = load_config(None, [f"data.name={a.dataset}"] + ([f"data.data_dir={a.data_dir}"] if a.data_dir else [])
                          + a.set)
        data = dataset_for(cfg)
        fields = a.fields.split(",") if a.fields else \
            [f.name for f in data.schema.fields if f.kind == Kind.CATEGORICAL and f.encoded]
        rows = value_frequency_rows(data, fields, _ints(a.edges) or DEFAULT_EDGES) + \
            behaviour_rows(data, _ints(a.len_edges) or _ints(a.edges) or DEFAULT_EDGES)
    except CtrGraphError as e:
        print(f"ctrgraph: error: {e}", file=sys.stderr)
        return 2
    print(write_fig1(rows, Path(a.out), a.dataset))
    return 0
