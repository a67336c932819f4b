"""``mmtab fit|validate|test|predict --config configs/....yaml``: LightningCLI, plus the links that
carry what the data decides (task, number of outputs, cardinalities, number of continuous inputs)
into the model, so a config never states a size the data determines."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _get_module_type, _InstantiatorFn

from mmtab.data.datamodule import TabularTextDataModule
from mmtab.predict import PredictionWriter
from mmtab.training.module import MultimodalModule

_FUSION = "model.init_args.model.init_args"


def _cardinalities(dims: dict) -> list[int]:
    return dims["cardinalities"]


def _n_cont(dims: dict) -> int:
    return dims["n_cont"]


class _ModelInstantiator(_InstantiatorFn):
    """Lightning records every applied link in the saved hyperparameters, assuming its target exists;
    a text-only model has ``tabular: null``, so the links into the tabular branch are dropped there.
    (Lightning's own instantiator otherwise; it is private, hence the pinned lightning range.)"""

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        self.cli._dump_config()
        links = {k: v for k, v in applied_instantiation_links.items() if _has_parent(self.cli.config_dump, k)}
        return super().__call__(class_type, *args, applied_instantiation_links=links, **kwargs)


def _has_parent(tree: dict, key: str) -> bool:
    node: Any = tree
    for part in key.split(".")[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return isinstance(node, dict)


class MmtabCLI(LightningCLI):
    def _add_instantiators(self) -> None:
        super()._add_instantiators()
        self.parser.add_instantiator(_ModelInstantiator(cli=self, key="model"), _get_module_type(self._model_class),
                                     subclasses=self.subclass_mode_model)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.link_arguments("data.fitted_task", "model.init_args.task", apply_on="instantiate")
        parser.link_arguments("data.n_outputs", f"{_FUSION}.n_outputs", apply_on="instantiate")
        parser.link_arguments("data.tabular_dims", f"{_FUSION}.tabular.init_args.cardinalities",
                              compute_fn=_cardinalities, apply_on="instantiate")
        parser.link_arguments("data.tabular_dims", f"{_FUSION}.tabular.init_args.n_cont",
                              compute_fn=_n_cont, apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """The ``mmtab`` console script (returns nothing: a console script's return value is its exit code)."""
    MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True,
                    save_config_kwargs={"overwrite": False}, args=args)


if __name__ == "__main__":
    main()
