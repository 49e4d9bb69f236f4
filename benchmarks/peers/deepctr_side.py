"""DeepCTR-Torch's models on the exported arrays (runs in the peers' virtual environment only).

Feature columns: every categorical field a ``SparseFeat``; ``genres``, ``hist_item_id`` and
``hist_genre`` ``VarLenSparseFeat`` with ``combiner="mean"`` (padding masked), the histories
sharing the ``item_id`` / ``genres`` tables through ``embedding_name`` (as ours share them), except
in AutoInt and xDeepFM, which cannot take a shared table (own tables there: same work per sample).
Training is ``model.fit(x, y, batch_size, epochs=1, verbose=0)`` per epoch (DeepCTR-Torch's own
loop: its TensorDataset/DataLoader, summed BCE on sigmoid outputs, Adam); scoring is
``model.predict``. L2 terms are set to 0 (ours use none); ``init_std`` and the rest are its defaults.
"""
from __future__ import annotations

import numpy as np
import torch
from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
from deepctr_torch.models import (
    AFM,
    DCN,
    DIEN,
    DIN,
    NFM,
    PNN,
    WDL,
    AutoInt,
    DeepFM,
    xDeepFM,
)
from export import lengths, load_npz

NO_L2 = {"l2_reg_embedding": 0.0}


def _columns(meta: dict, dim: int, seq_length: str | None = None, share: bool = True) -> list:
    """Feature columns of the embedded fields; ``share=False`` gives the histories their own tables."""
    cols = []
    for f in meta["fields"]:
        if not f["embedded"]:
            continue
        sf = SparseFeat(f["name"], f["vocab_size"], embedding_dim=dim, embedding_name=f["table"] if share else f["name"])
        if f["kind"] == "categorical":
            cols.append(sf)
        else:
            length = seq_length if seq_length and f["name"] == "hist_item_id" else None
            cols.append(VarLenSparseFeat(sf, maxlen=f["max_len"], combiner="mean", length_name=length))
    return cols


def _negatives(split: dict, vocab: int, rng: np.random.Generator) -> np.ndarray:
    """DIEN's non-clicked behaviours: uniform item ids >= 2 at the history's valid positions, drawn once."""
    hist = split["hist_item_id"]
    return (rng.integers(2, vocab, size=hist.shape) * (hist != 0)).astype(hist.dtype)


class DeepCTRSide:
    def __init__(self, model: str, npz: str, s: dict):
        arrays, meta = load_npz(npz)
        dim, hidden = s["embedding_dim"], tuple(s["hidden"])
        seq_models = ("din", "dien")
        # AutoInt and xDeepFM size their layers by the number of embedding tables, not of fields (a shared
        # table would be counted once and the shapes would not match): the histories get tables of their own
        cols = _columns(meta, dim, "hist_len" if model in seq_models else None, share=model not in ("autoint", "xdeepfm"))
        kw = dict(seed=s["seed"], device="cpu", **NO_L2)
        lin = {"l2_reg_linear": 0.0}
        item_vocab = meta["vocab_sizes"]["item_id"]
        if model == "dien":
            neg = SparseFeat("neg_hist_item_id", item_vocab, embedding_dim=dim, embedding_name="item_id")
            cols = cols + [VarLenSparseFeat(neg, maxlen=50, combiner="mean", length_name="hist_len")]
        builders = {
            "lr": lambda: WDL(cols, [], dnn_hidden_units=(), **lin, **kw),
            "fm": lambda: DeepFM(cols, cols, dnn_hidden_units=(), **lin, **kw),
            "deepfm": lambda: DeepFM(cols, cols, dnn_hidden_units=hidden, **lin, **kw),
            "pnn": lambda: PNN(cols, dnn_hidden_units=hidden, use_inner=True, use_outter=False, **kw),
            "dcnv2": lambda: DCN([], cols, cross_num=3, cross_parameterization="matrix", dnn_hidden_units=hidden,
                                 l2_reg_cross=0.0, **kw),
            "dcn": lambda: DCN([], cols, cross_num=3, cross_parameterization="vector", dnn_hidden_units=hidden,
                               l2_reg_cross=0.0, **kw),
            "autoint": lambda: AutoInt([], cols, att_layer_num=3, att_head_num=2, att_res=True, dnn_hidden_units=(),
                                       **kw),
            "din": lambda: DIN(cols, ["item_id"], dnn_hidden_units=hidden, att_hidden_size=(64,),
                               att_activation="Dice", att_weight_normalization=False, **kw),
            "dien": lambda: DIEN(cols, ["item_id"], gru_type="AUGRU", use_negsampling=True,
                                 dnn_hidden_units=hidden, **kw),
            "xdeepfm": lambda: xDeepFM(cols, cols, dnn_hidden_units=hidden, cin_layer_size=(100, 100),
                                       cin_split_half=False, cin_activation="linear", **lin, **kw),
            "nfm": lambda: NFM(cols, cols, dnn_hidden_units=hidden, bi_dropout=0, **lin, **kw),
            "afm": lambda: AFM(cols, cols, use_attention=True, attention_factor=16, l2_reg_att=0.0, **lin, **kw),
            "widedeep": lambda: WDL(cols, cols, dnn_hidden_units=hidden, **lin, **kw),
        }
        if model not in builders:
            raise NotImplementedError(f"DeepCTR-Torch has no {model}")
        torch.manual_seed(s["seed"])
        self.model = m = builders[model]()
        m.compile(torch.optim.Adam(m.parameters(), lr=s["lr"]), "binary_crossentropy")
        rng = np.random.default_rng(s["seed"])
        self.x, self.y = {}, {}
        for split in ("train", "test"):
            a = arrays[split]
            x = {f["name"]: a[f["name"]] for f in meta["fields"] if f["embedded"]}
            if model in seq_models:
                x["hist_len"] = lengths(a["hist_item_id"])
            if model == "dien":
                x["neg_hist_item_id"] = _negatives(a, item_vocab, rng)
            self.x[split], self.y[split] = x, a[meta["label"]].astype(np.float32)
        self.batch, self.score_batch = s["batch_size"], s["score_batch"]
        self.n_train, self.n_test = len(self.y["train"]), len(self.y["test"])
        self.params = sum(p.numel() for p in m.parameters())

    def train_epoch(self) -> float:
        h = self.model.fit(dict(self.x["train"]), self.y["train"], batch_size=self.batch, epochs=1, verbose=0,
                           shuffle=True)
        return float(h.history["loss"][-1])

    def score(self) -> np.ndarray:
        return self.model.predict(dict(self.x["test"]), batch_size=self.score_batch)
