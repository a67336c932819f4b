"""A run killed at any point and resumed from its last checkpoint ends bit-identical to one that was
never interrupted (CPU): weights, optimizer state and metrics."""

import json
import subprocess
import sys

import pytest
import torch

from .conftest import ROOT

CONFIG = str(ROOT / "configs" / "adult.yaml")


def fit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", *args], capture_output=True, text=True, cwd=ROOT)


def final_checkpoint(root) -> dict:
    (path,) = sorted(root.rglob("last.ckpt"))[-1:]  # the newest version folder's
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("signal_name, code", [("SIGKILL", -9), ("SIGTERM", 143)])
def test_a_run_stopped_mid_epoch_and_resumed_ends_bit_identical(tmp_path, adult_sample, signal_name, code):
    """SIGKILL: nothing runs after it. SIGTERM (``kill``, a scheduler): the fit stops at the next batch
    with exit code 143 and one line naming the checkpoint to resume from."""
    data = tmp_path / "adult.parquet"
    adult_sample.to_parquet(data)
    common = [f"--config={CONFIG}", f"--data.path={data}", "--trainer.max_epochs=3", "--data.batch_size=256",
              "--model.net.tabular.dropout=0.2", "--trainer.enable_progress_bar=false"]  # dropout: RNG matters
    whole = fit(*common, f"--trainer.default_root_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]

    killer = json.dumps({"class_path": f"tests.killer.{signal_name.title().replace('sig', 'Sig')}MidEpoch",
                         "init_args": {"epoch": 1, "batch": 3}})
    killed = fit(*common, f"--trainer.default_root_dir={tmp_path / 'killed'}", f"--trainer.callbacks+={killer}")
    assert killed.returncode == code, killed.stderr[-2000:]  # stopped mid-epoch 1, after epoch 0's checkpoint
    (last,) = (tmp_path / "killed").rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0
    if signal_name == "SIGTERM":
        assert "Traceback" not in killed.stderr and "epoch 1: val_" not in killed.stdout + killed.stderr
        words = "mmtab: error: stopped by SIGTERM in epoch 1 (step "
        assert words in killed.stderr and f"resume with --ckpt_path {last}" in killed.stderr, killed.stderr[-2000:]

    resumed = fit(*common, f"--trainer.default_root_dir={tmp_path / 'killed'}", f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = final_checkpoint(tmp_path / "whole"), final_checkpoint(tmp_path / "killed")
    steps = 3 * -(-(len(adult_sample) * 4 // 5) // 256)  # every training row each epoch
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, steps)
    different = [k for k, v in a["state_dict"].items()
                 if isinstance(v, torch.Tensor) and not torch.equal(v, b["state_dict"][k])]
    assert not different, different
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    scores = [next(v["best_model_score"] for k, v in c["callbacks"].items() if "ModelCheckpoint" in k) for c in (a, b)]
    assert torch.equal(*scores)  # the best validation loss: metrics identical too


def test_resuming_with_more_epochs_than_the_cycle_spans_is_refused_before_a_step(tmp_path, adult_sample):
    """One-cycle is shaped by the run's length; a finished run resumed with a larger max_epochs would
    step past its end (PyTorch's 'Tried to step N times' mid-epoch): one message instead, no step."""
    data = tmp_path / "adult.parquet"
    adult_sample.to_parquet(data)
    common = [f"--config={CONFIG}", f"--data.path={data}", "--data.batch_size=256",
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    assert fit(*common, "--trainer.max_epochs=1").returncode == 0
    (last,) = tmp_path.rglob("last.ckpt")
    before = last.stat().st_mtime_ns
    longer = fit(*common, "--trainer.max_epochs=2", f"--ckpt_path={last}")
    assert longer.returncode == 2 and "the checkpoint's one-cycle schedule spans" in longer.stderr
    assert "Traceback" not in longer.stderr and "epoch 1:" not in longer.stdout + longer.stderr
    assert last.stat().st_mtime_ns == before


def test_under_slurm_a_requeued_fit_resumes_from_lightnings_hpc_checkpoint(tmp_path, adult_sample):
    """Lightning's own requeue path (SLURMEnvironment, auto_requeue): at SIGUSR1 it writes
    hpc_ckpt_1.ckpt through mmtab's checkpoint writer and calls scontrol; the requeued job runs the
    same command, which resumes from that checkpoint and finishes the run."""
    data = tmp_path / "adult.parquet"
    adult_sample.to_parquet(data)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "SLURM_NTASKS": "1",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "mmtab", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost"}
    common = [f"--config={CONFIG}", f"--data.path={data}", "--trainer.max_epochs=3", "--data.batch_size=256",
              f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.enable_progress_bar=false"]
    requeue = json.dumps({"class_path": "tests.killer.RequeuedBySlurm", "init_args": {"epoch": 1, "batch": 3}})
    first = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", *common, f"--trainer.callbacks+={requeue}"],
                           capture_output=True, text=True, cwd=ROOT, env=slurm)
    assert first.returncode == 143, first.stderr[-2000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = tmp_path / "run" / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, weights_only=True)["epoch"] == 1  # mid-epoch 1: its 3 batches done are in it

    again = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", *common], capture_output=True, text=True,
                           cwd=ROOT, env=slurm)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Restoring states from the checkpoint path at {hpc}" in again.stdout + again.stderr
    steps = 3 * -(-(len(adult_sample) * 4 // 5) // 256)
    assert final_checkpoint(tmp_path / "run")["global_step"] == steps
