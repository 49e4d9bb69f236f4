"""Res-embedding (Zhou et al., "Res-embedding for Deep Learning Based Click-Through Rate Prediction
Modeling", 2019): its tables and figures as data (``ctrgraph reproduce res-embedding [item ...]``;
docs/res-embedding.md).

Two modes, each a set of config values on every row:

- ``paper`` (the rows labelled as in the paper; the figures and ablations run on it): Sec. 5.1's
  settings: item vectors of 18 dims, Adam with lr 0.1 and exponential decay (rate not given: 0.9
  per epoch, ours), batch 128, λ = 0.006, Δ = 2, K = 8, and Algorithm 1 counted over every training
  sample's history (``count_over: samples``); five repeats (seeds 1-5). The training settings are
  the study's ``defaults`` layer, so ``--set train.lr=...`` changes the paper rows (measured: lr 0.1
  with Adam collapses our networks to constant predictions, docs/res-embedding.md).
- ``default`` (rows ``... [default]``, Table 3 only): the library's benchmark defaults (16 dims,
  Adam 1e-3 without decay, batch 1024) and Algorithm 1 over each user's train sequence once.

Every row of a table gets the same training rules: output bias at 0 (``train.prior_bias: false``,
no row starts at the train log-odds), the provider's N(0, 1e-4) init, early stopping on valid AUC
(patience 2, at most 30 epochs), the same seeds.

Base networks of Table 3: MLP = ``dnn`` preset ``res_mlp``, PNN = ``dnn`` preset ``res_pnn`` (the
paper's PNN variant), DIN = ``din``. "+R" ("original embedding layer with regularization
constraints") is ``res`` with ``form: plain``: E = R, the plain item table with exactly Res's
penalty λ Σ‖E_i‖² over the batch's distinct item rows at the same λ; "+R(res)" is the residual
form without the graph part (E = C_b + R); "+Proto" is the Eq. 3 prototype E = P C + R (P: the
item's first genre / category); "+sms" the siamese auxiliary network (``sms`` provider).
"""
from __future__ import annotations

import json

from ..core import D, Study, V
from ..items import TSNE, Curves, Envelope, Metric, Plot, Table, at_best_epoch
from ..tuning import Range, Space

ML100K = D("ml100k")
#: the paper's data sets (recipes: docs/datasets-papers.md); ml20m's layout is also ml-latest-small's
ML20M = D("ml20m")
ELECTRONICS = D("amazon-electronics")
BOOKS = D("amazon-books", params={"protocol": "din"})
PAPER_DATA = [ML20M, ELECTRONICS, BOOKS, ML100K]

#: every row of every table (the symmetric comparison rule)
COMMON = {"train.prior_bias": False}
#: the paper's training settings (Sec. 5.1): the study's defaults, so ``--set`` can change them
PAPER_TRAIN = {"embedding.dim": 18, "train.lr": 0.1, "train.lr_decay": 0.9, "train.batch_size": 128}
#: the library's defaults, spelled out on the ``[default]`` rows (equal to RunConfig's: same run keys)
DEFAULT_TRAIN = {"embedding.dim": 16, "train.lr": 1e-3, "train.lr_decay": None, "train.batch_size": 1024}
#: mode -> (settings of every row, settings of the rows whose provider builds Algorithm 1's graph)
MODES = {
    "paper": ({}, {"embedding.params.count_over": "samples"}),
    "default": (DEFAULT_TRAIN, {}),
}
PAPER_SEEDS = (1, 2, 3, 4, 5)

BASES = {"MLP": ("dnn", {"model.preset": "res_mlp"}), "PNN": ("dnn", {"model.preset": "res_pnn"}), "DIN": ("din", {})}
#: Table 3 rows: label -> (provider or None, overrides)
VARIANTS = {
    "plain": (None, {}),
    "+R": ("res", {"embedding.params.form": "plain"}),
    "+R(res)": ("res", {"embedding.params.graph": False}),
    "+Proto": ("res", {"embedding.params.form": "prototype"}),
    "AVG": ("res", {"embedding.params.g": "avg"}),
    "GCN": ("res", {"embedding.params.g": "gcn"}),
    "ATT": ("res", {"embedding.params.g": "att"}),
    "+Skip-gram": ("skipgram", {}),
    "+node2vec": ("node2vec", {}),
    "+sms": ("sms", {}),
}


def _model(provider: str | None, base: str) -> str:
    return base if provider is None else f"{provider}-{base}"


def _method(base: str, variant: str) -> str:
    return base if variant == "plain" else f"{base}{variant if variant.startswith('+') else '+' + variant}"


def _graph(provider: str | None, sets: dict) -> bool:
    """Whether the row's provider counts Algorithm 1's graph (res, not the +R / Eq. 3 forms)."""
    return provider == "res" and sets.get("embedding.params.form", "res") == "res" and \
        sets.get("embedding.params.graph", True)


def sets_of(net: str, variant: str, mode: str = "paper", extra: dict | None = None) -> tuple[str, dict]:
    """(model name, overrides) of one row: base network x embedding variant x mode."""
    prov, sets = VARIANTS[variant]
    train, graph = MODES[mode]
    s = {**BASES[net][1], **train, **(graph if _graph(prov, sets) else {}), **sets, **(extra or {})}
    return _model(prov, BASES[net][0]), s


def row(label: str, net: str, variant: str, mode: str = "paper", extra: dict | None = None, **kw):
    model, s = sets_of(net, variant, mode, extra)
    return V(label, model, s, **kw)


def _suffix(mode: str) -> str:
    return "" if mode == "paper" else f" [{mode}]"


TABLE3 = [row(_method(b, v) + _suffix(m), b, v, m, keys={"mode": m, "network": b, "embedding": v},
              base=_method(b, "plain") + _suffix(m)) for m in MODES for b in BASES for v in VARIANTS]
TABLE4 = [row(f"{_method('DIN', v)} d={dim}", "DIN", v, extra={"embedding.dim": dim},
              keys={"method": _method("DIN", v), "dim": dim}, base="DIN d=18")
          for v in ("plain", "AVG", "GCN", "ATT") for dim in (18, 36)]
#: Fig. 6 and Fig. 7: ORI, AVG, GCN, ATT (the paper's four lines / panels)
FIGURE_FORMS = {"ORI": "plain", "AVG": "AVG", "GCN": "GCN", "ATT": "ATT"}
FRACTIONS = [round(0.1 * i, 1) for i in range(1, 10)]
FRACTION = [row(f"DIN {name} {int(f * 100)}%", "DIN", v, extra={"data.train_fraction": f, "data.fraction_seed": 0},
                keys={"method": f"DIN {name}", "fraction": f})
            for f in FRACTIONS for name, v in FIGURE_FORMS.items()]
TSNE_PANELS = [row(f"{name}: {_method('DIN', v)}", "DIN", v) for name, v in FIGURE_FORMS.items()]
LAMBDAS = [0.0, 1e-4, 1e-3, 6e-3, 3e-2, 1e-1]
LAMBDA = [row(f"DIN+ATT λ={lam:g}", "DIN", "ATT", extra={"embedding.params.lam": lam}, keys={"lam": lam})
          for lam in LAMBDAS]
#: Fig. 5: fixed epochs, no early stopping, test logloss logged per epoch (never selected on)
CURVE_SETS = {"train.log_test": True, "train.patience": 0, "train.epochs": 8}
CURVES = [row("Base", "DIN", "plain", extra=CURVE_SETS), row("Res-Emb (ATT)", "DIN", "ATT", extra=CURVE_SETS)]
ENVELOPE = [row(_method("DIN", v), "DIN", v) for v in ("plain", "+R", "+Proto", "AVG", "GCN", "ATT")]


def _train_rows(run) -> float:
    return float(json.loads((run.dir / "data" / "summary.json").read_text())["train_rows"])


ITEMS = [
    Table("table3", "Table 3: {MLP, PNN, DIN} x embedding variants, paper and default modes", TABLE3, PAPER_DATA,
          seeds=PAPER_SEEDS, row_header="method",
          caption="Rows without a suffix: the paper's settings (mode paper); '[default]': the library's defaults. "
                  "RelaImpr against the base network's plain row of the same mode. Every row: output bias 0, "
                  "early stopping on valid AUC (patience 2)."),
    Table("table4", "Table 4: embedding dimension 18 vs 36", TABLE4, [ML20M, ML100K], seeds=PAPER_SEEDS,
          row_header="row", caption="Paper mode; RelaImpr against plain DIN at d = 18."),
    Curves("fig5", "Fig. 5: train / test logloss per epoch, DIN vs DIN + res-embedding (ATT)", CURVES, ML20M,
           caption="Paper mode, 8 epochs without early stopping; train = the mean batch logloss of the epoch "
                   "(dropout on, no penalty), test = the test split's logloss after the epoch (train.log_test: a "
                   "logged curve, never used to select or stop). The paper draws steps/100 on Electronics."),
    Table("fraction", "Fig. 6: train-set fraction, ORI / AVG / GCN / ATT", FRACTION, [BOOKS, ML20M, ML100K],
          seeds=(1,), row_header="method", extra=(Metric("train_rows", "train rows", _train_rows),),
          plots=(Plot("line", x="fraction", series="method", title="test AUC by train-set fraction",
                      xlabel="fraction of the training set"),),
          caption="Paper mode. Nested random subsets of the encoded train split (data.train_fraction, one "
                  "permutation, data.fraction_seed 0); valid / test and the vocabularies unchanged; the Res graph "
                  "is built from the subset. The paper uses Books."),
    TSNE("tsne", "Fig. 7: t-SNE of the 1,000 items most frequent as train targets (ORI, AVG, GCN, ATT)",
         TSNE_PANELS, ML20M,
         caption="Paper mode. Coloured by the item's first genre / category; cosines: mean pairwise cosine of the "
                 "item embeddings within / across colours (Proposition 1 predicts a larger margin for res)."),
    Envelope("envelope", "Theorem 1: envelope radius of the item embeddings per interest domain", ENVELOPE, ML20M,
             seeds=(1, 2, 3),
             caption="Paper mode. φ(V) = the radius of the smallest ball enclosing V (Sec. 3.1), by the "
                     "Bădoiu-Clarkson iteration (2,000 steps, within 2.3 % above the exact radius); interest "
                     "domain = the item's first genre / category (the paper's domains are latent); the 1,000 items "
                     "most frequent as train targets. Theorem 1 bounds the generalisation gap by R_max; the ratios "
                     "are scale-free (the MLP can rescale the embedding space)."),
    Table("lambda", "Fig. 8: residual scale ‖R‖ / ‖W C_b‖ vs test AUC", LAMBDA, [ML20M, ML100K], seeds=(1,),
          row_header="method", extra=(at_best_epoch("res_ratio", "‖R‖/‖W C_b‖ at the best epoch"),),
          plots=(Plot("line", x="res_ratio", logx=True, title="test AUC vs residual scale", point_labels="lam",
                      xlabel="‖R‖ / ‖W C_b‖ at the best epoch"),
                 Plot("line", x="lam", logx=True, title="test AUC vs λ", xlabel="λ (λ = 0 not drawn on the log axis)")),
          caption="Paper mode."),
]

# ----- tuning (``ctrgraph tune res-embedding <space>``; docs/tuning.md) ---------------------------------------
#: Sec. 5.1 gives points, not a grid (Adam lr 0.1 with exponential decay, λ = 0.006), and lr 0.1 collapses our
#: networks (docs/res-embedding.md): TPE over ranges around them (ours), in paper mode, five repeats (Sec. 5.3)
RES_RANGES = {"train.lr": Range(1e-4, 1e-1, log=True), "train.lr_decay": Range(0.5, 1.0),
              "embedding.params.lam": Range(1e-4, 1e-1, log=True)}
TUNE_NOTE = ("TPE over ranges around Sec. 5.1's values (lr 0.1, decay rate not given, λ 0.006; the ranges are ours), "
             "paper mode otherwise, each trial at seed 1, chosen on validation AUC; the chosen configuration is "
             "repeated 5 times (seeds 1-5) as Sec. 5.3.")
TUNE_DATA = [ML100K, ML20M, ELECTRONICS, BOOKS]
SPACES = [
    Space("din-gcn", "DIN + res-embedding (GCN): lr, decay, λ", row("DIN+GCN", "DIN", "GCN"), TUNE_DATA, RES_RANGES,
          seeds=PAPER_SEEDS, trials=30, caption=TUNE_NOTE),
    Space("din", "DIN (plain embedding): lr, decay (the same budget, for a fair comparison)",
          row("DIN", "DIN", "plain"), TUNE_DATA, {k: v for k, v in RES_RANGES.items() if not k.startswith("embedding.")},
          seeds=PAPER_SEEDS, trials=30, caption=TUNE_NOTE),
]

STUDY = Study("res-embedding", "Res-embedding (Zhou et al., 2019)", "docs/res-embedding.md", ITEMS,
              defaults={**COMMON, **PAPER_TRAIN}, spaces=SPACES)
