"""Multi-layer perceptron (DG-ENN Eq. 5-6: a^(l) = sigma(W a^(l-1) + b))."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .activation import activation

# activations whose backward reads their result only: applied in place on a fresh tensor that no
# backward reads (a Linear's output: its backward reads its input and weight), the same values
_IN_PLACE = {nn.ReLU: torch.relu_, nn.Sigmoid: torch.sigmoid_, nn.Tanh: torch.tanh_}


def in_place_activation(act: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The in-place form of ``act`` (ReLU / Sigmoid / Tanh: their backward reads their result only),
    for a fresh, non-view input that no backward reads; None for any other module, and while
    tracing or scripting."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return None
    return _IN_PLACE.get(type(act))


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)`` with every ReLU / Sigmoid / Tanh right after a Linear applied in place on the
    Linear's output (:func:`in_place_activation`): the same values, one tensor less each."""
    prev = None
    for layer in layers:
        op = in_place_activation(layer) if type(prev) is nn.Linear else None
        x = op(x) if op is not None else layer(x)
        prev = layer
    return x


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout] per hidden layer, optional linear output."""

    def __init__(self, in_dim: int, hidden: list[int], act: str = "relu", dropout: float = 0.0,
                 batch_norm: bool = False, out_dim: int | None = 1):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(act, h))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_layers(self.net, x)
