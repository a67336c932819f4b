"""Several text columns joined into one text, or each its own vector: measured on the reviews.

Runs ``configs/reviews_demo.yaml`` (frozen MiniLM fused with the table; Title and Review Text) as
shipped (``data.join_text: true``: one text, ``"Title: ... | Review Text: ..."``, one vector) and with
``--data.join_text false`` (each column its own text and its own vector), over seeds, and prints one
JSON line: each setting's validation metrics at the last epoch (means over seeds, and per seed) and
its wall time. The first run of each setting fills the embedding cache (its time includes the
encoder pass); the later seeds read it.

    python benchmarks/text_columns.py --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "reviews_demo.yaml"
EPOCH_LINE = re.compile(r"^epoch (\d+): (.*)$", re.M)


def fit(join: bool, seed: int, root: Path) -> tuple[dict[str, float], float]:
    """The last epoch's validation metrics and the wall time of one fit."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", f"--config={CONFIG}",
                           f"--data.join_text={str(join).lower()}", f"--seed_everything={seed}",
                           f"--trainer.default_root_dir={root}"], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    *_, (_, last) = EPOCH_LINE.findall(proc.stdout + proc.stderr)
    return {k: float(v) for k, v in (pair.split("=") for pair in last.split())}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for join in (True, False):
            name = "joined" if join else "separate"
            runs = [fit(join, seed, Path(tmp) / f"{name}_{seed}") for seed in args.seeds]
            metrics = {k: float(np.mean([m[k] for m, _ in runs])) for k in runs[0][0]}
            result[name] = {**{k: round(v, 4) for k, v in metrics.items()},
                            "per_seed_auroc": [m["val_auroc"] for m, _ in runs],
                            "fit_s": [round(s, 1) for _, s in runs]}
    print(json.dumps({"seeds": args.seeds, **result}))


if __name__ == "__main__":
    main()
