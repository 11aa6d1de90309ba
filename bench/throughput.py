"""(c) Training throughput: a tuner trial against a plain ``Trainer`` run with the same
settings, and against the tutorial recipe that pads every example to a fixed length.

    .venv/bin/python bench/throughput.py [--train-rows 1000] [--repeat 1]
    .venv/bin/python bench/throughput.py --smoke

Fixed settings for every run: the first ``--train-rows`` SST-2 train rows, the packaged
MiniLM, learning rate 5e-5, 1 epoch, batch 16, seed 42, no warm-up, no label smoothing, fp32
on the CPU. The runs:

- ``tuner``: ``run_search`` (in-process, as ``tuner search`` runs it) on a space with every
  value fixed, 1 trial, ``--pruner none``, everything else at tuner's defaults (dynamic
  padding, length-grouped batches, evaluations per epoch at "auto", the best model exported).
- ``plain``: ``Trainer`` with ``DataCollatorWithPadding``, no evaluation during training,
  one ``evaluate()`` at the end; all other arguments at transformers' defaults (random
  batches).
- ``plain-grouped``: the same with ``train_sampling_strategy="group_by_length"``, tuner's
  default sampler. Not a target; it tells how much of tuner's throughput comes from grouping
  rows of similar length rather than from the rest of the trial.
- ``fixed128``: the tutorial recipe: ``tokenizer(..., padding="max_length", max_length=128,
  truncation=True)`` and the default collator (64 in ``--smoke``, the tiny model's limit).

How: each run is a fresh child process (with its own empty datasets cache), so no run warms
the allocator or the caches of another. In it, ``Trainer.train`` and ``Trainer.evaluate`` are
wrapped with timers (``common.Profiler``); a run's training time is the wall time of its
``train()`` call minus the ``evaluate()`` calls nested in it (tuner's evaluations during
training; the others have none), so every run is compared on training alone: the optimizer
and dataloader set-up, every step, and the callbacks, tuner's included. Samples per second
is ``train rows x epochs / training time``. The Trainer's own ``train_samples_per_second``,
which counts the evaluations inside ``train()``, is reported beside it. With ``--repeat N``
the runs go round-robin (order rotated each round) and the median counts.

Targets: tuner at least 0.98x ``plain`` and at least 2x ``fixed128``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Profiler,
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
    tuner_toml,
)

RUNS = ("tuner", "plain", "plain-grouped", "fixed128")
LABEL = {
    "tuner": "tuner trial",
    "plain": "plain Trainer, dynamic padding",
    "plain-grouped": "plain Trainer, dynamic padding, group_by_length",
    "fixed128": "tutorial: padding=max_length 128",
}
SETTINGS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "warmup_steps": 0.0,
    "label_smoothing_factor": 0.0,
}
SEED = 42
FIXED_LENGTH = 128


def timed_profiler() -> Profiler:
    import transformers

    profiler = Profiler()
    profiler.patch(transformers.Trainer, "train", "train loop", keep=True)
    profiler.patch(transformers.Trainer, "evaluate", "eval loop")
    return profiler


def measure(profiler: Profiler, rows: int, value: float | None) -> dict[str, Any]:
    ((train_seconds, evals_inside),) = profiler.train_without_eval()
    (output,) = profiler.results["train loop"]
    samples = rows * SETTINGS["num_train_epochs"]
    return {
        "train_seconds": train_seconds,
        "samples": samples,
        "samples_per_second": samples / train_seconds,
        "trainer_reported_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_call_seconds": output.metrics.get("train_runtime"),
        "evaluations_during_training": evals_inside,
        "dev_accuracy": value,
    }


def run_tuner(setup: Setup) -> dict[str, Any]:
    from tuner.config import load_config
    from tuner.search import run_search

    # A new folder (and so a new study) per run: with --repeat, a study left by an earlier
    # round would already hold its one trial, and nothing would train.
    scratch = Path(tempfile.mkdtemp(prefix="tuner-run-", dir=setup.scratch))
    config_path = scratch / "throughput.toml"
    config_path.write_text(
        tuner_toml(setup, scratch / "studies", "throughput", space=SETTINGS, pruner="none")
    )
    config = load_config(config_path, {"trials": 1, "seed": SEED})
    profiler = timed_profiler()
    with profiler.active():
        result = run_search(config)
    assert result.best is not None, "the tuner trial did not complete"
    return measure(profiler, setup.train_rows, result.best.value)


def run_plain(setup: Setup, name: str) -> dict[str, Any]:
    import transformers
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    transformers.utils.logging.set_verbosity_error()
    train, dev = load_splits(setup)
    tokenizer = AutoTokenizer.from_pretrained(setup.model_dir)
    fixed = name == "fixed128"
    length = min(FIXED_LENGTH, tokenizer.model_max_length)

    def tokenize(batch: dict[str, list[Any]]) -> Any:
        if fixed:
            return tokenizer(
                batch["text"], padding="max_length", max_length=length, truncation=True
            )
        return tokenizer(batch["text"], truncation=True)

    train = train.map(tokenize, batched=True)
    dev = dev.map(tokenize, batched=True)
    transformers.set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(setup.model_dir, num_labels=2)
    extra: dict[str, Any] = {}
    if name == "plain-grouped":
        extra["train_sampling_strategy"] = "group_by_length"
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            seed=SEED,
            **SETTINGS,
            **extra,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=dev,
            processing_class=None if fixed else tokenizer,
            data_collator=default_data_collator if fixed else DataCollatorWithPadding(tokenizer),
            compute_metrics=accuracy,
        )
        profiler = timed_profiler()
        with profiler.active():
            trainer.train()
            metrics = trainer.evaluate()
    out = measure(profiler, setup.train_rows, float(metrics["eval_accuracy"]))
    out["padded_length"] = length if fixed else None
    return out


def child(setup: Setup, name: str) -> dict[str, Any]:
    return run_tuner(setup) if name == "tuner" else run_plain(setup, name)


def spawn(setup: Setup, name: str, round_: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run", name]
    cmd += ["--setup", setup.to_json()]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=child_env(setup, f"{name}-{round_}"),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"run {name} failed with exit status {proc.returncode}")
    return last_json_line(proc.stdout)


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary = {}
    for name, measured in runs.items():
        rates = [m["samples_per_second"] for m in measured]
        summary[name] = {
            "samples_per_second": statistics.median(rates),
            "samples_per_second_each": rates,
            "train_seconds": statistics.median(m["train_seconds"] for m in measured),
            "trainer_reported_samples_per_second": statistics.median(
                m["trainer_reported_samples_per_second"] for m in measured
            ),
            "evaluations_during_training": measured[0]["evaluations_during_training"],
            "dev_accuracy": [m["dev_accuracy"] for m in measured],
            "runs": measured,
        }
    rate = {name: s["samples_per_second"] for name, s in summary.items()}
    ratios = {
        "tuner_over_plain": rate["tuner"] / rate["plain"],
        "tuner_over_fixed128": rate["tuner"] / rate["fixed128"],
        "plain_over_fixed128": rate["plain"] / rate["fixed128"],
        "plain_grouped_over_plain": rate["plain-grouped"] / rate["plain"],
        "tuner_over_plain_grouped": rate["tuner"] / rate["plain-grouped"],
    }
    return {
        "runs": summary,
        "ratios": ratios,
        "targets": {
            "tuner_at_least_0.98x_plain": ratios["tuner_over_plain"] >= 0.98,
            "tuner_at_least_2x_fixed128": ratios["tuner_over_fixed128"] >= 2.0,
        },
    }


def report(result: dict[str, Any]) -> None:
    rows = [
        {
            "run": LABEL[name],
            "train samples/s": s["samples_per_second"],
            "each round": " ".join(f"{r:.1f}" for r in s["samples_per_second_each"]),
            "train s": s["train_seconds"],
            "evals in train()": s["evaluations_during_training"],
            "Trainer's own samples/s": s["trainer_reported_samples_per_second"],
            "dev acc": " ".join(f"{a:.3f}" for a in s["dev_accuracy"]),
        }
        for name, s in result["runs"].items()
    ]
    print_table(
        rows,
        f"Training throughput ({result['train_rows']} rows, lr 5e-5, 1 epoch, batch 16, "
        f"seed 42; median of {result['repeat']})",
    )
    print_table([{"ratio": k, "value": v} for k, v in result["ratios"].items()], "Ratios")
    targets = result["targets"]
    print(
        "\ntargets: tuner >= 0.98x plain: "
        f"{'met' if targets['tuner_at_least_0.98x_plain'] else 'NOT met'}; "
        f"tuner >= 2x fixed128: {'met' if targets['tuner_at_least_2x_fixed128'] else 'NOT met'}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "throughput")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all four runs")
    parser.add_argument("--run", choices=RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        emit(child(Setup.from_json(args.setup), args.run), None)
        return
    load_before = machine(warn=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        scratch = Path(tmp)
        setup = make_setup(args, scratch)
        for round_ in range(args.repeat):
            order = RUNS[round_ % len(RUNS) :] + RUNS[: round_ % len(RUNS)]
            for name in order:
                runs[name].append(spawn(setup, name, round_))
    result: dict[str, Any] = {
        "benchmark": "throughput",
        "smoke": setup.smoke,
        "model": setup.model if not setup.smoke else "tiny random BERT",
        "train_rows": setup.train_rows,
        "settings": SETTINGS,
        "seed": SEED,
        "repeat": args.repeat,
        "machine": {"before": load_before, "after": machine()},
        **summarise(runs),
    }
    report(result)
    emit(result, out_path(args))


if __name__ == "__main__":
    main()
