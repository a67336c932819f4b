"""The thread policy (`mmtab.threads`): a process takes the cores other work leaves free, a fixed count
stays fixed, and a fit restores PyTorch's count after it."""

import os
import subprocess
import sys
import time

import pytest
import torch

from mmtab.threads import ThreadPolicy, cores_available, other_runnable_threads
from mmtab.training.threads import Threads

from .conftest import ROOT, adult_datamodule, quiet_trainer, tabular_module

# a neighbour keeping two threads runnable: torch's OpenMP workers spin between its matmuls
BUSY = ("import torch\ntorch.set_num_threads(2)\na = torch.randn(256, 256)\nprint('go', flush=True)\n"
        "while True:\n    a @ a\n")
VISIBLE = other_runnable_threads() is not None


@pytest.fixture
def busy_neighbour():
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "go\n"
    time.sleep(0.5)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.skipif(not VISIBLE, reason="this process does not see the whole machine's run queue")
def test_a_busy_neighbour_is_seen_and_left_its_cores(busy_neighbour):
    policy = ThreadPolicy()
    if policy.fixed is not None:
        pytest.skip("OMP_NUM_THREADS fixes the count here")
    others = other_runnable_threads()
    assert others >= 2  # the neighbour's two spinning workers (this process's own are not counted)
    threads, why = policy.decide()
    assert threads == max(1, min(cores_available(), cores_available() - others)) and "other runnable" in why
    if cores_available() == 2:
        assert threads == 1


@pytest.mark.skipif(not VISIBLE, reason="this process does not see the whole machine's run queue")
def test_own_threads_are_not_counted_as_other_work():
    if other_runnable_threads() > 0:
        pytest.skip("other work is running on this machine now")
    torch.set_num_threads(cores_available())
    x = torch.randn(512, 512)
    for _ in range(20):
        x @ x  # this process's OpenMP workers have just run, and spin a while
    assert other_runnable_threads() < cores_available()


def test_a_fixed_count_is_kept_and_a_wrong_one_refused(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    policy = ThreadPolicy(1)
    assert policy.decide() == (1, "fixed") and "1 intra-op thread (threads.count)" in policy.describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ThreadPolicy().fixed == torch.get_num_threads()  # what PyTorch started with
    with pytest.raises(ValueError, match="threads.count must be at least 1"):
        ThreadPolicy(0)


def test_processes_on_a_node_share_its_cores():
    assert ThreadPolicy(processes=cores_available()).share == 1
    assert ThreadPolicy(processes=10 * cores_available()).share == 1


def test_a_fit_restores_the_count_and_its_checkpoint_says_which_it_used(adult_sample, tmp_path):
    before = torch.get_num_threads()
    dm = adult_datamodule(adult_sample)
    trainer = quiet_trainer(max_epochs=1, callbacks=[Threads(count=1)], enable_checkpointing=False)
    trainer.fit(tabular_module(dm), dm)
    assert torch.get_num_threads() == before
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    state = torch.load(tmp_path / "run.ckpt", weights_only=True)["callbacks"]["Threads"]
    assert state == {"threads": 1, "fixed": True, "changes": 0}


def test_the_cli_says_how_many_threads_a_fit_takes(adult_sample, tmp_path):
    data = tmp_path / "adult.parquet"
    adult_sample.head(400).to_parquet(data)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    args = [sys.executable, "-m", "mmtab.cli", "fit", f"--config={ROOT / 'configs' / 'adult.yaml'}",
            f"--data.path={data}", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}"]
    adaptive = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    assert adaptive.returncode == 0, adaptive.stderr[-2000:]
    assert f"of this process's share of {cores_available()}" in adaptive.stdout + adaptive.stderr
