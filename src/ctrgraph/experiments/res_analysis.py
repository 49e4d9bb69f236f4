"""Res-embedding's comparisons and analyses (Zhou et al. 2019, Sec. 5), one command each:

- ``table3``: {MLP, PNN, DIN} x {plain, +R, +R(res), AVG, GCN, ATT, +Skip-gram, +node2vec} (Table 3).
  "+R" follows the paper's caption ("original embedding layer with regularization constraints"):
  plain tables with ``train.embedding_l2`` (λ = 0.006 by default, our choice: Res's own λ). "+R(res)"
  is the residual form without the graph part, E = C_b + R with λ‖R‖² (``res`` with ``graph=false``).
- ``table4``: embedding dims 18 vs 36 for DIN plain vs DIN+{AVG, GCN, ATT} (Table 4).
- ``fraction``: train-set fraction 10%-90% (nested random subsets of the encoded train split;
  valid / test fixed), plain vs res AUC (Fig. 6).
- ``tsne``: exact t-SNE of the 1,000 items most frequent as train targets, plain vs res (Fig. 7),
  coloured by the item's first genre (or first item attribute).
- ``lambda``: λ sweep of res-DIN (ATT, as Fig. 8) vs test AUC and ‖R‖/‖W C_b‖ at the best epoch.

Every training run goes through :func:`ctrgraph.experiments.compare.run_compare` into
``OUT/runs/<name>-<hash of the resolved config>``, so an identical run (e.g. plain DIN in table3
and tsne) is trained once and reused across commands. ``fraction`` hands its subsampled data set
to ``run_compare`` (``data=``).
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import RunConfig, load_config
from ..data.dataset import EncodedDataset
from ..errors import ConfigError
from .compare import run_compare, summarize

MODELS = {"MLP": ("dnn", ["model.preset=res_mlp"]), "PNN": ("dnn", ["model.preset=res_pnn"]), "DIN": ("din", [])}
#: Table 3 columns: label -> (provider or None, overrides); "{lam_r}" is filled from --r-l2
VARIANTS = {
    "plain": (None, []),
    "+R": (None, ["train.embedding_l2={lam_r}"]),
    "+R(res)": ("res", ["embedding.params.graph=false"]),
    "AVG": ("res", ["embedding.params.g=avg"]),
    "GCN": ("res", ["embedding.params.g=gcn"]),
    "ATT": ("res", ["embedding.params.g=att"]),
    "+Skip-gram": ("skipgram", []),
    "+node2vec": ("node2vec", []),
}
#: caption of every figure (the team's machine is shared: timings and run order vary with load)
NOTE = "measured on the shared 2-core machine while other jobs ran"
_IGNORED = {("train", "progress"), ("train", "num_threads"), ("train", "device"), ("train", "seed")}


@dataclass
class Setting:
    """Where the base config comes from: an optional YAML file plus ``--set`` overrides."""

    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [1])
    log: object = print

    def cfg(self, model: str, extra: list[str]) -> RunConfig:
        return load_config(self.config, self.overrides + extra + [f"model.name={model}"])


def run_key(cfg: RunConfig) -> str:
    """``<model>-<8 hex>``: a hash of the config entries that differ from the defaults (so a new
    config field with a default keeps old keys), except seed, threads, device and progress."""
    d, ref = cfg.model_dump(), RunConfig().model_dump()
    diff = {f"{sec}.{k}": v for sec, vals in d.items() if isinstance(vals, dict)
            for k, v in vals.items() if (sec, k) not in _IGNORED and v != ref.get(sec, {}).get(k)}
    h = hashlib.sha1(json.dumps(diff, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.model.name}-{h}"


def train_variant(st: Setting, out: Path, model: str, extra: list[str],
                  data: EncodedDataset | None = None, tag: str = "") -> tuple[list[dict], Path]:
    """Train (or reuse) one configuration over ``st.seeds``; returns compare's rows and its folder."""
    cfg = st.cfg(model, extra)
    d = out / "runs" / (tag + run_key(cfg))
    return run_compare(cfg, [model], st.seeds, d, log=st.log, data=data), d


def _name(provider: str | None, base: str) -> str:
    return base if provider is None else f"{provider}-{base}"


def write_table(rows: list[dict], out: Path, stem: str, keys: list[str], base_of=None) -> str:
    """Long CSV (one row per configuration: ``keys`` + mean/std/runs/...) and a markdown table.

    ``base_of(row) -> row`` names each row's reference for RelaImpr (None: no column)."""
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if base_of is not None:
            b = base_of(r)
            r["relaimpr_pct"] = ((r["test_auc_mean"] - 0.5) / (b["test_auc_mean"] - 0.5) - 1) * 100 if b else np.nan
    cols = list(rows[0].keys())
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    head = keys + ["runs", "test AUC", "test logloss"] + (["RelaImpr"] if base_of else []) + ["s/epoch", "run key"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys] + [str(r["runs"]), f"{r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f}",
                                             f"{r['test_logloss_mean']:.4f} ± {r['test_logloss_std']:.4f}"]
        if base_of:
            cells.append(f"{r['relaimpr_pct']:+.2f}%")
        cells += [f"{r['seconds_per_epoch']:.1f}", r["run_key"]]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(md)
    return md


def _summary(rows: list[dict], key: Path, **labels) -> dict:
    s = summarize(rows)[0]
    return {**labels, "runs": s["runs"], "test_auc_mean": s["test_auc_mean"], "test_auc_std": s["test_auc_std"],
            "test_logloss_mean": s["test_logloss_mean"], "test_logloss_std": s["test_logloss_std"],
            "seconds_per_epoch": s["seconds_per_epoch"], "seeds": " ".join(str(r["seed"]) for r in rows),
            "aucs": " ".join(f"{r['test_auc']:.4f}" for r in rows), "run_key": key.name}


def _check(names: list[str], known, what: str) -> list[str]:
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"res-analysis: unknown {what} {bad}; known: {list(known)}")
    return names


# ----- Table 3 / Table 4 ---------------------------------------------------------------------------
def table3(st: Setting, out: Path, models: list[str] | None = None, variants: list[str] | None = None,
           lam_r: float = 0.006) -> list[dict]:
    models = _check(models or list(MODELS), MODELS, "model")
    variants = _check(variants or list(VARIANTS), VARIANTS, "variant")
    rows = []
    for m in models:
        base, mo = MODELS[m]
        for v in variants:
            prov, vo = VARIANTS[v]
            extra = mo + [o.format(lam_r=lam_r) for o in vo]
            rs, d = train_variant(st, out, _name(prov, base), extra)
            rows.append(_summary(rs, d, method=m if v == "plain" else f"{m}{v if v.startswith('+') else '+' + v}",
                                 model=m, variant=v))
    plain = {r["model"]: r for r in rows if r["variant"] == "plain"}
    write_table(rows, out, "table3", ["method"], base_of=lambda r: plain.get(r["model"]))
    return rows


def table4(st: Setting, out: Path, dims: list[int] | None = None, variants: list[str] | None = None) -> list[dict]:
    dims = dims or [18, 36]
    variants = _check(variants or ["plain", "AVG", "GCN", "ATT"], VARIANTS, "variant")
    rows = []
    for v in variants:
        prov, vo = VARIANTS[v]
        for dim in dims:
            rs, d = train_variant(st, out, _name(prov, "din"), [o.format(lam_r=0.006) for o in vo]
                                  + [f"embedding.dim={dim}"])
            rows.append(_summary(rs, d, method="DIN" if v == "plain" else f"DIN+{v}", dim=dim))
    first = {r["method"]: r for r in rows if r["dim"] == dims[0]}
    write_table(rows, out, "table4", ["method", "dim"], base_of=lambda r: first.get("DIN"))
    return rows


# ----- Fig. 6: train-set fraction ------------------------------------------------------------------
def subsample_train(data: EncodedDataset, fraction: float, seed: int = 0) -> EncodedDataset:
    """A copy whose train split is a random ``fraction`` of the original (valid / test unchanged).

    Subsets of one permutation are nested (10% is inside 20%...). Vocabularies are kept as they
    are (built on the full train split), so item ids and table sizes match across fractions.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"train fraction must be in (0, 1], got {fraction}")
    a, b = data.bounds["train"]
    n = b - a
    keep = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))]) + a
    rest = np.arange(b, len(data)) if a == 0 else None
    if rest is None:
        raise ConfigError("subsample_train expects the train split first (rows ordered train / valid / test)")
    idx = np.concatenate([keep, rest])
    arrays = {k: np.ascontiguousarray(v[idx]) for k, v in data.arrays.items()}
    shift = n - keep.size
    bounds = {s: ((0, keep.size) if s == "train" else (lo - shift, hi - shift)) for s, (lo, hi) in data.bounds.items()}
    meta = dict(data.meta, train_fraction=fraction, train_fraction_seed=seed)
    return EncodedDataset(data.schema, arrays, data.vocabs, bounds, meta)


def fraction(st: Setting, out: Path, fractions: list[float] | None = None, g: str = "gcn",
             sample_seed: int = 0) -> list[dict]:
    from ..train.run import dataset_for

    fractions = fractions or [round(0.1 * i, 1) for i in range(1, 10)]
    full = dataset_for(st.cfg("din", []))
    rows = []
    for f in fractions:
        data = subsample_train(full, f, sample_seed)
        for label, model, extra in (("DIN", "din", []), (f"DIN+{g.upper()}", "res-din", [f"embedding.params.g={g}"])):
            rs, d = train_variant(st, out, model, extra, data=data, tag=f"frac{f:g}-s{sample_seed}-")
            rows.append(_summary(rs, d, method=label, fraction=f, train_rows=data.num_rows("train")))
    write_table(rows, out, "fraction", ["method", "fraction", "train_rows"])
    _plot_fraction(rows, out / "fraction.png")
    return rows


def _plot_fraction(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == m]
        ax.errorbar([r["fraction"] * 100 for r in rs], [r["test_auc_mean"] for r in rs],
                    yerr=[r["test_auc_std"] for r in rs], marker="o", capsize=3, label=m)
    ax.set_xlabel("% of the training set")
    ax.set_ylabel("test AUC")
    ax.set_title("Train-set fraction (Res-embedding Fig. 6)", fontsize=9)
    ax.legend()
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, NOTE, fontsize=7, color="0.4")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- Fig. 8: residual scale ---------------------------------------------------------------------
def lam_sweep(st: Setting, out: Path, lams: list[float] | None = None, g: str = "att") -> list[dict]:
    lams = lams if lams is not None else [0.0, 1e-4, 1e-3, 6e-3, 3e-2, 1e-1]
    rows = []
    for lam in lams:
        rs, d = train_variant(st, out, "res-din", [f"embedding.params.g={g}", f"embedding.params.lam={lam}"])
        ratios = []
        for r in rs:
            m = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
            best = next(h for h in m["history"] if h["epoch"] == m["best_epoch"])
            ratios.append(best["res_ratio"])
        s = _summary(rs, d, method=f"DIN+{g.upper()}", lam=lam)
        s["res_ratio_mean"] = float(np.mean(ratios))
        s["res_ratios"] = " ".join(f"{x:.4g}" for x in ratios)
        rows.append(s)
    write_table(rows, out, "lambda", ["method", "lam", "res_ratio_mean"])
    _plot_lambda(rows, out / "lambda.png")
    return rows


def _plot_lambda(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    x = [r["res_ratio_mean"] for r in rows]
    y = [r["test_auc_mean"] for r in rows]
    e = [r["test_auc_std"] for r in rows]
    axes[0].errorbar(x, y, yerr=e, marker="o", capsize=3)
    for r in rows:
        axes[0].annotate(f"λ={r['lam']:g}", (r["res_ratio_mean"], r["test_auc_mean"]), fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("‖R‖ / ‖W C_b‖ at the best epoch")
    axes[0].set_ylabel("test AUC")
    lx = [max(r["lam"], 1e-5) for r in rows]
    axes[1].errorbar(lx, y, yerr=e, marker="o", capsize=3)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("λ (λ = 0 drawn at 1e-5)")
    fig.suptitle("Residual scale vs AUC (Res-embedding Fig. 8)", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, NOTE, fontsize=7, color="0.4")
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----- Fig. 7: t-SNE ----------------------------------------------------------------------------------
def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 30.0, iters: int = 1000, lr: float | None = None,
         exaggeration: float = 12.0, exaggeration_iters: int = 250, seed: int = 0) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton 2008) in torch, O(n^2) memory: for ~1,000 points.

    Gaussian affinities with a per-point bandwidth found by bisection on the entropy (all rows at
    once) to match ``perplexity``; P symmetrised; Student-t Q; gradient descent with momentum
    0.5 -> 0.8, delta-bar-delta gains and early exaggeration; ``lr`` default
    max(n / (4 * exaggeration), 10) (sklearn's "auto" rule with a floor of 10 instead of 50, which
    oscillated on 120 points).
    """
    import torch

    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    n = x.shape[0]
    if n < 3 or perplexity >= n:
        raise ConfigError(f"t-SNE needs more than perplexity ({perplexity}) points, got {n}")
    d2 = torch.cdist(x, x).pow(2)
    d2.fill_diagonal_(float("inf"))
    lo = torch.full((n, 1), 1e-20, dtype=x.dtype)
    hi = torch.full((n, 1), 1e20, dtype=x.dtype)
    beta = torch.ones(n, 1, dtype=x.dtype)
    target = np.log(perplexity)
    dmin = d2.min(1, keepdim=True).values
    for _ in range(100):  # bisection steps, every row at once
        p = torch.exp(-(d2 - dmin) * beta)
        sp_ = p.sum(1, keepdim=True)
        h = torch.log(sp_) + beta * ((d2 - dmin).nan_to_num(posinf=0) * p).sum(1, keepdim=True) / sp_
        big = h > target  # entropy too high -> increase beta
        lo = torch.where(big, beta, lo)
        hi = torch.where(big, hi, beta)
        beta = torch.where(hi < 1e19, (lo + hi) / 2, beta * 2)
    p = torch.exp(-(d2 - dmin) * beta)
    p = p / p.sum(1, keepdim=True)
    p = (p + p.T) / (2 * n)
    p = p.clamp_min(1e-12)
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, dims, generator=g, dtype=x.dtype) * 1e-4
    vel = torch.zeros_like(y)
    gains = torch.ones_like(y)
    lr = lr or max(n / (4.0 * exaggeration), 10.0)
    for it in range(iters):  # gradient steps
        ex = exaggeration if it < exaggeration_iters else 1.0
        num = 1.0 / (1.0 + torch.cdist(y, y).pow(2))
        num.fill_diagonal_(0.0)
        q = (num / num.sum()).clamp_min(1e-12)
        w = (ex * p - q) * num
        grad = 4.0 * (w.sum(1, keepdim=True) * y - w @ y)
        gains = torch.where(torch.sign(grad) != torch.sign(vel), gains + 0.2, gains * 0.8).clamp_min(0.01)
        mom = 0.5 if it < exaggeration_iters else 0.8
        vel = mom * vel - lr * gains * grad
        y = y + vel
        y = y - y.mean(0)
    return y.numpy()


def top_items(data: EncodedDataset, k: int = 1000) -> np.ndarray:
    """The ``k`` item ids most frequent as train targets (ids >= 2: no padding, no OOV)."""
    from ..data.schema import Role

    item = data.schema.first(Role.ITEM)
    cnt = np.bincount(np.asarray(data.split("train")[item.name], dtype=np.int64).ravel(),
                      minlength=data.vocab_sizes[item.table])
    cnt[:2] = 0
    order = np.argsort(-cnt, kind="stable")
    return order[: min(k, int((cnt > 0).sum()))]


def item_colours(data: EncodedDataset, attr: str | None = None) -> tuple[np.ndarray, str]:
    """Per item id its (first) attribute id: ``attr`` table, or the first multi-valued item attribute
    (ml100k: genres), else the first categorical one."""
    from ..data.lookups import attribute_table
    from ..data.schema import Kind, Role

    item = data.schema.first(Role.ITEM)
    if attr is None:
        fs = [f for f in data.schema.by_role(Role.ITEM_ATTR) if f.encoded]
        f = next((f for f in fs if f.kind == Kind.MULTI_VALUED), None) or next(
            (f for f in fs if f.kind == Kind.CATEGORICAL), None)
        if f is None:
            raise ConfigError("tsne: the schema has no item attribute to colour by; pass --color")
        attr = f.table
    return attribute_table(data, item.table, attr), attr


def tsne_figure(st: Setting, out: Path, g: str = "gcn", n_items: int = 1000, attr: str | None = None,
                perplexity: float = 30.0, iters: int = 1000) -> list[dict]:
    from ..train.run import dataset_for, load_run
    from .embedding_analysis import category_cosines, item_embedding_matrix

    data = dataset_for(st.cfg("din", []))
    ids = top_items(data, n_items)
    cols, attr = item_colours(data, attr)
    seed = st.seeds[0]
    panels, rows = [], []
    for label, model, extra in (("DIN (plain)", "din", []), (f"DIN+{g.upper()} (res)", "res-din",
                                                             [f"embedding.params.g={g}"])):
        one = Setting(st.config, st.overrides, [seed], st.log)
        rs, d = train_variant(one, out, model, extra)
        _, m, _, _ = load_run(rs[0]["run_dir"])
        emb = item_embedding_matrix(m)
        y = tsne(emb[ids], perplexity=min(perplexity, (len(ids) - 1) / 3), iters=iters, seed=seed)
        cos = category_cosines(emb, cols, ids=ids)
        panels.append((label, y))
        rows.append({"method": label, "seed": seed, "items": len(ids), "colour": attr, "test_auc": rs[0]["test_auc"],
                     "intra_cos": cos["intra"], "inter_cos": cos["inter"], "margin": cos["margin"],
                     "run_key": d.name})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tsne.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot_tsne(panels, cols[ids], data.vocabs[attr], attr, out / "tsne.png")
    return rows


def _plot_tsne(panels, colour_ids: np.ndarray, vocab, attr: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uniq = np.unique(colour_ids)
    cmap = plt.get_cmap("tab20", max(len(uniq), 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5))
    axes = np.atleast_1d(axes)
    for ax, (label, y) in zip(axes, panels):
        for j, u in enumerate(uniq):  # one scatter per colour (legend entries)
            m = colour_ids == u
            ax.scatter(y[m, 0], y[m, 1], s=6, color=cmap(j), label=_label(vocab, u))
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5), title=attr)
    fig.suptitle(f"t-SNE of the {len(colour_ids)} most frequent items (Res-embedding Fig. 7)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.text(0.01, 0.01, NOTE, fontsize=7, color="0.4")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(vocab, i) -> str:
    try:
        return str(vocab.values[int(i) - 2]) if int(i) >= 2 else ("pad" if int(i) == 0 else "OOV")
    except Exception:  # a vocabulary without readable values: its id
        return str(int(i))


COMMANDS = ("table3", "table4", "fraction", "tsne", "lambda")
