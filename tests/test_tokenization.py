import pandas as pd
import torch

from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.tokenization import TextTokenizer, join_text_columns

from .conftest import reviews_datamodule


def test_joined_text_keeps_column_names_and_flags_rows_without_text():
    frame = pd.DataFrame({"Title": ["Love it", None, None, "  "],
                          "Review Text": ["Fits well", "Too small", None, None]})
    texts, has_text = join_text_columns(frame, ["Title", "Review Text"])
    assert texts == ["Title: Love it | Review Text: Fits well", "Review Text: Too small", "", ""]
    assert has_text.tolist() == [True, True, False, False]


def test_tokenised_once_padded_to_the_longest_row_with_lengths(tiny_bert, reviews_sample):
    out = TextTokenizer(tiny_bert, max_length=64)(reviews_sample, ["Title", "Review Text"])
    assert out["input_ids"].shape == out["attention_mask"].shape
    assert out["input_ids"].shape[1] <= 64
    assert torch.equal(out["lengths"], out["attention_mask"].sum(1))
    assert out["has_text"].dtype == torch.bool and len(out["has_text"]) == len(reviews_sample)


def test_batches_are_trimmed_and_buckets_cut_padding(tiny_bert, reviews_sample):
    tensors = TextTokenizer(tiny_bert, max_length=128)(reviews_sample, ["Title", "Review Text"])
    tensors["row"] = torch.arange(len(reviews_sample))
    table = TensorTable(tensors)

    def padding_share(loader):
        pad = total = 0
        seen = []
        for batch in loader:
            assert batch["input_ids"].shape[1] == batch["lengths"].max()  # trimmed to the batch's longest
            pad += (batch["attention_mask"] == 0).sum().item()
            total += batch["attention_mask"].numel()
            seen.append(batch["row"])
        return pad / total, torch.cat(seen)

    random_pad, _ = padding_share(BatchLoader(table, batch_size=32, shuffle=True, seed=0))
    bucket_pad, rows = padding_share(BatchLoader(table, batch_size=32, shuffle=True, seed=0,
                                                 bucket=True, bucket_batches=10))
    assert bucket_pad < random_pad / 2, (bucket_pad, random_pad)
    assert len(set(rows.tolist())) == len(rows) == len(reviews_sample)  # every row once


def test_without_length_buckets_training_batches_are_representative(tiny_bert, reviews_sample):
    # what BatchNorm needs: each batch a fair sample, so batch means of length barely move
    def spread_of_batch_mean_length(**kwargs):
        dm = reviews_datamodule(reviews_sample, tiny_bert, max_length=128, **kwargs)
        dm.setup("fit")
        means = torch.stack([b["lengths"].float().mean() for b in dm.train_dataloader()])
        return means.std().item()

    bucketed, representative = spread_of_batch_mean_length(), spread_of_batch_mean_length(length_buckets=False)
    assert representative < bucketed / 2, (representative, bucketed)
