"""CLI latency on a 10,000-trial study: `tuner show`, `tuner studies` and `tuner --help`.

Builds a SQLite study of 10,000 trials (80% complete, 15% pruned, 5% failed; five parameters,
four intermediate values, the user attributes tuner search writes) by inserting rows into
Optuna's schema directly, then times each command as a subprocess, like a user would run it.

    .venv/bin/python bench/show_10k.py [--trials 10000] [--repeat 3] [--keep DIR]

Prints a table and one JSON line with the median and best wall times in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages._rdb import models
from optuna.trial import TrialState

STUDY = "bench-10k"
FINITE = models.TrialValueModel.TrialValueType.FINITE
FINITE_STEP = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
SPACE = {
    "learning_rate": FloatDistribution(1e-5, 2e-4, log=True),
    "num_train_epochs": IntDistribution(1, 4),
    "per_device_train_batch_size": CategoricalDistribution([8, 16, 32]),
    "warmup_steps": FloatDistribution(0.0, 0.2),
    "label_smoothing_factor": FloatDistribution(0.0, 0.2),
}


def build_study(studies_dir: Path, n_trials: int, seed: int = 0) -> str:
    """A study of ``n_trials`` trials in ``studies_dir/tuner.db``; returns its storage URL."""
    studies_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{studies_dir / 'tuner.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for key, value in {
        "task": "sentiment",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "metric": "accuracy",
        "train": "data/sst2/train.jsonl",
        "validation": "data/sst2/dev.jsonl",
    }.items():
        study.set_user_attr(key, value)
    sid = study._study_id
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    dist_json = {name: distribution_to_json(d) for name, d in SPACE.items()}
    trials: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    attrs: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for number in range(n_trials):
        tid = number + 1
        point = {
            "learning_rate": math.exp(rng.uniform(math.log(1e-5), math.log(2e-4))),
            "num_train_epochs": rng.randint(1, 4),
            "per_device_train_batch_size": rng.choice([8, 16, 32]),
            "warmup_steps": rng.uniform(0.0, 0.2),
            "label_smoothing_factor": rng.uniform(0.0, 0.2),
        }
        score = 0.9 - 0.05 * abs(math.log10(point["learning_rate"]) + 4.3) + rng.gauss(0, 0.01)
        roll = rng.random()
        if roll < 0.8:
            state = TrialState.COMPLETE
        elif roll < 0.95:
            state = TrialState.PRUNED
        else:
            state = TrialState.FAIL
        seconds = rng.uniform(30, 300)
        began = start + timedelta(seconds=number * 320)
        trials.append(
            {
                "trial_id": tid,
                "number": number,
                "study_id": sid,
                "state": state,
                "datetime_start": began,
                "datetime_complete": began + timedelta(seconds=seconds),
            }
        )
        for name, value in point.items():
            params.append(
                {
                    "trial_id": tid,
                    "param_name": name,
                    "param_value": SPACE[name].to_internal_repr(value),
                    "distribution_json": dist_json[name],
                }
            )
        n_steps = 2 if state == TrialState.PRUNED else 0 if state == TrialState.FAIL else 4
        for step in range(n_steps):
            steps.append(
                {
                    "trial_id": tid,
                    "step": step,
                    "intermediate_value": score - 0.05 * (n_steps - step),
                    "intermediate_value_type": FINITE_STEP,
                }
            )
        attrs.append({"trial_id": tid, "key": "worker", "value_json": '"bench:1"'})
        if state == TrialState.COMPLETE:
            values.append({"trial_id": tid, "objective": 0, "value": score, "value_type": FINITE})
            metrics = {"accuracy": score, "f1": score - 0.01}
            attrs += [
                {"trial_id": tid, "key": "train_seconds", "value_json": json.dumps(seconds)},
                {"trial_id": tid, "key": "metrics", "value_json": json.dumps(metrics)},
                {"trial_id": tid, "key": "exported", "value_json": "false"},
            ]
        elif state == TrialState.FAIL:
            reason = '"OutOfMemoryError: CUDA out of memory"'
            attrs.append({"trial_id": tid, "key": "fail_reason", "value_json": reason})
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.insert(models.TrialModel.__table__), trials)
        conn.execute(sqlalchemy.insert(models.TrialValueModel.__table__), values)
        conn.execute(sqlalchemy.insert(models.TrialParamModel.__table__), params)
        conn.execute(sqlalchemy.insert(models.TrialUserAttributeModel.__table__), attrs)
        conn.execute(sqlalchemy.insert(models.TrialIntermediateValueModel.__table__), steps)
    engine.dispose()
    return url


def time_command(args: list[str], repeat: int) -> tuple[float, float]:
    """Median and best wall time of ``tuner ARGS`` as a subprocess."""
    tuner = str(Path(sys.executable).with_name("tuner"))
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([tuner, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def time_get_trials(url: str) -> float:
    """What Optuna's own ``study.get_trials()`` takes on the same study, in-process."""
    study = optuna.load_study(study_name=STUDY, storage=url)
    started = time.perf_counter()
    study.get_trials(deepcopy=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="Build the study here and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        studies = args.keep or Path(temp) / "studies"
        started = time.perf_counter()
        url = build_study(studies, args.trials)
        built = time.perf_counter() - started
        where = ["--studies-dir", str(studies)]
        commands = {
            "tuner --help": ["--help"],
            "tuner studies": ["studies", *where],
            "tuner show": ["show", STUDY, *where],
            "tuner show --no-importance": ["show", STUDY, "--no-importance", *where],
            "tuner show --format json": ["show", STUDY, "--format", "json", *where],
            "tuner show --format csv": ["show", STUDY, "--format", "csv", *where],
        }
        results = {name: time_command(cmd, args.repeat) for name, cmd in commands.items()}
        get_trials = time_get_trials(url)
    print(f"{args.trials} trials built in {built:.1f}s; median and best of {args.repeat} runs")
    print(f"{'command':<30} {'median s':>9} {'best s':>8}")
    for name, (median, best) in results.items():
        print(f"{name:<30} {median:>9.2f} {best:>8.2f}")
    print(f"{'optuna get_trials (in-process)':<30} {get_trials:>9.2f}")
    record = {
        "benchmark": "show_10k",
        "trials": args.trials,
        "repeat": args.repeat,
        "seconds": {
            name: {"median": round(m, 3), "best": round(b, 3)} for name, (m, b) in results.items()
        },
        "optuna_get_trials_seconds": round(get_trials, 3),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
