"""Run directories never execute code and never load a file the run did not write: a planted pickle
payload is refused by every command that loads a run (with and without a forged manifest); tampered,
truncated, foreign and YAML-tagged files are clear errors naming the file; a resumed run trains on
its own config; one process per run directory; kill -9 at random points then resume gives the
uninterrupted run's numbers."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctrgraph.cli import main
from ctrgraph.config import load_config
from ctrgraph.errors import ConfigError, RunFileError
from ctrgraph.runs.assemble import load_run, run_experiment
from ctrgraph.train.run_files import RunFiles, RunLock

PARAMS = ("data.params={n_instances: 3000, n_users: 200, n_items: 300, n_categories: 5, n_cities: 20, "
          "n_brands: 30, emit_true_prob: false}")
BASE = ["data.name=synthetic", "train.progress=false", "train.num_threads=1", "embedding.dim=8", "train.seed=1",
        "data.cache=false", PARAMS]
ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    for model in ("din", "dg-pnn"):
        run_experiment(load_config(None, BASE + [f"model.name={model}", "train.epochs=2"]), root / model)
    return root


def _copy(trained: Path, tmp_path: Path, name: str = "din") -> Path:
    run = tmp_path / name
    shutil.copytree(trained / name, run)
    return run


def _plant(run: Path, file: str, marker: Path, forge_manifest: bool) -> None:
    ck = torch.load(run / file, weights_only=True)
    ck["hook"] = Payload(marker)
    torch.save(ck, run / file)
    if forge_manifest:  # the attacker also rewrote checksums.json: weights-only loading must still refuse
        RunFiles(run).record(file)


def _commands(run: Path, tmp_path: Path, which: str) -> list[list[str]]:
    rows = tmp_path / "rows.csv"
    return [["evaluate", "--run", str(run), "--checkpoint", which],
            ["predict", "--run", str(run), "--input", str(rows), "--output", str(tmp_path / "p.csv"),
             "--checkpoint", which],
            ["explain", "--run", str(run), "--checkpoint", which, "--out", str(tmp_path / "x")],
            ["export", "--run", str(run), "--out", str(tmp_path / "exp"), "--checkpoint", which]]


@pytest.mark.parametrize("forge", [False, True], ids=["manifest-intact", "manifest-forged"])
def test_planted_payload_never_runs(trained, tmp_path, capsys, forge):
    marker = tmp_path / "PWNED"
    for name in ("din", "dg-pnn"):
        run = _copy(trained, tmp_path, name)
        (tmp_path / "rows.csv").write_text("label\n1\n")
        for which in ("best", "last"):
            _plant(run, f"{which}.pt", marker, forge)
            for cmd in _commands(run, tmp_path, which):
                assert main(cmd) == 2, cmd
                err = capsys.readouterr().err
                assert f"{which}.pt" in err and ("refused" in err or "refusing" in err), (cmd, err)
                assert not marker.exists(), cmd
        # train --resume reads last.pt (and best.pt)
        (run / "metrics.json").unlink()
        RunFiles(run).record()  # the manifest stays as it was apart from that
        assert main(["train", "--resume", "--out", str(run)]) == 2
        err = capsys.readouterr().err
        assert ".pt" in err and not marker.exists(), err
        shutil.rmtree(run)


def test_tampered_truncated_foreign_files(trained, tmp_path):
    run = _copy(trained, tmp_path)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(RunFileError, match=r"best\.pt: .*bytes where the run wrote"):
        load_run(run)
    RunFiles(run).record("best.pt")  # even with a matching manifest: a clear error, not a traceback
    with pytest.raises(RunFileError, match=r"best\.pt: truncated or corrupt"):
        load_run(run)
    shutil.copy(trained / "dg-pnn" / "best.pt", run / "best.pt")  # another run's checkpoint
    with pytest.raises(RunFileError, match=r"best\.pt: .*(bytes where|contents changed)"):
        load_run(run)
    RunFiles(run).record("best.pt")
    with pytest.raises(RunFileError, match=r"best\.pt: the checkpoint does not fit"):
        load_run(run)
    for f in ("best.pt", "checksums.json"):
        shutil.copy(trained / "din" / f, run / f)
    voc = min((run / "data").glob("vocab_*.npy"))
    voc.write_bytes(voc.read_bytes()[:-8] + b"\0" * 8)  # same size, other contents
    with pytest.raises(RunFileError, match=rf"{voc.name}: its contents changed"):
        load_run(run)
    shutil.copy(trained / "din" / voc.relative_to(run), voc)
    (run / "data" / "extra.npy").write_bytes(b"x")
    with pytest.raises(RunFileError, match="not a file this run wrote"):
        RunFiles(run).verify("data/extra.npy")
    assert load_run(run)[1] is not None  # restored: loads again


def test_yaml_python_tag_is_refused(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text("boom: !!python/object/apply:os.system ['touch PWNED']\n" + text)
    assert main(["evaluate", "--run", str(run)]) == 2
    assert "config.yaml" in capsys.readouterr().err
    RunFiles(run).record("config.yaml")
    with pytest.raises(RunFileError, match=r"config\.yaml: not a plain YAML config"):
        load_run(run)
    assert not Path("PWNED").exists()


def test_directory_without_manifest_is_refused_until_adopted(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "checksums.json").unlink()
    with pytest.raises(RunFileError, match="verify --adopt"):
        load_run(run)
    assert main(["verify", str(run)]) == 1
    assert main(["verify", "--adopt", str(run)]) == 0
    assert main(["verify", str(run)]) == 0
    assert load_run(run)[1] is not None
    (run / "metrics.json").write_text("{}")
    assert main(["verify", str(run)]) == 1
    assert "metrics.json: modified" in capsys.readouterr().out


def test_resume_uses_the_runs_own_config(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    done = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    RunFiles(run).record()
    # a conflicting option is refused, naming the key; the directory is left as it was
    before = sorted(p.name for p in run.iterdir())
    assert main(["train", "--resume", "--out", str(run), "--model", "deepfm", "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "train.lr" in err and "conflicts" in err
    assert sorted(p.name for p in run.iterdir()) == before
    # what the README writes: no options at all, and options that do not change the run
    assert main(["train", "--resume", "--out", str(run), "--set", "train.num_threads=1"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert again["model"] == "din" and again["test"] == pytest.approx(done["test"], abs=1e-6)
    assert main(["evaluate", "--run", str(run)]) == 0


def test_one_process_per_run_directory(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = load_config(None, BASE + ["model.name=lr", "train.epochs=1"])
    with RunLock(run), pytest.raises(ConfigError, match="in use by another ctrgraph process"):
        run_experiment(cfg, run)
    run_experiment(cfg, run)
    assert main(["train", "--out", str(run), "--model", "lr", "--dataset", "synthetic", "--set", PARAMS]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    (run / "metrics.json").unlink()
    assert main(["train", "--out", str(run), "--model", "lr", "--dataset", "synthetic", "--set", PARAMS]) == 2
    assert "interrupted run" in capsys.readouterr().err


def _train_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "ctrgraph", "train", "--out", str(out), "--model", "din",
            *[x for s in BASE + ["train.epochs=6", "train.patience=0"] for x in ("--set", s)]]


def _kill_and_resume(run: Path, env: dict, rng: random.Random) -> int:
    """Train into ``run``, killed twice with -9 and resumed until it finishes; returns the resumes."""
    kills = resumes = 0
    while not (run / "metrics.json").exists():
        cmd = _train_cmd(run)
        if (run / "last.pt").exists():
            cmd = [*cmd[:4], "--resume", *cmd[4:6]]  # `train --resume --out DIR`, the run's own config
            resumes += 1
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if kills < 2:  # kill after a random number of logged epochs plus a random part of the next
            epochs = rng.randint(1, 4)  # of 6: at least one epoch and the evaluation remain
            log, first, n = run / "metrics.jsonl", None, 0
            while p.poll() is None and n < epochs:
                n = log.read_text().count("\n") if log.exists() else 0
                first = first or (time.time() if n >= 1 else None)
                time.sleep(0.002)
            per_epoch = (time.time() - first) / (epochs - 1) if first and epochs > 1 else 0.2
            time.sleep(rng.uniform(0.0, per_epoch))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
        _, err = p.communicate(timeout=300)
        assert p.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    return resumes


def test_kill_minus_nine_then_resume_gives_identical_metrics(tmp_path):
    """The uninterrupted reference run and two killed-and-resumed runs, the three at once (independent
    run directories, one thread per process; each trial's kill points drawn from its own seeded stream)."""
    from concurrent.futures import ThreadPoolExecutor

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    ref = tmp_path / "ref"
    seed = os.environ.get("CTRGRAPH_KILL_SEED", "7")
    with ThreadPoolExecutor(2) as pool:
        trials = [pool.submit(_kill_and_resume, tmp_path / f"cut{trial}", env, random.Random(f"{seed}-{trial}"))
                  for trial in range(2)]
        subprocess.run(_train_cmd(ref), env=env, check=True, capture_output=True, timeout=300)
        resumes = sum(t.result() for t in trials)
    want = json.loads((ref / "metrics.json").read_text())
    for trial in range(2):
        run = tmp_path / f"cut{trial}"
        got = json.loads((run / "metrics.json").read_text())
        assert got["best_epoch"] == want["best_epoch"]
        for split in ("valid", "test"):
            assert got[split] == pytest.approx(want[split], abs=1e-7), (trial, split)
        assert [h["train_loss"] for h in got["history"]] == pytest.approx([h["train_loss"] for h in want["history"]])
        assert main(["verify", str(run)]) == 0
    assert resumes >= 1  # at least one kill landed after a checkpoint
