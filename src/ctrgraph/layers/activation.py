"""Activations by name, including DIN's Dice (Zhou et al., KDD 2018, Eq. 9)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


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
