"""EGIN (Peng et al., "Light-weight End-to-End Graph Interest Network for CTR Prediction in
E-commerce Search", 2024): its tables as data (``ctrgraph reproduce egin [item ...]``; docs/egin.md).

Every row shares the paper's setting "all embeddings share a dimension of 10" (study default) and
the benchmark's training rules. Data sets here: ``synthetic-search`` (the synthetic search log with
planted query intents: the query mode of Table 3 / Table 4) and, item-only as the paper ran Taobao
(Table 2), ``ml100k`` and ``taobao-sample`` (the shared 814-user Taobao sample). The paper's
industrial log is not public.
"""
from __future__ import annotations

from ..core import D, Study, V
from ..items import CategorySimilarity, Plot, Table

SEARCH = D("synthetic_search", "synthetic-search")
ML100K = D("ml100k")
TAOBAO_SAMPLE = D("taobao", "taobao-sample", {"path": "taobao-userbehavior-sample/UserBehavior_head_814users.csv.gz"})

EGIN = V("EGIN", "egin")
BASE = "DNN-cross"  # the paper's RelaImpr reference
BASELINES = [V("DNN", "dnn", base=BASE, vs="EGIN"), V("DNN-cross", "dnn-cross", base=BASE, vs="EGIN"),
             V("DIN", "din", base=BASE, vs="EGIN"),
             V("BST", "bst", {"model.heads": 2}, base=BASE, vs="EGIN")]  # 8 heads do not divide 10-wide tokens
EGES = V("EGES", "eges-egin", {"model.graph": False}, base=BASE, vs="EGIN")  # EGES vectors in EGIN's network
ROWS = BASELINES + [EGES, V("EGIN", "egin", base=BASE)]
ITEM_ROWS = BASELINES + [V("EGIN", "egin", base=BASE)]  # Table 2 has no EGES row
ABLATIONS = [V("EGIN w/o graph", "egin", {"model.graph": False}, vs="EGIN"),
             V("EGIN w/o query", "egin", {"model.query": False}, vs="EGIN"),
             V("EGIN w/o pos_emb", "egin", {"model.pos_emb": False}, vs="EGIN")]
BAR = Plot("bar", title="test AUC (± std over seeds)")
NOTE = ("Embedding 10 for every row (the paper's setting); EGIN: window 2, top-10, 100 negatives from cross-batch id "
        "queues (capped at the vocabulary), α = β = γ = 1 and 20 similarity bins (not given by the paper). RelaImpr "
        "against DNN-cross (hashed history x target pairs, 2**18 buckets). EGES: DeepWalk walks on the train item "
        "graph, side-information skip-gram, frozen, read by EGIN's network without graph losses (two-stage). BST: "
        "2 heads (its 8 do not divide the 20- or 30-wide tokens of embedding 10).")

ITEMS = [
    Table("table3", "Table 3: search CTR (query mode) against pooling- and attention-based baselines", ROWS, [SEARCH],
          row_header="method", plots=(BAR,), caption=NOTE),
    Table("table4", "Table 4: ablations (query mode)", ABLATIONS + [EGIN], [SEARCH], row_header="method",
          plots=(BAR,), caption=NOTE),
    CategorySimilarity("table5", "Table 5 / Fig. 4: cosine of intra- vs inter-category item pairs", [
        EGIN, V("EGES", "eges-egin", {"model.graph": False}), V("DNN", "dnn")], SEARCH, category="category_id",
        caption="EGIN: its graph item table; EGES: its pre-trained (frozen) vectors; DNN: its item table. All pairs "
                "among the 2,000 most frequent train targets (the paper samples 1M pairs of its industrial items). "
                "The figure: 4 random same-category pairs (EGIN, seed 1)."),
    Table("subsampling", "§4.6.1: subsampling of frequent entities", [
        EGIN, V("EGIN + subsampled sequences", "egin", {"model.subsample": 1e-4}, vs="EGIN"),
        V("EGIN + subsampled negative pool", "egin", {"model.subsample": 1e-4, "model.subsample_target": "negatives"},
          vs="EGIN")], [SEARCH], row_header="method", plots=(BAR,),
          caption=NOTE + " Threshold t = 1e-4 (word2vec's keep probability min(1, sqrt(t / f)); the paper names "
                         "neither function nor threshold and reports a 1e-4 AUC difference)."),
    Table("fig3", "Fig. 3: click vs seeds sequence mixture for the i2i edges", [
        V(f"{round(100 * (1 - r))}% click / {round(100 * r)}% seeds", "egin", {"model.seeds_mix": r},
          keys={"seeds share": r}) for r in (0.0, 0.2, 0.5, 0.8, 1.0)], [SEARCH], row_header="mixture",
          plots=(Plot("line", x="seeds share", series=None, title="test AUC by the seeds share"),),
          caption=NOTE + " Seeds sequence: the clicks of the current query's category (the paper filters by the "
                         "query's predicted category); a share r of the instances builds its i2i edges on it."),
    Table("table2", "Table 2: item-only mode (no queries, as the paper ran Taobao)", ITEM_ROWS, [ML100K, TAOBAO_SAMPLE],
          row_header="method", plots=(BAR,), caption=NOTE),
]

STUDY = Study("egin", "EGIN (Peng et al., 2024)", "docs/egin.md", ITEMS, defaults={"embedding.dim": 10})
