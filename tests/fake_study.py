"""A study with the attributes `tuner search` writes, made in milliseconds (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.export import ExportInfo, write_model

SPACE = {
    "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
    "num_train_epochs": IntDistribution(1, 4),
    "per_device_train_batch_size": CategoricalDistribution([8, 16, 32]),
}


def _point(i: int) -> dict[str, Any]:
    return {
        "learning_rate": 1e-5 * (1.3 ** (i % 11)),
        "num_train_epochs": 1 + i % 4,
        "per_device_train_batch_size": [8, 16, 32][i % 3],
    }


def make_study(
    studies_dir: Path, name: str = "sentiment-tiny", trials: int = 12, running: bool = False
) -> str:
    """Trials 0..n-1 in ``studies_dir/tuner.db``: every 5th pruned, every 7th failed, the rest
    complete with a value that peaks near lr 5e-5; returns the storage URL."""
    studies_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{studies_dir / 'tuner.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for key, value in {
        "task": "sentiment",
        "model": "tiny-bert",
        "metric": "accuracy",
        "train": "train.jsonl",
        "validation": "dev.jsonl",
    }.items():
        study.set_user_attr(key, value)
    for i in range(trials):
        params = _point(i)
        value = (
            0.9 - abs(params["learning_rate"] - 5e-5) * 1000 + 0.01 * params["num_train_epochs"]
        )
        curve = {step: value - 0.1 * (3 - step) for step in range(4)}
        if i % 7 == 6:
            trial = create_trial(
                state=TrialState.FAIL,
                params=params,
                distributions=SPACE,
                user_attrs={"fail_reason": "RuntimeError: loss is NaN [step 3]"},
            )
        elif i % 5 == 4:
            trial = create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=SPACE,
                intermediate_values={0: curve[0], 1: curve[1]},
            )
        else:
            trial = create_trial(
                state=TrialState.COMPLETE,
                value=value,
                params=params,
                distributions=SPACE,
                intermediate_values=curve,
                user_attrs={
                    "train_seconds": 1.5 + i,
                    "metrics": {"accuracy": value, "f1": value - 0.02},
                    "exported": False,
                },
            )
        study.add_trial(trial)
    if running:
        study.add_trial(
            create_trial(state=TrialState.RUNNING, params=_point(99), distributions=SPACE)
        )
    return url


class FakeSaveable:
    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def save_pretrained(self, folder: str, *args: Any, **kwargs: Any) -> None:
        for name, text in self.files.items():
            Path(folder, name).write_text(text)


def write_weights(folder: Path, study: str, trial: int, value: float = 0.9) -> Path:
    """A kept model as `tuner search` writes it: weights, config, tokenizer, tuner.json, card."""
    model = FakeSaveable(
        {"config.json": json.dumps({"model_type": "bert"}), "model.safetensors": "w"}
    )
    tokenizer = FakeSaveable({"tokenizer.json": "{}", "tokenizer_config.json": "{}"})
    info = ExportInfo(
        study=study,
        trial=trial,
        task="sentiment",
        base_model="tiny-bert",
        metric="accuracy",
        direction="maximize",
        value=value,
        params=_point(trial),
        metrics={"accuracy": value},
        pipeline_task="text-classification",
        labels=("negative", "positive"),
    )
    return write_model(folder, model, tokenizer, info)
