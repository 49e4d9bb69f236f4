"""Multi-layer perceptron (DG-ENN Eq. 5-6: a^(l) = sigma(W a^(l-1) + b))."""
from __future__ import annotations

import torch
from torch import nn

from .activation import activation


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
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return self.net(x)
        prev = None
        for layer in self.net:
            if type(layer) is nn.ReLU and type(prev) is nn.Linear:
                # in place on the linear layer's fresh output (its backward does not read it; ReLU's
                # reads the result): the same values, one [B, h] tensor less per layer
                x = torch.relu_(x)
            else:
                x = layer(x)
            prev = layer
        return x
