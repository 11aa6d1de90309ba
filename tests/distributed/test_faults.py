"""Out of memory, concurrent bests, and the storage mistakes a cluster user makes."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import FrozenTrial, TrialState

from tuner.cli import main
from tuner.export import ExportInfo, export_if_best, read_info

pytestmark = pytest.mark.slow

# Sentiment whose training batches of 16 or 32 rows run out of memory, as too large a batch
# does on a GPU (the 48 generated rows make batches of 8, 16 or 32; evaluation batches hold 24).
OOM_TASK = """
import torch
from tuner_sentiment import SentimentTask


class FakeTask(SentimentTask):
    name = "{name}"

    def data_collator(self, tokenizer):
        pad = super().data_collator(tokenizer)

        def collate(features):
            if len(features) in (16, 32):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return pad(features)

        return collate
"""


def invoke(cwd: Path, *args: str) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args))
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def one_oom_trial(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_data: tuple[Path, Path],
    fake_plugin_factory: Any,
    config_text: str,
) -> FrozenTrial:
    """Run one trial of the out-of-memory task with ``config_text`` and return it."""
    task = fake_plugin_factory("oom", source=OOM_TASK)
    train, validation = sentiment_data
    config = tmp_path / "oom.toml"
    config.write_text(config_text)
    code, out = invoke(
        tmp_path, "search", "--task", task, "--model", str(tiny_model), "--train", str(train),
        "--validation", str(validation), "--studies-dir", str(tmp_path / "studies"),
        "--config", str(config), "--trials", "1", "--quiet",
    )  # fmt: skip
    assert code == 0, out
    study = optuna.load_study(
        study_name=f"{task}-{tiny_model.name}", storage=f"sqlite:///{tmp_path}/studies/tuner.db"
    )
    (trial,) = study.trials
    return trial


def test_out_of_memory_is_retried_at_half_the_batch(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_data: tuple[Path, Path],
    fake_plugin_factory: Any,
) -> None:
    trial = one_oom_trial(
        tmp_path,
        tiny_model,
        sentiment_data,
        fake_plugin_factory,
        "[space]\nper_device_train_batch_size = 16\nnum_train_epochs = 1\nlearning_rate = 1e-3\n",
    )
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert trial.params["per_device_train_batch_size"] == 16
    assert trial.user_attrs["oom_retry"] == {
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 2,
    }


def test_out_of_memory_twice_fails_the_trial_with_the_reason(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_data: tuple[Path, Path],
    fake_plugin_factory: Any,
) -> None:
    trial = one_oom_trial(
        tmp_path,
        tiny_model,
        sentiment_data,
        fake_plugin_factory,
        "[study]\nmax_failures_in_a_row = 5\n[space]\nper_device_train_batch_size = 32\n"
        "num_train_epochs = 1\n",
    )
    assert trial.state == TrialState.FAIL
    assert "out of memory at batch 32 and again at 16" in trial.user_attrs["fail_reason"]


class Saved:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def save_pretrained(self, folder: str, *args: Any, **kwargs: Any) -> None:
        Path(folder, f"{self.tag}.bin").write_bytes(os.urandom(1 << 16))


def _export(dest: str, value: float, barrier: Any) -> None:
    info = ExportInfo(
        study="s", trial=int(value * 1000), task="t", base_model="m", metric="accuracy",
        direction="maximize", value=value, params={}, metrics={}, pipeline_task="x",
    )  # fmt: skip
    barrier.wait()
    export_if_best(Path(dest), Saved("model"), Saved("tokenizer"), info, None)


def test_simultaneous_new_bests_leave_the_best_of_them(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    values = [0.61, 0.93, 0.72, 0.88, 0.5, 0.9]
    barrier = context.Barrier(len(values))
    dest = tmp_path / "study" / "best"
    processes = [
        context.Process(target=_export, args=(str(dest), value, barrier)) for value in values
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    info = read_info(dest)
    assert info is not None and info["value"] == max(values)
    assert sorted(p.name for p in dest.iterdir()) == [
        "README.md", "model.bin", "tokenizer.bin", "tuner.json",
    ]  # fmt: skip
    assert sorted(p.name for p in dest.parent.iterdir()) == [".lock", "best"]


def test_two_training_workers_leave_the_best_folder_matching_the_database(
    tmp_path: Path, tiny_model: Path, sentiment_data: tuple[Path, Path]
) -> None:
    train, validation = sentiment_data
    config = tmp_path / "fast.toml"
    config.write_text(
        "[space]\nlearning_rate = { low = 1e-3, high = 5e-3, log = true }\n"
        "num_train_epochs = { low = 1, high = 2 }\n"
    )
    code, out = invoke(
        tmp_path, "search", "--task", "sentiment", "--model", str(tiny_model),
        "--train", str(train), "--validation", str(validation),
        "--studies-dir", str(tmp_path / "studies"), "--study-name", "pair",
        "--config", str(config), "--trials", "6", "--workers", "2", "--quiet",
    )  # fmt: skip
    assert code == 0, out
    study = optuna.load_study(study_name="pair", storage=f"sqlite:///{tmp_path}/studies/tuner.db")
    assert len(study.trials) == 6 and all(t.state.is_finished() for t in study.trials)
    info = json.loads((tmp_path / "studies" / "pair" / "best" / "tuner.json").read_text())
    assert info["value"] == pytest.approx(study.best_value)
    assert study.trials[info["trial"]].value == pytest.approx(study.best_value)


def assert_user_error(code: int, out: str, *fragments: str) -> None:
    assert code == 1, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, out
    for fragment in fragments:
        assert fragment in errors[0], out


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test", ["cannot be opened", "***"]),
        (
            "postgresql+psycopg://nobody:s3cret@127.0.0.1:5432/test",
            ["nobody:***@", "cannot be opened"],
        ),
        ("redis://:s3cret@127.0.0.1:1/0", ["cannot be opened"]),
        ("mongodb://u:s3cret@127.0.0.1/x", ["cannot be opened"]),
    ],
)
def test_bad_storage_is_one_line_without_the_password(
    tmp_path: Path, score_task: str, url: str, fragments: list[str]
) -> None:
    code, out = invoke(tmp_path, "search", "--task", score_task, "--storage", url, "--trials", "2")
    assert_user_error(code, out, *fragments)
    assert "s3cret" not in out


def test_storage_url_from_the_environment(
    tmp_path: Path, score_task: str, monkeypatch: pytest.MonkeyPatch, study_name: str
) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("TUNER_STORAGE", url)
    code, out = invoke(
        tmp_path, "search", "--task", score_task, "--study-name", study_name, "--trials", "2",
        "--quiet",
    )  # fmt: skip
    assert code == 0, out
    assert len(optuna.load_study(study_name=study_name, storage=url).trials) == 2


@pytest.mark.parametrize("value", ["0", "-1"])
def test_workers_must_be_positive(tmp_path: Path, score_task: str, value: str) -> None:
    code, out = invoke(tmp_path, "search", "--task", score_task, "--workers", value)
    assert_user_error(code, out, f"--workers must be a positive integer, got {value}")


def test_a_study_of_another_task_is_refused(
    tmp_path: Path, score_task: str, fake_plugin_factory: Any, study_name: str
) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    args = ["--study-name", study_name, "--storage", storage, "--trials", "1", "--quiet"]
    assert invoke(tmp_path, "search", "--task", score_task, *args)[0] == 0
    other = fake_plugin_factory("other", source=_score_source("maximize"))
    code, out = invoke(tmp_path, "search", "--task", other, *args)
    assert_user_error(code, out, f"holds trials of task '{score_task}'", "--study-name")
    minimizing = fake_plugin_factory("low", source=_score_source("minimize"))
    optuna.load_study(study_name=study_name, storage=storage).set_user_attr("task", minimizing)
    code, out = invoke(tmp_path, "search", "--task", minimizing, *args)
    assert_user_error(code, out, "is to maximize", "wants to minimize")
    assert len(optuna.load_study(study_name=study_name, storage=storage).trials) == 1


def _score_source(direction: str) -> str:
    from tests.distributed.conftest import SCORE_TASK

    return SCORE_TASK.replace(
        "    trains = False", f'    trains = False\n    direction = "{direction}"'
    )
