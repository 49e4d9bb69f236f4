"""The training loop: Adam, early stopping on validation AUC, atomic best/last checkpoints,
resume, per-epoch JSONL log, auxiliary losses weighted by config, CUDA + mixed precision.

The model only returns ``ModelOutput(logits, aux)``; the trainer owns devices, precision, loss
and metrics (the FuxiCTR lesson: model-is-the-trainer blocks DDP and AMP). Under ``torchrun`` the
same loop trains data-parallel with DDP, unchanged model code (train/distributed.py has the rules).
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..data.dataset import EncodedDataset
from ..data.loader import BatchLoader
from ..data.schema import Role, Schema
from ..embeddings.base import EmbeddingProvider
from ..models.base import CTRModel
from . import distributed
from .calibration import Calibrator
from .checkpoint import load_torch
from .metrics import all_metrics
from .run_files import RunFiles
from .threads import process_threads


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when available; under torchrun a bare ``cuda`` is the rank's local GPU."""
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    ctx = distributed.current()
    if dev.type == "cuda" and dev.index is None and ctx.active:
        dev = torch.device("cuda", ctx.local_rank)
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # deterministic mode also fills every new uninitialised tensor with NaN by default (a guard
        # against ops that read memory they never wrote); no op here does, and the fill costs a
        # write of each output before the op writes it (12 % of a DeepFM step's CPU time in one profile)
        torch.utils.deterministic.fill_uninitialized_memory = False


@torch.no_grad()
def predict_logits(model: nn.Module, arrays: dict[str, np.ndarray], schema: Schema, batch_size: int = 8192,
                   device: torch.device | str = "cpu", amp: bool = False) -> np.ndarray:
    """Logits for every row of ``arrays`` (eval mode, input order). Under torchrun each rank scores a
    contiguous shard and every rank gets all logits (:func:`distributed.gather_rows`)."""
    ctx = distributed.current()
    if ctx.active:
        n = int(next(iter(arrays.values())).shape[0])
        a, z = distributed.shard_bounds(n, ctx.rank, ctx.world)
        local = {k: v[a:z] for k, v in arrays.items()}
        return distributed.gather_rows(_predict_local(model, local, schema, batch_size, device, amp), n)
    return _predict_local(model, arrays, schema, batch_size, device, amp)


def _predict_local(model: nn.Module, arrays: dict[str, np.ndarray], schema: Schema, batch_size: int,
                   device: torch.device | str, amp: bool) -> np.ndarray:
    model.eval()
    device = torch.device(device)
    n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
    out, at = None, 0  # written batch by batch into one array (no list of batches, no concatenated copy)
    for batch in BatchLoader(arrays, schema, batch_size, shuffle=False, device=device):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            z = model(batch).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((n, *z.shape[1:]), dtype=np.float32)
        out[at:at + z.shape[0]] = z
        at += z.shape[0]
    return out[:at] if out is not None else np.zeros(0, dtype=np.float32)


def split_metrics(data: EncodedDataset, split: str, logits: np.ndarray) -> dict:
    """AUC, logloss, ECE and (with a user field) gAUC of ``logits`` on a split's labels."""
    arrays = data.split(split)
    user = data.schema.first(Role.USER)
    groups = np.asarray(arrays[user.name]) if user is not None else None
    return all_metrics(np.asarray(arrays[data.schema.label]), logits, groups)


def evaluate_split(model, data: EncodedDataset, split: str, batch_size: int = 8192, device="cpu", amp=False,
                   calibrator: Calibrator | None = None) -> dict:
    logits = predict_logits(model, data.split(split), data.schema, batch_size, device, amp)
    return split_metrics(data, split, calibrator.apply(logits) if calibrator is not None else logits)


def init_prior_bias(model: CTRModel, data: EncodedDataset) -> None:
    """Set the model's output bias to log(p / (1 - p)) of the train labels, so that feature weights
    need not first absorb the base rate (this removes an early dip of validation AUC that otherwise
    triggers early stopping of slow learners such as LR)."""
    bias = model.output_bias()
    if bias is None:
        return
    p = float(np.clip(np.mean(data.split("train")[data.schema.label]), 1e-6, 1 - 1e-6))
    with torch.no_grad():
        bias.fill_(math.log(p / (1 - p)))


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir else None
        self.device = resolve_device(cfg.device)

    def _ddp(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped in DistributedDataParallel (one device per process)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids,
                                       find_unused_parameters=self.cfg.ddp_find_unused_parameters)

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam; Adam + SparseAdam when the model has sparse-gradient tables (``embedding.sparse``)."""
        from .optim import build_optimizer

        return build_optimizer(model, self.cfg)

    def _log(self, history: list[dict]) -> None:
        """``metrics.jsonl``: one line per epoch, rewritten from the checkpointed history (so a resumed
        run never holds an epoch twice)."""
        if self.run_dir is not None and distributed.current().main:
            RunFiles(self.run_dir).write_text("metrics.jsonl", "".join(json.dumps(r, default=float) + "\n"
                                                                       for r in history))

    def _better(self, new: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return not math.isnan(new)
        return new < best if self.cfg.monitor == "logloss" else new > best

    def fit(self, model: CTRModel, data: EncodedDataset, resume: bool = False) -> dict:
        """Train with early stopping, restore the best checkpoint, evaluate on valid and test
        (with ``num_threads`` intra-op threads when set; the previous count is restored after)."""
        threads = torch.get_num_threads()
        want = self.cfg.num_threads
        if want == "auto":  # the cores other processes leave free (train/threads.py)
            want = process_threads(threads) if self.device.type == "cpu" else threads
        self.threads_used = want or threads
        # only when it changes the count: in PyTorch 2.13 on CPU any set_num_threads call (even to the
        # current count) makes scaled_dot_product_attention ~2.3x slower afterwards (docs/graphfm.md, Cost)
        change = bool(want) and want != threads
        if change:
            torch.set_num_threads(want)
        try:
            return self._fit(model, data, resume)
        finally:
            if change:
                torch.set_num_threads(threads)

    def _fit(self, model: CTRModel, data: EncodedDataset, resume: bool) -> dict:
        cfg = self.cfg
        ctx = distributed.current()
        writes = self.run_dir is not None and ctx.main  # rank 0 writes every run file
        if writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        model.prepare(data)
        # auto: the model or its embedding provider may ask for it (dg: docs/dg-enn.md)
        prior = model.wants_prior_bias() if cfg.prior_bias == "auto" else cfg.prior_bias
        if prior and not resume:
            init_prior_bias(model, data)
        model.to(self.device)
        if cfg.embedding_l2 > 0:  # the penalty reads every embedded row: pooled fields' gradients add up there
            for mod in model.modules():
                if isinstance(mod, EmbeddingProvider):
                    mod.keep_rows = True
        opt = self._optimizer(model)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, cfg.lr_decay) if cfg.lr_decay else None
        train = BatchLoader(data.split("train"), data.schema, cfg.batch_size, shuffle=True, seed=cfg.seed,
                            device=self.device, rank=ctx.rank, world=ctx.world, buffer_rows=cfg.shuffle_buffer_rows)
        has_valid = data.num_rows("valid") > 0
        state = {"epoch": 0, "best": None, "best_epoch": 0, "bad": 0, "train_seconds": 0.0, "history": []}
        last = self.run_dir / "last.pt" if self.run_dir else None
        files = RunFiles(self.run_dir) if self.run_dir is not None else None
        if resume and last is not None and last.exists():
            ck = load_torch(files.verify(last))
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            if sched is not None and ck.get("scheduler"):
                sched.load_state_dict(ck["scheduler"])
            state = ck["state"]
            torch.set_rng_state(ck["torch_rng"])
        # DDP: rank 0's parameters and buffers are broadcast here, gradients averaged in backward
        net = self._ddp(model) if ctx.active else model
        if cfg.compile:
            net = torch.compile(net)
        best_state = None
        if state["best_epoch"] and self.run_dir is not None and (self.run_dir / "best.pt").exists():
            best_state = load_torch(files.verify("best.pt"))["model"]
        # progress: a bar on a terminal; off a terminal (a log file, CI) one line per epoch and, during
        # long epochs, a line every CTRGRAPH_PROGRESS_SECONDS (default 30) seconds
        show = cfg.progress and sys.stderr.isatty() and ctx.main
        lines = cfg.progress and not show and ctx.main
        every = float(os.environ.get("CTRGRAPH_PROGRESS_SECONDS", "30"))
        n_batches = len(train)
        amp = cfg.amp and self.device.type == "cuda"
        n_train = data.num_rows("train")
        stopped = cfg.patience > 0 and state["bad"] >= cfg.patience
        started = time.perf_counter()
        self.interrupted = False
        while state["epoch"] < cfg.epochs and not stopped:
            epoch = state["epoch"] + 1
            train.set_epoch(epoch)
            if ctx.active:  # dropout masks differ by rank, reproducibly for any resume
                torch.manual_seed(hash((cfg.seed, epoch, ctx.rank)) % (2**63))
            model.train()
            t0 = last_line = time.perf_counter()
            tot, tot_aux, nb = 0.0, {}, 0
            bar = tqdm(train, desc=f"epoch {epoch}", leave=False, disable=not show, unit="batch")
            for batch in bar:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                    out = net(batch)
                    loss = nn.functional.binary_cross_entropy_with_logits(out.logits.float(), batch[data.schema.label])
                    total = loss
                    for k, v in out.aux.items():
                        w = cfg.aux_weights.get(k, 1.0)
                        total = total + w * v
                        tot_aux[k] = tot_aux.get(k, 0.0) + float(v.detach())
                    if cfg.embedding_l2 > 0:
                        total = total + cfg.embedding_l2 * out.embedding_penalty() / batch[data.schema.label].shape[0]
                    if ctx.active:  # this shard's share of the global batch (data/loader.py)
                        total = total * train.batch_scale
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                tot += float(loss.detach()) * (train.batch_scale / ctx.world if ctx.active else 1.0)
                nb += 1
                if show and nb % 20 == 0:
                    bar.set_postfix(loss=f"{tot / nb:.4f}")
                if lines and time.perf_counter() - last_line >= every:
                    last_line = time.perf_counter()
                    done = nb * cfg.batch_size
                    print(f"epoch {epoch}: batch {nb}/{n_batches}, loss {tot / nb:.4f}, "
                          f"{done / (last_line - t0):,.0f} samples/s", file=sys.stderr, flush=True)
            if ctx.active:  # the global batches' mean losses (each rank held a weighted share)
                keys = sorted(tot_aux)
                sums = distributed.all_sum([tot, *(tot_aux[k] / ctx.world for k in keys)])
                tot, tot_aux = sums[0], dict(zip(keys, sums[1:]))
            secs = time.perf_counter() - t0
            if sched is not None:
                sched.step()
            state["train_seconds"] += secs
            rec = {"epoch": epoch, "train_loss": tot / max(nb, 1), "seconds": secs,
                   "samples_per_s": n_train / secs if secs > 0 else None, "lr": opt.param_groups[0]["lr"]}
            rec.update({f"aux_{k}": v / max(nb, 1) for k, v in tot_aux.items()})
            rec.update(model.diagnostics())
            if cfg.log_test and data.num_rows("test"):  # a logged curve only (Fig. 5): never selects or stops
                tm = evaluate_split(model, data, "test", cfg.eval_batch_size, self.device, amp)
                rec.update({f"monitor_test_{k}": v for k, v in tm.items()})
            if has_valid:
                vm = evaluate_split(model, data, "valid", cfg.eval_batch_size, self.device, amp)
                rec.update({f"valid_{k}": v for k, v in vm.items()})
                score = vm[cfg.monitor]
            else:
                score = -rec["train_loss"] if cfg.monitor != "logloss" else rec["train_loss"]
            if self._better(score, state["best"]) if not ctx.active else distributed.broadcast_flag(
                    self._better(score, state["best"])):  # decided once, by rank 0
                state.update(best=score, best_epoch=epoch, bad=0)
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if writes:
                    files.write_torch("best.pt", {"model": best_state, "epoch": epoch})
            else:
                state["bad"] += 1
            state["epoch"] = epoch
            state["history"].append(rec)
            self._log(state["history"])
            if show or lines:
                msg = (f"epoch {epoch}: loss {rec['train_loss']:.4f}"
                       + (f", valid auc {rec.get('valid_auc', float('nan')):.4f}" if has_valid else "")
                       + f" ({secs:.1f}s)")
                (tqdm.write if show else print)(msg, file=sys.stderr)
            if writes:
                files.write_torch("last.pt", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                              "scheduler": sched.state_dict() if sched else None, "state": state,
                                              "torch_rng": torch.get_rng_state()})
            stopped = cfg.patience > 0 and state["bad"] >= cfg.patience
            limit = cfg.time_limit_minutes
            if limit is not None and not stopped and state["epoch"] < cfg.epochs and distributed.broadcast_flag(
                    time.perf_counter() - started >= 60 * limit):
                self.interrupted = True  # last.pt holds the state: `ctrgraph train --resume` continues
                break
        distributed.barrier()  # rank 0's checkpoints are on disk before any rank goes on
        if self.interrupted:
            return {"interrupted": True, "epochs_run": state["epoch"], "history": state["history"],
                    "best_epoch": state["best_epoch"], "device": str(self.device)}
        if best_state is not None:
            model.load_state_dict(best_state)
        logits = {k: predict_logits(model, data.split(k), data.schema, cfg.eval_batch_size, self.device, amp)
                  for k in ("valid", "test") if data.num_rows(k)}
        result = {
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "seconds_per_epoch": state["train_seconds"] / max(state["epoch"], 1),
            "train_samples_per_s": n_train * state["epoch"] / state["train_seconds"] if state["train_seconds"] else None,
            "valid": split_metrics(data, "valid", logits["valid"]) if "valid" in logits else {},
            "test": split_metrics(data, "test", logits["test"]) if "test" in logits else {},
            "device": str(self.device),
            "processes": ctx.world,
            "threads": getattr(self, "threads_used", torch.get_num_threads()),
            "history": state["history"],
        }
        if cfg.calibration != "none" and "valid" in logits:
            cal = Calibrator.fit(cfg.calibration, logits["valid"], data.split("valid")[data.schema.label])
            result["calibration"] = cal.to_dict()
            for k, z in logits.items():  # metrics of the calibrated scores; the raw ones kept beside
                result[f"{k}_uncalibrated"] = result[k]
                result[k] = split_metrics(data, k, cal.apply(z))
            if writes:
                RunFiles(self.run_dir).write_json("calibration.json", cal.to_dict())
        return result
