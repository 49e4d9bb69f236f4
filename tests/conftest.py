"""Shared fixtures: the team's real data (../shared/data) when present, else skip; tiny planted data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    os.environ["CTRGRAPH_CACHE"] = str(tmp_path_factory.mktemp("ctrgraph-cache"))
    yield


@pytest.fixture(autouse=True, scope="session")
def _native_kernels_built_in_background():
    """Compile the native kernels (an empty extensions cache on a fresh clone: minutes of compiler time)
    in one background process, on the core the test process leaves idle, rather than inside the tests
    that first need them (tests/build_native.py); those tests wait on torch's build lock. Stopped at the
    end of the session if still running (a lock never stays behind)."""
    import signal
    import subprocess
    import sys

    from ctrgraph.graphs.native import enabled

    if not enabled():
        yield
        return
    import torch

    from ctrgraph.train.threads import process_threads

    # train.num_threads "auto" is measured once per process, at its first run: measure it now, before the
    # builder loads the machine, so that this process trains with the thread count it chose without one
    process_threads(torch.get_num_threads())
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("build_native.py"))], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    yield
    if proc.poll() is None:  # its own process group: the builder, ninja and the compiler
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def shared_data(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"shared data {p} not present")
    return p


def planted_raw(n: int = 6000, n_users: int = 200, n_items: int = 300, max_len: int = 12, seed: int = 0):
    """Tiny data with a planted signal: users and items have a latent group; a click is likely when
    the groups match and when the history holds items of the candidate's group."""
    from ctrgraph.data.raw import RawDataset
    from ctrgraph.data.schema import Field, Kind, Role, Schema
    from ctrgraph.data.split import random_split

    rng = np.random.default_rng(seed)
    ugroup = rng.integers(0, 4, n_users)
    igroup = rng.integers(0, 4, n_items)
    user = rng.integers(0, n_users, n)
    item = rng.integers(0, n_items, n)
    lens = rng.integers(0, max_len + 1, n)
    # histories: mostly items of the user's group
    pool = [np.flatnonzero(igroup == g) for g in range(4)]
    hist = np.zeros((n, max_len), dtype=np.int64)
    for g in range(4):  # 4 groups: a loop over groups, not rows
        rows = np.flatnonzero(ugroup[user] == g)
        hist[rows] = rng.choice(pool[g], size=(rows.size, max_len))
    match = (ugroup[user] == igroup[item]).astype(float)
    price = rng.random(n)
    logit = 3.0 * match - 2.0 + 2.0 * (igroup[item] == 0) + 2.0 * (price - 0.5) + rng.normal(0, 0.3, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    cat = igroup[item]
    fields = (
        Field("user_id", Kind.CATEGORICAL, Role.USER),
        Field("item_id", Kind.CATEGORICAL, Role.ITEM),
        Field("cat", Kind.CATEGORICAL, Role.ITEM_ATTR),
        Field("tags", Kind.MULTI_VALUED, Role.ITEM_ATTR, max_len=2),
        Field("price", Kind.NUMERIC, Role.ITEM_ATTR),
        Field("hist_item_id", Kind.SEQUENCE, Role.BEHAVIOR, vocab="item_id", max_len=max_len, target="item_id"),
        Field("hist_cat", Kind.SEQUENCE, Role.BEHAVIOR, vocab="cat", max_len=max_len, target="cat", group="hist_item_id"),
        Field("label", Kind.NUMERIC, Role.LABEL),
    )
    tags = np.stack([cat, (cat + 1) % 4], axis=1)
    cols = {"user_id": user, "item_id": item, "cat": cat, "tags": tags, "price": price,
            "hist_item_id": hist, "hist_cat": igroup[hist], "label": label}
    lengths = {"hist_item_id": lens, "hist_cat": lens, "tags": np.full(n, 2)}
    split = random_split(n, 0.15, 0.15, seed=seed)
    return RawDataset(Schema(fields), cols, lengths, split, meta={"recipe": "planted"}), match


@pytest.fixture(scope="session")
def planted():
    from ctrgraph.data.encode import encode

    raw, match = planted_raw()
    return encode(raw)


def assert_padding_invariant(model, data, padded: tuple[str, ...] = ("hist_item_id", "hist_cat", "tags"),
                             n: int = 300, extra: int = 7) -> None:
    """The same ``n`` train instances give the same logits when the ``padded`` fields carry ``extra``
    more padding columns, and when scored in other batch compositions (batch size 7)."""
    from ctrgraph.train.trainer import predict_logits

    tr = {k: np.asarray(v[:n]) for k, v in data.split("train").items()}
    a = predict_logits(model, tr, data.schema, batch_size=n)
    wide = dict(tr)
    for f in padded:
        wide[f] = np.concatenate([tr[f], np.zeros((n, extra), dtype=tr[f].dtype)], axis=1)
    b = predict_logits(model, wide, data.schema, batch_size=n)
    c = predict_logits(model, tr, data.schema, batch_size=7)
    assert np.isfinite(a).all()
    assert np.allclose(a, b, atol=1e-5) and np.allclose(a, c, atol=1e-5)
