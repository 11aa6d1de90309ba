"""Named-entity recognition (token classification with BIO tags) for tuner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.task import DataSpec, Splits, Task, load_split, require_columns, source_name
from tuner_ner.metrics import entity_type, score_entities

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["NerTask"]

IGNORE = -100  # the label id that the loss and the metric skip


class NerTask(Task):
    """Tag each word of a pre-split sentence with a BIO entity tag.

    The metric is entity-level micro F1 as seqeval computes it in default mode, over words:
    the validation split always labels only the first sub-token of each word, whatever
    ``label_all_subtokens`` says, so scores do not depend on how words are split.
    """

    name = "ner"
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    metric = "f1"
    direction = "maximize"
    pipeline_task = "token-classification"
    option_defaults = {
        "tokens_column": "tokens",
        "tags_column": "ner_tags",
        "labels": None,
        "label_all_subtokens": False,
        "max_length": 256,
    }

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        for key in ("tokens_column", "tags_column"):
            if not isinstance(self.options[key], str) or not self.options[key]:
                raise TunerError(f"[data] {key} must be a column name (a string)")
        labels = self.options["labels"]
        if labels is not None and not (
            isinstance(labels, str)
            or (isinstance(labels, list) and all(isinstance(x, str) for x in labels))
        ):
            raise TunerError(
                "[data] labels must be a list of tag names or the path of a file with one "
                "tag per line"
            )
        if not isinstance(self.options["label_all_subtokens"], bool):
            raise TunerError("[data] label_all_subtokens must be true or false")
        max_length = self.options["max_length"]
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
            raise TunerError(
                f"[data] max_length must be an integer of at least 3, got {max_length!r}"
            )
        self.labels: list[str] = []

    def load_splits(self, data: DataSpec) -> Splits:
        columns = {
            "tokens_column": self.options["tokens_column"],
            "tags_column": self.options["tags_column"],
        }
        splits = {}
        for split in ("train", "validation"):
            rows = load_split(data, split)
            require_columns(rows, columns, source_name(data, split))
            splits[split] = rows
        configured = _configured_labels(self.options["labels"])
        seen: set[str] = set()
        for split, rows in splits.items():
            seen |= self._check_rows(
                rows[columns["tokens_column"]],
                rows[columns["tags_column"]],
                configured,
                source_name(data, split),
            )
        if configured is not None:
            self.labels = configured
        else:
            # "O" first, so that id 0 is "no entity" as in most NER data sets.
            self.labels = ["O", *sorted(seen - {"O"})] if "O" in seen else sorted(seen)
        return splits

    def _check_rows(
        self,
        tokens: Sequence[Any],
        tags: Sequence[Any],
        labels: list[str] | None,
        source: str,
    ) -> set[str]:
        """Check every row of a split; return the string tags seen."""
        tokens_column = self.options["tokens_column"]
        tags_column = self.options["tags_column"]
        known = set(labels or ())
        seen: set[str] = set()
        for row, (words, row_tags) in enumerate(zip(tokens, tags, strict=True), start=1):
            where = f"{source}: row {row}"
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise TunerError(f"{where}: {tokens_column} must be a list of words (strings)")
            if not isinstance(row_tags, list):
                raise TunerError(f"{where}: {tags_column} must be a list of tags")
            if len(row_tags) != len(words):
                raise TunerError(
                    f"{where}: {tags_column} has {len(row_tags)} tags for {len(words)} tokens; "
                    "give one tag per token"
                )
            for tag in row_tags:
                if isinstance(tag, str):
                    if not tag:
                        raise TunerError(f"{where}: {tags_column} has an empty tag; use 'O'")
                    if labels is not None and tag not in known:
                        raise TunerError(
                            f"{where}: {tags_column} '{tag}' is not one of the labels "
                            f"({', '.join(labels)}); fix the row or [data] labels"
                        )
                    seen.add(tag)
                elif isinstance(tag, int) and not isinstance(tag, bool):
                    if labels is None:
                        raise TunerError(
                            f"{where}: {tags_column} holds tag ids ({tag}) but no tag names; "
                            "set [data] labels to the list of tags, or to a file with one tag "
                            "per line in id order"
                        )
                    if not 0 <= tag < len(labels):
                        raise TunerError(
                            f"{where}: {tags_column} {tag} is not a tag id 0..{len(labels) - 1}"
                            "; fix the row or [data] labels"
                        )
                else:
                    raise TunerError(
                        f"{where}: {tags_column} {tag!r} is neither a tag name nor a tag id"
                    )
        return seen

    def preprocess(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Splits:
        if not tokenizer.is_fast:
            raise TunerError(
                f"task 'ner' needs a fast tokenizer (one with word ids); "
                f"{type(tokenizer).__name__} is not"
            )
        tokens = self.options["tokens_column"]
        tags = self.options["tags_column"]
        label2id = {name: i for i, name in enumerate(self.labels)}
        continuation = _continuation_ids(self.labels)
        max_length = min(int(self.options["max_length"]), tokenizer.model_max_length)

        def encoder(all_subtokens: bool) -> Any:
            def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
                encoded = tokenizer(
                    batch[tokens], is_split_into_words=True, truncation=True, max_length=max_length
                )
                encoded["labels"] = [
                    align_labels(
                        encoded.word_ids(i),
                        [t if isinstance(t, int) else label2id[t] for t in row_tags],
                        continuation if all_subtokens else None,
                    )
                    for i, row_tags in enumerate(batch[tags])
                ]
                return dict(encoded)

            return encode

        return {
            split: rows.map(
                encoder(split == "train" and self.options["label_all_subtokens"]),
                batched=True,
                remove_columns=rows.column_names,
            )
            for split, rows in splits.items()
        }

    def data_collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def build_model(self, model_name: str) -> PreTrainedModel:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(
            model_name,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
            # A checkpoint fine-tuned on another tag set gets a fresh head instead of failing.
            ignore_mismatched_sizes=True,
        )

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """Entity-level micro precision, recall and F1, token accuracy and F1 per type.

        Positions labelled -100 (special tokens, continuation sub-tokens, padding) are
        skipped, so the scores are over words.
        """
        import numpy as np

        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = np.asarray(logits).argmax(axis=-1)
        gold_ids = np.asarray(eval_pred.label_ids)
        gold: list[list[str]] = []
        guessed: list[list[str]] = []
        for pred_row, gold_row in zip(predicted, gold_ids, strict=True):
            keep = gold_row != IGNORE
            gold.append([self.labels[i] for i in gold_row[keep]])
            guessed.append([self.labels[i] for i in pred_row[keep]])
        total = sum(len(row) for row in gold)
        correct = sum(
            g == p
            for gold_row, pred_row in zip(gold, guessed, strict=True)
            for g, p in zip(gold_row, pred_row, strict=True)
        )
        types = {entity_type(name) for name in self.labels if name != "O"}
        scores = score_entities(gold, guessed, types)
        scores["accuracy"] = correct / total if total else 0.0
        return scores


def align_labels(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    continuation: Mapping[int, int] | None,
) -> list[int]:
    """Give each sub-token a label id: the word's label on its first sub-token.

    Args:
        word_ids: The word index of each sub-token, ``None`` for special tokens.
        word_labels: The label id of each word.
        continuation: ``None`` to label only the first sub-token of a word (the rest get -100);
            otherwise the id that later sub-tokens get for each id (``B-X`` to ``I-X``).

    Returns:
        One label id per sub-token, -100 for those the loss must skip.
    """
    labels = []
    previous = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_labels[word])
        elif continuation is None:
            labels.append(IGNORE)
        else:
            labels.append(continuation.get(word_labels[word], word_labels[word]))
        previous = word
    return labels


def _continuation_ids(labels: list[str]) -> dict[int, int]:
    index = {name: i for i, name in enumerate(labels)}
    return {
        i: index[f"I-{name[2:]}"]
        for i, name in enumerate(labels)
        if name.startswith("B-") and f"I-{name[2:]}" in index
    }


def _configured_labels(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        path = Path(value)
        if not path.is_file():
            raise TunerError(
                f"[data] labels: file {path} not found; give a file with one tag per line, "
                "or a list of tags"
            )
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        names = [name for name in names if name]
        where = str(path)
    else:
        names = list(value)
        where = "[data] labels"
    if not names:
        raise TunerError(f"{where}: no tags; list the tags, one per line, e.g. O, B-PER, I-PER")
    if not all(names):
        raise TunerError(f"{where}: a tag is empty; remove it")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TunerError(f"{where}: tag '{duplicates[0]}' appears twice; list each tag once")
    return names
