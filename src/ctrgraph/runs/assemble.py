"""Run directories: the contract other tools read.

``DIR/config.yaml`` (resolved config), ``env.json`` (versions, device), ``data/`` (schema and
vocabularies, so ``predict`` works on raw files without the data set cache), ``metrics.jsonl``
(one line per epoch), ``best.pt`` / ``last.pt`` (atomic), and, only once the run has finished,
``metrics.json`` with ``test``/``valid`` metrics, ``best_epoch``, ``seconds_per_epoch`` and
``train_samples_per_s``. A directory without ``metrics.json`` is an unfinished run.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .._version import __version__
from ..config import RunConfig
from ..data.dataset import EncodedDataset
from ..data.schema import FeatureSpec, Schema
from ..data.vocab import Vocab
from ..errors import ConfigError
from ..registry import build_model, load_dataset, parse_model_name
from ..train.checkpoint import load_torch, save_json
from ..train.trainer import Trainer, seed_everything


def dataset_for(cfg: RunConfig) -> EncodedDataset:
    """The run's encoded data set (its train split subsampled when ``data.train_fraction`` < 1)."""
    d = cfg.data
    data = load_dataset(d.name, d.params, d.data_dir, cache=d.cache, min_count=d.min_count)
    return data.subsample_train(d.train_fraction, d.fraction_seed)


def model_for(cfg: RunConfig, spec: FeatureSpec):
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    e = cfg.embedding
    return build_model(cfg.model.name, spec, cfg.model.params, dim=e.dim, init_std=e.init_std,
                       provider=e.provider, provider_params=e.params)


def environment() -> dict:
    return {"ctrgraph": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu_count": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def save_data_artifacts(data: EncodedDataset, out: Path) -> None:
    d = out / "data"
    d.mkdir(parents=True, exist_ok=True)
    (d / "schema.json").write_text(data.schema.to_json())
    for k, v in data.vocabs.items():
        v.save(d / f"vocab_{k}.npy")
    (d / "summary.json").write_text(json.dumps(data.summary(), indent=1, default=str))


def load_data_artifacts(run: Path) -> tuple[Schema, dict[str, Vocab]]:
    d = run / "data"
    schema = Schema.from_json((d / "schema.json").read_text())
    return schema, {t: Vocab.load(t, d / f"vocab_{t}.npy") for t in schema.tables}


def run_experiment(cfg: RunConfig, out: str | Path | None = None, resume: bool = False,
                   data: EncodedDataset | None = None) -> dict:
    """Load data, build the model, train, write the run directory; returns metrics.json's content."""
    parse_model_name(cfg.model.name)  # fail fast on an unknown model, before any work
    data = data if data is not None else dataset_for(cfg)
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    model = model_for(cfg, spec)  # validates the model config before a run directory exists
    out_dir = Path(out) if out else None
    created = False
    if out_dir is not None:
        if (out_dir / "metrics.json").exists() and not resume:
            raise ConfigError(f"{out_dir} already holds a finished run; choose another --out")
        if resume and not (out_dir / "last.pt").exists():
            raise ConfigError(f"--resume: {out_dir} has no last.pt to resume from")
        created = not out_dir.exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        save_json(environment(), out_dir / "env.json")
        save_data_artifacts(data, out_dir)
        if not resume and (out_dir / "metrics.jsonl").exists():
            (out_dir / "metrics.jsonl").unlink()
    t0 = time.time()
    try:
        result = Trainer(cfg.train, out_dir).fit(model, data, resume=resume)
    except Exception:
        if created and out_dir is not None and not (out_dir / "last.pt").exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing that looks like a run is left behind
        raise
    result.update(model=cfg.model.name, dataset=cfg.data.name, seed=cfg.train.seed,
                  parameters=sum(p.numel() for p in model.parameters()), wall_seconds=time.time() - t0)
    if out_dir is not None:
        save_json(result, out_dir / "metrics.json")
    result["_model"] = model
    return result


def load_run(run: str | Path, which: str = "best"):
    """(config, model on CPU, schema, vocabs) of a finished or interrupted run directory."""
    run = Path(run)
    if not (run / "config.yaml").exists():
        raise ConfigError(f"{run} is not a run directory (no config.yaml)")
    cfg = RunConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    schema, vocabs = load_data_artifacts(run)
    spec = FeatureSpec(schema, {k: len(v) for k, v in vocabs.items()})
    model = model_for(cfg, spec)
    ck = run / f"{which}.pt"
    if not ck.exists():
        raise ConfigError(f"{run} has no {which}.pt checkpoint")
    model.load_state_dict(load_torch(ck)["model"])
    model.eval()
    return cfg, model, schema, vocabs


__all__ = ["run_experiment", "load_run", "dataset_for", "model_for"]
