"""Fixtures for the task plugin tests: tiny local tokenizers and data files, no downloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def make_tokenizer(tmp_path: Path) -> Callable[[Iterable[str]], PreTrainedTokenizerBase]:
    """Build a WordPiece tokenizer (lower-casing) from the given vocabulary pieces."""
    # transformers 5 has only fast tokenizers; BertTokenizerFast is an alias of this one.
    from transformers import BertTokenizer

    def make(pieces: Iterable[str]) -> PreTrainedTokenizerBase:
        folder = tmp_path / "tokenizer"
        folder.mkdir(exist_ok=True)
        vocab = [*SPECIAL_TOKENS, *dict.fromkeys(pieces)]
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        return BertTokenizer.from_pretrained(str(folder))

    return make


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, Iterable[Mapping[str, Any]]], Path]:
    """Write rows as JSON Lines under tmp_path and return the file's path."""

    def write(name: str, rows: Iterable[Mapping[str, Any]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def save_tiny_bert(tmp_path: Path) -> Callable[[PreTrainedTokenizerBase], Path]:
    """Save a randomly initialised two-layer BERT and its tokenizer; return the folder."""

    def save(tokenizer: PreTrainedTokenizerBase) -> Path:
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        folder = tmp_path / "tiny-bert"
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
        )
        BertModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return save
