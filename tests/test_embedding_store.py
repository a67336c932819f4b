"""The frozen-encoder cache: vectors computed once, kept on disk, never stale, never half-written."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmtab import FusionModel, TextEncoder
from mmtab.embeddings import TextEmbeddings
from mmtab.embeddings.frozen import BF16_MIN_COSINE, PROBE_ROWS
from mmtab.embeddings.store import MAX_PARTS, EmbeddingStore, row_keys

from .conftest import fusion_module, quiet_trainer, reviews_datamodule


def token_table(n: int = 60, seed: int = 0, longest: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of random lengths, padded, with a few exact duplicates."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, longest, (n,), generator=g)
    ids = torch.zeros(n, longest, dtype=torch.long)
    mask = torch.zeros(n, longest, dtype=torch.long)
    for i, k in enumerate(lengths.tolist()):
        ids[i, :k] = torch.randint(5, 900, (k,), generator=g)
        mask[i, :k] = 1
    ids[1], mask[1] = ids[0], mask[0]  # the same text twice
    return ids, mask


class Counting:
    """Counts the rows the encoder is run on (a closure, so the bf16 copy of the encoder counts too)."""

    def __init__(self, rows: list[int]) -> None:
        self._rows = rows

    @property
    def rows(self) -> int:
        return sum(self._rows)

    @classmethod
    def on(cls, encoder: TextEncoder | Embedded) -> Counting:
        rows: list[int] = []
        encoder.encoder.register_forward_pre_hook(lambda m, a, kw: rows.append(len(kw["input_ids"])),
                                                  with_kwargs=True)
        return cls(rows)


class Embedded:
    """A text branch and how its vectors are kept: ``embed_rows(ids, mask)`` is what a stage does."""

    def __init__(self, text: TextEncoder, embeddings: TextEmbeddings) -> None:
        self.text, self.embeddings = text, embeddings

    def __getattr__(self, name: str):
        return getattr(self.text, name)

    def embed_rows(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embeddings.embed(self.text, ids, mask)


@pytest.fixture
def make_encoder(tiny_bert, tmp_path):
    def make(*, precision: str = "fp32", **kwargs) -> Embedded:  # fp32: counted rows then include no bf16 probe
        torch.manual_seed(0)
        return Embedded(TextEncoder(pretrained=tiny_bert, **kwargs).eval(),
                        TextEmbeddings(cache_dir=str(tmp_path / "cache"), precision=precision))
    return make


def test_embed_rows_equals_each_row_encoded_alone(make_encoder):
    encoder = make_encoder()
    ids, mask = token_table()
    vectors = encoder.embed_rows(ids, mask)
    assert vectors.shape == (len(ids), encoder.out_features) and vectors.dtype == torch.float32
    for i in range(len(ids)):  # in the table's order, each row without padding
        n = int(mask[i].sum())
        torch.testing.assert_close(vectors[i], encoder.encode(ids[i:i + 1, :n], mask[i:i + 1, :n])[0].detach(),
                                   atol=1e-5, rtol=1e-5)


def test_a_second_run_encodes_nothing_and_reads_identical_vectors(make_encoder):
    ids, mask = token_table()
    first = make_encoder()
    counted = Counting.on(first)
    cold = first.embed_rows(ids, mask)
    assert counted.rows == len(ids) - 1  # each distinct text once: the duplicate is not encoded again
    second = make_encoder()  # a new process would build exactly this
    counted = Counting.on(second)
    warm = second.embed_rows(ids, mask)
    assert counted.rows == 0 and torch.equal(cold, warm)


def test_only_rows_not_seen_before_are_encoded(make_encoder):
    ids, mask = token_table(60)
    new_ids, new_mask = token_table(25, seed=1)
    encoder = make_encoder()
    encoder.embed_rows(ids, mask)
    counted = Counting.on(encoder)
    mixed = encoder.embed_rows(torch.cat([ids[:10], new_ids]), torch.cat([mask[:10], new_mask]))
    assert counted.rows == 25 - 1  # the new rows (one of them duplicated), not the 10 seen
    assert mixed.shape[0] == 35


def test_changed_weights_or_pooling_never_return_stale_vectors(make_encoder):
    from mmtab import ClsPooling

    ids, mask = token_table()
    encoder = make_encoder()
    before = encoder.embed_rows(ids, mask)
    with torch.no_grad():
        encoder.encoder.embeddings.word_embeddings.weight.mul_(1.5)  # a fine-tuned encoder, say
    counted = Counting.on(encoder)
    after = encoder.embed_rows(ids, mask)
    assert counted.rows == len(ids) - 1 and not torch.allclose(before, after)
    torch.testing.assert_close(after[5], encoder.encode(ids[5:6], mask[5:6])[0].detach(), atol=1e-5, rtol=1e-5)
    cls = make_encoder(pooling=ClsPooling)
    counted = Counting.on(cls)
    cls.embed_rows(ids, mask)
    assert counted.rows == len(ids) - 1


@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate", "drop_the_keys"])
def test_a_damaged_part_is_detected_deleted_and_rebuilt(make_encoder, tmp_path, caplog, damage):
    ids, mask = token_table()
    good = make_encoder().embed_rows(ids, mask)
    (vectors_file,) = (tmp_path / "cache").rglob("*.vectors.npy")
    if damage == "flip_a_byte":
        raw = bytearray(vectors_file.read_bytes())
        raw[-7] ^= 0xFF
        vectors_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        vectors_file.write_bytes(vectors_file.read_bytes()[:-100])
    else:
        Path(str(vectors_file).replace(".vectors.npy", ".keys.npy")).unlink()
    encoder = make_encoder()
    counted = Counting.on(encoder)
    with caplog.at_level(logging.WARNING, logger="mmtab"):
        rebuilt = encoder.embed_rows(ids, mask)
    assert counted.rows == len(ids) - 1 and torch.equal(rebuilt, good)
    assert "damaged" in caplog.text
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1  # only the rebuilt part remains


@pytest.mark.parametrize("precision, bound", [("fp32", 1e-5), ("auto", None)])
def test_a_repaired_entry_is_within_the_stated_bound_of_the_original(make_encoder, tmp_path, precision, bound):
    """A rebuilt row shares its batch with other rows than the first time (here: a part of the table),
    so its last bits may differ: docs/text-and-fusion.md states the bound, and this holds it."""
    ids, mask = token_table(80)
    original = make_encoder(precision=precision).embed_rows(ids, mask)
    for part in (tmp_path / "cache").rglob("*.vectors.npy"):
        part.write_bytes(part.read_bytes()[:-100])  # damaged: deleted, and its rows encoded again
    some = torch.arange(3, 80, 7)
    repaired = make_encoder(precision=precision).embed_rows(ids[some], mask[some])
    if bound is not None:
        torch.testing.assert_close(repaired, original[some], atol=bound, rtol=0)
    else:  # bf16 where the hardware has it: each row within the tolerance bf16 is held to against fp32
        assert float(torch.nn.functional.cosine_similarity(repaired, original[some], dim=1).min()) >= BF16_MIN_COSINE


def test_a_part_left_half_written_by_a_killed_run_is_never_read(make_encoder, tmp_path):
    ids, mask = token_table()
    encoder = make_encoder()
    encoder.embed_rows(ids, mask)
    (meta,) = (tmp_path / "cache").rglob("*.json")
    meta.rename(meta.with_name(meta.name + ".123.tmp"))  # killed before the last rename
    counted = Counting.on(encoder)
    encoder.embed_rows(ids, mask)
    assert counted.rows == len(ids) - 1


def test_many_small_parts_are_merged_and_still_found(tmp_path):
    store = EmbeddingStore(tmp_path)
    ids, mask = token_table(41)
    keys = row_keys(ids[1:], mask[1:].sum(dim=1))  # 40 distinct texts
    vectors = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    for i in range(40):
        store.add(keys[i:i + 1], vectors[i:i + 1])
    assert len(list(tmp_path.glob("part-*.json"))) <= MAX_PARTS
    found, got = store.lookup(keys[::-1].copy(), 3)
    assert found.all() and np.array_equal(got, vectors[::-1])


def test_two_processes_filling_one_cache_at_once_leave_it_whole(tiny_bert, tmp_path):
    ids, mask = token_table(200, longest=60)
    torch.save({"ids": ids, "mask": mask}, tmp_path / "table.pt")
    script = (f"import torch; from mmtab import TextEncoder; from mmtab.embeddings import TextEmbeddings; "
              f"t = torch.load({str(tmp_path / 'table.pt')!r}); "
              f"torch.manual_seed(0); e = TextEncoder(pretrained={tiny_bert!r}).eval(); "
              f"TextEmbeddings(cache_dir={str(tmp_path / 'c')!r}).embed(e, t['ids'], t['mask'])")
    runs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [r.wait(timeout=120) for r in runs] == [0, 0]
    torch.manual_seed(0)
    encoder = TextEncoder(pretrained=tiny_bert).eval()
    counted = Counting.on(encoder)
    vectors = TextEmbeddings(cache_dir=str(tmp_path / "c")).embed(encoder, ids, mask)
    assert counted.rows == 0 and torch.isfinite(vectors).all()


def test_embeddings_are_within_the_stated_tolerance_of_fp32(make_encoder):
    """bf16 where the hardware has it (here or not); either way each row is within the tolerance."""
    ids, mask = token_table(100)
    auto = make_encoder(precision="auto").embed_rows(ids, mask)
    full = make_encoder().embed_rows(ids, mask)
    assert float(torch.nn.functional.cosine_similarity(auto, full, dim=1).min()) >= BF16_MIN_COSINE


def test_no_cache_dir_keeps_nothing_on_disk(make_encoder, tmp_path):
    ids, mask = token_table()
    encoder = make_encoder()
    encoder.embeddings.cache_dir = None
    counted = Counting.on(encoder)
    encoder.embed_rows(ids, mask)
    encoder.embed_rows(ids, mask)
    assert counted.rows == 2 * (len(ids) - 1) and not (tmp_path / "cache").exists()


def test_a_frozen_branch_reads_the_batch_vectors_and_an_unfrozen_one_ignores_them(make_encoder):
    encoder = make_encoder()
    ids, mask = token_table(4)
    batch = {"input_ids": ids, "attention_mask": mask, "has_text": torch.ones(4, dtype=torch.bool),
             "text_embedding": torch.full((4, encoder.out_features), 7.0)}
    net = FusionModel(n_outputs=2, text=encoder.text)
    net.freeze("text")
    assert torch.all(net.features(batch)["text"] == 7.0)
    net.unfreeze("text")
    assert not torch.any(net.features(batch)["text"] == 7.0)


def test_a_frozen_fit_embeds_each_table_once_and_a_second_fit_encodes_nothing(tiny_bert, reviews_sample):
    results = []
    for _ in range(2):
        dm = reviews_datamodule(reviews_sample, tiny_bert)
        torch.manual_seed(0)
        module = fusion_module(dm, parts={"text": {"frozen": True}})
        counted = Counting.on(module.net.text)
        torch.manual_seed(0)
        trainer = quiet_trainer(max_epochs=2)
        trainer.fit(module, dm)
        results.append((counted.rows, {k: float(v) for k, v in trainer.callback_metrics.items()}))
    (cold_rows, cold), (warm_rows, warm) = results
    texts = [dm.table(split).tensors["input_ids"].flatten(0, 1).tolist() for split in ("train", "valid")]  # a text
    distinct = len(set(map(tuple, texts[0])) | set(map(tuple, texts[1])))  # per column: Title and Review Text
    assert cold_rows <= distinct + 2 * PROBE_ROWS  # every distinct text once (and a bf16 probe at most)
    assert warm_rows == 0 and warm == cold


def test_predict_frame_reads_a_frozen_branch_from_the_cache_and_agrees_with_validate(tiny_bert, reviews_sample):
    from mmtab import predict_frame

    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={"text": {"frozen": True}})
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, dm)
    counted = Counting.on(module.net.text)
    table = predict_frame(module, dm.preprocessor, dm.frames["valid"])
    assert counted.rows == 0  # every validation text read from the cache the fit filled
    validated = trainer.validate(module, dm, verbose=False)[0]
    assert table["loss"].mean() == pytest.approx(validated["val_loss"], rel=1e-5)  # the same vectors


def test_the_vectors_can_enter_a_graph_that_trains(make_encoder):
    """A user's own loop may feed the table's vectors, unshuffled, into layers that train."""
    ids, mask = token_table(8)
    vectors = make_encoder().embed_rows(ids, mask)
    assert not vectors.is_inference()
    layer = torch.nn.LayerNorm(vectors.shape[1])
    layer(vectors[:4]).sum().backward()
    assert layer.weight.grad is not None
