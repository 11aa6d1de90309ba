"""Full `tuner search` runs on a tiny random BERT and generated data, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from tests.conftest import sentiment_rows, write_jsonl
from tuner.cli import main

pytestmark = pytest.mark.slow

FAST = """
[train]
evals_per_epoch = 2
[space]
learning_rate = { low = 1e-3, high = 5e-3, log = true }
num_train_epochs = { low = 1, high = 2 }
per_device_train_batch_size = { choices = [8, 16] }
"""


def search(cwd: Path, *args: str) -> str:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, ["search", *args])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def load(studies: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{studies}/tuner.db")


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, sentiment_data: tuple[Path, Path]) -> list[str]:
    train, validation = sentiment_data
    (tmp_path / "fast.toml").write_text(FAST)
    return [
        "--task", "sentiment",
        "--model", str(tiny_model),
        "--train", str(train),
        "--validation", str(validation),
        "--studies-dir", str(tmp_path / "studies"),
        "--study-name", "demo",
        "--config", str(tmp_path / "fast.toml"),
        "--quiet",
    ]  # fmt: skip


def test_three_trials_then_resume_to_five(tmp_path: Path, project: list[str]) -> None:
    out = search(tmp_path, *project, "--trials", "3")
    assert "best trial" in out and "optuna-dashboard sqlite:///" in out
    study = load(tmp_path / "studies", "demo")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 3
    assert study.user_attrs["task"] == "sentiment"
    for trial in finished:
        assert set(trial.params) >= {"learning_rate", "num_train_epochs", "warmup_steps"}
        assert trial.intermediate_values, "every evaluation is reported"
        if trial.state == TrialState.COMPLETE:
            assert trial.user_attrs["train_seconds"] > 0
            assert "accuracy" in trial.user_attrs["metrics"]
            attrs = trial.user_attrs
            assert 0 < attrs["train_loop_seconds"] < attrs["train_seconds"]
            assert attrs["eval_seconds"] > 0 and attrs["train_samples_per_second"] > 0
    # The first trial of a new study is the default point of the space.
    assert study.trials[0].params["warmup_steps"] == 0.0
    assert study.trials[0].params["per_device_train_batch_size"] == 16

    out = search(tmp_path, *[a for a in project if a != "--quiet"], "--trials", "5")
    assert "continuing: 3 of 5 trials already finished" in out
    assert "This run" in out and "best trial" in out
    study = load(tmp_path / "studies", "demo")
    assert len([t for t in study.trials if t.state.is_finished()]) == 5
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]

    search(tmp_path, *project, "--trials", "5")
    assert len(load(tmp_path / "studies", "demo").trials) == 5


def test_best_model_loads_in_a_pipeline_with_the_data_labels(
    tmp_path: Path, project: list[str]
) -> None:
    from transformers import pipeline

    search(tmp_path, *project, "--trials", "2")
    study = load(tmp_path / "studies", "demo")
    best_dir = tmp_path / "studies" / "demo" / "best"
    info = json.loads((best_dir / "tuner.json").read_text())
    assert info["trial"] == study.best_trial.number
    assert info["value"] == pytest.approx(study.best_value)
    assert info["labels"] == ["negative", "positive"]
    assert (best_dir / "README.md").is_file()
    assert not list((tmp_path / "studies" / "demo").glob(".tmp-*"))
    classify = pipeline("text-classification", model=str(best_dir))
    predictions = classify(["the film was great", "the plot was awful"])
    assert {p["label"] for p in predictions} <= {"negative", "positive"}


def test_a_run_built_to_prune_prunes(tmp_path: Path, tiny_model: Path) -> None:
    # Three learning rates learn the cue words within two epochs; a vanishing one never
    # does. Once five trials have completed, most of them learners, the median pruner stops
    # the hopeless trials after their first epoch instead of training them for four.
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(192, seed=3))
    validation = write_jsonl(tmp_path / "dev.jsonl", sentiment_rows(32, seed=4))
    config = tmp_path / "prune.toml"
    config.write_text(
        """
[study]
sampler = "random"
start_from_defaults = false
[train]
evals_per_epoch = 2
[space]
learning_rate = { choices = [2e-3, 3e-3, 4e-3, 1e-9] }
num_train_epochs = 4
per_device_train_batch_size = 8
warmup_steps = 0.0
label_smoothing_factor = 0.0
"""
    )
    search(
        tmp_path,
        "--task", "sentiment", "--model", str(tiny_model),
        "--train", str(train), "--validation", str(validation),
        "--studies-dir", str(tmp_path / "studies"), "--study-name", "prune",
        "--config", str(config), "--trials", "10", "--quiet",
    )  # fmt: skip
    study = load(tmp_path / "studies", "prune")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    curves = [
        (t.params["learning_rate"], t.state.name, list(t.intermediate_values.values()))
        for t in study.trials
    ]
    assert pruned, curves
    last = 2 * 4
    for trial in pruned:
        assert max(trial.intermediate_values) < last, "stopped before the last evaluation"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(max(t.intermediate_values) == last for t in complete)


# Sentiment whose metric turns NaN, as a diverging run's does: each trial must fail.
NAN_TASK = """
from tuner_sentiment import SentimentTask


class FakeTask(SentimentTask):
    name = "{name}"

    def compute_metrics(self, eval_pred):
        return {{"accuracy": float("nan")}}
"""


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path,
    project: list[str],
    fake_plugin_factory,  # type: ignore[no-untyped-def]
) -> None:
    task = fake_plugin_factory("nan", source=NAN_TASK)
    config = tmp_path / "fast.toml"
    config.write_text(FAST + "[study]\nmax_failures_in_a_row = 5\n")
    args = [task if a == "sentiment" else a for a in project]
    search(tmp_path, *args, "--trials", "2")
    study = load(tmp_path / "studies", "demo")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for trial in study.trials:
        assert "TrialFailed: eval_accuracy is nan" in trial.user_attrs["fail_reason"]
    assert not (tmp_path / "studies" / "demo" / "best").exists()


def test_many_failures_in_a_row_stop_with_a_clear_error(
    tmp_path: Path,
    project: list[str],
    fake_plugin_factory,  # type: ignore[no-untyped-def]
) -> None:
    task = fake_plugin_factory("nan", source=NAN_TASK)
    args = [task if a == "sentiment" else a for a in project]
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, ["search", *args, "--trials", "10"])
    finally:
        os.chdir(old)
    assert result.exit_code == 1
    assert "Error: 3 trials in a row failed" in result.output
    assert "Traceback" not in result.output
    assert len(load(tmp_path / "studies", "demo").trials) == 3


def test_bf16_trial_runs_on_cpu(tmp_path: Path, project: list[str]) -> None:
    search(tmp_path, *project, "--trials", "1", "--precision", "bf16")
    study = load(tmp_path / "studies", "demo")
    assert study.trials[0].state == TrialState.COMPLETE


def test_new_bests_go_to_the_artifact_store_too(tmp_path: Path, project: list[str]) -> None:
    import tarfile

    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    store = tmp_path / "artifacts"
    search(tmp_path, *project, "--trials", "2", "--artifacts", str(store))
    study = load(tmp_path / "studies", "demo")
    best = study.best_trial
    artifact = best.user_attrs["model_artifact"]
    archive = tmp_path / "best.tar.gz"
    download_artifact(
        artifact_store=FileSystemArtifactStore(store), file_path=str(archive), artifact_id=artifact
    )
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        info = json.load(tar.extractfile("./tuner.json"))  # type: ignore[arg-type]
    assert "./config.json" in names and "./model.safetensors" in names
    assert info["trial"] == best.number


def test_export_fetches_from_the_artifact_store_without_the_local_folder(
    tmp_path: Path, project: list[str]
) -> None:
    import shutil

    store = tmp_path / "artifacts"
    search(tmp_path, *project, "--trials", "2", "--artifacts", str(store))
    # As on another machine: the study's files are not here, only the database and the store.
    shutil.rmtree(tmp_path / "studies" / "demo")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(
            main,
            ["export", "demo", "--studies-dir", str(tmp_path / "studies"), "--artifacts",
             str(store), "--to", str(tmp_path / "fetched")],
        )  # fmt: skip
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    study = load(tmp_path / "studies", "demo")
    info = json.loads((tmp_path / "fetched" / "tuner.json").read_text())
    assert info["trial"] == study.best_trial.number
    assert (tmp_path / "fetched" / "model.safetensors").is_file()
