"""DemiNet (Wang et al., "DemiNet: Dependency-Aware Multi-Interest Network with Self-Supervised Graph
Learning for Click-Through Rate Prediction", AAAI 2022): its tables and figures as data
(``ctrgraph reproduce deminet [item ...]``; docs/deminet.md).

Rows: Group 1 (DIN, DIEN without its auxiliary loss as the paper ran it and with it, MIND,
ComiRec-DR, ComiRec-SA, DMIN), Group 2 (Hard-Routing, Multi-Avg, MoE: DemiNet's aggregation
swapped) and DemiNet; every other row is tested against DemiNet (one-sided exact Wilcoxon over
paired seeds). Data sets available here: ``ml100k`` (the ml100k-ctr benchmark protocol and
settings), ``synthetic-multi`` (the synthetic recipe with 4 planted interests per user) and
``taobao-sample`` (the shared Taobao sample of 814 users under the paper's protocol: users with < 5
clicks removed, global 80 % time split). The paper's own data sets (full Taobao, Amazon Books,
RetailRocket) are the ``*-paper-data`` items: they need the downloads (docs/data.md).
"""
from __future__ import annotations

from ..core import D, Study, V
from ..items import InterestCase, Plot, Table

ML100K = D("ml100k")
SYNTHETIC = D("synthetic", "synthetic-multi", {"n_instances": 100_000, "n_users": 5_000, "n_items": 10_000,
                                               "n_categories": 40, "n_interests": 4, "emit_true_prob": False})
TAOBAO_SAMPLE = D("taobao", "taobao-sample", {"path": "taobao-userbehavior-sample/UserBehavior_head_814users.csv.gz",
                                              "protocol": "deminet"})
PAPER_DATA = [D("taobao", "taobao", {"protocol": "deminet"}), D("amazon-books"), D("retailrocket")]
HERE = [ML100K, SYNTHETIC, TAOBAO_SAMPLE]

DEMINET = V("DemiNet", "deminet")
GROUP1 = [V("DIN", "din", vs="DemiNet"), V("DIEN (no aux loss, as the paper)", "dien", {"model.aux_loss": False},
                                          vs="DemiNet"),
          V("DIEN", "dien", vs="DemiNet"), V("MIND", "mind", vs="DemiNet"), V("ComiRec-DR", "comirec-dr", vs="DemiNet"),
          V("ComiRec-SA", "comirec-sa", vs="DemiNet"), V("DMIN", "dmin", vs="DemiNet")]
GROUP2 = [V("Hard-Routing", "deminet", {"model.aggregation": "hard"}, vs="DemiNet"),
          V("Multi-Avg", "deminet", {"model.aggregation": "avg"}, vs="DemiNet"),
          V("MoE", "deminet", {"model.aggregation": "moe"}, vs="DemiNet")]
ABLATIONS = [V("w/o DHA", "deminet", {"model.operator": "none"}, vs="DemiNet"),
             V("w/o SSL", "deminet", {"model.ssl_weight": 0.0}, vs="DemiNet"),
             V("w/o IE", "deminet", {"model.aggregation": "single"}, vs="DemiNet")]
BAR = Plot("bar", title="test AUC (± std over seeds)")
NOTE = ("Benchmark protocol settings of each data set (ml100k-ctr: embedding 16, batch 1024, Adam 1e-3, patience 2; "
        "the paper: batch 256, Adam 1e-3, embedding 16). DemiNet: K = 4, ε = 3, t = 0.7, ρ = 0.6, β = 0.1, two "
        "GNN layers (docs/deminet.md lists every choice).")

ITEMS = [
    Table("table2", "Table 2: DemiNet against Group 1 (multi-interest) and Group 2 (ensembles)",
          GROUP1 + GROUP2 + [DEMINET], HERE, row_header="method", plots=(BAR,), caption=NOTE),
    Table("table3", "Table 3: ablations", ABLATIONS + [DEMINET], HERE, row_header="method", plots=(BAR,), caption=NOTE),
    Table("fig3-k", "Fig. 3a: number of interests K", [V(f"K={k}", "deminet", {"model.interests": k}, keys={"K": k})
                                                       for k in (2, 4, 6, 8, 12, 16)], [ML100K],
          row_header="variant", plots=(Plot("line", x="K", series=None, title="test AUC by K"),), caption=NOTE),
    Table("fig3-operator", "Fig. 3b: graph operators", [V(label, "deminet", {"model.operator": op})
                                                        for label, op in (("GCMC", "gcmc"), ("LGC", "lightgcn"),
                                                                          ("GAT", "gat"), ("DHA", "dha"))],
          [ML100K], row_header="operator", plots=(BAR,), caption=NOTE),
    Table("ssl-beta", "SSL weight β (not given in the paper): sensitivity", [
        V(f"β={b:g}", "deminet", {"model.ssl_weight": b}, vs="β=0.1" if b != 0.1 else None) for b in (0.0, 0.1, 10.0,
                                                                                           1e3, 1e5)],
          [ML100K], row_header="variant", plots=(BAR,),
          caption=NOTE + " The paper does not give β; at the protocol's embedding scale the divergence of Eq. 18 is "
                         "about 1e-7 (docs/deminet.md), so this sweep shows how large β must be for the SSL term to "
                         "act. A sensitivity study on test AUC, not a selection."),
    Table("t-search", "Parameter settings: the similarity threshold t of r_sim, searched in {0.6, 0.7, 0.8}",
          [V(f"t={t:g}", "deminet", {"model.sim_threshold": t}, keys={"t": t}) for t in (0.6, 0.7, 0.8)], HERE,
          row_header="variant", plots=(Plot("line", x="t", series=None, title="test AUC by t"),),
          caption=NOTE + " The paper searches t in {0.6, 0.7, 0.8} and does not say on what split; select on the "
                         "validation AUC column (t = 0.7 is our default before any search)."),
    InterestCase("fig4", "Fig. 4: one user's interest vectors over candidate items (t-SNE, by route)", DEMINET,
                 ML100K, what="tsne",
                 caption="The paper uses two Amazon-Books users; here the ml100k-ctr test row with the longest history, "
                         "its context fixed and the candidate item varied over the 200 most frequent train targets."),
    InterestCase("fig5", "Fig. 5: expert confidences of one user's candidates by category", DEMINET, ML100K,
                 what="confidence",
                 caption="Mean Confi-Net weight ω of each interest expert over the candidates of each first genre "
                         "(the paper shows five Amazon-Books items)."),
    Table("table2-paper-data", "Table 2 on the paper's data sets (downloads needed)", GROUP1 + GROUP2 + [DEMINET],
          PAPER_DATA, row_header="method", caption=NOTE),
    Table("table3-paper-data", "Table 3 on the paper's data sets (downloads needed)", ABLATIONS + [DEMINET],
          PAPER_DATA, row_header="method", caption=NOTE),
]

STUDY = Study("deminet", "DemiNet (Wang et al., AAAI 2022)", "docs/deminet.md", ITEMS)
