"""Fault injection: 8 workers on one study while random workers are killed with SIGKILL.

Each killed worker is replaced at once, as a cluster scheduler would. The trials are a fake
task that scores parameters after a sleep (no training), so the run measures the
coordination: exactly ``--trials`` finished trials, each trial number once, every killed
trial failed by the heartbeat and run again. ``lost`` counts trials that never finished plus
trials missing from the total; it must be 0.

    python bench/fault_injection.py --minutes 4
    python bench/fault_injection.py --storage redis://127.0.0.1:6379/15

Not part of the test suite; the result goes to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import common  # noqa: F401 - puts the repository on sys.path, for tests.distributed
import optuna
from optuna.trial import TrialState

from tests.distributed.conftest import SCORE_TASK
from tuner.storage import open_storage

# The sleeping score task of the distributed tests, under its own name.
TASK = SCORE_TASK.format(name="faultbench")


def install_task(root: Path) -> None:
    package = root / "tuner_faultbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(TASK)
    info = root / "tuner_faultbench-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tuner_faultbench\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[tuner.tasks]\nfaultbench = tuner_faultbench:FakeTask\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=4.0, help="how long to keep killing")
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds per fake trial")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="tuner-faults-"))
    install_task(scratch / "site")
    config = scratch / "tuner.toml"
    config.write_text(
        f"[study]\nheartbeat_seconds = 2\ngrace_seconds = 6\nmax_retries = 3\n"
        f"[data]\nsleep = {args.sleep}\n"
    )
    study_name = f"faults-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(scratch / "site"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "tuner.cli", "search", "--task", "faultbench",
        "--study-name", study_name, "--storage", args.storage, "--trials", str(args.trials),
        "--config", str(config), "--studies-dir", str(scratch / "studies"),
        "--sampler", "random", "--quiet",
    ]  # fmt: skip

    def start(index: int) -> subprocess.Popen[bytes]:
        log = open(scratch / f"worker-{index}.log", "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen(
            [*command, "--worker-index", str(index)], env=env, stdout=log, stderr=log
        )

    started = time.monotonic()
    workers = {i: start(i) for i in range(args.workers)}
    next_index = args.workers
    kills = 0
    while time.monotonic() - started < args.minutes * 60:
        time.sleep(args.kill_every)
        alive = [i for i, p in workers.items() if p.poll() is None]
        if not alive:
            break
        victim = rng.choice(alive)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        workers[next_index] = start(next_index)
        next_index += 1
    for process in workers.values():
        process.wait()
    wall = time.monotonic() - started

    study = optuna.load_study(study_name=study_name, storage=open_storage(args.storage))
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    finished = [t for t in trials if t.state.is_finished()]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lost_workers = [t for t in failed if "worker lost" in t.user_attrs.get("fail_reason", "")]
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    unfinished = len(trials) - len(finished)
    lost = unfinished + max(0, args.trials - len(finished))
    result = {
        "storage": args.storage.split("://")[0],
        "workers": args.workers,
        "target": args.trials,
        "wall_seconds": round(wall, 1),
        "kills": kills,
        "trials": len(trials),
        "finished": len(finished),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "failed": len(failed),
        "failed_worker_lost": len(lost_workers),
        "retried": len(retried),
        "retried_complete": sum(t.state == TrialState.COMPLETE for t in retried),
        "duplicate_numbers": len(numbers) - len(set(numbers)),
        "lost": lost,
    }
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))
    optuna.delete_study(study_name=study_name, storage=open_storage(args.storage))


if __name__ == "__main__":
    main()
