"""One tool's model in its own process, driven over stdin by ``benchmarks/peer_throughput.py``.

``python worker.py --tool {ours,bound,deepctr,fuxictr} --model NAME --npz FILE --settings JSON``

Commands, one per line on stdin: ``train`` (one training epoch), ``score`` (score the test split
``score_reps`` times), ``stats`` (peak memory), ``quit``. Every reply is one line ``@@ {json}`` on
the original stdout; whatever the libraries print goes to stderr. The first reply says whether the
tool has the model (``{"ready": true, ...}`` or ``{"na": "why"}``).

Tools: ``ours`` is ctrgraph's training path (BatchLoader and the Trainer's epoch body: forward,
BCE-with-logits + auxiliary losses, zero_grad, backward, Adam step, loss read back each batch);
``bound`` is the same network on batches built once before timing (no loader: forward + loss +
backward + Adam only), the model's own compute bound; ``deepctr`` and ``fuxictr`` run in the peers'
virtual environment (``deepctr_side.py``, ``fuxictr_side.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class OursSide:
    """ctrgraph's public path: ``dataset_for`` / ``model_for`` / ``BatchLoader`` (``bound``: no loader)."""

    def __init__(self, model: str, npz: str, settings: dict, bound: bool):
        import numpy as np
        import torch
        from export import load_npz

        from ctrgraph.config import load_config
        from ctrgraph.data.loader import BatchLoader
        from ctrgraph.data.schema import FeatureSpec
        from ctrgraph.runs.assemble import dataset_for, model_for
        from ctrgraph.train.optim import build_optimizer
        from ctrgraph.train.trainer import init_prior_bias, predict_logits

        ov = ["data.name=ml100k", f"data.data_dir={settings['data_dir']}", f"model.name={model}",
              f"embedding.dim={settings['embedding_dim']}", f"train.batch_size={settings['batch_size']}",
              f"train.lr={settings['lr']}"] + list(settings.get("ours_overrides", {}).get(model, []))
        cfg = load_config(None, ov)
        self.data = data = dataset_for(cfg)
        exported, _ = load_npz(npz)  # the peers' arrays must be ours, bit for bit
        for split, cols in exported.items():
            mine = data.split(split)
            bad = [k for k, v in cols.items() if not np.array_equal(np.asarray(mine[k]), v)]
            if bad or set(cols) != set(mine):
                raise SystemExit(f"export differs from the encoded data set in {split}: {bad}")
        torch.manual_seed(settings["seed"])
        self.model = m = model_for(cfg, FeatureSpec(data.schema, data.vocab_sizes))
        hidden = getattr(m.cfg, "hidden", None)
        if hidden is not None and list(hidden) != list(settings["hidden"]):
            raise SystemExit(f"{model}: tower {hidden}, expected {settings['hidden']}")
        m.prepare(data)
        if m.wants_prior_bias():
            init_prior_bias(m, data)  # as the trainer does (train.prior_bias: auto)
        self.opt = build_optimizer(m, cfg.train)  # the trainer's: Adam at train.lr = settings["lr"]
        self.aux_weights = cfg.train.aux_weights
        self.loader = BatchLoader(data.split("train"), data.schema, settings["batch_size"], shuffle=True,
                                  seed=settings["seed"])
        self.batches = list(self.loader) if bound else None
        self.bound = bound
        self.epoch = 0
        self.test = data.split("test")
        self.score_batch = settings["score_batch"]
        self._predict = predict_logits
        self.n_train, self.n_test = data.num_rows("train"), data.num_rows("test")
        self.params = sum(p.numel() for p in m.parameters())

    def train_epoch(self) -> float:
        """One epoch; returns the mean training loss."""
        import torch
        from torch import nn

        self.epoch += 1
        m, opt, label = self.model, self.opt, self.data.schema.label
        m.train()
        if self.bound:
            for batch in self.batches:
                out = m(batch)
                total = nn.functional.binary_cross_entropy_with_logits(out.logits, batch[label])
                for k, v in out.aux.items():
                    total = total + self.aux_weights.get(k, 1.0) * v
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
            return float(total.detach())
        self.loader.set_epoch(self.epoch)
        tot, tot_aux, nb = 0.0, {}, 0
        for batch in self.loader:  # the body of Trainer._fit's epoch loop (amp off on the CPU)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
                out = m(batch)
                loss = nn.functional.binary_cross_entropy_with_logits(out.logits.float(), batch[label])
                total = loss
                for k, v in out.aux.items():
                    total = total + self.aux_weights.get(k, 1.0) * v
                    tot_aux[k] = tot_aux.get(k, 0.0) + float(v.detach())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        return tot / max(nb, 1)

    def score(self):
        """Scores of the test split (``predict_logits``, the library's scoring path)."""
        return self._predict(self.model, self.test, self.data.schema, batch_size=self.score_batch)


def _side(tool: str, model: str, npz: str, settings: dict):
    if tool in ("ours", "bound"):
        return OursSide(model, npz, settings, bound=tool == "bound")
    if tool == "deepctr":
        from deepctr_side import DeepCTRSide

        return DeepCTRSide(model, npz, settings)
    if tool == "fuxictr":
        from fuxictr_side import FuxiCTRSide

        return FuxiCTRSide(model, npz, settings)
    raise SystemExit(f"unknown tool {tool}")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its reaped children (FuxiCTR's loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def peak_rss_mib() -> dict:
    """Peak resident set of this process and of its (finished) children, in MiB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": me, "children": kids}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--settings", required=True)
    a = ap.parse_args()
    settings = json.loads(a.settings)
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # the libraries' prints go to stderr; replies keep the real stdout
    reply = os.fdopen(reply_fd, "w", buffering=1)

    def say(obj: dict) -> None:
        reply.write("@@ " + json.dumps(obj) + "\n")

    import torch

    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    try:
        side = _side(a.tool, a.model, a.npz, settings)
    except NotImplementedError as e:
        say({"na": str(e)})
        return
    say({"ready": True, "n_train": side.n_train, "n_test": side.n_test, "params": side.params,
         "threads": torch.get_num_threads(), "torch": torch.__version__})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "train":
            t0, c0 = time.perf_counter(), cpu_seconds()
            loss = side.train_epoch()
            say({"seconds": time.perf_counter() - t0, "cpu_seconds": cpu_seconds() - c0, "loss": loss})
        elif cmd == "score":
            secs = []
            for _ in range(settings["score_reps"]):
                t0 = time.perf_counter()
                side.score()
                secs.append(time.perf_counter() - t0)
            say({"seconds": secs})
        elif cmd == "stats":
            say({"peak_rss_mib": peak_rss_mib()})
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()
