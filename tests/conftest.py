"""Shared fixtures: a tiny random BERT and generated sentiment data, all offline."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun", "warm", "bright"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "cold", "weak", "grim"]
NEUTRAL = ["the", "a", "film", "movie", "plot", "story", "was", "is", "very", "quite", "and"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never reach the Hub; keep datasets' cache inside the test's temp folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "hf-datasets"))
    monkeypatch.delenv("TUNER_STORAGE", raising=False)


def write_tiny_bert(folder: Path, words: list[str]) -> Path:
    """A randomly initialised 2-layer BERT with a word-level vocabulary, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    # The same weights in every session and every xdist worker, so trial outcomes repeat.
    torch.manual_seed(0)

    folder.mkdir(parents=True, exist_ok=True)
    pieces = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    tokens = SPECIAL + sorted(set(words) - set(pieces)) + pieces
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    tokenizer.model_max_length = 64
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentiment_rows(count: int, seed: int, string_labels: bool = True) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        positive = rng.random() < 0.5
        cue = rng.choice(POSITIVE if positive else NEGATIVE)
        words = rng.sample(NEUTRAL, 4) + [cue]
        rng.shuffle(words)
        label: object = (
            ("positive" if positive else "negative") if string_labels else int(positive)
        )
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), POSITIVE + NEGATIVE + NEUTRAL)


@pytest.fixture
def sentiment_data(tmp_path: Path) -> tuple[Path, Path]:
    train = write_jsonl(tmp_path / "data" / "train.jsonl", sentiment_rows(48, seed=1))
    validation = write_jsonl(tmp_path / "data" / "dev.jsonl", sentiment_rows(24, seed=2))
    return train, validation


FAKE_TASK = """
from tuner.task import Task


class FakeTask(Task):
    name = "{name}"
    default_model = "none"
    metric = "score"

    def load_splits(self, data):
        raise NotImplementedError

    def preprocess(self, splits, tokenizer):
        raise NotImplementedError

    def build_model(self, model_name):
        raise NotImplementedError

    def compute_metrics(self, eval_pred):
        return {{"score": 0.0}}
"""


@pytest.fixture
def fake_plugin_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Register task plugins through real entry-point metadata on a temporary sys.path entry.

    monkeypatch undoes the sys.path change; the imported modules are dropped afterwards.
    """
    import importlib
    import sys

    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    # Worker processes started by the test find the plugins too.
    paths = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    made: list[str] = []

    def make(name: str, class_name_attr: str | None = None, source: str | None = None) -> str:
        module = f"tuner_fake_{name}"
        package = root / module
        package.mkdir()
        text = source if source is not None else FAKE_TASK
        (package / "__init__.py").write_text(text.format(name=class_name_attr or name))
        info = root / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[tuner.tasks]\n{name} = {module}:FakeTask\n")
        importlib.invalidate_caches()
        made.append(module)
        return name

    yield make
    for module in made:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


@pytest.fixture
def fake_plugin(fake_plugin_factory) -> str:  # type: ignore[no-untyped-def]
    return fake_plugin_factory("fake")
