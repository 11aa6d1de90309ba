"""Sentiment analysis (sequence classification) for tuner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.task import DataSpec, Splits, Task, load_split, require_columns, source_name

if TYPE_CHECKING:
    import datasets
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["SentimentTask"]


class SentimentTask(Task):
    """Classify a text (or a text pair) into one of the labels found in the data."""

    name = "sentiment"
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    metric = "accuracy"
    direction = "maximize"
    pipeline_task = "text-classification"
    option_defaults = {
        "text_column": "text",
        "text_pair_column": None,
        "label_column": "label",
        "labels": None,
        "max_length": 256,
    }

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.labels: list[str] = []

    def load_splits(self, data: DataSpec) -> Splits:
        columns = {"text_column": self.options["text_column"]}
        if self.options["text_pair_column"]:
            columns["text_pair_column"] = self.options["text_pair_column"]
        columns["label_column"] = self.options["label_column"]
        splits = {}
        for split in ("train", "validation"):
            rows = load_split(data, split)
            require_columns(rows, columns, source_name(data, split))
            splits[split] = rows
        self.labels = self._label_names(splits, data)
        return splits

    def _label_names(self, splits: Splits, data: DataSpec) -> list[str]:
        column = self.options["label_column"]
        configured = self.options["labels"]
        if configured is not None and (
            not isinstance(configured, list) or not all(isinstance(x, str) for x in configured)
        ):
            raise TunerError("[data] labels must be a list of label names (strings)")
        train_values = splits["train"][column]
        if all(isinstance(v, bool) or isinstance(v, int) for v in train_values):
            top = max(max(train_values), max(_ints(splits["validation"], column, data)))
            names = configured or [str(i) for i in range(top + 1)]
            for split in ("train", "validation"):
                for row, value in enumerate(splits[split][column], start=1):
                    if not 0 <= int(value) < len(names):
                        raise TunerError(
                            f"{source_name(data, split)}: row {row}: {column} {value} is not "
                            f"a label id 0..{len(names) - 1}; fix the row or [data] labels"
                        )
            return list(names)
        names = configured or sorted({str(v) for v in train_values})
        known = set(names)
        for split in ("train", "validation"):
            for row, value in enumerate(splits[split][column], start=1):
                if str(value) not in known:
                    raise TunerError(
                        f"{source_name(data, split)}: row {row}: {column} '{value}' is not one "
                        f"of the labels ({', '.join(names)}); fix the row or [data] labels"
                    )
        return list(names)

    def preprocess(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Splits:
        text = self.options["text_column"]
        pair = self.options["text_pair_column"]
        label = self.options["label_column"]
        label2id = {name: i for i, name in enumerate(self.labels)}
        max_length = min(int(self.options["max_length"]), tokenizer.model_max_length)

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            texts = [str(t) for t in batch[text]]
            pairs = [str(t) for t in batch[pair]] if pair else None
            encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
            encoded["labels"] = [
                v if isinstance(v, int) else label2id[str(v)] for v in batch[label]
            ]
            return dict(encoded)

        return {
            split: rows.map(encode, batched=True, remove_columns=rows.column_names)
            for split, rows in splits.items()
        }

    def build_model(self, model_name: str) -> PreTrainedModel:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            model_name,
            num_labels=len(self.labels),
            id2label=dict(enumerate(self.labels)),
            label2id={name: i for i, name in enumerate(self.labels)},
        )

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        import numpy as np

        logits = eval_pred.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        predicted = np.asarray(logits).argmax(axis=-1)
        gold = np.asarray(eval_pred.label_ids)
        return {
            "accuracy": float((predicted == gold).mean()),
            "macro_f1": _macro_f1(predicted, gold),
        }


def _ints(rows: datasets.Dataset, column: str, data: DataSpec) -> list[int]:
    values = rows[column]
    for row, value in enumerate(values, start=1):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TunerError(
                f"{source_name(data, 'validation')}: row {row}: {column} '{value}' is not an "
                "integer label id like those of the training data"
            )
    return values


def _macro_f1(predicted: Any, gold: Any) -> float:
    import numpy as np

    scores = []
    for label in np.union1d(predicted, gold):
        tp = float(((predicted == label) & (gold == label)).sum())
        fp = float(((predicted == label) & (gold != label)).sum())
        fn = float(((predicted != label) & (gold == label)).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0
