"""Pruners compared by replay: what each would have done to a study run without pruning.

    tuner search --config bench/sst2-curves.toml --trials 12 --sampler random --pruner none
    .venv/bin/python bench/prune_replay.py --study bench-sst2-random-nopruner

Every trial of a study run with ``--pruner none`` holds its whole learning curve: one value
per evaluation (two per epoch in bench/sst2-curves.toml), with the time of its training loop
and of its evaluations. The script feeds those curves, in trial order, to each candidate
pruner through Optuna's own ``report`` / ``should_prune`` (a fresh in-memory study per
pruner) and records where each trial would have stopped. A stopped trial's cost is its
training-loop time scaled by the share of the schedule it reached, plus the evaluations it
ran. Each pruner is also replayed on one evaluation per epoch (every other value, and half
the evaluation time), to price sub-epoch evaluations. Nothing is retrained, so every pruner
sees the same trials and the comparison costs no compute; what it cannot show is how a
sampler would have reacted to the pruning (TPE treats pruned trials as bad), which is why
the source study uses the random sampler.

Reported per pruner: trials pruned, compute used as a share of the unpruned study, the best
value among the trials it let finish, and whether that is the study's true best.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from common import REPO, emit, print_table

# The candidates, with tuner's settings (see tuner.search.make_pruner) for ``e`` evaluations
# per epoch: nothing is pruned inside the first epoch unless stated.
Factory = Callable[[int], optuna.pruners.BasePruner]
PRUNERS: dict[str, Factory] = {
    "none": lambda e: optuna.pruners.NopPruner(),
    "median": lambda e: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=e),
    "median, no warm-up": lambda e: optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=0
    ),
    # Optuna's percentile counts from the top: 75 keeps the best 75% at each step, so it
    # prunes only the bottom quarter (the median pruner is percentile 50).
    "percentile 75": lambda e: optuna.pruners.PercentilePruner(
        75.0, n_startup_trials=5, n_warmup_steps=e
    ),
    "hyperband": lambda e: optuna.pruners.HyperbandPruner(min_resource=e, reduction_factor=3),
    "successive halving": lambda e: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=e, reduction_factor=3
    ),
}


def curves(study: optuna.Study) -> list[dict[str, Any]]:
    """Complete trials in number order: values by evaluation step, value, time split into
    the training loop and the evaluations."""
    out = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state != optuna.trial.TrialState.COMPLETE or not trial.intermediate_values:
            continue
        attrs = trial.user_attrs
        steps = sorted(trial.intermediate_values.items())
        out.append(
            {
                "number": trial.number,
                "steps": steps,
                "value": trial.value,
                "train_s": float(attrs["train_loop_seconds"]),
                "eval_s": float(attrs["eval_seconds"]),
                "evals": len(steps),  # one reported value per evaluation
                "epochs": trial.params.get("num_train_epochs"),
            }
        )
    return out


def replay(
    name: str, make: Factory, evals_per_epoch: int, source_evals: int, runs: list[dict]
) -> dict:
    """Feed ``runs`` to a fresh study with ``make(evals_per_epoch)``. With fewer evaluations
    per epoch than the source, only every ``source_evals // evals_per_epoch``-th value is
    seen, and evaluations cost in proportion."""
    every = source_evals // evals_per_epoch
    study = optuna.create_study(
        study_name="replay", direction="maximize", pruner=make(evals_per_epoch)
    )
    used = 0.0
    pruned: list[int] = []
    finished: list[tuple[float, int]] = []
    for run in runs:
        trial = study.ask()
        seen = [(step // every, value) for step, value in run["steps"] if step % every == 0]
        last = seen[-1][0]
        eval_each = run["eval_s"] / run["evals"]
        stopped_at = last
        for step, value in seen:
            trial.report(value, step)
            if step != last and trial.should_prune():
                stopped_at = step
                break
        used += run["train_s"] * stopped_at / last + eval_each * stopped_at
        if stopped_at == last:
            study.tell(trial, run["value"])
            finished.append((run["value"], run["number"]))
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            pruned.append(run["number"])
    best_value, best_number = max(finished)
    true_best = max(runs, key=lambda run: run["value"])
    return {
        "pruner": name,
        "evals/epoch": evals_per_epoch,
        "pruned": len(pruned),
        "compute_s": round(used),
        "best": round(best_value, 4),
        "best_trial": best_number,
        "kept_true_best": best_number == true_best["number"],
        "pruned_trials": pruned,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study run with --pruner none")
    parser.add_argument(
        "--storage",
        default=f"sqlite:///{REPO / 'bench/results/studies/tuner.db'}",
        help="its storage URL [default: bench/results/studies/tuner.db]",
    )
    parser.add_argument(
        "--evals-per-epoch",
        type=int,
        default=2,
        help="evaluations per epoch of the source study [default: 2]",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/prune_replay.json")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = optuna.load_study(study_name=args.study, storage=args.storage)
    runs = curves(source)
    if len(runs) < 2:
        raise SystemExit(f"study {args.study}: fewer than 2 complete trials with curves")
    rows = [
        replay(name, make, per_epoch, args.evals_per_epoch, runs)
        for per_epoch in sorted({args.evals_per_epoch, 1}, reverse=True)
        for name, make in PRUNERS.items()
    ]
    unpruned = rows[0]["compute_s"]
    for row in rows:
        row["compute_share"] = round(row["compute_s"] / unpruned, 3)
    print_table(
        [{k: v for k, v in row.items() if k != "pruned_trials"} for row in rows],
        title=f"{args.study}: {len(runs)} trials, {unpruned} s of training and evaluation",
    )
    emit(
        {
            "study": args.study,
            "trials": [
                {k: run[k] for k in ("number", "value", "epochs", "train_s", "eval_s")}
                | {"curve": [round(v, 4) for _, v in run["steps"]]}
                for run in runs
            ],
            "pruners": rows,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
