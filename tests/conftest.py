"""Shared fixtures: real data (the adult table shipped in data/), small frames with the awkward cases
(missing values, rare and unseen levels, weights), and a helper that trains a few steps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Frozen-encoder vectors go to a cache folder of the test session's own (CLI runs in subprocesses
# inherit it), never to the user's ~/.cache/mmtab.
os.environ["MMTAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="mmtab-test-cache-")
# Under pytest-xdist (the README's test command runs two workers) the workers share the cores: each,
# and the CLI runs it starts, keeps one intra-op thread, fixed, so a test that compares two runs bit
# for bit compares runs at the same thread count whatever the other worker is doing.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

from mmtab import FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule

# Property tests draw the same examples on every run, so a red CI is the same red on a laptop;
# `python -m pytest --hypothesis-profile=explore` draws fresh examples (5,000 where a test sets no count).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", max_examples=5000, deadline=None)
settings.load_profile("repeatable")

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "data" / "adult.parquet"
ADULT_CAT = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "gender",
             "native-country"]
ADULT_CONT = ["age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week"]


@pytest.fixture(scope="session")
def adult() -> pd.DataFrame:
    return pd.read_parquet(ADULT)


@pytest.fixture(scope="session")
def adult_sample(adult: pd.DataFrame) -> pd.DataFrame:
    """4,000 real rows: enough to see a loss fall in a few dozen steps, small enough for seconds."""
    return adult.sample(4000, random_state=0).reset_index(drop=True)


@pytest.fixture
def messy() -> pd.DataFrame:
    """A frame with missing numbers and categories, rare levels, a weight column and a binary target."""
    rng = np.random.default_rng(0)
    n = 600
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[:3] = "violet"  # rare: pooled into unknown
    colour[10:20] = None
    x = rng.normal(size=n)
    x[5:15] = np.nan
    size = rng.uniform(0, 10, n)
    logit = 1.5 * (colour == "red") + x.clip(-3, 3) * np.where(np.isnan(x), 0, 1) - 0.2 * size + 1
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-np.nan_to_num(logit)))).astype(int)
    return pd.DataFrame({"colour": colour, "x": x, "size": size, "w": rng.uniform(0.5, 2, n), "y": y})


def adult_datamodule(frame: pd.DataFrame, **kwargs) -> TabularTextDataModule:
    kwargs = {"batch_size": 256, "seed": 0, **kwargs}
    return TabularTextDataModule.from_frame(frame, target="income", categorical_cols=ADULT_CAT,
                                            continuous_cols=ADULT_CONT, **kwargs)


def tabular_module(dm: TabularTextDataModule, *, layers=(32, 16), **kwargs) -> MultimodalModule:
    model = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=list(layers)))
    return MultimodalModule(model, task=dm.fitted_task, target_scaling=dm.target_scaling, **{"lr": 1e-2, **kwargs})


def quiet_trainer(**kwargs) -> pl.Trainer:
    kwargs = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
              "enable_model_summary": False, "accelerator": "cpu", "devices": 1, **kwargs}
    return pl.Trainer(**kwargs)


REVIEWS = ROOT / "data" / "womens_clothing_reviews.parquet"
REVIEW_CAT = ["Division Name", "Department Name", "Class Name"]
REVIEW_CONT = ["Age", "Positive Feedback Count"]
REVIEW_TEXT = ["Title", "Review Text"]


@pytest.fixture(scope="session")
def reviews_sample() -> pd.DataFrame:
    return pd.read_parquet(REVIEWS).sample(1500, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, reviews_sample) -> str:
    """A random 2-layer BERT and a WordPiece tokenizer trained on review text, saved like a hub model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = reviews_sample[REVIEW_TEXT].fillna("").agg(" ".join, axis=1).tolist()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials))
    tokenizer = BertTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    from tokenizers import processors

    tokenizer.backend_tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", wordpiece.token_to_id("[SEP]")), ("[CLS]", wordpiece.token_to_id("[CLS]")))
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    torch_seed = __import__("torch").manual_seed(0)  # noqa: F841 -- fixed random weights
    BertModel(config).save_pretrained(folder)
    return str(folder)


def reviews_datamodule(frame: pd.DataFrame, text_model: str, *, text: bool = True, tabular: bool = True,
                       **kwargs) -> TabularTextDataModule:
    kwargs = {"batch_size": 32, "seed": 0, "max_length": 64, **kwargs}
    return TabularTextDataModule.from_frame(
        frame, target="Recommended IND", categorical_cols=REVIEW_CAT if tabular else [],
        continuous_cols=REVIEW_CONT if tabular else [], text_cols=REVIEW_TEXT if text else [],
        text_model=text_model, **kwargs)


def fusion_module(dm: TabularTextDataModule, *, tabular: bool = True, text: bool = True, fusion=None,
                  **kwargs) -> MultimodalModule:
    """A fusion (or one-branch) model over `dm`; the text branch is the data's own text model."""
    from mmtab import ConcatFusion, TextEncoder

    net = FusionModel(n_outputs=dm.n_outputs,
                      tabular=TabularMLP(**dm.tabular_dims, layers=[16]) if tabular else None,
                      text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots) if text else None,
                      fusion=fusion or ConcatFusion, head_layers=[16])
    return MultimodalModule(net, task=dm.fitted_task, **{"lr": 3e-3, **kwargs})


def text_decides_datamodule(frame: pd.DataFrame, text_model: str) -> TabularTextDataModule:
    """The reviews with a random target written into the review text ("love it perfect" or "returned it
    poor fabric") and the table's categories shuffled: the text decides, the table is noise."""
    rng = np.random.default_rng(0)
    frame = frame.copy()
    frame["Recommended IND"] = rng.integers(0, 2, len(frame))
    frame["Review Text"] = np.where(frame["Recommended IND"] == 1, "love it perfect", "returned it poor fabric")
    frame[REVIEW_CAT] = frame[REVIEW_CAT].sample(frac=1, random_state=1).to_numpy()
    return TabularTextDataModule.from_frame(frame, target="Recommended IND", categorical_cols=REVIEW_CAT,
                                            continuous_cols=REVIEW_CONT, text_cols=REVIEW_TEXT, text_model=text_model,
                                            batch_size=64, seed=0, max_length=32)
