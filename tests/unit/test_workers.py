from __future__ import annotations

from pathlib import Path

import pytest

from tuner.config import load_config
from tuner.errors import TunerError
from tuner.search import worker_index
from tuner.workers import visible_gpus, worker_args, worker_env


def test_each_worker_gets_its_own_gpu_round_robin() -> None:
    gpus = ["0", "1", "3"]
    assigned = [worker_env(i, 4, gpus)["CUDA_VISIBLE_DEVICES"] for i in range(4)]
    assert assigned == ["0", "1", "3", "0"]
    assert worker_env(2, 4, gpus)["TUNER_WORKER_INDEX"] == "2"


def test_cpu_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    env = worker_env(0, 4, [])
    assert env["OMP_NUM_THREADS"] == "2" and "CUDA_VISIBLE_DEVICES" not in env


def test_gpu_lists() -> None:
    assert visible_gpus("0, 2") == ["0", "2"]
    assert visible_gpus(None) == []  # no CUDA on this machine: CPU workers
    with pytest.raises(TunerError, match="no CUDA GPU is visible"):
        visible_gpus("all")


def test_workers_get_the_parents_arguments_but_run_alone() -> None:
    args = worker_args(
        Path("tuner.toml"),
        {"task": "sentiment", "trials": 40, "workers": 4, "gpus": "0,1", "model": None},
    )
    assert args[:4] == ["search", "--quiet", "--workers", "1"]
    assert "--gpus" not in args and "--model" not in args
    assert args[args.index("--trials") + 1] == "40"
    assert args[args.index("--config") + 1] == "tuner.toml"


def test_worker_index_from_flag_or_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("TUNER_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    assert worker_index(load_config(None, {"task": "sentiment"})) == 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    assert worker_index(load_config(None, {"task": "sentiment"})) == 5
    assert worker_index(load_config(None, {"task": "sentiment", "worker_index": 2})) == 2
