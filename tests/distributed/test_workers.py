"""Many workers, one study: exactly N trials, lost workers, out-of-memory retries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.storage import open_storage

pytestmark = pytest.mark.slow


def tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def load(name: str, url: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def check_exact(study: optuna.Study, target: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "no trial number twice"
    assert sorted(numbers) == list(range(target))
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    assert [t for t in trials if t.state == TrialState.FAIL] == []


def search_args(task: str, name: str, storage: str, trials: int, workers: int) -> list[str]:
    return [
        "search", "--task", task, "--study-name", name, "--storage", storage,
        "--trials", str(trials), "--workers", str(workers), "--quiet", "--sampler", "random",
    ]  # fmt: skip


def test_four_workers_on_sqlite_finish_exactly_200_trials(
    tmp_path: Path, score_task: str, study_name: str
) -> None:
    storage = f"sqlite:///{tmp_path}/studies/tuner.db"
    done = tuner(*search_args(score_task, study_name, storage, 200, 4), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    check_exact(load(study_name, storage), 200)
    logs = list((tmp_path / "studies" / study_name / "logs").glob("worker-*.log"))
    assert len(logs) == 4
    for log in logs:
        assert "database is locked" not in log.read_text()
    workers = {t.user_attrs["worker"] for t in load(study_name, storage).trials}
    assert len(workers) == 4, "every worker ran trials"


def test_four_workers_on_postgresql(
    tmp_path: Path, score_task: str, study_name: str, postgres: str
) -> None:
    done = tuner(*search_args(score_task, study_name, postgres, 60, 4), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    check_exact(load(study_name, postgres), 60)


def test_four_workers_on_redis(
    tmp_path: Path, score_task: str, study_name: str, redis_url: str
) -> None:
    done = tuner(*search_args(score_task, study_name, redis_url, 60, 4), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    check_exact(load(study_name, redis_url), 60)


def test_two_machines_sharing_postgresql_finish_exactly_n(
    tmp_path: Path, score_task: str, study_name: str, postgres: str
) -> None:
    # Two independent `tuner search` processes, as on two machines.
    command = [
        sys.executable,
        "-m",
        "tuner.cli",
        *search_args(score_task, study_name, postgres, 30, 1),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([*command, "--worker-index", "0"], cwd=tmp_path, env=env)
    second = subprocess.Popen([*command, "--worker-index", "1"], cwd=tmp_path, env=env)
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    check_exact(load(study_name, postgres), 30)


@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_a_killed_worker_is_failed_retried_and_the_study_still_reaches_n(
    tmp_path: Path,
    score_task: str,
    study_name: str,
    postgres: str,
    redis_url: str,
    backend: str,
) -> None:
    storage = postgres if backend == "postgresql" else redis_url
    config = tmp_path / "tuner.toml"
    config.write_text("[study]\nheartbeat_seconds = 1\ngrace_seconds = 3\n[data]\nsleep = 1.0\n")
    command = [
        sys.executable, "-m", "tuner.cli", *search_args(score_task, study_name, storage, 8, 1),
        "--config", str(config),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    victim = subprocess.Popen([*command, "--worker-index", "0"], cwd=tmp_path, env=env)
    survivor = subprocess.Popen([*command, "--worker-index", "1"], cwd=tmp_path, env=env)
    mark = f":{victim.pid}"
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            study = load(study_name, storage)
        except KeyError:
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if str(trial.user_attrs.get("worker", "")).endswith(mark):
                victim.send_signal(signal.SIGKILL)
                killed = trial.number
                break
    assert killed is not None, "the victim never ran a trial"
    victim.wait()
    assert survivor.wait(timeout=300) == 0
    study = load(study_name, storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials)
    lost = trials[killed]
    assert lost.state == TrialState.FAIL
    assert "worker lost" in lost.user_attrs["fail_reason"]
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1
    assert retried[0].state == TrialState.COMPLETE
    assert retried[0].params == lost.params


def test_sigterm_ends_the_search_with_no_trial_left_running(
    tmp_path: Path, score_task: str, study_name: str
) -> None:
    storage = f"sqlite:///{tmp_path}/tuner.db"
    config = tmp_path / "tuner.toml"
    config.write_text("[data]\nsleep = 2.0\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *search_args(score_task, study_name, storage, 50, 1),
         "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            running = load(study_name, storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
        if running:
            break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "Interrupted" in output and "Traceback" not in output
    trials = load(study_name, storage).trials
    assert trials and all(t.state.is_finished() for t in trials)
