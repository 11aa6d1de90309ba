"""QaTask: data checks, context windows, span post-processing and the SQuAD v1.1 metric."""

from __future__ import annotations

import random
import re
import string
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytest

from tuner.errors import TunerError
from tuner.task import DataSpec, Splits
from tuner_qa import QaTask, answer_tokens
from tuner_qa.metrics import exact_match, normalize_answer, squad_scores, token_f1
from tuner_qa.postprocess import best_answers

if TYPE_CHECKING:
    from transformers import EvalPrediction, PreTrainedTokenizerBase

MakeTokenizer = Callable[[Iterable[str]], "PreTrainedTokenizerBase"]
WriteJsonl = Callable[[str, Iterable[Mapping[str, Any]]], Path]

FILLER = [f"w{i}" for i in range(40)]
PIECES = [
    *"where is it ? what the capital of france paris ##ian .".split(),
    *FILLER,
]
LONG_CONTEXT = " ".join(FILLER[:14]) + " Parisian " + " ".join(FILLER[14:28])
SHORT_CONTEXT = "the capital of france is paris ."
ROWS = [
    {
        "id": "long",
        "context": LONG_CONTEXT,
        "question": "  Where is it?",
        "answers": {"text": ["Parisian"], "answer_start": [LONG_CONTEXT.index("Parisian")]},
    },
    {
        "id": "short",
        "context": SHORT_CONTEXT,
        "question": "What is the capital of France?",
        "answers": {"text": ["paris", "paris ."], "answer_start": [25, 25]},
    },
]
MODEL_COLUMNS = {
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "start_positions",
    "end_positions",
}


def load(
    write_jsonl: WriteJsonl,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]] | None = None,
    **options: Any,
) -> tuple[QaTask, Splits]:
    task = QaTask(options)
    spec = DataSpec(
        train=str(write_jsonl("train.jsonl", train)),
        validation=str(write_jsonl("dev.jsonl", validation if validation is not None else train)),
        options=task.options,
    )
    return task, task.load_splits(spec)


# --- windows --------------------------------------------------------------------------------


def test_long_context_is_windowed_and_answer_found_in_second_window(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    tokenizer = make_tokenizer(PIECES)
    task, splits = load(write_jsonl, ROWS, max_length=20, doc_stride=4)
    encoded = task.preprocess(splits, tokenizer)
    train = encoded["train"]

    windows = task.eval_feature_examples.count(0)
    assert windows == 3
    assert task.eval_feature_examples == [0, 0, 0, 1]
    assert len(train) == len(encoded["validation"]) == 4
    assert set(train.column_names) == set(encoded["validation"].column_names) == MODEL_COLUMNS
    assert all(len(ids) <= 20 for ids in train["input_ids"])

    positions = list(zip(train["start_positions"], train["end_positions"], strict=True))
    assert positions[0] == (0, 0)
    assert positions[2] == (0, 0)
    start, end = positions[1]
    assert start > 0
    assert tokenizer.decode(train[1]["input_ids"][start : end + 1]) == "parisian"
    offsets = task.eval_feature_offsets[1]
    first, last = offsets[start], offsets[end]
    assert first is not None and last is not None
    assert LONG_CONTEXT[first[0] : last[1]] == "Parisian"
    short_start, short_end = positions[3]
    assert tokenizer.decode(train[3]["input_ids"][short_start : short_end + 1]) == "paris"

    # Validation windows carry the same targets, so the Trainer can report a loss.
    assert encoded["validation"]["start_positions"] == train["start_positions"]
    assert encoded["validation"]["end_positions"] == train["end_positions"]


def test_window_offsets_cover_only_the_context_and_overlap_by_the_stride(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    task, splits = load(write_jsonl, ROWS, max_length=20, doc_stride=4)
    task.preprocess(splits, make_tokenizer(PIECES))
    windows = task.eval_feature_offsets[:3]
    # [CLS] where is it ? [SEP] context... [SEP]
    for window in windows:
        assert window[:6] == [None] * 6
        assert window[-1] is None
        assert all(span is not None for span in window[6:-1])
    spans = [[span for span in window if span is not None] for window in windows]
    assert spans[0][-4:] == spans[1][:4]
    assert spans[1][-4:] == spans[2][:4]
    assert spans[0][0] == (0, 2)
    assert spans[2][-1] == (len(LONG_CONTEXT) - 3, len(LONG_CONTEXT))


def test_answer_tokens() -> None:
    offsets = [None, None, (0, 3), (4, 7), (7, 9), (10, 12), None]
    assert answer_tokens(offsets, 4, 9) == (3, 4)
    assert answer_tokens(offsets, 10, 12) == (5, 5)  # the last context token
    assert answer_tokens(offsets, 0, 3) == (2, 2)
    assert answer_tokens(offsets, 8, 12) == (4, 5)  # starts inside a token
    assert answer_tokens(offsets, 11, 14) == (0, 0)  # runs past the window
    assert answer_tokens([None, (20, 25), None], 0, 3) == (0, 0)  # before the window


def test_left_padding_tokenizer_puts_the_context_first(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    tokenizer = make_tokenizer(PIECES)
    tokenizer.padding_side = "left"
    task, splits = load(write_jsonl, ROWS, max_length=20, doc_stride=4)
    train = task.preprocess(splits, tokenizer)["train"]
    answers = [
        tokenizer.decode(row["input_ids"][row["start_positions"] : row["end_positions"] + 1])
        for row in train
        if row["start_positions"] > 0
    ]
    assert answers == ["parisian", "paris"]
    assert task.eval_feature_offsets[0][1] == (0, 2)


# --- post-processing ------------------------------------------------------------------------


def test_best_span_is_picked_across_windows() -> None:
    contexts = ["alpha beta gamma delta", "one two"]
    # Question 0 has two windows; question 1 has one window holding no context token.
    feature_examples = [0, 0, 1]
    feature_offsets: list[list[tuple[int, int] | None]] = [
        [None, None, (0, 5), (6, 10), None],
        [None, None, (6, 10), (11, 16), (17, 22), None],
        [None, None, None],
    ]
    pad = -100.0
    start_logits = np.array(
        [
            [0.0, 50.0, 1.0, 0.0, 0.0, pad],  # the best start is a question token: skipped
            [0.0, 0.0, 0.0, 9.0, 5.0, 0.0],
            [9.0, 9.0, 9.0, pad, pad, pad],
        ]
    )
    end_logits = np.array(
        [
            [0.0, 50.0, 0.0, 1.0, 0.0, pad],
            [0.0, 0.0, 8.0, 0.0, 4.5, 9.0],  # index 5 is [SEP]: skipped
            [9.0, 9.0, 9.0, pad, pad, pad],
        ]
    )
    # "gamma" to "beta" (9 + 8) is backwards; "gamma delta" scores 9 + 4.5.
    answers = best_answers(start_logits, end_logits, feature_examples, feature_offsets, contexts)
    assert answers == ["gamma delta", ""]
    # With one-token answers, "delta" alone (5 + 4.5) wins over "gamma" (9 + 0).
    short = best_answers(
        start_logits, end_logits, feature_examples, feature_offsets, contexts, max_answer_length=1
    )
    assert short == ["delta", ""]
    # With only the best start and end of each window, the second window has no valid span.
    one = best_answers(
        start_logits, end_logits, feature_examples, feature_offsets, contexts, n_best=1
    )
    assert one == ["alpha beta", ""]


def test_best_answers_rejects_misaligned_predictions() -> None:
    with pytest.raises(ValueError, match="do not match"):
        best_answers(np.zeros((2, 3)), np.zeros((2, 3)), [0], [[None, (0, 1), None]], ["a"])


def eval_prediction(starts: np.ndarray, ends: np.ndarray) -> EvalPrediction:
    from transformers import EvalPrediction

    # The Trainer passes a tuple of arrays and no labels here; the annotation is narrower.
    return EvalPrediction(predictions=cast(Any, (starts, ends)), label_ids=cast(Any, None))


def oracle_logits(features: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits peaking at each window's target, padded with -100 as the Trainer pads them."""
    starts = np.full((len(features), width), -100.0)
    ends = np.full((len(features), width), -100.0)
    for i, row in enumerate(features):
        starts[i, : len(row["input_ids"])] = 0.0
        ends[i, : len(row["input_ids"])] = 0.0
        starts[i, row["start_positions"]] = 10.0
        ends[i, row["end_positions"]] = 10.0
    return starts, ends


def test_compute_metrics_over_windows(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    task, splits = load(write_jsonl, ROWS, max_length=20, doc_stride=4)
    validation = task.preprocess(splits, make_tokenizer(PIECES))["validation"]
    starts, ends = oracle_logits(validation, 24)
    scores = task.compute_metrics(eval_prediction(starts, ends))
    assert scores == {"exact_match": 1.0, "f1": 1.0}

    # Point the short question at "is paris": EM 0, F1 2 * (1/2 * 1) / (1/2 + 1) = 2/3.
    ends[3, :] = 0.0
    starts[3, :] = 0.0
    # [CLS], 7 question tokens, [SEP], then "the capital of france is paris ."
    starts[3, 13] = 10.0
    ends[3, 14] = 10.0
    scores = task.compute_metrics(eval_prediction(starts, ends))
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((1 + 2 / 3) / 2)


# --- metric ---------------------------------------------------------------------------------


class OfficialSquad:
    """The SQuAD v1.1 ``evaluate-v1.1.py`` scoring, written out independently."""

    @staticmethod
    def normalize_answer(s: str) -> str:
        def remove_articles(text: str) -> str:
            return re.sub(r"\b(a|an|the)\b", " ", text)

        def white_space_fix(text: str) -> str:
            return " ".join(text.split())

        def remove_punc(text: str) -> str:
            exclude = set(string.punctuation)
            return "".join(ch for ch in text if ch not in exclude)

        return white_space_fix(remove_articles(remove_punc(s.lower())))

    @classmethod
    def f1_score(cls, prediction: str, ground_truth: str) -> float:
        prediction_tokens = cls.normalize_answer(prediction).split()
        ground_truth_tokens = cls.normalize_answer(ground_truth).split()
        common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    @classmethod
    def exact_match_score(cls, prediction: str, ground_truth: str) -> bool:
        return cls.normalize_answer(prediction) == cls.normalize_answer(ground_truth)

    @staticmethod
    def metric_max_over_ground_truths(
        metric_fn: Callable[[str, str], float], prediction: str, ground_truths: list[str]
    ) -> float:
        return max(metric_fn(prediction, gt) for gt in ground_truths)

    @classmethod
    def evaluate(cls, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        f1 = exact = 0.0
        for prediction, ground_truths in zip(predictions, references, strict=True):
            exact += cls.metric_max_over_ground_truths(
                cls.exact_match_score, prediction, ground_truths
            )
            f1 += cls.metric_max_over_ground_truths(cls.f1_score, prediction, ground_truths)
        return {
            "exact_match": 100.0 * exact / len(predictions),
            "f1": 100.0 * f1 / len(predictions),
        }


SQUAD_CASES: list[tuple[str, list[str]]] = [
    ("Denver Broncos", ["Denver Broncos", "Denver Broncos", "Broncos"]),
    ("Broncos", ["Denver Broncos", "the Broncos"]),
    ("the Eiffel Tower", ["Eiffel Tower"]),
    ("An apple", ["apple", "a pear"]),
    ("Eiffel tower!", ["The Eiffel Tower."]),
    ("Saint-Bernadette Soubirous", ["Saint Bernadette Soubirous"]),
    ("", ["something"]),
    ("", [""]),
    ("the", ["a"]),
    ("theatre the", ["the atre"]),
    ("New  York\tCity", ["new york city"]),
    ("red red blue", ["blue red", "red"]),
    ("café—bar", ["café bar"]),
    ("1,000 people", ["1000 people", "a thousand people"]),
    ("in 1858", ["1858"]),
]


@pytest.mark.parametrize(("prediction", "references"), SQUAD_CASES)
def test_metric_matches_official_squad_per_case(prediction: str, references: list[str]) -> None:
    official = OfficialSquad.evaluate([prediction], [references])
    ours = squad_scores([prediction], [references])
    assert ours["exact_match"] == pytest.approx(official["exact_match"] / 100)
    assert ours["f1"] == pytest.approx(official["f1"] / 100)
    assert normalize_answer(prediction) == OfficialSquad.normalize_answer(prediction)


def test_metric_matches_official_squad_on_all_cases_and_random_strings() -> None:
    predictions = [case[0] for case in SQUAD_CASES]
    references = [case[1] for case in SQUAD_CASES]
    rng = random.Random(7)
    words = ["a", "an", "the", "The", "cat", "Cat.", "dog,", "(dog)", "the-cat", "an'", "  ", "x"]
    for _ in range(300):
        predictions.append(" ".join(rng.choices(words, k=rng.randint(0, 5))))
        references.append(
            [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        )
    official = OfficialSquad.evaluate(predictions, references)
    ours = squad_scores(predictions, references)
    assert ours["exact_match"] == pytest.approx(official["exact_match"] / 100)
    assert ours["f1"] == pytest.approx(official["f1"] / 100)
    for prediction, refs in zip(predictions, references, strict=True):
        for ref in refs:
            assert token_f1(prediction, ref) == pytest.approx(
                OfficialSquad.f1_score(prediction, ref)
            )
            assert exact_match(prediction, ref) == float(
                OfficialSquad.exact_match_score(prediction, ref)
            )


def test_metric_values_by_hand() -> None:
    assert squad_scores(["the Broncos", ""], [["Denver Broncos"], ["x"]]) == {
        "exact_match": 0.0,
        "f1": pytest.approx(2 * 1 * 0.5 / 1.5 / 2),
    }
    assert squad_scores(["Broncos!"], [["Denver Broncos", "the broncos"]]) == {
        "exact_match": 1.0,
        "f1": 1.0,
    }


# --- bad input ------------------------------------------------------------------------------


def row(**changes: Any) -> dict[str, Any]:
    return {**ROWS[1], **changes}


def test_missing_column(write_jsonl: WriteJsonl) -> None:
    rows = [{k: v for k, v in ROWS[1].items() if k != "question"}]
    with pytest.raises(TunerError, match=r"train\.jsonl: no column 'question'.*question_column"):
        load(write_jsonl, rows)


def test_missing_field_in_one_row(write_jsonl: WriteJsonl) -> None:
    rows = [ROWS[0], row(question=None)]
    with pytest.raises(TunerError, match=r"train\.jsonl: row 2: question is missing"):
        load(write_jsonl, rows)


def test_answers_without_answer_start(write_jsonl: WriteJsonl) -> None:
    rows = [ROWS[0], row(answers={"text": ["paris"]})]
    with pytest.raises(TunerError, match=r"dev\.jsonl: row 2: answers has no answer_start list"):
        load(write_jsonl, ROWS, rows)


def test_answers_without_text(write_jsonl: WriteJsonl) -> None:
    rows = [row(answers={"answer_start": [25]}), ROWS[0]]
    with pytest.raises(TunerError, match=r"train\.jsonl: row 1: answers has no text list"):
        load(write_jsonl, rows)


def test_answer_start_not_at_the_text(write_jsonl: WriteJsonl, tmp_path: Path) -> None:
    rows = [ROWS[0], ROWS[1], row(answers={"text": ["paris", "paris"], "answer_start": [25, 3]})]
    with pytest.raises(TunerError) as caught:
        load(write_jsonl, ROWS, rows)
    assert str(caught.value) == (
        f"{tmp_path / 'dev.jsonl'}: row 3: answers.answer_start[1] is 3 but the context there "
        "reads ' capi', not the answer 'paris'; give the 0-based character offset of the "
        "answer in the context"
    )


def test_no_answer(write_jsonl: WriteJsonl) -> None:
    rows = [row(answers={"text": [], "answer_start": []})]
    with pytest.raises(TunerError, match=r"row 1: answers has no answer"):
        load(write_jsonl, rows)


def test_question_too_long_for_the_windows(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    task, splits = load(write_jsonl, ROWS, max_length=12, doc_stride=4)
    with pytest.raises(TunerError, match=r"train\.jsonl: row 2: question is 7 tokens long"):
        task.preprocess(splits, make_tokenizer(PIECES))


def test_bad_options() -> None:
    with pytest.raises(TunerError, match=r"doc_stride \(384\) must be smaller than max_length"):
        QaTask({"doc_stride": 384})
    with pytest.raises(TunerError, match="n_best must be an integer of at least 1"):
        QaTask({"n_best": 0})
    with pytest.raises(TunerError, match="not an option of task 'qa'"):
        QaTask({"stride": 3})


# --- model and packaging --------------------------------------------------------------------


def test_tiny_model_trains_and_evaluates_with_a_loss(
    write_jsonl: WriteJsonl,
    make_tokenizer: MakeTokenizer,
    save_tiny_bert: Callable[[PreTrainedTokenizerBase], Path],
    tmp_path: Path,
) -> None:
    from transformers import Trainer, TrainingArguments

    tokenizer = make_tokenizer(PIECES)
    task, splits = load(write_jsonl, ROWS * 3, max_length=20, doc_stride=4)
    encoded = task.preprocess(splits, tokenizer)
    trainer = Trainer(
        model=task.build_model(str(save_tiny_bert(tokenizer))),
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=4,
            per_device_eval_batch_size=3,
            num_train_epochs=1,
            report_to=[],
            use_cpu=True,
            seed=0,
        ),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        data_collator=task.data_collator(tokenizer),
        compute_metrics=task.compute_metrics,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_f1", "eval_exact_match"} <= set(metrics)
    assert 0.0 <= metrics["eval_exact_match"] <= metrics["eval_f1"] <= 1.0


def test_entry_point_and_cheap_import() -> None:
    from importlib.metadata import entry_points

    assert entry_points(group="tuner.tasks")["qa"].load() is QaTask
    code = (
        "import sys, tuner_qa; "
        "heavy = {'torch', 'transformers', 'datasets', 'numpy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
