"""NerTask: data checks, sub-token label alignment, and the seqeval-compatible metric."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tuner.errors import TunerError
from tuner.task import DataSpec, Splits
from tuner_ner import NerTask, align_labels
from tuner_ner.metrics import entities, score_entities

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MakeTokenizer = Callable[[Iterable[str]], "PreTrainedTokenizerBase"]
WriteJsonl = Callable[[str, Iterable[Mapping[str, Any]]], Path]

PIECES = ["new", "##york", "is", "big", "john", "##smith", "##son", "lives", "in", "paris", "."]
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
O_, B_LOC, I_LOC, B_PER, I_PER = range(5)
X = -100

ROWS = [
    {"tokens": ["Newyork", "is", "big"], "ner_tags": ["B-LOC", "O", "O"]},
    {
        "tokens": ["Johnsmithson", "lives", "in", "Paris", "."],
        "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"],
    },
    {"tokens": ["big", "Newyork"], "ner_tags": ["B-LOC", "I-LOC"]},
]


def load(
    write_jsonl: WriteJsonl,
    train: list[dict[str, Any]],
    validation: list[dict[str, Any]] | None = None,
    **options: Any,
) -> tuple[NerTask, Splits]:
    task = NerTask(options)
    spec = DataSpec(
        train=str(write_jsonl("train.jsonl", train)),
        validation=str(write_jsonl("dev.jsonl", validation if validation is not None else train)),
        options=task.options,
    )
    return task, task.load_splits(spec)


# --- labels and alignment -------------------------------------------------------------------


def test_labels_from_data_put_o_first_then_sorted(write_jsonl: WriteJsonl) -> None:
    task, _ = load(write_jsonl, ROWS, [{"tokens": ["x"], "ner_tags": ["B-MISC"]}])
    assert task.labels == ["O", "B-LOC", "B-MISC", "B-PER", "I-LOC"]


def test_labels_file_keeps_its_order(write_jsonl: WriteJsonl, tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(reversed(LABELS)) + "\n\n", encoding="utf-8")
    task, _ = load(write_jsonl, ROWS, labels=str(labels_file))
    assert task.labels == list(reversed(LABELS))


def test_first_subtoken_gets_the_word_label(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    tokenizer = make_tokenizer(PIECES)
    task, splits = load(write_jsonl, ROWS, labels=LABELS)
    encoded = task.preprocess(splits, tokenizer)

    row = encoded["train"][1]
    tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert tokens == ["[CLS]", "john", "##smith", "##son", "lives", "in", "paris", ".", "[SEP]"]
    assert row["labels"] == [X, B_PER, X, X, O_, O_, B_LOC, O_, X]
    assert encoded["train"][0]["labels"] == [X, B_LOC, X, O_, O_, X]
    assert set(encoded["train"].column_names) == {
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "labels",
    }
    assert encoded["validation"]["labels"] == encoded["train"]["labels"]


def test_all_subtokens_turn_b_into_i_for_continuations_on_train_only(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    task, splits = load(write_jsonl, ROWS, labels=LABELS, label_all_subtokens=True)
    encoded = task.preprocess(splits, make_tokenizer(PIECES))

    assert encoded["train"][0]["labels"] == [X, B_LOC, I_LOC, O_, O_, X]
    assert encoded["train"][1]["labels"] == [X, B_PER, I_PER, I_PER, O_, O_, B_LOC, O_, X]
    assert encoded["train"][2]["labels"] == [X, B_LOC, I_LOC, I_LOC, X]
    # Validation stays word-level, so the metric does not depend on the option.
    assert encoded["validation"][1]["labels"] == [X, B_PER, X, X, O_, O_, B_LOC, O_, X]


def test_continuation_without_an_i_tag_keeps_the_b_tag() -> None:
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 0], {}) == [X, 1, 1, 0, X]
    assert align_labels(word_ids, [1, 0], None) == [X, 1, X, 0, X]
    assert align_labels(word_ids, [1, 0], {1: 2}) == [X, 1, 2, 0, X]


def test_truncation_keeps_special_tokens_unlabelled(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    task, splits = load(write_jsonl, ROWS, labels=LABELS, max_length=5)
    encoded = task.preprocess(splits, make_tokenizer(PIECES))
    row = encoded["train"][1]
    assert len(row["input_ids"]) == 5
    assert row["labels"] == [X, B_PER, X, X, X]


def test_integer_tags_with_label_names(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    rows = [{"tokens": ["Newyork", "is"], "ner_tags": [1, 0]}]
    task, splits = load(write_jsonl, rows, labels=LABELS, label_all_subtokens=True)
    encoded = task.preprocess(splits, make_tokenizer(PIECES))
    assert encoded["train"][0]["labels"] == [X, B_LOC, I_LOC, O_, X]


def test_collator_pads_labels_with_minus_100(
    write_jsonl: WriteJsonl, make_tokenizer: MakeTokenizer
) -> None:
    tokenizer = make_tokenizer(PIECES)
    task, splits = load(write_jsonl, ROWS, labels=LABELS)
    encoded = task.preprocess(splits, tokenizer)
    batch = task.data_collator(tokenizer)([encoded["train"][0], encoded["train"][1]])
    assert batch["labels"].tolist()[0] == [X, B_LOC, X, O_, O_, X, X, X, X]
    assert batch["input_ids"].shape == batch["labels"].shape


# --- bad input ------------------------------------------------------------------------------


def test_missing_column(write_jsonl: WriteJsonl) -> None:
    rows = [{"words": ["a"], "ner_tags": ["O"]}]
    with pytest.raises(TunerError, match=r"train\.jsonl: no column 'tokens'.*tokens_column"):
        load(write_jsonl, rows)


def test_missing_field_in_one_row(write_jsonl: WriteJsonl) -> None:
    rows = [ROWS[0], {"tokens": ["a"]}]
    with pytest.raises(TunerError, match=r"train\.jsonl: row 2: ner_tags must be a list"):
        load(write_jsonl, rows)


def test_length_mismatch_names_file_row_and_field(write_jsonl: WriteJsonl, tmp_path: Path) -> None:
    bad = [*ROWS, {"tokens": ["a", "b", "c"], "ner_tags": ["O", "O"]}]
    with pytest.raises(TunerError) as caught:
        load(write_jsonl, ROWS, bad)
    assert str(caught.value) == (
        f"{tmp_path / 'dev.jsonl'}: row 4: ner_tags has 2 tags for 3 tokens; "
        "give one tag per token"
    )


def test_unknown_tag(write_jsonl: WriteJsonl) -> None:
    bad = [ROWS[0], {"tokens": ["a"], "ner_tags": ["B-ORG"]}]
    with pytest.raises(TunerError, match=r"dev\.jsonl: row 2: ner_tags 'B-ORG' is not one of"):
        load(write_jsonl, ROWS, bad, labels=LABELS)


def test_tag_id_out_of_range(write_jsonl: WriteJsonl) -> None:
    rows = [{"tokens": ["a"], "ner_tags": [0]}, {"tokens": ["a", "b"], "ner_tags": [0, 5]}]
    with pytest.raises(
        TunerError, match=r"train\.jsonl: row 2: ner_tags 5 is not a tag id 0\.\.4"
    ):
        load(write_jsonl, rows, labels=LABELS)


def test_tag_ids_need_label_names(write_jsonl: WriteJsonl) -> None:
    rows = [{"tokens": ["a"], "ner_tags": [0]}]
    with pytest.raises(TunerError, match=r"train\.jsonl: row 1: ner_tags holds tag ids.*labels"):
        load(write_jsonl, rows)


def test_bad_options() -> None:
    with pytest.raises(TunerError, match="not an option of task 'ner'"):
        NerTask({"label_column": "x"})
    with pytest.raises(TunerError, match="label_all_subtokens must be true or false"):
        NerTask({"label_all_subtokens": "yes"})
    with pytest.raises(TunerError, match="labels must be a list"):
        NerTask({"labels": [1, 2]})


def test_missing_labels_file(write_jsonl: WriteJsonl, tmp_path: Path) -> None:
    with pytest.raises(TunerError, match=r"\[data\] labels: file .*nope\.txt not found"):
        load(write_jsonl, ROWS, labels=str(tmp_path / "nope.txt"))


# --- metric ---------------------------------------------------------------------------------

HAND_CASES: list[tuple[str, list[list[str]], list[list[str]]]] = [
    ("exact", [["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]),
    ("entity at sentence end", [["O", "B-PER", "I-PER"]], [["O", "B-PER", "I-PER"]]),
    ("cut short at sentence end", [["O", "B-PER", "I-PER"]], [["O", "B-PER", "O"]]),
    ("I- without B- starts an entity", [["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]),
    ("I- after another type", [["B-LOC", "I-PER", "O"]], [["B-LOC", "B-PER", "O"]]),
    ("I- after O mid-sentence", [["O", "I-LOC", "O"]], [["O", "B-LOC", "O"]]),
    ("empty predictions", [["B-PER", "O"], ["B-LOC"]], [["O", "O"], ["O"]]),
    ("type mismatch", [["B-PER", "I-PER"]], [["B-LOC", "I-LOC"]]),
    ("adjacent entities", [["B-PER", "B-PER", "I-PER"]], [["B-PER", "I-PER", "I-PER"]]),
    ("adjacent entities found", [["B-PER", "B-PER", "O"]], [["B-PER", "B-PER", "O"]]),
    ("all O", [["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    ("spurious entity", [["O", "O"]], [["O", "B-MISC"]]),
    (
        "no merge across sentences",
        [["O", "B-PER"], ["I-PER", "O"]],
        [["O", "B-PER"], ["B-PER", "O"]],
    ),
    ("empty sentence", [[], ["B-PER"]], [[], ["B-PER"]]),
    ("partial credit", [["B-PER", "O", "B-LOC", "I-LOC"]], [["B-PER", "O", "B-LOC", "O"]]),
]


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    scores = {
        "precision": float(precision_score(gold, predicted)),
        "recall": float(recall_score(gold, predicted)),
        "f1": float(f1_score(gold, predicted)),
    }
    types = sorted({e[0] for e in get_entities(gold)} | {e[0] for e in get_entities(predicted)})
    if types:
        per_type = precision_recall_fscore_support(gold, predicted, average=None)[2]
        scores.update({f"f1_{t}": float(f) for t, f in zip(types, per_type, strict=True)})
    return scores


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(("case", "gold", "predicted"), HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_metric_matches_seqeval_on_hand_cases(
    case: str, gold: list[list[str]], predicted: list[list[str]]
) -> None:
    assert score_entities(gold, predicted) == pytest.approx(seqeval_scores(gold, predicted))


def test_metric_values_by_hand() -> None:
    assert entities([["O", "B-PER", "I-PER"]]) == {("PER", 1, 2)}
    assert entities([["I-PER", "I-PER"], ["I-PER"]]) == {("PER", 0, 1), ("PER", 3, 3)}
    scores = score_entities([["B-PER", "O", "B-LOC", "I-LOC"]], [["B-PER", "O", "B-LOC", "O"]])
    assert scores == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "f1_LOC": 0.0,
        "f1_PER": 1.0,
    }
    assert score_entities([["O"]], [["O"]], types=["PER"]) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "f1_PER": 0.0,
    }


BIO_TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
ODD_TAGS = [*BIO_TAGS, "E-PER", "S-LOC", "B", "I", "B-two-part", "I-two-part"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("pool", [BIO_TAGS, ODD_TAGS], ids=["bio", "iobes-and-odd"])
def test_metric_matches_seqeval_on_random_sequences(pool: list[str]) -> None:
    rng = random.Random(1234)
    for _ in range(400):
        lengths = [rng.randint(0, 7) for _ in range(rng.randint(1, 4))]
        gold = [[rng.choice(pool) for _ in range(n)] for n in lengths]
        # Predictions mostly copy the gold tags, so there are partial and full matches.
        predicted = [[t if rng.random() < 0.6 else rng.choice(pool) for t in s] for s in gold]
        assert score_entities(gold, predicted) == pytest.approx(
            seqeval_scores(gold, predicted), abs=1e-12
        ), (gold, predicted)


@pytest.mark.filterwarnings("ignore")
def test_compute_metrics_skips_ignored_positions() -> None:
    from transformers import EvalPrediction

    task = NerTask({"labels": LABELS})
    task.labels = LABELS
    label_ids = np.array(
        [
            [X, B_PER, X, I_PER, O_, X, X],
            [X, O_, B_LOC, I_LOC, B_PER, O_, X],
        ]
    )
    predicted_ids = np.array(
        [
            [B_LOC, B_PER, B_LOC, I_PER, O_, B_LOC, B_LOC],
            [O_, O_, B_LOC, O_, B_PER, O_, I_LOC],
        ]
    )
    logits = np.eye(len(LABELS))[predicted_ids] * 5.0 - 1.0
    scores = task.compute_metrics(EvalPrediction(predictions=logits, label_ids=label_ids))

    gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC", "I-LOC", "B-PER", "O"]]
    guessed = [["B-PER", "I-PER", "O"], ["O", "B-LOC", "O", "B-PER", "O"]]
    assert scores["accuracy"] == pytest.approx(7 / 8)
    for key, value in seqeval_scores(gold, guessed).items():
        assert scores[key] == pytest.approx(value)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert set(scores) == {"precision", "recall", "f1", "accuracy", "f1_LOC", "f1_PER"}


# --- model and packaging --------------------------------------------------------------------


def test_tiny_model_trains_and_evaluates(
    write_jsonl: WriteJsonl,
    make_tokenizer: MakeTokenizer,
    save_tiny_bert: Callable[[PreTrainedTokenizerBase], Path],
    tmp_path: Path,
) -> None:
    from transformers import Trainer, TrainingArguments

    tokenizer = make_tokenizer(PIECES)
    task, splits = load(write_jsonl, ROWS * 4, labels=LABELS)
    encoded = task.preprocess(splits, tokenizer)
    model = task.build_model(str(save_tiny_bert(tokenizer)))
    assert model.config.num_labels == len(LABELS)
    assert model.config.id2label == dict(enumerate(LABELS))
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=4,
            per_device_eval_batch_size=5,
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
    assert {"eval_loss", "eval_f1", "eval_accuracy", "eval_f1_PER"} <= set(metrics)
    assert 0.0 <= metrics["eval_f1"] <= 1.0


def test_entry_point_and_cheap_import() -> None:
    from importlib.metadata import entry_points

    assert entry_points(group="tuner.tasks")["ner"].load() is NerTask
    code = (
        "import sys, tuner_ner; "
        "heavy = {'torch', 'transformers', 'datasets', 'numpy'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
