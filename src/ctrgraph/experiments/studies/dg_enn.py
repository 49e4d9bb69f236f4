"""DG-ENN (Guo et al., "Dual Graph enhanced Embedding Neural Network for CTR Prediction", KDD 2021):
its tables and figures as data (``ctrgraph reproduce dg-enn [item ...]``; docs/dg-enn.md).

DG-ENN = ``dg-pnn`` (§5.3.1: PNN is the base model). Data sets: ``ml100k`` (the ml100k-ctr benchmark
protocol), ``ml100k-dgenn`` (the paper's protocol: targets T-2/T-1/T per user, 10 sampled negatives
each) and ``alimama`` (the paper's Alimama, our recipe; ``--data-dir`` must hold ``alimama/``). The
paper's Alipay is not public, Tmall has a recipe but no local copy. Significance: the paper's ★ is
a Wilcoxon signed-rank test over its 5 runs; each row names the row it is tested against (``vs``).

Every row of an item is declared in a *mode* and under one *comparison rule*, both plain config
overrides (:func:`grid`):

- mode ``paper`` (the default of the paper's tables and figures): §5.1.5's settings for every row,
  "for fair comparison" (:data:`PAPER_SETTINGS`: embedding 10, batch 2000, deep layers 400-400-400
  where the model has an MLP), and the ``dg`` provider's ``paper`` preset (the divide-and-conquer
  attribute graphs of §4.2; ``embeddings/dg.py``'s ``PAPER``) on ``dg-*`` rows. Mode ``default``:
  the benchmark defaults and the provider's tuned default (linear attribute stage), labelled
  ``· default``. The paper's learning rate, L2 and dropout are grid searches without the chosen
  values (:data:`PAPER_GRID`: ``ctrgraph tune dg-enn <space>``, :data:`SPACES`): both modes keep lr
  1e-3, no L2, no dropout.
- rule (:data:`RULES`): the prior output bias (``train.prior_bias``, the train log-odds as Eq. 6's
  initial b) is on for every row of a table or off for every row; items where it changes the
  comparison (Table 3) declare both, labelled ``· prior bias`` / ``· zero bias``. A row's own
  ``train.prior_bias`` (a follow-up's ``nopb`` variant) still wins.

The follow-up studies of docs/dg-enn.md ("Planted communities: behaviour sparsity") and
docs/dg-enn-pnn-short.md run on the ``synthetic`` recipe with planted structure (``SETTINGS``).
"""
from __future__ import annotations

from ...registry import MODELS, resolve_model_name
from ..core import D, Study, V, Variant
from ..items import Buckets, DataStats, Plot, Table
from ..tuning import Space

ML100K, PAPER, ALIMAMA = D("ml100k"), D("ml100k-dgenn"), D("alimama")
BAR = Plot("bar", title="test AUC (± std over seeds)")

#: §5.1.5: "we set embedding dimension of all models as 10, and batch size as 2000 ... The deep
#: layers for all models are {400,400,400,1}" (the MLP only where a model has one: ``model.hidden``)
PAPER_SETTINGS = {"embedding.dim": 10, "train.batch_size": 2000}
PAPER_HIDDEN = [400, 400, 400]
#: §5.1.5's grid, tuned on validation (:data:`SPACES`; L2 is Adam's weight decay on every parameter;
#: the GCN layers only for graph models)
PAPER_GRID = {"train.lr": [1e-1, 1e-2, 1e-3, 1e-4], "train.weight_decay": [0.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
              "model.dropout": [round(0.1 * i, 1) for i in range(10)], "embedding.params.layers": [1, 2, 3, 4]}
#: "We run each experiments 5 times and report the average results."
PAPER_SEEDS = (1, 2, 3, 4, 5)
MODES = ("paper", "default")
#: train.prior_bias -> row-label tag (used when a table reports both rules)
RULES = {True: "prior bias", False: "zero bias"}


def in_mode(v: Variant, mode: str) -> dict:
    """The overrides of row ``v`` in ``mode`` (``paper``: :data:`PAPER_SETTINGS`, the MLP, the dg preset)."""
    if mode == "default":
        return dict(v.set)
    if mode != "paper":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    prov, base = resolve_model_name(v.set["model.name"])
    sets = dict(PAPER_SETTINGS)
    if "hidden" in MODELS[base].Config.model_fields:
        sets["model.hidden"] = PAPER_HIDDEN
    if prov == "dg":
        sets["embedding.params.preset"] = "paper"
    return {**sets, **v.set}


def grid(variants: list[Variant], modes=("paper",), rules=(True,), base: str | None = None,
         tags: bool = True) -> list[Variant]:
    """Every row of ``variants`` in each mode under each rule (``train.prior_bias`` for all rows).
    Labels get `` · default`` outside the paper mode and `` · prior bias`` / `` · zero bias`` when
    ``rules`` has both (``tags=False``: labels unchanged); ``base`` (RelaImpr) and ``vs`` (Wilcoxon)
    point to the row of the same mode and rule."""
    out = []
    for m in modes:
        for pb in rules:
            tag = ("" if m == "paper" else f" · {m}") + (f" · {RULES[pb]}" if len(rules) > 1 else "")
            tag = tag if tags else ""
            for v in variants:
                ref = v.base or base
                out.append(Variant(v.label + tag, {"train.prior_bias": pb, **in_mode(v, m)},
                                   {**v.keys, "mode": m, "output bias": RULES[pb]}, ref and ref + tag,
                                   v.vs and v.vs + tag))
    return out


def grid_pairs(pairs, mode: str = "paper", rule: bool = True, tags: bool = True) -> list[tuple[Variant, Variant]]:
    """:func:`grid` for the (base, graph) pairs of a :class:`Buckets` item."""
    return [tuple(grid(list(p), (mode,), (rule,), tags=tags)) for p in pairs]


TABLE2 = [V("LR", "lr", vs="DG-ENN"), V("FM", "fm", vs="DG-ENN"), V("AutoInt+", "autoint+", vs="DG-ENN"),
          V("DeepFM", "deepfm", vs="DG-ENN"), V("PNN", "pnn", vs="DG-ENN"), V("DIN", "din", vs="DG-ENN"),
          V("DIEN", "dien", vs="DG-ENN"), V("GIN", "gin", vs="DG-ENN"), V("FiGNN", "fignn", vs="DG-ENN"),
          V("DG-ENN", "dg-pnn")]
TABLE3 = [V("PNN", "pnn", vs="DG-PNN"), V("DG-PNN", "dg-pnn"), V("DIN", "din", vs="DG-DIN"), V("DG-DIN", "dg-din"),
          V("FiGNN", "fignn", vs="DG-FiGNN"), V("DG-FiGNN", "dg-fignn")]
TABLE4 = [V("PNN", "pnn", vs="DG-PNN"), V("GCN-PNN", "gcn-pnn", vs="DG-PNN"), V("KGAT-PNN", "kgat-pnn", vs="DG-PNN"),
          V("HGAT-PNN", "hgat-pnn", vs="DG-PNN"), V("DG-PNN", "dg-pnn")]
#: the tuned default beside each paper-mode ablation (a second, labelled pair of rows)
DEFAULT_ROWS = grid([V("PNN", "pnn"), V("DG-PNN", "dg-pnn")], ("default",), base="PNN")


def dg_variants(ablation: dict[str, dict]) -> list[Variant]:
    """Paper mode: PNN, then ``dg-pnn`` with each ablation's provider parameters (``embedding.params``,
    over the paper preset); then the tuned default's PNN / DG-PNN rows. Prior bias for every row."""
    rows = [V("PNN", "pnn")] + [V(label, "dg-pnn", {f"embedding.params.{k}": v for k, v in params.items()})
                                for label, params in ablation.items()]
    return grid(rows, base="PNN") + DEFAULT_ROWS


ABLATION_NOTE = ("Paper mode (embedding 10, batch 2000, MLP 400-400-400, the paper's divide-and-conquer attribute "
                 "graphs); the '· default' rows are the tuned default (benchmark settings, linear attribute stage). "
                 "Rule: prior output bias for every row.")
TABLE6_FIELDS = {"ml100k": ("release_year", "occupation"), "alimama": ("brand", "cate_id")}

ITEMS = [
    Table("table2", "Table 2: DG-ENN against the baselines", grid(TABLE2, MODES, base="PNN"), [ML100K, ALIMAMA],
          seeds=PAPER_SEEDS, row_header="paper row",
          caption="The paper's 5 runs; ★: DG-ENN better with the one-sided exact Wilcoxon test (p < 0.05). Paper "
                  "mode and the tuned default ('· default'); rule: prior output bias for every row."),
    Table("table3", "Table 3: DG enhancement of different base models", grid(TABLE3, MODES, (True, False)),
          [ML100K, PAPER], seeds=PAPER_SEEDS, row_header="paper row",
          caption="Each base model against its dg- version (the same base network, graph-enhanced embeddings), in "
                  "paper mode and the tuned default, each under both rules (prior output bias for every row / for "
                  "none)."),
    Table("table4", "Table 4: DG-ENN against other graph methods on the same graphs", grid(TABLE4, MODES),
          [ML100K, PAPER], seeds=PAPER_SEEDS, row_header="paper row",
          caption="GCN, KGAT and HGAT without their prediction layers, on DG-ENN's graphs (§5.3.2); KGAT uses the "
                  "Freebase knowledge graph when the data directory holds ml-100k.kg / ml-100k.link. Rule: prior "
                  "output bias for every row."),
    Table("table5", "Table 5: which graphs matter", dg_variants({
        "attribute graph": {"graphs": "attr"}, "uu & vv graph": {"graphs": "uu,vv"}, "uv graph": {"graphs": "uv"},
        "DG (all graphs)": {"graphs": "all"}}), [ML100K, PAPER], seeds=PAPER_SEEDS, show_params=True, plots=(BAR,),
        caption=ABLATION_NOTE),
    Table("fig3", "Fig. 3: graph aggregators", dg_variants({
        "GCN": {"aggregator": "gcn"}, "NGCF": {"aggregator": "ngcf"}, "LightGCN": {"aggregator": "lightgcn"}}),
        [ML100K], seeds=PAPER_SEEDS, show_params=True, plots=(BAR,), caption=ABLATION_NOTE),
    Table("fig4", "Fig. 4: attribute-graph learning", dg_variants({
        "linear ID+attribute": {"attr_mode": "linear"}, "one mixed attribute graph": {"attr_mode": "mixed"},
        "divide-and-conquer": {"attr_mode": "field"}}), [ML100K], seeds=PAPER_SEEDS, show_params=True,
        plots=(BAR,), caption=ABLATION_NOTE + " The paper's model is divide-and-conquer (attr_mode=field)."),
    Table("fig5", "Fig. 5: collaborative-graph learning", dg_variants({
        "element-sum": {"collab": "sum"}, "element-mean": {"collab": "mean"}, "attention": {"collab": "attention"},
        "organized learning": {"collab": "organized"}}), [ML100K], seeds=PAPER_SEEDS, show_params=True,
        plots=(BAR,), caption=ABLATION_NOTE),
    Table("layers", "Layers of graph propagation (§5.4)", dg_variants({f"L={n}": {"layers": n} for n in (1, 2, 3, 4)}),
          [ML100K], seeds=PAPER_SEEDS, show_params=True, plots=(BAR,), caption=ABLATION_NOTE),
    DataStats("fig1", "Fig. 1: feature and behaviour sparsity", ML100K,
              caption="Train split. Values never seen in train are not counted; a user's behaviour length is the "
                      "time-ordered items of its train histories."),
    Buckets("table6", "Table 6: feature sparsity (logloss on test rows holding a chosen rare feature)",
            grid_pairs([(V("PNN", "pnn"), V("DG-PNN", "dg-pnn"))]), [ML100K], by="values",
            fields=TABLE6_FIELDS["ml100k"], freq=(5, 12), per_field=2, seeds=PAPER_SEEDS, plot=False,
            caption="The paper's selection: four features (two values of each of two attribute fields) with a train "
                    "frequency of 5-12, PNN vs DG-PNN logloss on the test rows that hold each. The paper picked "
                    "Alimama brands and categories by hand; our rule picks, per field, the values in that frequency "
                    "range with the most test rows. Paper mode; rule: prior output bias for both rows."),
    Buckets("table6-alimama", "Table 6 on Alimama (the paper's data set and fields: brand, category)",
            grid_pairs([(V("PNN", "pnn"), V("DG-PNN", "dg-pnn"))]), [ALIMAMA], by="values",
            fields=TABLE6_FIELDS["alimama"], freq=(5, 12), per_field=2, seeds=PAPER_SEEDS, plot=False,
            caption="As table6, on the alimama recipe. The shared DMR sample (500 rows) has a handful of test "
                    "rows per value: its figures say nothing about the paper's claim."),
    Buckets("table6-buckets", "Table 6, extra: logloss by the train frequency of every value",
            grid_pairs([(V("PNN", "pnn"), V("DG-PNN", "dg-pnn")), (V("DIN", "din"), V("DG-DIN", "dg-din"))]),
            [ML100K], by="feature_frequency", fields=("user_id", "item_id"), rare=10, plot=False,
            caption="Our generalisation of the paper's four hand-picked rare features (not in the paper): every "
                    "value of the listed fields, bucketed by its train frequency. Paper mode; prior bias for all."),
    Buckets("fig6", "Fig. 6: behaviour sparsity (AUC by behaviour length)",
            grid_pairs([(V("DIN", "din"), V("DG-DIN", "dg-din"))]), [ML100K], by="hist", edges=(10, 20, 30, 40, 50),
            seeds=PAPER_SEEDS, caption="Paper mode; rule: prior output bias for both rows."),
    Buckets("fig6-users", "Fig. 6 by the user's train rows", grid_pairs([(V("DIN", "din"), V("DG-DIN", "dg-din"))]),
            [ML100K], by="user_rows", edges=(20, 40, 80, 160), caption="Paper mode; prior output bias for both rows."),
]

# ----- follow-up studies on synthetic data with planted sparsity and communities ---------------------
SPARSE = {"n_instances": 60000, "n_users": 3000, "n_items": 4000, "n_categories": 20, "n_cities": 500,
          "n_brands": 500, "emit_true_prob": False, "attr_zipf": 1.5, "popularity_exponent": 1.5, "short_frac": 0.5,
          "short_len": 3}
COMMON = {**SPARSE, "short_weight": 0.0}
BIG = {"n_instances": 120000, "n_users": 6000}
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
#: the follow-ups run in the default mode (as measured), under the rule "prior bias for every row"
PAIRS = grid_pairs([(V("PNN", "pnn"), V("DG-PNN", "dg-pnn")), (V("DIN", "din"), V("DG-DIN", "dg-din"))], "default",
                   tags=False)
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
            grid_pairs([(V("PNN", "pnn"), _pnn_variant(n, p)) for n, p in PNN_SHORT.items()], "default", tags=False),
            [d for d in SYNTHETIC if d.label in ("act01", "sa01-d1", "planted-d1", "sa01", "planted", "act", "act-d1",
                                                 "act-d2", "planted-d2", "pur07")],
            by="hist", edges=(4,), bootstrap=300, truth=True, plot=False,
            caption="docs/dg-enn-pnn-short.md: which DG component carries the short-row gain. Large: 20 variants x "
                    "10 settings x 3 seeds; select with --only 'PNN' --only 'DG-PNN uv' --datasets act01 ..."),
]

# ----- tuning (``ctrgraph tune dg-enn <space>``; docs/tuning.md) -----------------------------------------
#: §5.1.5: 4 x 6 x 10 x 4 = 960 grid points; the default budget is a random 40 of them (the grid
#: sampler draws without replacement), ``--trials 960`` runs the whole grid
TUNE_TRIALS = 40
TUNE_NOTE = ("§5.1.5's grid (learning rate, L2, dropout; GCN layers for the graph model) in paper mode with the prior "
             "output bias, each trial at seed 1, chosen on validation AUC; the chosen configuration is run 5 times "
             "(seeds 1-5) as the paper did. The paper does not publish its chosen values.")
SPACES = [
    Space("dg-enn", "DG-ENN (dg-pnn), §5.1.5's grid", grid([V("DG-ENN", "dg-pnn")])[0], [PAPER, ML100K], PAPER_GRID,
          seeds=PAPER_SEEDS, trials=TUNE_TRIALS, caption=TUNE_NOTE),
    Space("pnn", "PNN (the base model), §5.1.5's grid without the GCN layers", grid([V("PNN", "pnn")])[0],
          [PAPER, ML100K], {k: v for k, v in PAPER_GRID.items() if k != "embedding.params.layers"},
          seeds=PAPER_SEEDS, trials=TUNE_TRIALS, caption=TUNE_NOTE),
]

STUDY = Study("dg-enn", "DG-ENN (Guo et al., KDD 2021)", "docs/dg-enn.md", ITEMS + FOLLOW_UPS, spaces=SPACES)
