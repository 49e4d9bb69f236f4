"""Models, one file each, registered by lowercase name."""
from .base import MODELS, CTRModel, ModelConfig, ModelOutput, build_model, parse_model_name, register_model

__all__ = ["MODELS", "CTRModel", "ModelConfig", "ModelOutput", "build_model", "parse_model_name", "register_model"]
