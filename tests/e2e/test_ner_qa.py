"""Full `tuner search` runs of the NER and QA plugins on a tiny random BERT, offline."""

from __future__ import annotations

import importlib
import json
import random
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.trial import TrialState

from tests.conftest import write_jsonl, write_tiny_bert
from tuner.cli import main

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

pytestmark = pytest.mark.slow

MODEL = "tiny-bert"  # the model folder's name, so studies are named "<task>-tiny-bert"

CONFIG = """
[train]
evals_per_epoch = 1
[space]
num_train_epochs = 2
per_device_train_batch_size = 8
learning_rate = 5e-3
warmup_steps = 0.0
label_smoothing_factor = 0.0
[data]
max_length = 48
"""

# --- NER data: BIO tags of two types; some names are not in the vocabulary, so the
# tokenizer splits them into single-letter pieces ("zorvik" -> z ##o ##r ##v ##i ##k).
PERSONS = ["anna", "john", "maria", "peter", "Zorvik", "Quillandra"]
SURNAMES = ["smith", "jones", "Kravitzky"]
PLACES = ["paris", "london", "berlin", "Vexhollow", "Brimsgate"]
NER_WORDS = [
    "lives", "in", "visited", "met", "near", "today", "works", "at", "the", "city",
    "of", "went", "to", "and", "yesterday", "new", "york", "with",
    "anna", "john", "maria", "peter", "smith", "jones", "paris", "london", "berlin",
]  # fmt: skip
NER_TAGS = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}


def _person(rng: random.Random) -> tuple[list[str], list[str]]:
    if rng.random() < 0.4:
        return [rng.choice(PERSONS), rng.choice(SURNAMES)], ["B-PER", "I-PER"]
    return [rng.choice(PERSONS)], ["B-PER"]


def _place(rng: random.Random) -> tuple[list[str], list[str]]:
    if rng.random() < 0.2:
        return ["new", "york"], ["B-LOC", "I-LOC"]
    return [rng.choice(PLACES)], ["B-LOC"]


def ner_rows(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(count):
        (p, pt), (q, qt), (loc, lt) = _person(rng), _person(rng), _place(rng)
        o = ["O"]
        template = rng.randrange(3)
        if template == 0:
            words = p + ["lives", "in"] + loc
            tags = pt + o * 2 + lt
        elif template == 1:
            words = p + ["visited", "the", "city", "of"] + loc + ["today"]
            tags = pt + o * 4 + lt + o
        else:
            words = ["yesterday"] + p + ["met"] + q + ["near"] + loc
            tags = o + pt + o + qt + o + lt
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


# --- QA data: SQuAD-style rows whose contexts are long enough that, in windows of 48
# tokens overlapping by 16, some answers are only in a later window.
COUNTRIES = ["norland", "estavia", "mirova", "tulania", "korvath", "belmark", "dravonia"]
CITIES = ["alden", "corby", "Vexhollow", "Brimsgate", "tessaly", "Qorlund", "marrow"]
FILLER = [
    "the weather there was calm and the people were happy .",
    "many farmers grow wheat and barley in the green valleys .",
    "the old river runs slowly past the quiet stone bridge .",
    "every summer the markets sell fresh bread and sweet fruit .",
    "children walk to school along the long dusty road .",
    "the mountains in the north are covered with snow in winter .",
]
QA_WORDS = sorted(
    {w for sentence in FILLER for w in sentence.split()}
    | {"what", "is", "capital", "of", "?", "."}
    | set(COUNTRIES)
    | {c for c in CITIES if c.islower()}
)


def qa_rows(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(count):
        country, city = rng.choice(COUNTRIES), rng.choice(CITIES)
        fact = f"the capital of {country} is {city} ."
        sentences = rng.sample(FILLER, 5)
        # Every other question has its fact at the end, past the first window.
        at = 5 if i % 2 == 0 else rng.randrange(0, 2)
        sentences.insert(at, fact)
        context = " ".join(sentences)
        start = context.index(fact) + len(f"the capital of {country} is ")
        assert context[start : start + len(city)] == city
        rows.append(
            {
                "id": f"q{seed}-{i}",
                "title": country,
                "context": context,
                "question": f"what is the capital of {country} ?",
                "answers": {"text": [city], "answer_start": [start]},
            }
        )
    return rows


# --- helpers


def run_cli(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, ["search", *args])


def explain(result: Result) -> str:
    if result.exc_info is None:
        return result.output
    return result.output + "".join(traceback.format_exception(*result.exc_info))


def search_args(
    task: str, model: Path, train: Path, validation: Path, studies: Path, config: Path
) -> list[str]:
    return [
        "--task", task,
        "--model", str(model),
        "--train", str(train),
        "--validation", str(validation),
        "--trials", "2",
        "--studies-dir", str(studies),
        "--config", str(config),
    ]  # fmt: skip


def load_study(studies: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{studies}/tuner.db")


def trial_count(studies: Path) -> int:
    """Trials in the database; 0 when it or its tables were never created."""
    db = studies / "tuner.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master")}
        if "trials" not in tables:
            return 0
        return int(conn.execute("select count(*) from trials").fetchone()[0])


def check_study(
    studies: Path, name: str, metrics: set[str]
) -> tuple[optuna.Study, dict[str, Any]]:
    """Two finished trials with reports and the plugin's metrics; return study and best info."""
    study = load_study(studies, name)
    assert study.user_attrs["task"] == name.split("-")[0]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, [
        (t.state, t.user_attrs.get("fail_reason")) for t in study.trials
    ]
    for trial in study.trials:
        # evals_per_epoch = 1 and two epochs: one report per epoch.
        assert sorted(trial.intermediate_values) == [1, 2]
        recorded = trial.user_attrs["metrics"]
        assert metrics <= set(recorded), recorded
        for key in metrics:
            assert 0.0 <= recorded[key] <= 1.0, (key, recorded)
        assert recorded["f1"] == trial.value
        assert trial.intermediate_values[2] == trial.value
        assert trial.params["num_train_epochs"] == 2
        assert trial.params["per_device_train_batch_size"] == 8

    best_dir = studies / name / "best"
    info = json.loads((best_dir / "tuner.json").read_text())
    assert info["study"] == name
    assert info["value"] == study.best_value
    # On a tie the first trial keeps the export, so compare values, not trial numbers.
    named = study.trials[info["trial"]]
    assert named.value == study.best_value
    assert named.user_attrs["exported"] is True
    assert not list((studies / name).glob(".tmp-*"))
    return study, info


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, explain(result)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], result.output


# --- NER


@pytest.fixture
def ner_project(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    import torch

    torch.manual_seed(0)  # the same random weights on every run
    model = write_tiny_bert(tmp_path / MODEL, NER_WORDS)
    train = write_jsonl(tmp_path / "data" / "train.jsonl", ner_rows(40, seed=1))
    validation = write_jsonl(tmp_path / "data" / "dev.jsonl", ner_rows(16, seed=2))
    config = tmp_path / "tuner.toml"
    config.write_text(CONFIG)
    return model, train, validation, config


def test_ner_data_has_words_split_into_pieces(ner_project: tuple[Path, Path, Path, Path]) -> None:
    from transformers import AutoTokenizer

    model, train, _, _ = ner_project
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    words = {w for line in train.read_text().splitlines() for w in json.loads(line)["tokens"]}
    pieces = {w: tokenizer.tokenize(w) for w in words}
    assert "[UNK]" not in {p for split in pieces.values() for p in split}
    assert any(len(split) > 1 for split in pieces.values()), pieces


def test_ner_search_end_to_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ner_project: tuple[Path, Path, Path, Path],
) -> None:
    from transformers import pipeline

    model, train, validation, config = ner_project
    studies = tmp_path / "studies"
    result = run_cli(
        tmp_path, monkeypatch, *search_args("ner", model, train, validation, studies, config)
    )
    assert result.exit_code == 0, explain(result)
    assert "Traceback" not in result.output

    study, info = check_study(
        studies, "ner-tiny-bert", {"precision", "recall", "f1", "f1_PER", "f1_LOC", "accuracy"}
    )
    # Labels reach the metric aligned: a few steps at a high learning rate find entities.
    assert study.best_value > 0.2
    assert set(info["labels"]) == NER_TAGS
    assert info["labels"][0] == "O"

    best_dir = studies / "ner-tiny-bert" / "best"
    tag = pipeline("token-classification", model=str(best_dir), ignore_labels=[])
    id2label = tag.model.config.id2label
    assert id2label is not None and set(id2label.values()) == NER_TAGS
    sentence = "Zorvik Kravitzky visited the city of Vexhollow today"
    tokens = tag(sentence)
    assert tokens, "every token is returned when no label is ignored"
    assert {t["entity"] for t in tokens} <= NER_TAGS
    for t in tokens:
        start, end = int(t["start"]), int(t["end"])
        assert sentence[start:end].lower() == str(t["word"]).removeprefix("##")

    grouped = pipeline("token-classification", model=str(best_dir), aggregation_strategy="simple")
    for entity in grouped([sentence, "anna lives in new york"]):
        for span in entity:
            assert span["entity_group"] in {"PER", "LOC"}, span


def test_ner_tags_of_the_wrong_length_are_a_user_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ner_project: tuple[Path, Path, Path, Path],
) -> None:
    model, train, _, config = ner_project
    rows = ner_rows(8, seed=3)
    rows[4] = {"tokens": ["anna", "lives", "in", "paris"], "ner_tags": ["B-PER", "O", "B-LOC"]}
    validation = write_jsonl(tmp_path / "data" / "bad.jsonl", rows)
    studies = tmp_path / "studies"
    result = run_cli(
        tmp_path, monkeypatch, *search_args("ner", model, train, validation, studies, config)
    )
    assert_user_error(result, str(validation), "row 5", "ner_tags", "3 tags for 4 tokens")
    assert trial_count(studies) == 0


# --- QA


@pytest.fixture
def qa_project(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    import torch

    torch.manual_seed(0)  # the same random weights on every run
    model = write_tiny_bert(tmp_path / MODEL, QA_WORDS)
    train = write_jsonl(tmp_path / "data" / "train.jsonl", qa_rows(32, seed=1))
    validation = write_jsonl(tmp_path / "data" / "dev.jsonl", qa_rows(12, seed=2))
    config = tmp_path / "tuner.toml"
    config.write_text(CONFIG + "doc_stride = 16\n")
    return model, train, validation, config


def _answer_in_first_window(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> bool:
    encoded = tokenizer(
        row["question"],
        row["context"],
        truncation="only_second",
        max_length=48,
        stride=16,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert len(encoded["input_ids"]) > 1, "every context needs more than one window"
    ends = [
        span[1]
        for span, seq in zip(encoded["offset_mapping"][0], encoded.sequence_ids(0), strict=True)
        if seq == 1
    ]
    answer_end = row["answers"]["answer_start"][0] + len(row["answers"]["text"][0])
    return answer_end <= max(ends)


def test_qa_data_puts_some_answers_in_a_later_window(
    qa_project: tuple[Path, Path, Path, Path],
) -> None:
    from transformers import AutoTokenizer

    model, train, validation, _ = qa_project
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    for path in (train, validation):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        first = [_answer_in_first_window(tokenizer, row) for row in rows]
        assert any(first) and not all(first), first
        assert "[UNK]" not in tokenizer.tokenize(rows[0]["context"])


def answer_question(model_dir: Path, question: str, context: str) -> str:
    """What the exported model answers, decoded over windows as the plugin scores it.

    transformers 5 has no "question-answering" pipeline any more (see
    test_qa_export_names_a_pipeline_that_exists), so this is what a user of ``best/`` does.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tuner_qa.postprocess import best_answers

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=48,
        stride=16,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=True,
        return_tensors="pt",
    )
    windows = len(encoded["input_ids"])
    offsets = [
        [
            tuple(span) if sequence == 1 else None
            for span, sequence in zip(
                encoded["offset_mapping"][i].tolist(), encoded.sequence_ids(i), strict=True
            )
        ]
        for i in range(windows)
    ]
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**inputs)
    return best_answers(
        out.start_logits.numpy(), out.end_logits.numpy(), [0] * windows, offsets, [context]
    )[0]


def test_qa_search_end_to_end(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    qa_project: tuple[Path, Path, Path, Path],
) -> None:
    model, train, validation, config = qa_project
    studies = tmp_path / "studies"
    result = run_cli(
        tmp_path, monkeypatch, *search_args("qa", model, train, validation, studies, config)
    )
    assert result.exit_code == 0, explain(result)
    assert "Traceback" not in result.output

    _, info = check_study(studies, "qa-tiny-bert", {"exact_match", "f1"})
    assert info["task"] == "qa"

    # The trial's value is what scoring the exported model on the validation set gives.
    from tuner_qa.metrics import squad_scores

    rows = [json.loads(line) for line in validation.read_text().splitlines()]
    answers = [
        answer_question(studies / "qa-tiny-bert" / "best", r["question"], r["context"])
        for r in rows
    ]
    rescored = squad_scores(answers, [r["answers"]["text"] for r in rows])
    assert rescored["f1"] == pytest.approx(info["value"]), (rescored, info["value"])

    best_dir = studies / "qa-tiny-bert" / "best"
    assert info["pipeline_task"] == "extractive-question-answering"
    importlib.import_module(info["pipeline_import"])
    from transformers import pipeline

    qa_pipeline = pipeline(info["pipeline_task"], model=str(best_dir), **info["pipeline_kwargs"])
    assert "import tuner_qa.pipeline" in (best_dir / "README.md").read_text()
    for row in qa_rows(2, seed=4):
        context = str(row["context"])
        answer = answer_question(best_dir, str(row["question"]), context)
        assert answer, "a context span is always picked"
        assert answer in context
        served = qa_pipeline(question=str(row["question"]), context=context)
        assert served["answer"] == answer
        assert context[served["start"] : served["end"]] == answer


def test_qa_export_names_a_pipeline_that_exists() -> None:
    from transformers.pipelines import get_supported_tasks

    from tuner_qa import QaTask

    assert QaTask.pipeline_task not in get_supported_tasks() or "tuner_qa.pipeline" in sys.modules
    importlib.import_module(QaTask.pipeline_import)
    assert QaTask.pipeline_task in get_supported_tasks()


def test_qa_answer_start_off_the_answer_is_a_user_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    qa_project: tuple[Path, Path, Path, Path],
) -> None:
    model, _, validation, config = qa_project
    rows = qa_rows(6, seed=5)
    answers = rows[2]["answers"]
    assert isinstance(answers, dict)
    answers["answer_start"] = [answers["answer_start"][0] + 3]
    train = write_jsonl(tmp_path / "data" / "bad.jsonl", rows)
    studies = tmp_path / "studies"
    result = run_cli(
        tmp_path, monkeypatch, *search_args("qa", model, train, validation, studies, config)
    )
    assert_user_error(result, str(train), "row 3", "answers.answer_start[0]")
    assert trial_count(studies) == 0
