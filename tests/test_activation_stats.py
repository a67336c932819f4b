"""ActivationStats observes training steps only, computes what it says, and cleans up after itself."""

import numpy as np
import pytest
import torch

from mmtab.diagnostics.activation_stats import ActivationStats

from .conftest import adult_datamodule, quiet_trainer, tabular_module

LAYERS = ["tabular.mlp.blocks.0.linear", "tabular.mlp.blocks.0.act", "head.out"]


def test_recorded_statistics_equal_values_computed_by_hand(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)
    batch = dm.table("train")[torch.arange(256)]
    stats = ActivationStats(modules=LAYERS, bins=40, hist_range=(1e-2, 1e2), dormant_below=0.1)
    stats.attach(module.net)
    seen = {}
    modules = dict(module.net.named_modules())
    for name in LAYERS:  # a second hook keeps a copy of the very tensor ActivationStats saw
        # (update returns None: a forward hook that returns a tensor would replace the module's output)
        modules[name].register_forward_hook(lambda m, i, out, name=name: seen.update({name: out.detach().clone()}))
    stats._recording = True
    module.net.train()(batch)
    for name in LAYERS:
        x = seen[name].numpy().astype(np.float64)
        hist, _ = np.histogram(np.log10(np.clip(np.abs(x), 1e-2, 1e2)), bins=40, range=(-2, 2))
        dormant = (np.abs(x) < 0.1).mean()
        expected = np.concatenate([[x.mean(), x.std(ddof=1), dormant], hist / x.size])
        np.testing.assert_allclose(stats.layers[name].table()[0].numpy(), expected, rtol=1e-4, atol=1e-6)


class Boom(Exception):
    pass


def test_only_training_steps_are_recorded_and_hooks_are_gone_after_fit(adult_sample, tmp_path):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)
    stats = ActivationStats(plot_dir=str(tmp_path))
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=4, num_sanity_val_steps=2,
                            callbacks=[stats])
    trainer.fit(module, dm)
    trainer.predict(module, dm.val_dataloader())
    chosen = stats.chosen(module.net)
    assert "tabular.mlp.blocks.1.act" in chosen and "head.out" in chosen and len(chosen) == 5
    for layer in stats.layers.values():  # one record per training step: validation, sanity check, predict add none
        assert layer.steps == list(range(6))
    assert all(not m._forward_hooks for m in module.net.modules())
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["activation_histograms.png",
                                                              "activation_mean_std.png", "dormant_fraction.png"]


def test_hooks_are_removed_when_fit_fails(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)

    class FailAtStep2(ActivationStats):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if trainer.global_step == 2:
                raise Boom()

    with pytest.raises(Boom):
        quiet_trainer(max_steps=5, callbacks=[FailAtStep2(log=False)]).fit(module, dm)
    assert all(not m._forward_hooks for m in module.net.modules())


def test_memory_stays_bounded_on_a_long_run(adult_sample):
    dm = adult_datamodule(adult_sample, batch_size=32)
    stats = ActivationStats(modules=["head.out"], max_records=8, log=False, plot=False)
    quiet_trainer(max_steps=60, limit_val_batches=0, callbacks=[stats]).fit(tabular_module(dm), dm)
    steps = stats.layers["head.out"].steps
    assert len(steps) <= 8 and steps[0] == 0 and steps[-1] >= 40  # an even sample of the whole run


def test_the_text_encoder_s_layers_are_recorded_only_when_asked(tiny_bert, reviews_sample):
    from .conftest import fusion_module, reviews_datamodule

    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm)
    assert not any(n.startswith("text") for n in ActivationStats().chosen(module.net))
    stats = ActivationStats(text_layers=True, log=False, plot=False)
    quiet_trainer(max_steps=2, limit_val_batches=1, callbacks=[stats]).fit(module, dm)
    layers = [n for n in stats.layers if n.startswith("text.")]
    assert layers == ["text.encoder.embeddings", "text.encoder.encoder.layer.0", "text.encoder.encoder.layer.1"]
    assert all(stats.layers[n].steps == [0, 1] for n in layers)
