"""mmtab: models that learn from tables with text in them, with nothing hidden."""

from mmtab.data.columns import ColumnSpec, DataValidationError
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.data.preprocessing import TabularPreprocessor
from mmtab.data.tokenization import TextTokenizer
from mmtab.models.fusion import AttentionFusion, ConcatFusion, GatedFusion
from mmtab.models.fusion_model import FusionModel
from mmtab.models.tabular import TabularMLP, embedding_size
from mmtab.models.text import TextEncoder
from mmtab.predict import PredictionWriter, load_checkpoint, predict_frame, top_losses
from mmtab.training.freezing import BranchUnfreeze
from mmtab.training.module import MultimodalModule, TextModule
from mmtab.training.param_groups import BranchHparams, build_param_groups, format_param_groups
from mmtab.training.schedule import OneCycle

__all__ = [
    "AttentionFusion",
    "BranchHparams",
    "BranchUnfreeze",
    "ColumnSpec",
    "ConcatFusion",
    "DataValidationError",
    "FusionModel",
    "GatedFusion",
    "MultimodalModule",
    "OneCycle",
    "PredictionWriter",
    "TabularMLP",
    "TabularPreprocessor",
    "TabularTextDataModule",
    "TextEncoder",
    "TextModule",
    "TextTokenizer",
    "build_param_groups",
    "embedding_size",
    "format_param_groups",
    "load_checkpoint",
    "predict_frame",
    "top_losses",
]
