"""(b) Overhead: the share of ``tuner search``'s wall time spent outside the ``Trainer``'s
training and evaluation loops, per trial and in total.

    .venv/bin/python bench/overhead.py [--trials 3] [--train-rows 1000]
    .venv/bin/python bench/overhead.py --smoke

The search runs in a fresh child process (so imports and data loading are paid as a user
pays them) through ``tuner.config.load_config`` and ``tuner.search.run_search``, exactly as
``tuner search --config <generated toml> --trials N --quiet`` does minus Click's parsing and
the printing of the result. Everything is at tuner's defaults: SQLite study in a fresh
folder, TPE, median pruner, ``evals_per_epoch`` auto, the best model exported.

How time is measured: functions are wrapped with timers on the main thread (see
``common.Profiler``); each wrapped call's time is exclusive of the wrapped calls nested in
it, so the categories add up and nothing is counted twice.

- Inside the loops: every outermost call of ``transformers.Trainer.train`` and of
  ``Trainer.evaluate`` (the evaluations tuner asks for during training run inside ``train``;
  a final ``evaluate`` after it counts too). This is the whole of ``train()``, including
  what the Trainer does before its first step (optimizer, dataloader) and the callbacks it
  calls; tuner's own work inside the loops (its callbacks reporting to the study, the pruner,
  the database queries they make) is shown separately as "tuner work inside the loops" but
  counts as inside.
- Outside, by category: process start-up and imports (from the process's creation time to
  after importing tuner, torch, transformers and the plugin); data loading
  (``Task.load_splits``); tokenizer loading; tokenisation (``Task.preprocess``); the space
  check; model loading (``Task.build_model``); ``Trainer.__init__``; storage (every public
  method of Optuna's ``RDBStorage`` and its constructor: the database reads and writes);
  the study lock; the sampler (TPE's methods); export (``tuner.export.export_if_best``);
  ``gc.collect`` (Optuna's ``gc_after_trial``); and "other", the rest (tuner's and Optuna's
  Python between those calls, temporary folders).
- Segments: ``setup`` runs from the process's creation to the first trial; trial *k* runs
  from the start of its ``Study.optimize`` call (tuner runs one per trial) to the start of
  the next, or to the return of ``run_search`` for the last one.

Target: at most 3% outside the loops for each trial of 30 s or more.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from common import (  # noqa: E402
    LOOPS,
    REPO,
    Profiler,
    Setup,
    add_common_args,
    child_env,
    emit,
    last_json_line,
    machine,
    make_setup,
    out_path,
    print_table,
    tuner_toml,
)

STUDY = "overhead"
STARTUP = "start-up and imports"
TUNER_INSIDE = ("storage (DB)", "pruner", "tuner callbacks", "sampler")
ORDER = (
    STARTUP,
    "data load",
    "tokenizer load",
    "tokenisation",
    "space check",
    "storage (DB)",
    "study lock",
    "sampler",
    "model load",
    "Trainer init",
    "export",
    "gc.collect",
    "other",
)
TARGET_SHARE = 0.03
LONG_TRIAL = 30.0


def process_age() -> float:
    """Seconds since this process was created (the interpreter's start-up included)."""
    import psutil

    return max(0.0, time.time() - psutil.Process(os.getpid()).create_time())


def instrument(profiler: Profiler) -> None:
    import gc

    import optuna
    import transformers

    import tuner.export
    import tuner.storage
    import tuner.training
    from tuner.registry import load_task_class

    task = load_task_class("sentiment")
    profiler.patch(task, "load_splits", "data load")
    profiler.patch(task, "preprocess", "tokenisation")
    profiler.patch(task, "build_model", "model load")
    profiler.patch(tuner.training, "load_tokenizer", "tokenizer load")
    profiler.patch(tuner.training, "check_space", "space check")
    profiler.patch(transformers.Trainer, "__init__", "Trainer init")
    profiler.patch(transformers.Trainer, "train", "train loop")
    profiler.patch(transformers.Trainer, "evaluate", "eval loop")
    profiler.patch_public(optuna.storages.RDBStorage, "storage (DB)", also=["__init__"])
    profiler.patch(tuner.storage.StudyLock, "acquire", "study lock")
    profiler.patch(tuner.storage.StudyLock, "release", "study lock")
    for name in (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    ):
        profiler.patch(optuna.samplers.TPESampler, name, "sampler")
    for pruner in (optuna.pruners.MedianPruner, optuna.pruners.NopPruner):
        profiler.patch(pruner, "prune", "pruner")
    profiler.patch(tuner.training.PruningCallback, "on_evaluate", "tuner callbacks")
    profiler.patch(tuner.training.LossGuard, "on_log", "tuner callbacks")
    profiler.patch(tuner.training.ProgressCallback, "on_train_begin", "tuner callbacks")
    profiler.patch(tuner.training.ProgressCallback, "on_step_end", "tuner callbacks")
    profiler.patch(tuner.export, "export_if_best", "export")
    profiler.patch(gc, "collect", "gc.collect")
    profiler.mark_segments(optuna.Study, "optimize", "trial")


def child(setup: Setup, n_trials: int, seed: int) -> dict[str, Any]:
    """The measured search, in this (fresh) process."""
    age = process_age()
    # What `tuner search` imports before its first trial.
    import optuna
    import rich.console  # noqa: F401
    import transformers  # noqa: F401

    import tuner.cli  # noqa: F401
    import tuner.training  # noqa: F401
    import tuner_sentiment  # noqa: F401
    from tuner.config import load_config
    from tuner.search import run_search

    imported = time.perf_counter()
    profiler = Profiler()
    scratch = Path(setup.scratch)
    config_path = scratch / "overhead.toml"
    config_path.write_text(tuner_toml(setup, scratch / "studies", STUDY))
    instrument(profiler)
    with profiler.active():
        config = load_config(config_path, {"trials": n_trials, "seed": seed})
        result = run_search(config)
    ended = time.perf_counter()

    profiler.exclusive[("setup", STARTUP, False)] += imported - STARTED + age
    starts = [("setup", STARTED - age), *profiler.segments]
    bounds = [
        (name, start, nxt)
        for (name, start), (_, nxt) in zip(starts, starts[1:] + [("", ended)], strict=True)
    ]
    study = optuna.load_study(study_name=STUDY, storage=result.storage)
    trials = study.get_trials(deepcopy=False)
    segments = []
    for index, (name, start, end) in enumerate(bounds):
        trial = trials[index - 1] if index else None
        inside = {c: s for (seg, c, loop), s in profiler.exclusive.items() if seg == name and loop}
        outside = {
            c: s for (seg, c, loop), s in profiler.exclusive.items() if seg == name and not loop
        }
        segments.append(
            {
                "segment": name,
                "state": trial.state.name if trial else None,
                "params": trial.params if trial else None,
                "wall_seconds": end - start,
                "loop_seconds": profiler.loop_seconds.get(name, 0.0),
                "outside": outside,
                "tuner_inside_loops": {
                    c: s for c, s in inside.items() if c in TUNER_INSIDE and c not in LOOPS
                },
            }
        )
    return {"segments": segments}


def finish(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """Outside time, shares, and 'other' (outside time no category claims)."""
    for seg in segments:
        seg["outside_seconds"] = seg["wall_seconds"] - seg["loop_seconds"]
        seg["outside"]["other"] = seg["outside_seconds"] - sum(seg["outside"].values())
        seg["outside_share"] = seg["outside_seconds"] / seg["wall_seconds"]
        seg["tuner_inside_loops_seconds"] = sum(seg["tuner_inside_loops"].values())
    trials = [s for s in segments if s["segment"] != "setup"]
    wall = sum(s["wall_seconds"] for s in segments)
    loops = sum(s["loop_seconds"] for s in segments)
    long_trials = [s for s in trials if s["wall_seconds"] >= LONG_TRIAL]
    trials_wall = sum(s["wall_seconds"] for s in trials)
    return {
        "segments": segments,
        "total": {
            "wall_seconds": wall,
            "loop_seconds": loops,
            "outside_seconds": wall - loops,
            "outside_share": (wall - loops) / wall,
            "trials_outside_share": (
                sum(s["outside_seconds"] for s in trials) / trials_wall if trials_wall else None
            ),
        },
        "target": {
            "max_outside_share_per_trial": TARGET_SHARE,
            "trials_of_30s_or_more": len(long_trials),
            "worst_share_of_those": max((s["outside_share"] for s in long_trials), default=None),
            "met": (
                all(s["outside_share"] <= TARGET_SHARE for s in long_trials)
                if long_trials
                else None
            ),
        },
    }


def report(result: dict[str, Any]) -> None:
    segments = result["segments"]
    rows = [
        {
            "segment": s["segment"],
            "state": s["state"],
            "wall s": s["wall_seconds"],
            "in loops s": s["loop_seconds"],
            "outside s": s["outside_seconds"],
            "outside %": 100 * s["outside_share"],
            "tuner work inside loops s": s["tuner_inside_loops_seconds"],
        }
        for s in segments
    ]
    total = result["total"]
    rows.append(
        {
            "segment": "total",
            "wall s": total["wall_seconds"],
            "in loops s": total["loop_seconds"],
            "outside s": total["outside_seconds"],
            "outside %": 100 * total["outside_share"],
            "tuner work inside loops s": sum(s["tuner_inside_loops_seconds"] for s in segments),
        }
    )
    print_table(rows, "Wall time inside and outside the Trainer's loops")
    categories: list[str] = []
    for s in segments:
        categories += [c for c in s["outside"] if c not in categories]
    categories.sort(key=lambda c: ORDER.index(c) if c in ORDER else len(ORDER))
    breakdown = []
    for category in categories:
        row: dict[str, Any] = {"outside the loops, s": category}
        for s in segments:
            row[s["segment"]] = s["outside"].get(category)
        row["total"] = sum(s["outside"].get(category, 0.0) for s in segments)
        breakdown.append(row)
    print_table(breakdown, "Where the outside time goes")
    target = result["target"]
    verdict = {True: "met", False: "NOT met", None: "no trial of 30 s or more"}[target["met"]]
    print(f"\ntarget: <= 3% outside the loops per trial of 30 s or more: {verdict}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "overhead")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        emit(child(Setup.from_json(args.setup), args.trials, args.seed), None)
        return
    load_before = machine(warn=True)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        scratch = Path(tmp)
        setup = make_setup(args, scratch)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
        cmd += ["--setup", setup.to_json(), "--trials", str(args.trials)]
        cmd += ["--seed", str(args.seed)]
        proc = subprocess.run(
            cmd, cwd=REPO, env=child_env(setup, "child"), capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"the measured search failed with exit status {proc.returncode}")
        measured = last_json_line(proc.stdout)
    result: dict[str, Any] = {
        "benchmark": "overhead",
        "smoke": setup.smoke,
        "model": setup.model if not setup.smoke else "tiny random BERT",
        "trials": args.trials,
        "seed": args.seed,
        "train_rows": setup.train_rows,
        "machine": {"before": load_before, "after": machine()},
        **finish(measured["segments"]),
    }
    report(result)
    emit(result, out_path(args))


if __name__ == "__main__":
    main()
