"""``ctrgraph export``: turn a trained ``dg-<model>`` run into a plain ``<model>`` run (paper §4.4:
"the enhanced embedding can be used directly for online inference, the time complexity of DG-ENN
is the same as base model").

The enhanced tables of Eq. 22 are computed once (no edges dropped: the serving graph is the whole
train graph) and written as the plain provider's lookup tables of the base model; every other
weight is copied. The exported directory is an ordinary run directory (``config.yaml``, ``data/``,
``best.pt``) that ``ctrgraph evaluate`` / ``predict`` load without the data set or any graph.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ..data.schema import FeatureSpec
from ..embeddings.served import ServedTables
from ..errors import ConfigError
from ..registry import parse_model_name
from ..train.run_files import RunFiles
from .assemble import dataset_for, load_run, model_for


def plain_model(cfg, model, schema, vocab_sizes: dict[str, int]):
    """(config, model) of the plain base model whose lookup tables are ``model``'s served tables (its
    embedding must be prepared) and whose other weights are ``model``'s."""
    _, base = parse_model_name(cfg.model.name)
    tables = model.embedding.export_tables()
    plain_cfg = cfg.model_copy(deep=True)
    plain_cfg.model = type(cfg.model)(name=base, **cfg.model.params)
    plain_cfg.embedding.provider = "plain"
    plain_cfg.embedding.params = {}
    plain = model_for(plain_cfg, FeatureSpec(schema, vocab_sizes))
    src, dst = model.state_dict(), plain.state_dict()
    for k in dst:
        if k.startswith("embedding.tables."):
            dst[k] = tables[k.split(".")[2]]
        elif k in src:
            dst[k] = src[k]
        else:
            raise ConfigError(f"export: {k} of the base model {base!r} has no counterpart in {cfg.model.name!r}")
    plain.load_state_dict(dst)
    plain.eval()
    return plain_cfg, plain


def export_run(run: str | Path, out: str | Path, which: str = "best", data_dir: str | None = None) -> dict:
    """Write the plain base-model run of a graph-enhanced run into ``out``; returns a summary."""
    run, out = Path(run), Path(out)
    cfg, model, schema, vocabs = load_run(run, which)
    _, base = parse_model_name(cfg.model.name)
    emb = model.embedding
    if not isinstance(emb, ServedTables):
        raise ConfigError(f"{run}: model {cfg.model.name!r} has no graph-enhanced tables to export "
                          f"(export applies to graph-enhanced runs: dg-, gcn-, kgat-, hgat-<model>)")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"export: {out} exists and is not empty")
    if data_dir:
        cfg.data.data_dir = data_dir
    data = dataset_for(cfg)  # the graphs are rebuilt from the train split the run was trained on
    if {t: len(v) for t, v in data.vocabs.items()} != {t: len(v) for t, v in vocabs.items()}:
        raise ConfigError(f"export: the data set's vocabularies differ from those of {run}")
    emb.prepare(data)
    with torch.no_grad():
        enhanced = sorted(emb.enhanced_tables())
    plain_cfg, plain = plain_model(cfg, model, schema, {t: len(v) for t, v in vocabs.items()})
    files = RunFiles(out)
    files.write_text("config.yaml", yaml.safe_dump(plain_cfg.model_dump(), sort_keys=False))
    files.copy_from(RunFiles(run), "data", *(["calibration.json"] if (run / "calibration.json").exists() else []))
    files.write_torch("best.pt", {"model": plain.state_dict()})
    info = {"source_run": str(run), "source_model": cfg.model.name, "checkpoint": which, "model": base,
            "enhanced_tables": enhanced,
            "provider_params": cfg.embedding.params}
    files.write_json("export.json", info)
    return info
