"""DG-ENN (Guo et al., "Dual Graph enhanced Embedding Neural Network for CTR Prediction", KDD 2021):
its tables and figures as data (``ctrgraph reproduce dg-enn [item ...]``; docs/dg-enn.md).

DG-ENN = ``dg-pnn`` (§5.3.1: PNN is the base model). Data sets: ``ml100k`` (the ml100k-ctr benchmark
protocol) and ``ml100k-dgenn`` (the paper's protocol: targets T-2/T-1/T per user, 10 sampled
negatives each). The paper's Alipay / Tmall / Alimama are not available here. Significance: the
paper's ★ is a Wilcoxon signed-rank test over its 5 runs; each row names the DG row it is tested
against (``vs``).

The follow-up studies of docs/dg-enn.md ("Planted communities: behaviour sparsity") and
docs/dg-enn-pnn-short.md run on the ``synthetic`` recipe with planted structure (``SETTINGS``).
"""
from __future__ import annotations

from ..core import D, Study, V, Variant
from ..items import Buckets, DataStats, Plot, Table

ML100K, PAPER = D("ml100k"), D("ml100k-dgenn")
BAR = Plot("bar", title="test AUC (± std over seeds)")

TABLE2 = [V("LR", "lr", vs="DG-ENN"), V("FM", "fm", vs="DG-ENN"), V("AutoInt+", "autoint+", vs="DG-ENN"),
          V("DeepFM", "deepfm", vs="DG-ENN"), V("PNN", "pnn", vs="DG-ENN"), V("DIN", "din", vs="DG-ENN"),
          V("DIEN", "dien", vs="DG-ENN"), V("GIN", "gin", vs="DG-ENN"), V("FiGNN", "fignn", vs="DG-ENN"),
          V("DG-ENN", "dg-pnn")]
TABLE3 = [V("PNN", "pnn", vs="DG-PNN"), V("DG-PNN", "dg-pnn"), V("DIN", "din", vs="DG-DIN"), V("DG-DIN", "dg-din"),
          V("FiGNN", "fignn", vs="DG-FiGNN"), V("DG-FiGNN", "dg-fignn")]
TABLE4 = [V("PNN", "pnn", vs="DG-PNN"), V("GCN-PNN", "gcn-pnn", vs="DG-PNN"), V("KGAT-PNN", "kgat-pnn", vs="DG-PNN"),
          V("HGAT-PNN", "hgat-pnn", vs="DG-PNN"), V("DG-PNN", "dg-pnn")]


def dg_variants(ablation: dict[str, dict]) -> list[Variant]:
    """PNN, then ``dg-pnn`` with each ablation's provider parameters (``embedding.params``)."""
    return [V("PNN", "pnn")] + [V(label, "dg-pnn", {f"embedding.params.{k}": v for k, v in params.items()})
                                for label, params in ablation.items()]


ABLATION_NOTE = ("DG-ENN's default attribute stage here is the linear ID+attribute transform (the paper's Fig. 4 "
                 "alternative (i); docs/dg-enn.md), so rows that do not set attr_mode run on it.")

ITEMS = [
    Table("table2", "Table 2: DG-ENN against the baselines", TABLE2, [ML100K], seeds=(1, 2, 3, 4, 5), base="PNN",
          row_header="paper row",
          caption="The paper's 5 runs; ★: DG-ENN better with the one-sided exact Wilcoxon test (p < 0.05)."),
    Table("table3", "Table 3: DG enhancement of different base models", TABLE3, [ML100K, PAPER], row_header="paper row",
          caption="Each base model against its dg- version (the same base network, graph-enhanced embeddings)."),
    Table("table4", "Table 4: DG-ENN against other graph methods on the same graphs", TABLE4, [ML100K, PAPER],
          row_header="paper row",
          caption="GCN, KGAT and HGAT without their prediction layers, on DG-ENN's graphs (§5.3.2); KGAT uses the "
                  "Freebase knowledge graph when the data directory holds ml-100k.kg / ml-100k.link."),
    Table("table5", "Table 5: which graphs matter", dg_variants({
        "attribute graph": {"graphs": "attr"}, "uu & vv graph": {"graphs": "uu,vv"}, "uv graph": {"graphs": "uv"},
        "DG (all graphs)": {"graphs": "all"}}), [ML100K, PAPER], base="PNN", show_params=True, plots=(BAR,),
        caption=ABLATION_NOTE),
    Table("fig3", "Fig. 3: graph aggregators", dg_variants({
        "GCN": {"aggregator": "gcn"}, "NGCF": {"aggregator": "ngcf"}, "LightGCN": {"aggregator": "lightgcn"}}),
        [ML100K], base="PNN", show_params=True, plots=(BAR,), caption=ABLATION_NOTE),
    Table("fig4", "Fig. 4: attribute-graph learning", dg_variants({
        "linear ID+attribute": {"attr_mode": "linear"}, "one mixed attribute graph": {"attr_mode": "mixed"},
        "divide-and-conquer": {"attr_mode": "field"}}), [ML100K], base="PNN", show_params=True, plots=(BAR,),
        caption="The paper's model is divide-and-conquer (attr_mode=field)."),
    Table("fig5", "Fig. 5: collaborative-graph learning", dg_variants({
        "element-sum": {"collab": "sum"}, "element-mean": {"collab": "mean"}, "attention": {"collab": "attention"},
        "organized learning": {"collab": "organized"}}), [ML100K], base="PNN", show_params=True, plots=(BAR,),
        caption=ABLATION_NOTE),
    Table("layers", "Layers of graph propagation (§5.4)", dg_variants({f"L={n}": {"layers": n} for n in (1, 2, 3, 4)}),
          [ML100K], base="PNN", show_params=True, plots=(BAR,), caption=ABLATION_NOTE),
    DataStats("fig1", "Fig. 1: feature and behaviour sparsity", ML100K,
              caption="Train split. Values never seen in train are not counted; a user's behaviour length is the "
                      "time-ordered items of its train histories."),
    Buckets("table6", "Table 6: feature sparsity (logloss on rare feature values)",
            [(V("PNN", "pnn"), V("DG-PNN", "dg-pnn")), (V("DIN", "din"), V("DG-DIN", "dg-din"))], [ML100K],
            by="feature_frequency", fields=("user_id", "item_id"), rare=10, plot=False,
            caption="Our generalisation of the paper's four hand-picked rare Alimama features: every value of the "
                    "listed fields, bucketed by its train frequency."),
    Buckets("fig6", "Fig. 6: behaviour sparsity (AUC by behaviour length)", [(V("DIN", "din"), V("DG-DIN", "dg-din"))],
            [ML100K], by="hist", edges=(10, 20, 30, 40, 50)),
    Buckets("fig6-users", "Fig. 6 by the user's train rows", [(V("DIN", "din"), V("DG-DIN", "dg-din"))], [ML100K],
            by="user_rows", edges=(20, 40, 80, 160)),
]

# ----- follow-up studies on synthetic data with planted sparsity and communities ---------------------
SPARSE = dict(n_instances=60000, n_users=3000, n_items=4000, n_categories=20, n_cities=500, n_brands=500,
              emit_true_prob=False, attr_zipf=1.5, popularity_exponent=1.5, short_frac=0.5, short_len=3)
COMMON = dict(SPARSE, short_weight=0.0)
BIG = dict(n_instances=120000, n_users=6000)
SETTINGS = {  # name -> synthetic recipe parameters (docs/dg-enn.md, "Planted communities")
    "sw0": {},
    "act": {"short_activity": 0.2},
    "comm": {"n_communities": 30},
    "planted": {"n_communities": 30, "short_activity": 0.2},
    "sa01": {"n_communities": 30, "short_activity": 0.1},
    "pur07": {"n_communities": 30, "short_activity": 0.2, "community_purity": 0.7},
    "planted-d1": {"n_communities": 30, "short_activity": 0.2, "seed": 1},
    "planted-d2": {"n_communities": 30, "short_activity": 0.2, "seed": 2},
    "act-d1": {"short_activity": 0.2, "seed": 1},
    "act-d2": {"short_activity": 0.2, "seed": 2},
    "act01": {"short_activity": 0.1},
    "sa01-d1": {"n_communities": 30, "short_activity": 0.1, "seed": 1},
    "planted-big": {"n_communities": 30, "short_activity": 0.2, **BIG},
    "planted-big-d1": {"n_communities": 30, "short_activity": 0.2, "seed": 1, **BIG},
}
SYNTHETIC = [D("synthetic", name, dict(COMMON, **p)) for name, p in SETTINGS.items()]
SYN_SPARSE = D("synthetic", "synthetic-sparse", SPARSE)
PAIRS = [(V("PNN", "pnn"), V("DG-PNN", "dg-pnn")), (V("DIN", "din"), V("DG-DIN", "dg-din"))]
#: DG-PNN variants of docs/dg-enn-pnn-short.md (embedding.params, or train.* keys)
PNN_SHORT = {"none": {"graphs": "none"}, "uv": {"graphs": "uv"}, "uu-vv": {"graphs": "uu,vv"}, "uu": {"graphs": "uu"},
             "vv": {"graphs": "vv"}, "attr": {"graphs": "attr"}, "cf": {"graphs": "uu,vv,uv"},
             "nouu": {"graphs": "attr,vv,uv"}, "novv": {"graphs": "attr,uu,uv"}, "attr-uv": {"graphs": "attr,uv"},
             "uu-uv": {"graphs": "uu,uv"}, "isokeep": {"isolated": "keep"}, "a02": {"knn_alpha": 0.2},
             "k20": {"knn_k": 20}, "a02k20": {"knn_alpha": 0.2, "knn_k": 20}, "leaveout": {"knn_leave_out": True},
             "L1": {"layers": 1}, "L3": {"layers": 3}, "uvt0": {"uv_targets": False},
             "nopb": {"train.prior_bias": False}}


def _pnn_variant(name: str, params: dict) -> Variant:
    sets = {(k if k.startswith("train.") else f"embedding.params.{k}"): v for k, v in params.items()}
    return V(f"DG-PNN {name}", "dg-pnn", sets)


FOLLOW_UPS = [
    Buckets("synthetic-table6", "Table 6 on synthetic data with planted sparsity", PAIRS, [SYN_SPARSE],
            by="feature_frequency", fields=("user_id", "item_id", "city", "brand"), plot=False),
    Buckets("synthetic-fig6", "Fig. 6 on synthetic data with planted sparsity", PAIRS, [SYN_SPARSE], by="hist",
            edges=(1, 2, 3, 4)),
    Buckets("communities-fig6", "Planted communities: AUC gain by behaviour length, every setting", PAIRS, SYNTHETIC,
            by="hist", edges=(1, 2, 3, 4), plot=False),
    Buckets("short-vs-heavy", "Planted communities: short (0-3) vs heavy (>= 4) rows, user bootstrap", PAIRS, SYNTHETIC,
            by="hist", edges=(4,), bootstrap=300, plot=False,
            caption="The gain difference short - heavy with a user-cluster bootstrap of the test set (B = 300)."),
    Buckets("short-vs-heavy-eauc", "Short vs heavy rows in expected AUC (planted probabilities)", PAIRS, SYNTHETIC,
            by="hist", edges=(4,), bootstrap=300, truth=True, plot=False,
            caption="Expected AUC under the generator's planted click probabilities (label noise removed); Bayes = "
                    "the planted probability scored against itself."),
    Buckets("pnn-short-variants", "DG-PNN variants: short vs heavy gain over PNN (expected AUC)",
            [(V("PNN", "pnn"), _pnn_variant(n, p)) for n, p in PNN_SHORT.items()],
            [d for d in SYNTHETIC if d.label in ("act01", "sa01-d1", "planted-d1", "sa01", "planted", "act", "act-d1",
                                                 "act-d2", "planted-d2", "pur07")],
            by="hist", edges=(4,), bootstrap=300, truth=True, plot=False,
            caption="docs/dg-enn-pnn-short.md: which DG component carries the short-row gain. Large: 20 variants x "
                    "10 settings x 3 seeds; select with --only 'PNN' --only 'DG-PNN uv' --datasets act01 ..."),
]

STUDY = Study("dg-enn", "DG-ENN (Guo et al., KDD 2021)", "docs/dg-enn.md", ITEMS + FOLLOW_UPS)
