"""Run directories: the contract other tools read.

``DIR/config.yaml`` (resolved config), ``env.json`` (versions, device), ``data/`` (schema and
vocabularies, so ``predict`` works on raw files without the data set cache), ``metrics.jsonl``
(one line per epoch), ``best.pt`` / ``last.pt`` (atomic), and, only once the run has finished,
``metrics.json`` with ``test``/``valid`` metrics, ``best_epoch``, ``seconds_per_epoch`` and
``train_samples_per_s``. A directory without ``metrics.json`` is an unfinished run.

Every file is written through :class:`~ctrgraph.train.run_files.RunFiles` (``checksums.json`` holds
its size and SHA-256) and checked against it when read back; checkpoints load weights-only. One
process at a time trains into a directory (``.lock``); a resumed run is trained on its own
``config.yaml`` (:func:`resume_config`).
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
from pydantic import ValidationError

from .._version import __version__
from ..config import RunConfig
from ..data.dataset import EncodedDataset
from ..data.hashing import HashedVocab, load_vocabs
from ..data.schema import FeatureSpec, Schema
from ..data.vocab import Vocab
from ..errors import ConfigError, DataError, RunFileError
from ..registry import build_model, load_dataset, parse_model_name, resolve_model_name
from ..train import distributed
from ..train.calibration import Calibrator
from ..train.checkpoint import load_torch
from ..train.run_files import RunFiles, RunLock
from ..train.trainer import Trainer, seed_everything


def dataset_for(cfg: RunConfig) -> EncodedDataset:
    """The run's encoded data set (its train split subsampled when ``data.train_fraction`` < 1)."""
    d = cfg.data
    data = load_dataset(d.name, d.params, d.data_dir, cache=d.cache, min_count=d.min_count,
                        hash_buckets=d.hash_buckets)
    return data.subsample_train(d.train_fraction, d.fraction_seed)


def model_for(cfg: RunConfig, spec: FeatureSpec):
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    e = cfg.embedding
    return build_model(cfg.model.name, spec, cfg.model.params, dim=e.dim, init_std=e.init_std,
                       provider=e.provider, provider_params=e.params, sparse=e.sparse)


def environment() -> dict:
    return {"ctrgraph": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu_count": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def save_data_artifacts(data: EncodedDataset, out: Path) -> None:
    files = RunFiles(out)
    files.write_text("data/schema.json", data.schema.to_json())  # meta.hashed: the hashed tables
    for k, v in data.vocabs.items():
        if not isinstance(v, HashedVocab):
            files.write_npy(f"data/vocab_{k}.npy", v.values)
    files.write_text("data/summary.json", json.dumps(data.summary(), indent=1, default=str))


def load_data_artifacts(run: Path) -> tuple[Schema, dict[str, Vocab]]:
    """The schema and vocabularies a run was trained with (each file checked against its manifest)."""
    files = RunFiles(run)
    path = files.verify("data/schema.json")
    try:
        schema = Schema.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as e:
        raise RunFileError(f"{path}: not a ctrgraph schema ({type(e).__name__}: {str(e)[:200]})") from None

    def load(t: str) -> Vocab:
        path = files.verify(f"data/vocab_{t}.npy")
        try:
            return Vocab.load(t, path)
        except (ValueError, OSError) as e:
            raise RunFileError(f"{path}: not a vocabulary array ({str(e)[:200]})") from None

    try:
        return schema, load_vocabs(schema, load)
    except (DataError, ConfigError, KeyError, TypeError, ValueError) as e:
        raise RunFileError(f"{files.root / 'data' / 'schema.json'}: bad hashed-table record (meta.hashed: "
                           f"{str(e)[:200]})") from None


def read_run_config(run: str | Path) -> RunConfig:
    """``run/config.yaml`` (checked against the manifest; safe YAML only)."""
    run = Path(run)
    if not (run / "config.yaml").exists():
        raise ConfigError(f"{run} is not a run directory (no config.yaml)")
    path = RunFiles(run).verify("config.yaml")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RunFileError(f"{path}: not a plain YAML config ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(doc, dict):
        raise RunFileError(f"{path}: expected a mapping at the top level")
    try:
        return RunConfig(**doc)
    except ValidationError as e:
        raise RunFileError(f"{path}: invalid run config: {e.errors()[0].get('msg')} at "
                           f"{'.'.join(map(str, e.errors()[0].get('loc', ())))}") from None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def resume_config(run: str | Path, config_path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The configuration a resumed run trains on: ``run/config.yaml``, with ``overrides`` (and
    ``config_path``) applied on top only where they do not change what the run computes (threads,
    device, progress, data folder: :data:`~ctrgraph.runs.identity.ENVIRONMENT`); anything else that
    differs from the run's own value is a :class:`ConfigError` listing each key."""
    from ..config import load_config
    from .identity import run_identity

    own = read_run_config(run)
    asked = load_config(config_path, overrides, base=own.model_dump())
    a, b = _flat(run_identity(own)), _flat(run_identity(asked))
    a["train.seed"], b["train.seed"] = own.train.seed, asked.train.seed
    diff = sorted(k for k in set(a) | set(b) if a.get(k, "<default>") != b.get(k, "<default>"))
    if diff:
        lines = "; ".join(f"{k}: the run has {a.get(k, '<default>')!r}, the command asks {b.get(k, '<default>')!r}"
                          for k in diff)
        raise ConfigError(f"--resume {run}: the command conflicts with the run's own config.yaml ({lines}); "
                          f"drop those options (a resumed run keeps its configuration) or train into another --out")
    return asked


def _agreed(ok: bool, what: str) -> None:
    """Under torchrun: every rank passed ``what``, or every rank stops (none waits for a failed one)."""
    if not distributed.agree(ok) and ok:
        raise ConfigError(f"another process of this torchrun job failed while {what} (see its error above)")


def _load_in_turn(cfg: RunConfig) -> EncodedDataset:
    """The data set, encoded and cached by rank 0 first, then read from the cache by the other ranks."""
    ctx = distributed.current()
    data = None
    if ctx.main:
        try:
            data = dataset_for(cfg)
        except BaseException:
            _agreed(False, "loading the data")
            raise
    _agreed(True, "loading the data")
    if not ctx.main:
        data = dataset_for(cfg)
    return data


def run_experiment(cfg: RunConfig, out: str | Path | None = None, resume: bool = False,
                   data: EncodedDataset | None = None, log=None) -> dict:
    """Load data, build the model, train, write the run directory; returns metrics.json's content.
    ``log``: a callable that receives the data statistics (``data/summary.json`` holds them too).

    Under ``torchrun`` (train/distributed.py) every process runs this; rank 0 alone encodes the data
    first, holds the directory's lock and writes every file; a result with ``interrupted`` (the
    ``train.time_limit_minutes`` stop) leaves no metrics.json, so ``--resume`` continues the run."""
    parse_model_name(cfg.model.name)  # fail fast on an unknown model, before any work
    ctx = distributed.init_from_env(cfg.train.device)
    data = data if data is not None else (_load_in_turn(cfg) if ctx.active else dataset_for(cfg))
    if log is not None and ctx.main:
        log(data.describe())
    data.check_trainable(f"dataset {cfg.data.name!r}")
    spec = FeatureSpec(data.schema, data.vocab_sizes)
    model = model_for(cfg, spec)  # validates the model config before a run directory exists
    out_dir = Path(out) if out else None
    if out_dir is None:
        return _train(cfg, model, data, None, resume)
    if not ctx.main:  # rank 0 checks and prepares the directory; the others read last.pt on resume
        _agreed(True, "preparing the run directory")
        return _train(cfg, model, data, out_dir, resume)
    created = not out_dir.exists()
    agreed = False
    try:
        with RunLock(out_dir):
            if (out_dir / "metrics.json").exists() and not resume:
                raise ConfigError(f"{out_dir} already holds a finished run; choose another --out")
            if resume and not (out_dir / "last.pt").exists():
                raise ConfigError(f"--resume: {out_dir} has no last.pt to resume from")
            if not resume and (out_dir / "last.pt").exists():
                raise ConfigError(f"{out_dir} holds an interrupted run (last.pt): add --resume to continue it, "
                                  f"or choose another --out")
            if resume:
                _check_resumable(out_dir, cfg, data)
                agreed = True
                _agreed(True, "preparing the run directory")
            else:
                for stale in ("metrics.jsonl", "best.pt", "checksums.json"):
                    (out_dir / stale).unlink(missing_ok=True)
                files = RunFiles(out_dir)
                shown = cfg.model_copy(deep=True)  # the provider that actually runs (dg-pnn: dg, not plain)
                shown.embedding.provider = resolve_model_name(cfg.model.name, cfg.embedding.provider)[0]
                files.write_text("config.yaml", yaml.safe_dump(shown.model_dump(), sort_keys=False))
                files.write_json("env.json", environment())
                save_data_artifacts(data, out_dir)
                agreed = True
                _agreed(True, "preparing the run directory")
            return _train(cfg, model, data, out_dir, resume)
    except BaseException:
        if not agreed and ctx.active:
            distributed.agree(False)
        if created and not (out_dir / "last.pt").exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing that looks like a run is left behind
        raise


def _check_resumable(out_dir: Path, cfg: RunConfig, data: EncodedDataset) -> None:
    """A resumed run must train on the data (vocabularies) it was started on."""
    _, vocabs = load_data_artifacts(out_dir)
    have = {t: len(v) for t, v in data.vocabs.items()}
    saved = {t: len(v) for t, v in vocabs.items()}
    if have != saved:
        raise ConfigError(f"--resume {out_dir}: the data set's vocabularies {have} differ from the run's {saved} "
                          f"(data/vocab_*.npy): the raw data changed since the run started")


def _train(cfg: RunConfig, model, data: EncodedDataset, out_dir: Path | None, resume: bool) -> dict:
    t0 = time.time()
    result = Trainer(cfg.train, out_dir).fit(model, data, resume=resume)
    result.update(model=cfg.model.name, dataset=cfg.data.name, seed=cfg.train.seed,
                  parameters=sum(p.numel() for p in model.parameters()), wall_seconds=time.time() - t0)
    if out_dir is not None and distributed.current().main and not result.get("interrupted"):
        RunFiles(out_dir).write_json("metrics.json", result)
    result["_model"] = model
    return result


def load_run(run: str | Path, which: str = "best"):
    """(config, model on CPU, schema, vocabs) of a finished or interrupted run directory."""
    run = Path(run)
    cfg = read_run_config(run)
    schema, vocabs = load_data_artifacts(run)
    spec = FeatureSpec(schema, {k: len(v) for k, v in vocabs.items()})
    model = model_for(cfg, spec)
    ck = run / f"{which}.pt"
    if not ck.exists():
        raise ConfigError(f"{run} has no {which}.pt checkpoint")
    load_state(model, load_torch(RunFiles(run).verify(ck.name)), ck)
    model.eval()
    return cfg, model, schema, vocabs


def load_calibrator(run: str | Path) -> Calibrator | None:
    """The run's post-hoc calibration (``calibration.json``, written when ``train.calibration`` is
    set), or None."""
    run = Path(run)
    if not (run / "calibration.json").exists():
        return None
    path = RunFiles(run).verify("calibration.json")
    try:
        return Calibrator.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise RunFileError(f"{path}: not a calibration ({str(e)[:200]})") from None


def load_state(model, ck, path: Path, strict: bool = True):
    """Load ``ck["model"]`` into ``model``; a checkpoint of another model is an error naming ``path``."""
    if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
        raise RunFileError(f"{path}: not a ctrgraph checkpoint (no 'model' state dict)")
    try:
        return model.load_state_dict(ck["model"], strict=strict)
    except RuntimeError as e:
        raise RunFileError(f"{path}: the checkpoint does not fit the run's model "
                           f"({str(e).splitlines()[0][:300]})") from None


__all__ = ["dataset_for", "load_run", "model_for", "read_run_config", "resume_config", "run_experiment"]
