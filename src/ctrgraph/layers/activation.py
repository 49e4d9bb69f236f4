"""Activations by name, including DIN's Dice (Zhou et al., KDD 2018, Eq. 9)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class _DiceTrain(torch.autograd.Function):
    """Dice in training mode, ``x * (alpha + (1 - alpha) * sigmoid(BN(x)))``, with a hand-written backward.

    The batch normalisation is the native kernel (same output and running-statistics update as
    ``nn.BatchNorm1d``), and so is its backward, which takes ``1 - alpha`` as its affine weight.
    ``p + alpha (1 - p)`` is written ``alpha + (1 - alpha) p`` (one ``addcmul``); the backward needs
    about half the passes over the [N, H] input autograd takes through the elementwise graph. Equal
    to the module-by-module form up to rounding (tested in float64)."""

    @staticmethod
    def forward(ctx, x, alpha, running_mean, running_var, momentum: float, eps: float):
        bn, mean, invstd = torch.ops.aten.native_batch_norm(x, None, None, running_mean, running_var,
                                                             True, momentum, eps)
        p = bn.sigmoid_()
        b = 1 - alpha
        f = torch.addcmul(alpha, p, b)
        ctx.save_for_backward(x, p, f, b, mean, invstd, running_mean, running_var)
        ctx.eps = eps
        return x * f

    @staticmethod
    def backward(ctx, gy):
        x, p, f, b, mean, invstd, running_mean, running_var = ctx.saved_tensors
        u = gy * x
        su = u.sum(0) if ctx.needs_input_grad[1] else None
        up = u.mul_(p)
        galpha = su - up.sum(0) if ctx.needs_input_grad[1] else None
        gx = None
        if ctx.needs_input_grad[0]:
            gbn = up.addcmul_(up, p, value=-1)  # u p (1 - p): through the sigmoid
            gx = torch.ops.aten.native_batch_norm_backward(gbn, x, b, running_mean, running_var, mean, invstd,
                                                           True, ctx.eps, [True, False, False])[0]
            gx.addcmul_(gy, f)
        return gx, galpha, None, None, None, None


class Dice(nn.Module):
    """Dice: ``p * x + alpha * (1 - p) * x`` with ``p = sigmoid(BN(x))`` (DIN Eq. 9).

    BatchNorm without affine parameters, statistics over all leading dimensions (inputs may be
    [B, H] or [N, H]); ``alpha`` is learned per unit and starts at 0.
    """

    def __init__(self, dim: int, eps: float = 1e-9, momentum: float = 0.01):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=eps, momentum=momentum)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.bn.num_features)  # a static channel count (ONNX export)
        if (self.training and torch.is_grad_enabled() and not torch.jit.is_scripting() and not torch.jit.is_tracing()
                and self.bn.track_running_stats and self.bn.momentum is not None and x2.shape[0] > 1):
            self.bn.num_batches_tracked.add_(1)  # as nn.BatchNorm1d's forward
            y = _DiceTrain.apply(x2, self.alpha, self.bn.running_mean, self.bn.running_var, self.bn.momentum,
                                 self.bn.eps)
            return y.reshape(shape)
        if torch.jit.is_tracing() and not self.training:  # export: the running-statistics affine map
            bn = (x2 - self.bn.running_mean) * torch.rsqrt(self.bn.running_var + self.bn.eps)
        else:  # (ONNX's BatchNormalization needs a channel count the tracer loses after the masking)
            bn = self.bn(x2)
        p = torch.sigmoid(bn)
        return (x2 * (p + self.alpha * (1 - p))).reshape(shape)


def activation(name: str, dim: int) -> nn.Module:
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name == "dice":
        return Dice(dim)
    if name == "prelu":
        return nn.PReLU(dim)
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "tanh":
        return nn.Tanh()
    if name in ("leaky_relu", "leakyrelu"):
        return nn.LeakyReLU()
    if name in ("none", "linear", "identity"):
        return nn.Identity()
    raise ConfigError(f"unknown activation {name!r}; known: relu, dice, prelu, sigmoid, tanh, leaky_relu, none")
