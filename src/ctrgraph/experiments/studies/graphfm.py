"""GraphFM (Wu et al., "GraphFM: Graph Factorization Machines for Feature Interaction Modeling"):
its tables and figures as data (``ctrgraph reproduce graphfm [item ...]``; docs/graphfm.md).

Every model keeps its own defaults (paper presets), embedding 16 and Adam as the paper's §5.1.2;
the rest of the training setting is the data set's benchmark protocol. The paper's Criteo and
Avazu are not here yet; ``ml1m`` is its 7-field MovieLens-1M protocol.
"""
from __future__ import annotations

from ..core import D, Study, V
from ..items import Explain, Plot, Table

ML100K, ML1M = D("ml100k"), D("ml1m")
#: fields of ml100k-ctr (m_1 = n in the neighbourhood-size sweep)
ML100K_FIELDS = 12

TABLE2 = [V(m.upper() if m in ("lr", "fm", "afm", "afn", "nfm", "hofm") else m, m) for m in
          ["lr", "fm", "afm", "afn", "fmfm", "nfm", "hofm", "deepcrossing", "crossnet", "xdeepfm", "dcnv2", "autoint",
           "fignn", "interhat"]] + [V("GraphFM", "graphfm")]

ABLATIONS = {"GraphFM": {}, "GraphFM(-S)": {"selection": False}, "GraphFM(-I)": {"aggregate": "feature"},
             "GraphFM(-M)": {"heads": 1}, "GraphFM(-K1)": {"readout": [1]}, "GraphFM(-K2)": {"readout": [2]},
             "GraphFM(-K3)": {"readout": [3]}}

ITEMS = [
    Table("table2", "Table 2: GraphFM against the baselines (ml100k-ctr)", TABLE2, [ML100K], base="FM",
          row_header="model", plots=(Plot("bar", title="test AUC (± std over seeds)"),)),
    Table("table2-ml1m", "Table 2 on MovieLens-1M (GraphFM's 7-field protocol)", TABLE2, [ML1M], seeds=(1,),
          base="FM", row_header="model",
          caption="The local ML-1M copy lacks timestamps for users 3000+ (the recipe imputes them; docs/graphfm.md)."),
    Table("ablation", "Fig. 2: ablations (-S selection, -I interaction aggregation, -M one head, -K readout of "
          "layer K only)", [V(k, "graphfm", {f"model.{a}": b for a, b in p.items()}, base="GraphFM")
                            for k, p in ABLATIONS.items()], [ML100K], base="GraphFM", show_params=True,
          plots=(Plot("bar", title="test AUC (± std over seeds)"),)),
    Table("sweep", "Fig. 3: neighbourhood sizes m_2 x m_3 (m_1 = n, three layers)",
          [V(f"m=[{ML100K_FIELDS},{a},{b}]", "graphfm", {"model.layers": 3, "model.m": [ML100K_FIELDS, a, b]},
             keys={"m2": a, "m3": b}) for a in (2, 3, 4, 6, 8) for b in (1, 2, 3, 4)], [ML100K],
          plots=(Plot("heatmap", rows="m2", cols="m3", title=f"test AUC, m1 = n = {ML100K_FIELDS}"),)),
    Explain("fig4", "Fig. 4: the interactions GraphFM selects, per layer", V("GraphFM", "graphfm"), ML100K,
            rows=(0, 1), caption="p: edge score after selection; weight: attention on the message (mean over heads)."),
]

STUDY = Study("graphfm", "GraphFM (Wu et al.)", "docs/graphfm.md", ITEMS)
