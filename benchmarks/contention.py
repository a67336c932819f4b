"""How mmtab's speed holds up when the machine is shared: each figure alone, then beside one and two
other CPU-bound processes, as a ratio to its solo rate (the fair share on 2 cores is 0.5 beside one
neighbour, 0.33 beside two).

Figures (each measured in a fresh process, as a user's run would be):

- ``adult``: mmtab's adult recipe (configs/adult.yaml, 3 epochs), training samples/s;
- ``fastai``: fastai's own adult recipe under the same conditions (null where fastai is not installed);
- ``encode``: the frozen-encoder pass over reviews (`TextEmbeddings.embed`, no cache, under the thread
  policy a fit activates), reviews/s;
- ``finetune``: fine-tuning the text-only model (configs/reviews_text.yaml), training samples/s.

Neighbours: ``busy``, a plain torch matmul loop with torch's default threads (any numeric job), and
``mmtab``, another ``mmtab fit`` of the adult recipe. One JSON line: per figure its solo rate and
``shared_vs_alone`` per neighbour kind and count; kept in benchmarks/results/contention.json (a run of
some figures or neighbours replaces those entries there).
Run it alone on the machine: it makes its own neighbours.

    python benchmarks/contention.py [--figures adult fastai encode finetune] [--neighbours busy mmtab]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "contention.json"
FIGURES = ["adult", "fastai", "encode", "finetune"]
NEIGHBOURS = ["busy", "mmtab"]
BUSY = "import torch\na = torch.randn(256, 256)\nwhile True:\n    a @ a\n"
WORKER_TIMEOUT_S = 600
SETTLE_S = 3.0  # neighbours start working before the measured process does


def worker(figure: str) -> float | None:
    """The figure's rate in this process (None where it cannot be measured here)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pandas as pd
    from fastai_parity import CONFIG, DATA, recipe_args, reference_split, split_column, timed_fit

    if figure in ("adult", "fastai"):
        frame = pd.read_parquet(DATA)
        train, valid = reference_split(frame)
        if figure == "fastai":
            try:
                import fastai_parity
                from fastai.tabular.all import tabular_learner  # noqa: F401 -- is fastai here?
            except ImportError:
                return None
            fastai_parity.EPOCHS = 3
            return fastai_parity.run_fastai(frame, train, valid, seed=0)["samples_per_s"]
        path = Path(tempfile.mkdtemp()) / "adult.parquet"
        frame.assign(split=split_column(frame, valid)).to_parquet(path)
        _, timer = timed_fit(CONFIG, *recipe_args(path, 0), "--trainer.max_epochs=3")
        return timer.samples / timer.seconds
    from throughput import ENCODER, REVIEWS, TEXT

    if figure == "encode":
        from mmtab.data.tokenization import TextTokenizer
        from mmtab.embeddings import TextEmbeddings
        from mmtab.models.text import TextEncoder

        rows = pd.read_parquet(REVIEWS).sample(400, random_state=0)
        tokens = TextTokenizer(ENCODER, max_length=256)(rows, ["Title", "Review Text"])
        from mmtab.threads import ThreadPolicy

        encoder = TextEncoder(pretrained=ENCODER).eval()
        ThreadPolicy().activate()  # as `mmtab fit` does when a stage starts, before its text is embedded
        start = time.perf_counter()
        TextEmbeddings(cache_dir=None).embed(encoder, tokens["input_ids"], tokens["attention_mask"])
        return len(rows) / (time.perf_counter() - start)
    data = Path(tempfile.mkdtemp()) / "reviews.parquet"
    pd.read_parquet(REVIEWS).sample(400, random_state=0).to_parquet(data)
    _, timer = timed_fit(TEXT, f"--data.path={data}", "--model.parts.text.frozen=false", "--trainer.max_epochs=1",
                         "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=0")
    return timer.samples / timer.seconds


def start_neighbour(kind: str, folder: Path) -> subprocess.Popen:
    if kind == "busy":
        command = [sys.executable, "-c", BUSY]
    else:
        command = [sys.executable, "-m", "mmtab.cli", "fit", "--config", str(ROOT / "configs" / "adult.yaml"),
                   "--trainer.max_epochs=100000", "--trainer.logger=false", "--trainer.callbacks=[]",
                   "--trainer.enable_checkpointing=false",
                   "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={folder}"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def measure(figure: str, kind: str | None, count: int) -> float | None:
    """The figure's rate in a fresh process beside `count` neighbours of `kind`."""
    with tempfile.TemporaryDirectory() as folder:
        neighbours = [start_neighbour(kind, Path(folder) / str(i)) for i in range(count)] if kind else []
        try:
            time.sleep(SETTLE_S if neighbours else 0)
            if kind == "mmtab":  # its imports and data reading are done: it is training
                time.sleep(10)
            stopped = [n.args for n in neighbours if n.poll() is not None]
            if stopped:
                raise RuntimeError(f"a neighbour stopped before the measurement: {stopped[0]}")
            proc = subprocess.run([sys.executable, __file__, "--worker", figure], cwd=ROOT, capture_output=True,
                                  text=True, timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return 0.0  # slower than the timeout allows: no share worth the name
        finally:
            for n in neighbours:
                os.killpg(n.pid, signal.SIGKILL)
                n.wait()
    found = re.search(r"^RATE (\S+)$", proc.stdout, re.M)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{figure} failed:\n{proc.stderr[-3000:]}")
    return None if found.group(1) == "None" else float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=FIGURES)
    parser.add_argument("--neighbours", nargs="+", choices=NEIGHBOURS, default=NEIGHBOURS)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", choices=FIGURES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(f"RATE {worker(args.worker)}", flush=True)
        return
    line: dict[str, object] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    line.update({"benchmark": "contention", "cores": len(os.sched_getaffinity(0)),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                 "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")})
    for figure in args.figures:
        alone = measure(figure, None, 0)
        result: dict[str, object] = {**line.get(figure, {}), "alone_per_s": None if alone is None else round(alone, 1)}
        if alone:
            for kind in args.neighbours:
                for count in args.counts:
                    rate = measure(figure, kind, count)
                    result[f"shared_vs_alone_{kind}_{count}"] = None if rate is None else round(rate / alone, 3)
        line[figure] = result
        print(figure, result, file=sys.stderr, flush=True)
    print(json.dumps(line))
    RESULTS.write_text(json.dumps(line, indent=1) + "\n")


if __name__ == "__main__":
    main()
