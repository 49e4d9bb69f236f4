"""Res-embedding (Zhou et al., "Res-embedding for Deep Learning Based Click-Through Rate Prediction
Modeling", 2019): its tables and figures as data (``ctrgraph reproduce res-embedding [item ...]``;
docs/res-embedding.md).

Base networks of Table 3: MLP = ``dnn`` preset ``res_mlp``, PNN = ``dnn`` preset ``res_pnn`` (the
paper's PNN variant), DIN = ``din``. "+R" follows the paper's caption ("original embedding layer with
regularization constraints"): plain tables with ``train.embedding_l2`` = 0.006 (Res's own λ, our
choice); "+R(res)" is the residual form without the graph part (E = C_b + R with λ‖R‖²).
"""
from __future__ import annotations

import json

from ..core import D, Study, V
from ..items import TSNE, Metric, Plot, Table, at_best_epoch

ML100K = D("ml100k")
BASES = {"MLP": ("dnn", {"model.preset": "res_mlp"}), "PNN": ("dnn", {"model.preset": "res_pnn"}), "DIN": ("din", {})}
#: Table 3 columns: label -> (provider or None, overrides)
VARIANTS = {
    "plain": (None, {}),
    "+R": (None, {"train.embedding_l2": 0.006}),
    "+R(res)": ("res", {"embedding.params.graph": False}),
    "AVG": ("res", {"embedding.params.g": "avg"}),
    "GCN": ("res", {"embedding.params.g": "gcn"}),
    "ATT": ("res", {"embedding.params.g": "att"}),
    "+Skip-gram": ("skipgram", {}),
    "+node2vec": ("node2vec", {}),
}


def _model(provider: str | None, base: str) -> str:
    return base if provider is None else f"{provider}-{base}"


def _method(base: str, variant: str) -> str:
    return base if variant == "plain" else f"{base}{variant if variant.startswith('+') else '+' + variant}"


TABLE3 = [V(_method(b, v), _model(prov, BASES[b][0]), {**BASES[b][1], **sets}, keys={"model": b, "variant": v},
            base=b) for b in BASES for v, (prov, sets) in VARIANTS.items()]
TABLE4 = [V(f"{_method('DIN', v)} d={dim}", _model(VARIANTS[v][0], "din"), {**VARIANTS[v][1], "embedding.dim": dim},
            keys={"method": _method("DIN", v), "dim": dim}, base="DIN d=18")
          for v in ("plain", "AVG", "GCN", "ATT") for dim in (18, 36)]
FRACTIONS = [round(0.1 * i, 1) for i in range(1, 10)]
FRACTION = [V(f"{label} {int(f * 100)}%", model, {**sets, "data.train_fraction": f, "data.fraction_seed": 0},
              keys={"method": label, "fraction": f})
            for f in FRACTIONS for label, model, sets in (("DIN", "din", {}),
                                                          ("DIN+GCN", "res-din", {"embedding.params.g": "gcn"}))]
LAMBDAS = [0.0, 1e-4, 1e-3, 6e-3, 3e-2, 1e-1]
LAMBDA = [V(f"DIN+ATT λ={lam:g}", "res-din", {"embedding.params.g": "att", "embedding.params.lam": lam},
            keys={"lam": lam}) for lam in LAMBDAS]


def _train_rows(run) -> float:
    return float(json.loads((run.dir / "data" / "summary.json").read_text())["train_rows"])


ITEMS = [
    Table("table3", "Table 3: {MLP, PNN, DIN} x embedding variants", TABLE3, [ML100K], seeds=(1,), row_header="method",
          caption="RelaImpr against each base network's plain row."),
    Table("table4", "Table 4: embedding dimension 18 vs 36", TABLE4, [ML100K], seeds=(1,), row_header="row",
          caption="RelaImpr against plain DIN at d = 18."),
    Table("fraction", "Fig. 6: train-set fraction", FRACTION, [ML100K], seeds=(1,), row_header="method",
          extra=(Metric("train_rows", "train rows", _train_rows),),
          plots=(Plot("line", x="fraction", series="method", title="test AUC by train-set fraction",
                      xlabel="fraction of the training set"),),
          caption="Nested random subsets of the encoded train split (data.train_fraction, one permutation, "
                  "data.fraction_seed 0); valid / test and the vocabularies unchanged; the Res graph is built from "
                  "the subset."),
    TSNE("tsne", "Fig. 7: t-SNE of the 1,000 items most frequent as train targets",
         [V("DIN (plain)", "din"), V("DIN+GCN (res)", "res-din", {"embedding.params.g": "gcn"})], ML100K,
         caption="Coloured by the item's first genre; cosines: mean pairwise cosine of the item embeddings within / "
                 "across genres (Proposition 1 predicts a larger margin for res)."),
    Table("lambda", "Fig. 8: residual scale ‖R‖ / ‖W C_b‖ vs test AUC", LAMBDA, [ML100K], seeds=(1,),
          row_header="method", extra=(at_best_epoch("res_ratio", "‖R‖/‖W C_b‖ at the best epoch"),),
          plots=(Plot("line", x="res_ratio", logx=True, title="test AUC vs residual scale", point_labels="lam",
                      xlabel="‖R‖ / ‖W C_b‖ at the best epoch"),
                 Plot("line", x="lam", logx=True, title="test AUC vs λ", xlabel="λ (λ = 0 not drawn on the log axis)"))),
]

STUDY = Study("res-embedding", "Res-embedding (Zhou et al., 2019)", "docs/res-embedding.md", ITEMS)
