"""DG-ENN's cost goals on ml100k: training seconds per epoch of ``dg-<base>`` vs ``<base>`` (at most 2x),
and test-set inference of the exported tables vs the base model (within 10 %)::

    PYTHONPATH=src python benchmarks/dg_cost.py --data-dir ../shared/data/ml-100k --base pnn --epochs 3

At a realistic vocabulary size (issue 19: about 20k users, 12k items, 400k instances), on the
synthetic generator, both bases in one interleaved run::

    PYTHONPATH=src python benchmarks/dg_cost.py --dataset synthetic --base pnn,din --threads 1 \
        --set data.params.n_users=20000 --set data.params.n_items=12000 --set data.params.n_instances=400000

``--dg-variant KEY=VALUE`` adds a third model, ``dg-<base>`` with those overrides (e.g. the labelled
non-paper sampler ``embedding.params.edge_parts=4``, docs/dg-enn.md "Sampled edge parts"), trained in
the same turns; its cost ratio and its test AUC are printed beside the exact model's.

Training: the two models live in one process and take turns, one full epoch each (forward, BCE +
auxiliary losses, backward, Adam), so both see the same background load (``train_throughput.py
--interleave``). Inference: after training, the test split is scored ``--repeat`` times by (1) the
base model, (2) the dg model in eval mode with its cached tables (the first call, which computes
the tables, is reported separately), (3) the plain base model built from the dg model's exported
tables (``ctrgraph export``'s model, in memory); medians are printed with the ratio to (1), and the
exported model's logits are checked against the dg model's. The test AUC of the base and the dg model
after the interleaved epochs is printed with them.
"""
from __future__ import annotations

import argparse
import statistics
import time

# benchmarks/train_throughput.py (this folder is on sys.path when run as a script)
from train_throughput import interleaved


def score_seconds(model, arrays, schema, repeat: int) -> tuple[list[float], object]:
    from ctrgraph.train.trainer import predict_logits

    times, logits = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        logits = predict_logits(model, arrays, schema)
        times.append(time.perf_counter() - t0)
    return times, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml100k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--base", default="pnn", help="base model(s), comma-separated: each runs beside dg-<base>")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every model (e.g. data.params.n_users=20000); repeatable")
    ap.add_argument("--epochs", type=int, default=3, help="interleaved training rounds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=7, help="timed scorings of the test split per model")
    ap.add_argument("--dg-variant", action="append", default=[], metavar="KEY=VALUE",
                    help="also train dg-<base> with these overrides (repeatable: all of them on one extra model), "
                         "e.g. embedding.params.edge_parts=4; its ratio and its test AUC beside the exact one's")
    a = ap.parse_args()
    bases = a.base.split(",")
    variant = "@".join([""] + a.dg_variant) if a.dg_variant else ""
    names = [n for b in bases for n in (b, f"dg-{b}") + ((f"dg-{b}{variant}",) if variant else ())]
    res = interleaved(names, a.dataset, a.data_dir, a.epochs, a.threads, a.set)
    for b in bases:  # interleaved() prints ratios to the first model; each dg model to its own base
        for dg in [f"dg-{b}"] + ([f"dg-{b}{variant}"] if variant else []):
            if b == bases[0] and dg == f"dg-{b}":
                continue
            for key in ("seconds", "cpu"):
                print(f"{dg} / {b} ({key}): {statistics.median(res[key][dg]) / statistics.median(res[key][b]):.2f}x")
    if variant:
        _variant_auc(a, bases, variant, res)
    for b in bases:
        _inference(a, b, res)


def _variant_auc(a, bases: list[str], variant: str, res: dict) -> None:
    """Test AUC of each exact dg model and of its ``--dg-variant`` after the same interleaved epochs."""
    import numpy as np

    from ctrgraph.train.metrics import auc
    from ctrgraph.train.trainer import predict_logits

    data = res["data"]
    test = data.split("test")
    y = np.asarray(test[data.schema.label]) > 0
    for b in bases:
        got = {}
        for name in (f"dg-{b}", f"dg-{b}{variant}"):
            m = res["models"][name]
            m.eval()
            got[name] = auc(y, predict_logits(m, test, data.schema))
        exact, other = got[f"dg-{b}"], got[f"dg-{b}{variant}"]
        print(f"# test AUC after {a.epochs} interleaved epochs: dg-{b} {exact:.4f}  dg-{b}{variant} {other:.4f}  "
              f"difference {other - exact:+.4f}")


def _inference(a, base_name: str, res: dict) -> None:
    import numpy as np

    from ctrgraph.config import load_config
    from ctrgraph.runs.export import plain_model
    from ctrgraph.train.metrics import auc

    dg = f"dg-{base_name}"
    data, models = res["data"], res["models"]
    test = data.split("test")
    ov = [f"data.name={a.dataset}", f"model.name={dg}"] + ([f"data.data_dir={a.data_dir}"] if a.data_dir else []) + a.set
    base_t, base_logits = score_seconds(models[base_name], test, data.schema, a.repeat)
    m_dg = models[dg]
    m_dg.eval()
    first_t, _ = score_seconds(m_dg, test, data.schema, 1)  # computes and caches the enhanced tables
    dg_t, dg_logits = score_seconds(m_dg, test, data.schema, a.repeat)
    y = np.asarray(test[data.schema.label]) > 0
    print(f"# test AUC after {a.epochs} interleaved epochs: {base_name} {auc(y, base_logits):.4f}  "
          f"{dg} {auc(y, dg_logits):.4f}")
    _, plain = plain_model(load_config(None, ov), m_dg, data.schema, data.vocab_sizes)
    exp_t, exp_logits = score_seconds(plain, test, data.schema, a.repeat)
    base = statistics.median(base_t)
    n = len(test[data.schema.label])
    print(f"# test-set inference ({n:,} rows, batch 8192, median of {a.repeat})")
    print(f"{base_name:>22s} {base * 1e3:8.1f} ms  1.00x")
    print(f"{dg + ' (cached tables)':>22s} {statistics.median(dg_t) * 1e3:8.1f} ms  {statistics.median(dg_t) / base:.2f}x"
          f"   (first call, computing the tables: {first_t[0] * 1e3:.1f} ms)")
    print(f"{'exported ' + base_name:>22s} {statistics.median(exp_t) * 1e3:8.1f} ms  {statistics.median(exp_t) / base:.2f}x"
          f"   (max |logit - dg logit| {float(np.max(np.abs(exp_logits - dg_logits))):.2e})")


if __name__ == "__main__":
    main()
