"""The trainer's optimizer: Adam, or Adam + SparseAdam for sparse-gradient lookup tables.

With ``embedding.sparse: true`` the lookup tables (``nn.Embedding(sparse=True)``) get sparse
gradients that only cover the rows a batch used; :class:`SparseDenseAdam` updates those with
:class:`LazyAdam` (``torch.optim.SparseAdam``'s update, lazy Adam: the moments of a row move only when
the row is used, computed on the touched rows by index instead of through torch's sparse-tensor
coalescing and masking) and every other parameter with ``torch.optim.Adam``, at the same learning rate. It is one
``torch.optim.Optimizer`` (two parameter groups: dense, sparse), so learning-rate schedulers,
``zero_grad``, ``state_dict`` / ``load_state_dict`` (checkpoints, resume) work as for Adam.
SparseAdam has no weight decay, and ``clip_grad_norm_`` cannot take the norm of sparse gradients:
``train.weight_decay`` > 0 and ``train.grad_clip`` are refused with sparse tables
(``train.embedding_l2``, the L2 on the vectors each batch uses, works).

:class:`Adam` is ``torch.optim.Adam`` whose step on float32 CPU parameters is one native call
(``layers/csrc/layers_native.cpp``: ``adam_step``) with the same parameters and state bit for bit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from ..layers.lookup import unique_rows
from ..layers.native import kernel as native_kernel


def sparse_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the model's sparse-gradient lookup tables (each once)."""
    out, seen = [], set()
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.sparse and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append(m.weight)
    return out


class Adam(torch.optim.Adam):
    """``torch.optim.Adam`` with a native step for float32 CPU parameters (``layers_native.cpp``'s
    ``adam_step``: the single-tensor step's operations fused, two passes per tensor around torch's own
    square root, the same bits and the same state), taken where the group's options are Adam's
    defaults (no amsgrad, maximize, weight decay, foreach, fused, capturable or differentiable) and
    the native kernel is built; every other case is torch's own step."""

    def _native_groups(self) -> list[tuple[list, list, list, list, list, dict]] | None:
        """Per group (params, grads, exp_avgs, exp_avg_sqs, steps, group) for the native step, state
        initialised as torch's step does; None where any group needs torch's step."""
        if native_kernel() is None:
            return None
        plain = {"amsgrad": False, "maximize": False, "foreach": None, "fused": None, "capturable": False,
                 "differentiable": False, "weight_decay": 0.0}
        out = []
        for group in self.param_groups:
            if any(group.get(k, v) not in (v, False) for k, v in plain.items()) \
                    or not all(isinstance(group[k], float) for k in ("lr", "eps")) \
                    or not all(isinstance(b, float) for b in group["betas"]):
                return None
            live = [p for p in group["params"] if p.grad is not None]
            if not all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                       and not p.grad.is_sparse and p.grad.dtype == torch.float32 and p.grad.is_contiguous()
                       for p in live):
                return None
            lists: tuple[list, list, list, list, list] = ([], [], [], [], [])
            self._init_group(group, *lists[:4], [], lists[4])
            out.append((*lists, group))
        return out

    @torch.no_grad()
    def step(self, closure=None):
        groups = self._native_groups()
        if groups is None:
            plain = torch.optim.Adam.step
            if getattr(plain, "hooked", False):  # the hooks of this step already ran around ours
                plain = plain.__wrapped__
            return plain(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for params, grads, avgs, sqs, steps, group in groups:
            if params:
                native_kernel().adam_step(params, grads, avgs, sqs, steps, group["lr"], *group["betas"],
                                          group["eps"])
        return loss


class LazyAdam(torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` (same options, same state: ``step``, ``exp_avg``, ``exp_avg_sq``; its
    checkpoints load either way) whose step works on the rows a sparse gradient touches by index:
    the gradient's row ids are made unique with one sort (``torch.unique``) and duplicate rows summed
    with ``index_add_``; the touched rows of the two moments and of the parameter are gathered
    (``index_select``), updated with SparseAdam's own operations in its order, and written back
    (``index_copy_`` / ``index_add_``). torch's step instead coalesces the gradient and applies three
    sparse tensors through ``sparse_mask`` / ``add_``, whose per-call cost made a DeepFM step slower
    than dense Adam's over a 500k-row table. Equal to SparseAdam up to the summation order of a row's
    duplicate gradients (tests/train/test_sparse.py). Row-sparse (COO, one sparse dimension)
    gradients only; others, and ``maximize``, take SparseAdam's own step."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if not grad.is_sparse:
                    raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")
                if group.get("maximize", False) or grad.sparse_dim() != 1 or p.dim() != grad.dim():
                    self._torch_step(group, p)
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                idx, val = grad._indices()[0], grad._values()
                if val.numel() == 0:
                    continue
                # the row-sparse lookups' gradients are sorted and distinct (autograd drops the coalesced
                # flag when it stores them); several lookups of one table: their rows summed here
                if not grad.is_coalesced() and not bool((idx[1:] > idx[:-1]).all()):
                    idx, inv = unique_rows(idx, p.shape[0])
                    val = val.new_zeros((idx.numel(), *val.shape[1:])).index_add_(0, inv, val)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                old_m = exp_avg.index_select(0, idx)
                upd_m = val.sub(old_m).mul_(1 - beta1)
                old_v = exp_avg_sq.index_select(0, idx)
                upd_v = val.pow(2).sub_(old_v).mul_(1 - beta2)
                numer = upd_m.add_(old_m)  # the new moments, as SparseAdam computes them
                new_v = upd_v.add_(old_v)
                exp_avg.index_copy_(0, idx, numer)
                exp_avg_sq.index_copy_(0, idx, new_v)
                denom = new_v.sqrt_().add_(eps)
                step = state["step"]
                step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                p.index_add_(0, idx, numer.div_(denom).mul_(-step_size))
        return loss

    def _torch_step(self, group: dict, p: nn.Parameter) -> None:
        """SparseAdam's own step on one parameter (state initialised as it does)."""
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        from torch.optim import _functional as F

        F.sparse_adam([p], [p.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [state["step"]], eps=group["eps"],
                      beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                      maximize=group.get("maximize", False))


class SparseDenseAdam(torch.optim.Optimizer):
    """Adam on ``dense`` parameters and SparseAdam (:class:`LazyAdam`) on ``sparse`` ones, as one optimizer.

    The two inner optimizers share this optimizer's parameter-group dicts and state, so the learning
    rate a scheduler sets and the state a checkpoint holds are those the inner steps use."""

    def __init__(self, dense: list[nn.Parameter], sparse: list[nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        groups = [{"params": list(dense), "kind": "dense", "weight_decay": weight_decay},
                  {"params": list(sparse), "kind": "sparse"}]
        super().__init__([g for g in groups if g["params"]], {"lr": lr, "betas": betas, "eps": eps})
        self._link()

    def _link(self) -> None:
        by = {g["kind"]: g for g in self.param_groups}
        dummy = [torch.zeros(1, requires_grad=True)]  # inner optimizers are built empty, then given our groups
        self._dense = Adam(dummy, lr=by.get("dense", {}).get("lr", self.defaults["lr"]))
        self._sparse = LazyAdam(dummy, lr=by.get("sparse", {}).get("lr", self.defaults["lr"]))
        for opt, kind in ((self._dense, "dense"), (self._sparse, "sparse")):
            template = opt.param_groups[0]
            opt.param_groups = []
            if kind in by:
                for k, v in template.items():  # the inner optimizer's own options (amsgrad, foreach ...)
                    if k != "params":
                        by[kind].setdefault(k, v)
                opt.param_groups.append(by[kind])
            opt.state = self.state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_dense" in self.__dict__:  # load_state_dict replaced the groups and the state: relink
            self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in (self._dense, self._sparse):
            if opt.param_groups:
                opt.step()
        return loss


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over every parameter, or :class:`SparseDenseAdam` when the model has sparse tables."""
    sparse = sparse_parameters(model)
    if not sparse:
        return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.weight_decay > 0:
        raise ConfigError("embedding.sparse: SparseAdam has no weight decay; set train.weight_decay: 0 "
                          "(train.embedding_l2 regularises the rows each batch uses)")
    if cfg.grad_clip:
        raise ConfigError("embedding.sparse: train.grad_clip is not supported with sparse gradients "
                          "(torch's clip_grad_norm_ cannot take their norm); unset train.grad_clip")
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    return SparseDenseAdam(dense, sparse, lr=cfg.lr)
