"""``tuner search --workers N``: N worker processes on this machine, one study.

Each worker is a ``tuner search`` process of its own against the same storage (so the same
mechanism serves workers on other machines); this module starts them, pins each to a GPU
when there are GPUs, follows the study for the display and stops them cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.config import Config
from tuner.errors import TunerError
from tuner.search import (
    NoEvents,
    SearchEvents,
    SearchResult,
    _result,
    open_study,
    plan_search,
)
from tuner.storage import open_storage

POLL_SECONDS = 1.0
STOP_SECONDS = 60.0


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    log: Path
    gpu: str | None


def visible_gpus(requested: str | None) -> list[str]:
    """The GPUs to spread workers over: ``--gpus`` (``all`` or ``0,1``), else every visible
    CUDA device, else none (CPU)."""
    if requested is not None and requested != "all":
        return [part.strip() for part in requested.split(",") if part.strip()]
    import torch

    count = torch.cuda.device_count()
    if requested == "all" and count == 0:
        raise TunerError("--gpus all: no CUDA GPU is visible; leave --gpus out to use the CPU")
    return [str(i) for i in range(count)]


def worker_env(index: int, workers: int, gpus: Sequence[str]) -> dict[str, str]:
    """The environment of worker ``index``: its GPU, or its share of the CPU cores."""
    env = dict(os.environ)
    env["TUNER_WORKER_INDEX"] = str(index)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        env.setdefault("MKL_NUM_THREADS", str(threads))
    return env


def worker_args(config_path: Path | None, flags: Mapping[str, Any]) -> list[str]:
    """The ``tuner search`` arguments every worker gets: the parent's, less ``--workers``."""
    args = ["search", "--quiet", "--workers", "1"]
    if config_path is not None:
        args += ["--config", str(config_path)]
    for key, value in flags.items():
        if value is None or key in ("workers", "gpus", "worker_index", "quiet"):
            continue
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def run_workers(
    config: Config,
    config_path: Path | None,
    flags: Mapping[str, Any],
    events: SearchEvents | None = None,
) -> SearchResult:
    """Start ``config.study.workers`` workers and follow the study until they end.

    Raises:
        TunerError: invalid input, or a worker that failed (with its last error line).
    """
    events = events or NoEvents()
    plan = plan_search(config)
    storage = open_storage(plan.storage)
    # Created here, once, so that the workers find the study (and the tables) in place.
    study = open_study(plan, storage)
    count = config.study.workers
    gpus = visible_gpus(config.study.gpus)
    logs = plan.study_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    events.on_start(plan, len(before))
    workers = [_start(i, count, gpus, logs, config_path, flags) for i in range(count)]
    seen = set(before)
    try:
        while any(w.process.poll() is None for w in workers):
            seen = _follow(study, seen, events)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _stop(workers, study)
        raise
    seen = _follow(study, seen, events)
    # A worker killed by a signal (a lost node) is survived by the others, which run its
    # trial again; a worker that exits with an error stops the search with that error.
    failed = [w for w in workers if (w.process.returncode or 0) > 0]
    if failed:
        raise TunerError(f"worker {failed[0].index} failed: {_last_error(failed[0].log)}")
    return _result(study, plan, len(seen - before))


def _start(
    index: int,
    count: int,
    gpus: Sequence[str],
    logs: Path,
    config_path: Path | None,
    flags: Mapping[str, Any],
) -> Worker:
    log = logs / f"worker-{index}.log"
    command = [sys.executable, "-m", "tuner.cli", *worker_args(config_path, flags)]
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=worker_env(index, count, gpus),
        )
    gpu = gpus[index % len(gpus)] if gpus else None
    return Worker(index, process, log, gpu)


def _follow(study: optuna.Study, seen: set[int], events: SearchEvents) -> set[int]:
    """Tell the display about trials that finished since the last look."""
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.number not in seen:
            seen = seen | {trial.number}
            events.on_trial_end(trial)
    return seen


def _stop(workers: Sequence[Worker], study: optuna.Study) -> None:
    """Interrupt the workers (their running trials are marked FAIL), then make sure."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    host = socket.gethostname()
    ours = {f"{host}:{w.process.pid}" for w in workers}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") in ours:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker stopped")
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def _last_error(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("Error: ")]
    if errors:
        return errors[-1].removeprefix("Error: ")
    return (lines[-1] if lines else "no output") + f" (log: {log})"
