"""Fully sharded data parallelism (FSDP2) for a `FusionModel`, under Lightning's own `ModelParallelStrategy`.

DDP keeps a whole copy of the model, its gradients and its optimizer state on every device; FSDP
keeps 1/N of each on each of N devices and gathers a block's weights only while that block computes,
so an encoder too large for one GPU trains over several. Lightning's ``ModelParallelStrategy`` owns
the process group, the device mesh, the checkpoints and the loop; the model only says what to shard
(its `configure_model` hook calls `shard`): each block of the text encoder, then the rest.

    mmtab fit --config configs/reviews_text.yaml --model.parts.text.frozen false --trainer.devices 4 \\
        --trainer.strategy ModelParallelStrategy --trainer.strategy.data_parallel_size 4 \\
        --trainer.strategy.tensor_parallel_size 1 --trainer.strategy.save_distributed_checkpoint false
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from mmtab.errors import ConfigError
from mmtab.models.text import encoder_blocks
from mmtab.training.lightning_private import saves_distributed_checkpoint

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from mmtab.models.fusion_model import FusionModel


def shard(net: FusionModel, mesh: DeviceMesh) -> None:
    """Shard `net` in place over the mesh's data-parallel processes.

    Units: every block the text encoder's class lists in ``_no_split_modules`` (the transformer layers
    and embeddings; Hugging Face marks them for exactly this), else each entry of its layer lists; then
    the whole model, which takes the tabular branch, the fusion, the head and whatever is left.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    if is_sharded(net):  # validate after fit calls configure_model again
        return
    if mesh["tensor_parallel"].size() > 1:  # Lightning's mesh: (data_parallel, tensor_parallel)
        raise ConfigError(f"mmtab shards the model over data-parallel processes only (FSDP), and this run asks for "
                          f"tensor parallelism over {mesh['tensor_parallel'].size()}: set "
                          "--trainer.strategy.tensor_parallel_size 1 and --trainer.strategy.data_parallel_size to "
                          "the number of processes")
    if net.frozen:
        raise ConfigError(f"under FSDP every part trains from the first step, and {sorted(net.frozen)} is frozen: "
                          "a frozen encoder's vectors come from the cache (nothing of it trains, so sharding it "
                          f"saves nothing): use --trainer.strategy ddp for this config, or train the part from the "
                          f"start (--model.parts.{min(net.frozen)}.frozen false)")
    data_parallel = mesh["data_parallel"]
    if net.text is not None:
        blocks = list(encoder_blocks(net.text.encoder).values())
        for block in reversed(blocks):  # inner units before the ones around them
            fully_shard(block, mesh=data_parallel)
    fully_shard(net, mesh=data_parallel)
    # the trainer calls `outputs` (every head: the modality report) where a plain loop calls forward;
    # FSDP gathers the weights around forward only unless told of another entry point
    register_fsdp_forward_method(net, "outputs")


def share_buffers(net: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm's running statistics) before an evaluation.

    Each process updates its own from its own batches; DDP broadcasts rank 0's at every forward, FSDP
    does not. Evaluation then uses rank 0's on every process, as DDP does and as the checkpoint
    (written by rank 0) holds them. Nothing happens unless `net` is sharded.
    """
    if not is_sharded(net):
        return
    for buffer in net.buffers():
        torch.distributed.broadcast(buffer, src=0)


def is_sharded(net: nn.Module) -> bool:
    """Whether `shard` has run on `net` (so its processes are up)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(net, FSDPModule)


# The one route by which mmtab shards a model, said wherever another route is asked for.
SHARD_THROUGH = ("mmtab shards a model through Lightning's ModelParallelStrategy (FSDP2; on CPUs too): "
                 "--trainer.strategy ModelParallelStrategy --trainer.strategy.data_parallel_size N "
                 "--trainer.strategy.tensor_parallel_size 1 --trainer.strategy.save_distributed_checkpoint false, "
                 "N the number of processes (docs/scale.md)")
FSDP1_NAMES = frozenset({"fsdp", "fsdp_cpu_offload", "FSDPStrategy"})


def check_strategy(strategy: object) -> None:
    """Refuse what mmtab's sharding does not do, before the model is built on the devices.

    Lightning's `FSDPStrategy` (FSDP1) is not mmtab's route: it wraps the whole model as one unit and
    was never run against mmtab's frozen parts and param groups. mmtab's checkpoints are one file
    (`load_checkpoint`, ``validate`` and ``predict`` read it, with the model's config inside), and
    ModelParallelStrategy writes a folder of shards unless told not to.
    """
    if isinstance(strategy, FSDPStrategy):
        raise ConfigError(f"trainer.strategy FSDPStrategy: {SHARD_THROUGH}")
    if saves_distributed_checkpoint(strategy):
        raise ConfigError("ModelParallelStrategy writes each checkpoint as a folder of shards, and mmtab's checkpoints "
                          "are one file: add --trainer.strategy.save_distributed_checkpoint false (rank 0 gathers "
                          "the weights into it, on the CPU)")
