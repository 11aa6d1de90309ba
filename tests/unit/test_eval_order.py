"""Evaluation runs longest-first, yet ``compute_metrics`` sees predictions in row order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import EvalPrediction

from tests.conftest import NEUTRAL
from tuner.training import OrderedEvalTrainer, in_row_order, longest_first


def test_in_row_order_undoes_the_order_in_every_array() -> None:
    order = [2, 0, 3, 1]
    rows = np.array([[10, 11], [20, 21], [30, 31], [40, 41]])
    ran = rows[order]  # what evaluation returns when it runs rows in ``order``
    pred = EvalPrediction(predictions=(ran, ran[:, 0]), label_ids=ran[:, 1])
    back = in_row_order(pred, order)
    assert isinstance(back.predictions, tuple)
    np.testing.assert_array_equal(back.predictions[0], rows)
    np.testing.assert_array_equal(back.predictions[1], rows[:, 0])
    np.testing.assert_array_equal(back.label_ids, rows[:, 1])
    assert back.inputs is None and back.losses is None


def test_in_row_order_refuses_a_row_count_that_does_not_match() -> None:
    pred = EvalPrediction(predictions=np.zeros((3, 2)), label_ids=np.zeros(3))
    with pytest.raises(ValueError, match="3 rows for 4 validation rows"):
        in_row_order(pred, [0, 1, 2, 3])


def test_longest_first_keeps_row_order_among_equal_lengths() -> None:
    import datasets

    rows = datasets.Dataset.from_dict({"input_ids": [[1], [1, 2, 3], [1, 2], [4, 5, 6], [7]]})
    assert longest_first(rows) == [1, 3, 2, 0, 4]
    assert longest_first(datasets.Dataset.from_dict({"text": ["a"]})) is None


def tokenised_rows(
    tiny_model: Path, labels: list[int], seed: int, words: tuple[int, int]
) -> tuple[Any, Any]:
    """The tiny model's tokenizer, and one tokenised row per label: random words, a random
    number of them within ``words``."""
    import datasets
    from transformers import AutoTokenizer

    rng = random.Random(seed)
    texts = [" ".join(rng.choices(NEUTRAL, k=rng.randint(*words))) for _ in labels]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = datasets.Dataset.from_dict({"text": texts, "label": labels})
    rows = rows.map(lambda batch: tokenizer(batch["text"]), batched=True)
    return tokenizer, rows.remove_columns("text")


def ordered_trainer(
    tiny_model: Path, tokenizer: Any, rows: Any, num_labels: int, args: Any, **kwargs: Any
) -> OrderedEvalTrainer:
    """A fresh classifier on the tiny model, evaluating ``rows`` longest first."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=num_labels)
    return OrderedEvalTrainer(
        model=model,
        args=args,
        eval_dataset=rows,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        eval_order=longest_first(rows),
        **kwargs,
    )


def test_trainer_evaluates_longest_first_and_scores_rows_in_their_order(
    tiny_model: Path, tmp_path: Path
) -> None:
    # One label per row (row i has label i), texts of random lengths, and length-grouped
    # training batches, tuner's default: transformers would then evaluate in a shuffled
    # length-grouped order and pass compute_metrics the labels in that order.
    from transformers import TrainingArguments

    count = 24
    tokenizer, rows = tokenised_rows(tiny_model, list(range(count)), seed=3, words=(1, 20))
    order = longest_first(rows)
    assert order is not None and order != list(range(count))

    seen: list[Any] = []

    def compute_metrics(pred: EvalPrediction) -> dict[str, float]:
        seen.append(pred.label_ids)
        return {"rows": float(len(pred.label_ids))}

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=4,
        train_sampling_strategy="group_by_length",
        report_to="none",
        use_cpu=True,
    )
    trainer = ordered_trainer(
        tiny_model, tokenizer, rows, count, args, compute_metrics=compute_metrics
    )
    assert trainer.eval_order == order
    widths = [batch["input_ids"].shape[1] for batch in trainer.get_eval_dataloader()]
    assert widths == sorted(widths, reverse=True)  # longest first: little padding
    trainer.evaluate()
    np.testing.assert_array_equal(seen[0], np.arange(count))


def test_evaluations_do_not_change_what_training_learns(tiny_model: Path, tmp_path: Path) -> None:
    # Each evaluation iterates a DataLoader, which draws from torch's global generator; the
    # trainer puts it back, so dropout masks and so the trained weights do not depend on how
    # often the trial evaluates.
    import torch
    import transformers
    from transformers import TrainingArguments

    tokenizer, rows = tokenised_rows(tiny_model, [i % 2 for i in range(32)], seed=5, words=(2, 12))

    def train(evaluate_every: int | None) -> dict[str, torch.Tensor]:
        transformers.set_seed(0)
        args = TrainingArguments(
            output_dir=str(tmp_path / str(evaluate_every)),
            max_steps=8,
            per_device_train_batch_size=4,
            eval_strategy="steps" if evaluate_every else "no",
            eval_steps=evaluate_every,
            save_strategy="no",
            report_to="none",
            seed=0,
            use_cpu=True,
        )
        trainer = ordered_trainer(tiny_model, tokenizer, rows, 2, args, train_dataset=rows)
        trainer.train()
        return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    never, often = train(None), train(2)
    assert never.keys() == often.keys()
    for name in never:
        assert torch.equal(never[name], often[name]), name
