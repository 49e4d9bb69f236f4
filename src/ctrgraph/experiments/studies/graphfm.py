"""GraphFM (Wu et al., "GraphFM: Graph Factorization Machines for Feature Interaction Modeling"):
its tables and figures as data (``ctrgraph reproduce graphfm [item ...]``; docs/graphfm.md).

Data sets: the paper's Criteo (``criteo`` recipe, GraphFM's protocol; ``CRITEO_SAMPLE`` = the
shared first 10,000 rows, ``--data-dir`` must hold ``criteo-sample/``), Avazu (``avazu``; the full
file only: the shared sample has 100 rows) and MovieLens-1M (``ml1m``, its 7-field protocol;
``ml1m-100k`` = a seeded 100,000-instance subsample, ``data.params.max_rows``), plus the ml100k-ctr
benchmark protocol.

Every row of an item is declared in a *mode* and under one *comparison rule*, both plain config
overrides (:func:`grid`, the pattern of ``dg_enn.py``):

- mode ``paper`` (the default of the paper's tables and figures): §5.1.2's settings for every row
  (:data:`PAPER_SETTINGS`: embedding 16 for all; three layers for AutoInt, FiGNN and GraphFM; two
  attention heads for AutoInt and GraphFM, all equal to the library's defaults) and GraphFM's
  paper model (its default) with the paper's m per data set (:data:`PAPER_M`: Criteo [39, 20, 5],
  Avazu [23, 10, 2], ML-1M [7, 4, 2]). Mode ``default``, labelled ``· default``: the library's
  defaults, where GraphFM is the official GraphCTR code's aggregation (``model.preset: official``,
  the earlier default; its run keys are unchanged) with the default m. The baselines' settings are
  the same in both modes (the paper names nothing else: "the implementation of the other compared
  baselines follows [37] and [26]" and a grid search without the chosen values), so their two rows
  share one run. Training in both modes: Adam (the paper's), lr 1e-3 and batch 1024 (the official
  code's), early stopping on valid AUC (patience 2, at most 30 epochs; the code: 2 epochs on
  Criteo / Avazu).
- rule (:data:`RULE`): no row starts its output bias at the train log-odds (``train.prior_bias:
  false`` for every row; Eq. 17 has no bias term), whatever a model's own default.
"""
from __future__ import annotations

from ..core import D, Study, V, Variant
from ..items import Explain, Plot, Table
from ..tuning import Space

ML100K, ML1M = D("ml100k"), D("ml1m")
#: a seeded uniform subsample of ML-1M's 739,012 instances (the full set is slow on a 2-core machine)
ML1M_SUB = D("ml1m", "ml1m-100k", {"max_rows": 100_000})
#: the shared first 10,000 rows of Criteo's train.txt (``--data-dir`` holding ``criteo-sample/``)
CRITEO_SAMPLE = D("criteo", "criteo-sample", {"path": "criteo-sample/criteo_train_head10000.txt.gz"})
AVAZU = D("avazu")
#: fields of ml100k-ctr (m_1 = n in the neighbourhood-size sweep)
ML100K_FIELDS = 12

#: §5.1.2: "The feature embedding size is set as 16 for all methods ... three layers for AutoInt, FiGNN,
#: and GraphFM. There are two attention heads in AutoInt and GraphFM."
PAPER_SETTINGS = {"embedding.dim": 16}
PAPER_MODEL = {"autoint": {"model.layers": 3, "model.heads": 2}, "fignn": {"model.steps": 3},
               "graphfm": {"model.layers": 3, "model.heads": 2}}
#: §5.1.2: "[m1, m2, m3] are set as [39, 20, 5], [23, 10, 2], and [7, 4, 2]" (data-set label -> m)
PAPER_M = {"criteo-sample": [39, 20, 5], "criteo": [39, 20, 5], "avazu": [23, 10, 2], "ml1m": [7, 4, 2],
           "ml1m-100k": [7, 4, 2]}
MODES = ("paper", "default")
#: the comparison rule of every GraphFM table: output bias 0 at the start for every row
RULE = {"train.prior_bias": False}

#: Table 2's rows: the paper's 14 baselines (§5.1.1) -> our registry models, and GraphFM
TABLE2 = [V(label, model, vs="GraphFM") for label, model in (
    ("LR", "lr"), ("FM", "fm"), ("AFM", "afm"), ("AFN", "afn"), ("FmFM", "fmfm"), ("NFM", "nfm"), ("HOFM", "hofm"),
    ("DeepCrossing", "deepcrossing"), ("CrossNet", "crossnet"), ("xDeepFM", "xdeepfm"), ("DCNV2", "dcnv2"),
    ("AutoInt", "autoint"), ("Fi-GNN", "fignn"), ("InterHAt", "interhat"))] + [V("GraphFM", "graphfm")]


def in_mode(v: Variant, mode: str, data: str | None = None) -> dict:
    """The overrides of row ``v`` in ``mode`` on data set ``data`` (a label of :data:`PAPER_M`, for m)."""
    model = v.set.get("model.name")
    if mode == "default":
        return {**({"model.preset": "official"} if model == "graphfm" else {}), **v.set}
    if mode != "paper":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    sets = {**PAPER_SETTINGS, **PAPER_MODEL.get(model, {})}
    if model == "graphfm" and data in PAPER_M and v.set.get("model.select", "top_m") == "top_m":
        sets["model.m"] = PAPER_M[data]
    return {**sets, **v.set}


def grid(variants: list[Variant], modes=MODES, data: str | None = None, base: str | None = None) -> list[Variant]:
    """Every row of ``variants`` in each mode under :data:`RULE`; labels get `` · default`` outside the
    paper mode, and ``base`` / ``vs`` point to the row of the same mode."""
    out = []
    for m in modes:
        tag = "" if m == "paper" else f" · {m}"
        for v in variants:
            ref = v.base or base
            out.append(Variant(v.label + tag, {**RULE, **in_mode(v, m, data)}, {**v.keys, "mode": m},
                               ref and ref + tag, v.vs and v.vs + tag))
    return out


ABLATIONS = {"GraphFM": {}, "GraphFM(-S)": {"selection": False}, "GraphFM(-I)": {"aggregate": "feature"},
             "GraphFM(-M)": {"heads": 1}, "GraphFM(-K1)": {"readout": [1]}, "GraphFM(-K2)": {"readout": [2]},
             "GraphFM(-K3)": {"readout": [3]}}
#: §4.2's alternatives named in the text: threshold selection (§4.2.2) and the Euclidean metric (§4.2.1)
SELECTION = {"top-m (Eq. 8)": {}, "threshold 0.5": {"select": "threshold", "threshold": 0.5},
             "threshold 0.7": {"select": "threshold", "threshold": 0.7}, "Euclidean, top-m": {"metric": "euclidean"}}


def _graphfm_rows(params: dict[str, dict], base: str) -> list[Variant]:
    return [V(k, "graphfm", {f"model.{a}": b for a, b in p.items()}, base=base) for k, p in params.items()]


TABLE2_NOTE = ("Paper mode (§5.1.2: embedding 16, three layers for AutoInt / Fi-GNN / GraphFM, two heads, the paper's "
               "m; GraphFM = the paper's model) and the library default ('· default': GraphFM = the official code's "
               "aggregation); the baselines are the same runs in both. Rule: output bias 0 for every row. Wilcoxon "
               "(vs): GraphFM better than the row.")
ABLATION_NOTE = ("Paper mode (GraphFM = the paper's model); the '· default' row is the official code's aggregation. "
                 "Rule: output bias 0 for every row.")

ITEMS = [
    Table("table2", "Table 2: GraphFM against the baselines (ml100k-ctr)", grid(TABLE2, base="FM"), [ML100K],
          base="FM", row_header="model", plots=(Plot("bar", title="test AUC (± std over seeds)"),), caption=TABLE2_NOTE),
    Table("table2-criteo", "Table 2 on Criteo (GraphFM's protocol; the shared 10,000-row sample)",
          grid(TABLE2, data="criteo-sample", base="FM"), [CRITEO_SAMPLE], base="FM", row_header="model",
          caption=TABLE2_NOTE + " Data: the first 10,000 rows of train.txt (8,000 / 1,000 / 1,000), values seen <= 10 "
                                "times in them share their field's rare value."),
    Table("table2-avazu", "Table 2 on Avazu (GraphFM's protocol; needs the full train.csv)",
          grid(TABLE2, data="avazu", base="FM"), [AVAZU], base="FM", row_header="model", caption=TABLE2_NOTE),
    Table("table2-ml1m", "Table 2 on MovieLens-1M (GraphFM's 7-field protocol)", grid(TABLE2, data="ml1m", base="FM"),
          [ML1M, ML1M_SUB], base="FM", row_header="model",
          caption=TABLE2_NOTE + " ml1m-100k: a seeded uniform subsample of 100,000 instances, then the 8:1:1 split. The "
                                "local ML-1M copy lacks timestamps for users 3000+ (the recipe imputes them; "
                                "docs/graphfm.md)."),
    Table("ablation", "Fig. 2: ablations (-S selection, -I interaction aggregation, -M one head, -K readout of "
          "layer K only)", grid(_graphfm_rows(ABLATIONS, "GraphFM"), ("paper",))
          + grid([V("GraphFM", "graphfm")], ("default",)), [ML100K], base="GraphFM", show_params=True,
          plots=(Plot("bar", title="test AUC (± std over seeds)"),), caption=ABLATION_NOTE),
    Table("selection", "§4.2: neighbour selection as the text names it (top-m, threshold, Euclidean metric)",
          grid(_graphfm_rows(SELECTION, "top-m (Eq. 8)"), ("paper",)), [ML100K], base="top-m (Eq. 8)",
          show_params=True, caption="Paper mode. §4.2.2: 'we also tried to set a threshold ... the performance is not as "
                                    "good as that of using a fixed-degree graph'; §4.2.1: 'one can also choose the "
                                    "Euclidean distance'. Rule: output bias 0 for every row."),
    Table("sweep", "Fig. 3: neighbourhood sizes m_2 x m_3 (m_1 = n, three layers)",
          grid([V(f"m=[{ML100K_FIELDS},{a},{b}]", "graphfm", {"model.layers": 3, "model.m": [ML100K_FIELDS, a, b]},
                  keys={"m2": a, "m3": b}) for a in (2, 3, 4, 6, 8) for b in (1, 2, 3, 4)], ("paper",)), [ML100K],
          plots=(Plot("heatmap", rows="m2", cols="m3", title=f"test AUC, m1 = n = {ML100K_FIELDS}"),),
          caption="Paper mode; rule: output bias 0."),
    Explain("fig4", "Fig. 4: the interactions GraphFM selects, per layer", grid([V("GraphFM", "graphfm")], ("paper",))[0],
            ML100K, rows=(0, 1),
            caption="Paper mode. p: edge score after selection; weight: attention on the message (mean over heads)."),
]



def layers_and_m(n: int, m2: tuple[int, ...], m3: tuple[int, ...]) -> list[dict]:
    """GraphFM's grid over the layers K and the neighbours m kept per layer (m_1 = n, as Fig. 3), one
    joint axis (len(m) = K): K = 1 [n]; K = 2 [n, a]; K = 3 [n, a, b] for a in ``m2``, b in ``m3``."""
    return [{"model.layers": 1, "model.m": [n]}] + [{"model.layers": 2, "model.m": [n, a]} for a in m2] + \
        [{"model.layers": 3, "model.m": [n, a, b]} for a in m2 for b in m3]


#: §5.1.2 "the optimal hyper-parameters are found via a grid search", over m and (for Fig. 3) K = 3;
#: the layers 1-2 rows are ours (the paper fixes K = 3 "for a fair comparison"). ML-1M: 7 fields.
#: The paper does not say it repeats runs: the chosen configuration runs on seeds 1-3 (the study's).
TUNE_NOTE = ("GraphFM's grid search over the neighbourhood sizes m (m_1 = n as Fig. 3) and the layers, each trial at "
             "seed 1, chosen on validation AUC; the chosen configuration over seeds 1-3 (the paper does not state "
             "repeats).")
SPACES = [
    Space("graphfm", "GraphFM: layers x m on ml100k-ctr", V("GraphFM", "graphfm"), [ML100K],
          {"layers, m": layers_and_m(ML100K_FIELDS, (2, 3, 4, 6, 8), (1, 2, 3, 4))}, seeds=(1, 2, 3),
          caption=TUNE_NOTE),
    Space("graphfm-ml1m", "GraphFM: layers x m on MovieLens-1M (7 fields)", V("GraphFM", "graphfm"), [ML1M],
          {"layers, m": layers_and_m(7, (2, 3, 4, 6), (1, 2, 3, 4))}, seeds=(1, 2, 3), caption=TUNE_NOTE),
]

STUDY = Study("graphfm", "GraphFM (Wu et al.)", "docs/graphfm.md", ITEMS, spaces=SPACES)
