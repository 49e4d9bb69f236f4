"""Models, one file each (listed by name in :mod:`ctrgraph.registry`), and their contract."""
from .base import CTRModel, ModelConfig, ModelOutput, TowerConfig, tower

__all__ = ["CTRModel", "ModelConfig", "ModelOutput", "TowerConfig", "tower"]
