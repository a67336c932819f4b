"""mmtab: models that learn from tables with text in them, with nothing hidden."""

from mmtab.data.columns import ColumnSpec, DataValidationError
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.data.preprocessing import TabularPreprocessor
from mmtab.models.fusion import ConcatFusion
from mmtab.models.fusion_model import FusionModel
from mmtab.models.tabular import TabularMLP, embedding_size
from mmtab.training.module import MultimodalModule
from mmtab.training.param_groups import BranchHparams, build_param_groups, format_param_groups
from mmtab.training.schedule import OneCycle

__all__ = [
    "BranchHparams",
    "ColumnSpec",
    "ConcatFusion",
    "DataValidationError",
    "FusionModel",
    "MultimodalModule",
    "OneCycle",
    "TabularMLP",
    "TabularPreprocessor",
    "TabularTextDataModule",
    "build_param_groups",
    "embedding_size",
    "format_param_groups",
]
