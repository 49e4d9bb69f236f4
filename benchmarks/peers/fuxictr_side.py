"""FuxiCTR's models on the exported arrays (runs in the peers' virtual environment only).

The PyPI package ``fuxictr`` ships the framework (``FeatureMap``, ``BaseModel`` with its training
loop, ``NpzDataLoader``, ``FeatureEmbedding`` and the interaction layers) but not the model zoo,
which lives only in the project's repository. So each model here is a ``BaseModel`` subclass wired,
as in that zoo, from the package's own layers (``LogisticRegression``, ``FactorizationMachine``,
``MLP_Block``, ``InnerProductInteraction``, ``CrossNet``/``CrossNetV2``,
``CompressedInteractionNet``, ``DIN_Attention``); models whose key layer is not in the package
(AutoInt's self-attention, FiGNN, DIEN's AUGRU, AFM's attention) are reported n/a.

Data: a FuxiCTR feature map (JSON) and one ``.npz`` per split with a column per feature, the format
its preprocessing writes; ``genres`` and (outside DIN) the histories are ``sequence`` features
pooled by ``MaskedAveragePooling``, histories sharing the item/genre tables (``share_embedding``).
Training is the package's ``BaseModel.train_epoch`` over its ``NpzDataLoader`` (per-row dataset and
``default_collate``; ``num_workers`` as set, the loader's default 1), i.e. ``fit`` minus the
validation pass and checkpoint it runs after each epoch; gradient clipping at norm 10 as in
``fit``; loss BCE on sigmoid outputs, Adam. Scoring is ``BaseModel.predict`` on the test loader.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from export import load_npz
from fuxictr.features import FeatureMap
from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader
from fuxictr.pytorch.layers import (
    CompressedInteractionNet,
    CrossNet,
    CrossNetV2,
    DIN_Attention,
    FactorizationMachine,
    FeatureEmbedding,
    InnerProductInteraction,
    LogisticRegression,
    MLP_Block,
)
from fuxictr.pytorch.models import BaseModel
from torch import nn

MODELS = ("lr", "fm", "deepfm", "pnn", "dcnv2", "dcn", "din", "xdeepfm", "nfm", "widedeep")


def feature_map(meta: dict, workdir: Path, pool_histories: bool) -> FeatureMap:
    """A FuxiCTR feature map of the embedded fields, written as its JSON and loaded back."""
    feats = []
    for f in meta["fields"]:
        if not f["embedded"]:
            continue
        spec = {"source": f["role"], "type": "categorical", "vocab_size": f["vocab_size"], "padding_idx": 0}
        if f["table"] != f["name"]:
            spec["share_embedding"] = f["table"]
        if f["kind"] != "categorical":
            spec.update(type="sequence", max_len=f["max_len"])
            if f["kind"] == "multi_valued" or pool_histories:
                spec["feature_encoder"] = "layers.MaskedAveragePooling()"
        feats.append({f["name"]: spec})
    doc = {"dataset_id": "ml100k_ctr", "num_fields": len(feats), "labels": [meta["label"]], "features": feats}
    path = workdir / "feature_map.json"
    path.write_text(json.dumps(doc))
    fmap = FeatureMap("ml100k_ctr", str(workdir))
    fmap.load(str(path), {"embedding_dim": 16})
    return fmap


class Peer(BaseModel):
    """One of :data:`MODELS`, built from the package's layers the way FuxiCTR's zoo builds it."""

    def __init__(self, fmap: FeatureMap, name: str, s: dict, workdir: Path):
        super().__init__(fmap, model_id=name, gpu=-1, verbose=0, model_root=str(workdir), metrics=["AUC"],
                         embedding_regularizer=None, net_regularizer=None)
        d, hidden, n = s["embedding_dim"], list(s["hidden"]), fmap.num_fields
        self.name = name
        flat = fmap.sum_emb_out_dim()

        def mlp(in_dim: int, out: int | None = 1) -> MLP_Block:
            return MLP_Block(input_dim=in_dim, output_dim=out, hidden_units=hidden, hidden_activations="ReLU",
                             output_activation=None, dropout_rates=0, batch_norm=False)

        if name != "lr":
            self.embedding_layer = FeatureEmbedding(fmap, d)
        if name in ("lr", "xdeepfm", "nfm", "widedeep"):
            self.lr_layer = LogisticRegression(fmap, use_bias=True)
        if name in ("fm", "deepfm"):
            self.fm = FactorizationMachine(fmap)
        if name in ("deepfm", "xdeepfm", "widedeep"):
            self.dnn = mlp(flat)
        if name == "pnn":
            self.ip = InnerProductInteraction(n, output="inner_product")
            self.dnn = mlp(n * (n - 1) // 2 + flat)
        if name in ("dcn", "dcnv2"):
            self.cross = (CrossNet if name == "dcn" else CrossNetV2)(flat, 3)
            self.dnn = mlp(flat, None)
            self.fc = nn.Linear(flat + hidden[-1], 1)
        if name == "xdeepfm":
            self.cin = CompressedInteractionNet(n, [100, 100], output_dim=1)
        if name == "nfm":
            self.bi = InnerProductInteraction(n, output="bi_interaction")
            self.dnn = mlp(d)
        if name == "din":  # query [item_id, genres], keys [hist_item_id, hist_genre], as ours
            self.att = DIN_Attention(2 * d, attention_units=[64], hidden_activations="Dice", use_softmax=False)
            self.dnn = mlp(flat)
        self.compile("adam", "binary_crossentropy", s["lr"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs: dict) -> dict:
        X = self.get_inputs(inputs)
        if self.name == "lr":
            return {"y_pred": self.output_activation(self.lr_layer(X))}
        if self.name == "din":
            emb = self.embedding_layer.embedding_layer(X)  # dict: histories unpooled [B, L, d]
            q = torch.cat([emb["item_id"], emb["genres"]], dim=-1)
            keys = torch.cat([emb.pop("hist_item_id"), emb.pop("hist_genre")], dim=-1)
            pooled = self.att(q, keys, X["hist_item_id"].long() != 0)
            x = torch.cat([e for e in emb.values()] + [pooled], dim=-1)
            return {"y_pred": self.output_activation(self.dnn(x))}
        E = self.embedding_layer(X)  # [B, fields, d]
        flat = E.flatten(1)
        if self.name in ("fm", "deepfm"):
            y = self.fm(X, E) + (self.dnn(flat) if self.name == "deepfm" else 0)
        elif self.name == "pnn":
            y = self.dnn(torch.cat([flat, self.ip(E)], dim=-1))
        elif self.name in ("dcn", "dcnv2"):
            y = self.fc(torch.cat([self.cross(flat), self.dnn(flat)], dim=-1))
        elif self.name == "xdeepfm":
            y = self.lr_layer(X) + self.cin(E) + self.dnn(flat)
        elif self.name == "nfm":
            y = self.lr_layer(X) + self.dnn(self.bi(E))
        else:  # widedeep
            y = self.lr_layer(X) + self.dnn(flat)
        return {"y_pred": self.output_activation(y)}


class FuxiCTRSide:
    def __init__(self, model: str, npz: str, s: dict):
        if model not in MODELS:
            raise NotImplementedError(f"{model}: not buildable from the fuxictr package's layers (model zoo only)")
        logging.disable(logging.INFO)
        arrays, meta = load_npz(npz)
        self.tmp = tempfile.TemporaryDirectory(prefix="fuxictr-")
        work = Path(self.tmp.name)
        fmap = feature_map(meta, work, pool_histories=model != "din")
        cols = [f["name"] for f in meta["fields"] if f["embedded"]] + [meta["label"]]
        for split in ("train", "test"):
            np.savez(work / f"{split}.npz", **{c: arrays[split][c] for c in cols})
        torch.manual_seed(s["seed"])
        np.random.seed(s["seed"])
        self.model = m = Peer(fmap, model, s, work)
        workers = int(s.get("fuxictr_workers", 1))
        self.train_gen = NpzDataLoader(fmap, str(work / "train.npz"), batch_size=s["batch_size"], shuffle=True,
                                       num_workers=workers)
        self.test_gen = NpzDataLoader(fmap, str(work / "test.npz"), batch_size=s["score_batch"], shuffle=False,
                                      num_workers=workers)
        # the state BaseModel.fit sets before its epochs; no validation pass inside the timed epoch
        m._max_gradient_norm, m._total_steps, m._stop_training = 10.0, 0, False
        m._eval_steps = 1 << 62
        self.n_train, self.n_test = self.train_gen.num_samples, self.test_gen.num_samples
        self.params = sum(p.numel() for p in m.parameters())

    def train_epoch(self) -> float:
        """``BaseModel.train_epoch`` as ``fit`` calls it (the loss it sums is not returned)."""
        self.model.train_epoch(self.train_gen)
        return None  # type: ignore[return-value]

    def score(self) -> np.ndarray:
        return self.model.predict(self.test_gen)
