"""(a) Search quality per compute: ``tuner search`` against transformers' own
``Trainer.hyperparameter_search(backend="optuna")``, one after the other in one invocation.

    .venv/bin/python bench/vs_hps.py [--trials 10] [--train-rows 1000] [--seed 42]
    .venv/bin/python bench/vs_hps.py --smoke

Both get the same data (the first ``--train-rows`` rows of SST-2 train, all 872 dev rows),
the packaged MiniLM, the same search space (tuner's default one, written out below for the
peer and checked against ``tuner.space.DEFAULT_SPACE``), the same number of trials and the
same seed, dynamic padding, and each otherwise keeps its own defaults:

- tuner: ``python -m tuner.cli search --config <generated toml> --trials N --seed S --quiet``
  with a fresh studies folder: TPE (seeded), median pruner, the default point as trial 0,
  evaluations per epoch at "auto" (1 on this data), the best model exported.
- the peer, as transformers' documentation shows it: a ``model_init``, a ``Trainer`` with
  ``DataCollatorWithPadding``, ``eval_strategy="epoch"``, ``save_strategy="no"``,
  ``report_to="none"``, ``seed=S``, then ``hyperparameter_search(direction="maximize",
  backend="optuna", hp_space=..., n_trials=N, compute_objective=<accuracy>,
  sampler=TPESampler(seed=S), pruner=MedianPruner())``; the last two are forwarded to
  ``optuna.create_study``. The sampler is the default one, seeded so that reruns repeat.
  ``warmup_steps=0.0`` is given as a float: ``hyperparameter_search`` casts each sampled
  value to the type of the argument's current value, and the default ``0`` (an int) would
  turn every sampled warm-up fraction into 0.

Each runs in its own process with its own empty datasets cache, so both pay interpreter
start-up, imports, data loading and tokenisation; the parent times each process from launch
to exit (wall). Times to a result are taken from Optuna's trial records: ``datetime_complete``
of each finished trial minus the moment the parent launched that process (tuner: read from
its SQLite study after the run; the peer: the in-memory study, captured by wrapping
``optuna.create_study`` in the peer's process, so its storage stays the default one).

Reported: wall time, best dev accuracy, the time at which each tool first finished a trial at
or above the peer's best accuracy, that time for tuner as a share of the peer's wall time
(target: at most 0.5), and whether tuner ends at or above the peer's best.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Setup,
    accuracy,
    add_common_args,
    child_env,
    emit,
    last_json_line,
    load_splits,
    machine,
    make_setup,
    out_path,
    print_table,
    seconds_since,
    tuner_toml,
)

STUDY = "vs-hps"
SMOKE_TRIALS = 3
EPSILON = 1e-9  # accuracies are k/872 computed the same way by both; this only guards floats


def peer_hp_space(trial: Any) -> dict[str, Any]:
    """tuner's default search space, written as a transformers user would."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 2e-4, log=True),
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 4),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", [8, 16, 32]
        ),
        "warmup_steps": trial.suggest_float("warmup_steps", 0.0, 0.2),
        "label_smoothing_factor": trial.suggest_float("label_smoothing_factor", 0.0, 0.2),
    }


def check_same_space() -> None:
    """Fail if the peer's space above drifts from tuner's default space."""
    import optuna

    from tuner.space import DEFAULT_SPACE, suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    ours = study.ask()
    suggest(DEFAULT_SPACE, ours)
    theirs = study.ask()
    peer_hp_space(theirs)
    if ours.distributions != theirs.distributions:
        raise SystemExit(
            f"the peer's space {theirs.distributions} differs from tuner's {ours.distributions}"
        )


def run_peer(setup: Setup, n_trials: int, seed: int) -> dict[str, Any]:
    """The peer's search, in this process (a child of the benchmark)."""
    import optuna
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    train, dev = load_splits(setup)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)

    def tokenize(batch: dict[str, list[Any]]) -> Any:
        return tokenizer(batch["text"], truncation=True)

    train = train.map(tokenize, batched=True)
    dev = dev.map(tokenize, batched=True)

    def model_init(trial: Any = None) -> Any:
        return AutoModelForSequenceClassification.from_pretrained(setup.model_dir, num_labels=2)

    studies: list[optuna.Study] = []
    create_study = optuna.create_study

    def capture(*args: Any, **kwargs: Any) -> optuna.Study:
        study = create_study(*args, **kwargs)
        studies.append(study)
        return study

    optuna.create_study = capture  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            eval_strategy="epoch",
            save_strategy="no",
            report_to="none",
            seed=seed,
            warmup_steps=0.0,
        )
        trainer = Trainer(
            model_init=model_init,
            args=args,
            train_dataset=train,
            eval_dataset=dev,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        )
        trainer.hyperparameter_search(
            direction="maximize",
            backend="optuna",
            hp_space=peer_hp_space,
            n_trials=n_trials,
            compute_objective=lambda metrics: metrics["eval_accuracy"],
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(),
        )
    optuna.create_study = create_study  # type: ignore[assignment]
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
            "params": t.params,
        }
        for t in studies[0].get_trials(deepcopy=False)
    ]
    return {"trials": trials}


def launch(cmd: list[str], setup: Setup, name: str) -> tuple[datetime, float, str]:
    """Run a benchmarked process; returns its launch time, wall seconds and output."""
    log = Path(setup.scratch) / f"{name}.log"
    started_at = datetime.now()
    started = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.run(
            cmd, cwd=REPO, env=child_env(setup, name), stdout=handle, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - started
    text = log.read_text()
    if proc.returncode != 0:
        print(text[-4000:], file=sys.stderr)
        raise SystemExit(f"{name}: exit status {proc.returncode}")
    return started_at, wall, text


def run_tuner(setup: Setup, scratch: Path, n_trials: int, seed: int) -> dict[str, Any]:
    import optuna

    studies = scratch / "tuner-studies"
    config = scratch / "vs-hps.toml"
    config.write_text(tuner_toml(setup, studies, STUDY))
    cmd = [sys.executable, "-m", "tuner.cli", "search", "--config", str(config)]
    cmd += ["--trials", str(n_trials), "--seed", str(seed), "--quiet"]
    started_at, wall, _ = launch(cmd, setup, "tuner")
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{studies}/tuner.db")
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "seconds": seconds_since(started_at, t.datetime_complete),
            "params": t.params,
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return {"wall_seconds": wall, "trials": trials}


def run_peer_process(setup: Setup, scratch: Path, n_trials: int, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peer", "--setup", setup.to_json()]
    cmd += ["--trials", str(n_trials), "--seed", str(seed)]
    started_at, wall, text = launch(cmd, setup, "peer")
    trials = last_json_line(text)["trials"]
    for trial in trials:
        done = trial.pop("completed")
        moment = datetime.fromisoformat(done) if done else None
        trial["seconds"] = seconds_since(started_at, moment)
    return {"wall_seconds": wall, "trials": trials}


def first_at_or_above(trials: list[dict[str, Any]], target: float) -> float | None:
    times = [
        t["seconds"]
        for t in trials
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] >= target - EPSILON
    ]
    return min(times) if times else None


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    trials = run["trials"]
    values = [t["value"] for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    best = max(values) if values else None
    states = [t["state"] for t in trials]
    return {
        **run,
        "best_accuracy": best,
        "best_reached_seconds": None if best is None else first_at_or_above(trials, best),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
    }


def compare(tuner: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    peer_best = peer["best_accuracy"]
    reach = None if peer_best is None else first_at_or_above(tuner["trials"], peer_best)
    share = None if reach is None else reach / peer["wall_seconds"]
    above = (
        tuner["best_accuracy"] is not None
        and peer_best is not None
        and tuner["best_accuracy"] >= peer_best - EPSILON
    )
    return {
        "tuner_seconds_to_peer_best": reach,
        "tuner_seconds_to_peer_best_over_peer_wall": share,
        "tuner_wall_over_peer_wall": tuner["wall_seconds"] / peer["wall_seconds"],
        "tuner_ends_at_or_above_peer_best": above,
        "targets": {
            "reaches_peer_best_within_half_peer_wall": share is not None and share <= 0.5,
            "ends_at_or_above_peer_best": above,
        },
    }


def short(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "lr": params.get("learning_rate"),
        "epochs": params.get("num_train_epochs"),
        "batch": params.get("per_device_train_batch_size"),
        "warmup": params.get("warmup_steps"),
        "smoothing": params.get("label_smoothing_factor"),
    }


def report(result: dict[str, Any]) -> None:
    rows = []
    for tool in ("tuner", "peer"):
        run = result[tool]
        reach = first_at_or_above(run["trials"], result["peer"]["best_accuracy"] or 2.0)
        rows.append(
            {
                "run": "tuner search" if tool == "tuner" else "Trainer.hyperparameter_search",
                "wall s": run["wall_seconds"],
                "complete/pruned/failed": f"{run['complete']}/{run['pruned']}/{run['failed']}",
                "best dev acc": run["best_accuracy"],
                "best at s": run["best_reached_seconds"],
                "peer's best at s": reach,
                "÷ peer wall": None if reach is None else reach / result["peer"]["wall_seconds"],
            }
        )
    print_table(
        rows,
        f"Search quality per compute ({result['trials']} trials, seed "
        f"{result['seed']}, {result['train_rows']} train rows)",
    )
    per_trial = [
        {
            "run": tool,
            "trial": t["number"],
            "state": t["state"],
            "accuracy": t["value"],
            "done at s": t["seconds"],
            **short(t["params"]),
        }
        for tool in ("tuner", "peer")
        for t in result[tool]["trials"]
    ]
    print_table(per_trial, "Trials")
    targets = result["targets"]
    half = "met" if targets["reaches_peer_best_within_half_peer_wall"] else "NOT met"
    above = "yes" if targets["ends_at_or_above_peer_best"] else "NO"
    print(
        f"\ntuner reached the peer's best after {_fmt(result['tuner_seconds_to_peer_best'])} s "
        f"= {_fmt(result['tuner_seconds_to_peer_best_over_peer_wall'])} of the peer's wall "
        f"(target <= 0.5: {half}); ends at or above it: {above}\n"
    )


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "vs_hps")
    parser.add_argument("--trials", type=int, help=f"[default: 10; {SMOKE_TRIALS} with --smoke]")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--peer-first", action="store_true", help="run the peer before tuner")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_trials = args.trials or (SMOKE_TRIALS if args.smoke else 10)
    if args.peer:
        from transformers.utils import logging

        logging.set_verbosity_error()
        emit(run_peer(Setup.from_json(args.setup), n_trials, args.seed), None)
        return
    check_same_space()
    load_before = machine(warn=True)
    with tempfile.TemporaryDirectory(prefix="bench-vs-hps-") as tmp:
        scratch = Path(tmp)
        setup = make_setup(args, scratch)
        if args.peer_first:
            peer = run_peer_process(setup, scratch, n_trials, args.seed)
            tuner = run_tuner(setup, scratch, n_trials, args.seed)
        else:
            tuner = run_tuner(setup, scratch, n_trials, args.seed)
            peer = run_peer_process(setup, scratch, n_trials, args.seed)
    result: dict[str, Any] = {
        "benchmark": "vs_hps",
        "smoke": setup.smoke,
        "model": setup.model if not setup.smoke else "tiny random BERT",
        "trials": n_trials,
        "seed": args.seed,
        "train_rows": setup.train_rows,
        "order": "peer first" if args.peer_first else "tuner first",
        "machine": {"before": load_before, "after": machine()},
        "tuner": summarise(tuner),
        "peer": summarise(peer),
    }
    result.update(compare(result["tuner"], result["peer"]))
    report(result)
    emit(result, out_path(args))


if __name__ == "__main__":
    main()
