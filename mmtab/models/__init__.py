"""The models: plain `nn.Module`s that need only torch (and transformers for the text branch).

Nothing here imports Lightning, pandas or the rest of mmtab's training and data code, so a user can
put these models in their own training loop.
"""

from mmtab.models.blocks import GeneralRelu
from mmtab.models.fusion import AttentionFusion, ConcatFusion, GatedFusion
from mmtab.models.fusion_model import FusionModel, Head
from mmtab.models.pooling import ClsPooling, MeanPooling
from mmtab.models.tabular import TabularMLP, embedding_size
from mmtab.models.text import TextEncoder

__all__ = [
    "AttentionFusion",
    "ClsPooling",
    "ConcatFusion",
    "FusionModel",
    "GatedFusion",
    "GeneralRelu",
    "Head",
    "MeanPooling",
    "TabularMLP",
    "TextEncoder",
    "embedding_size",
]
