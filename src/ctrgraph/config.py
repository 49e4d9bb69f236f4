"""Layered, validated run configuration.

Order of precedence: defaults < model preset (``model.preset``) < experiment YAML file <
command-line ``--set key=value`` overrides. Unknown keys are errors that name the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class DataSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "movielens"
    params: dict = Field(default_factory=dict)
    data_dir: str | None = None
    cache: bool = True
    min_count: int = Field(1, ge=1)
    train_fraction: float = Field(1.0, gt=0, le=1, description="train on a random subset of the train split "
                                  "(nested across fractions; valid, test and vocabularies unchanged)")
    fraction_seed: int = Field(0, description="seed of the train_fraction subset")
    hash_buckets: dict[str, Annotated[int, Field(ge=2)]] = Field(
        default_factory=dict, description="categorical tables encoded by a stable hash into n buckets instead of a "
        "vocabulary: {table or field: n}, '*' for every categorical table (data/hashing.py; docs/large-vocabularies.md)")


class EmbeddingSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(16, ge=1)
    init_std: float = Field(1e-4, gt=0)
    provider: str = "plain"
    params: dict = Field(default_factory=dict)
    sparse: bool = Field(False, description="sparse-gradient lookup tables trained by SparseAdam, the other "
                         "parameters by Adam (plain provider only; train/optim.py; docs/large-vocabularies.md)")


class ModelSection(BaseModel):
    """``name`` plus the model's own parameters (validated by the model's config class)."""
    model_config = ConfigDict(extra="allow")
    name: str = "deepfm"

    @property
    def params(self) -> dict:
        return dict(self.model_extra or {})


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1)
    eval_batch_size: int = Field(8192, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_decay: float | None = Field(None, gt=0, le=1, description="exponential decay factor per epoch")
    weight_decay: float = Field(0.0, ge=0)
    embedding_l2: float = Field(0.0, ge=0, description="L2 on the embedding vectors a batch uses")
    grad_clip: float | None = Field(None, gt=0)
    patience: int = Field(2, ge=0)
    monitor: Literal["auc", "gauc", "logloss"] = "auc"
    log_test: bool = Field(False, description="also log test metrics each epoch as monitor_test_* (learning "
                                              "curves, e.g. Res-embedding Fig. 5); never used to select or stop")
    calibration: Literal["none", "temperature", "platt"] = Field(
        "none", description="post-hoc calibration fitted on the validation split after training "
                            "(train/calibration.py); stored in the run, applied by evaluate / predict / export")
    aux_weights: dict[str, float] = Field(default_factory=dict, description="weight per auxiliary loss (default 1)")
    prior_bias: bool | Literal["auto"] = Field(
        "auto", description="initialise the output bias to the train log-odds (auto: the model's default)")
    seed: int = 1
    device: str = "auto"
    amp: bool = Field(False, description="bf16 autocast on CUDA (ignored on CPU)")
    compile: bool = Field(False, description="torch.compile the training forward/backward (the eager model "
                                              "scores valid / test); the first steps pay the compilation")
    num_threads: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="intra-op threads: auto = the cores other processes leave free when the process "
                            "trains its first run (train/threads.py; PyTorch's default on an idle machine; on a busy "
                            "one the count, and so the last digits of the numbers, depend on the load: pin a number "
                            "for exact repeats); None = PyTorch's default (one per core)")
    progress: bool = True
    deterministic: bool = True
    shuffle_buffer_rows: int = Field(
        1 << 19, ge=1, description="out-of-core data (memory-mapped): rows read into memory and shuffled at a time "
                                   "(block-wise shuffling, data/loader.py); in-memory data is shuffled whole")
    time_limit_minutes: float | None = Field(
        None, gt=0, description="stop after the first epoch that ends past this many minutes, keeping last.pt "
                                "(`ctrgraph train --resume --out DIR` continues; for clusters with wall-time limits)")
    ddp_find_unused_parameters: bool = Field(
        True, description="torchrun/DDP: let DDP find parameters a forward leaves unused (needed by models whose "
                          "branches depend on the batch; false saves a graph walk per step)")


class CompareSection(BaseModel):
    """Defaults of ``ctrgraph compare`` kept in a config file (e.g. a paper's comparison table)."""
    model_config = ConfigDict(extra="forbid")
    models: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    base: str | None = None


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    embedding: EmbeddingSection = Field(default_factory=EmbeddingSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compare: CompareSection = Field(default_factory=CompareSection)

    @model_validator(mode="after")
    def _sparse_compatible(self) -> RunConfig:
        if self.embedding.sparse:
            if self.train.weight_decay > 0:
                raise ValueError("embedding.sparse: SparseAdam has no weight decay; set train.weight_decay: 0 "
                                 "(train.embedding_l2 regularises the rows each batch uses)")
            if self.train.grad_clip:
                raise ValueError("embedding.sparse: train.grad_clip is not supported with sparse gradients "
                                 "(torch's clip_grad_norm_ cannot take their norm); unset train.grad_clip")
        return self


def _errors(e: ValidationError) -> str:
    def one(x: dict) -> str:
        loc, msg = ".".join(map(str, x["loc"])), x["msg"].removeprefix("Value error, ")
        return f"{loc}: {msg}" if loc else msg  # a whole-config check names its keys in its message

    return "; ".join(one(x) for x in e.errors())


def parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. train.lr=0.01)")
    key, val = item.split("=", 1)
    try:
        value = yaml.safe_load(val) if val != "" else ""
    except yaml.YAMLError:
        value = val
    return key.strip().split("."), value


def set_path(d: dict, path: list[str], value) -> None:
    cur = d
    for p in path[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key {'.'.join(path)}: {p!r} is not a section")
        cur = nxt
    cur[path[-1]] = value


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_layers(layers: list) -> RunConfig:
    """A :class:`RunConfig` from layers applied in order, each a mapping of dotted keys to values
    (``{"model.name": "dg-pnn", "embedding.params.graphs": "uv"}``; a value may be a whole section)
    or a list of ``key=value`` strings (``--set`` syntax). Later layers win."""
    import copy

    d: dict = {}
    for layer in layers:
        items = [parse_override(x) for x in layer] if isinstance(layer, (list, tuple)) else \
            [(k.split("."), v) for k, v in dict(layer).items()]
        for keys, value in items:
            if keys[0] not in RunConfig.model_fields:
                raise ConfigError(f"unknown config key {'.'.join(keys)!r}; sections: {list(RunConfig.model_fields)}")
            set_path(d, keys, copy.deepcopy(value))
    try:
        return RunConfig(**d)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_errors(e)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from a base dict, a YAML file and ``key=value`` overrides."""
    d: dict = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p}: invalid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping at the top level")
        d = merge(d, loaded)
    for item in overrides or []:
        keys, value = parse_override(item)
        if keys[0] not in RunConfig.model_fields:
            raise ConfigError(f"unknown config key {'.'.join(keys)!r}; sections: {list(RunConfig.model_fields)}")
        set_path(d, keys, value)
    try:
        return RunConfig(**d)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_errors(e)}") from None
