"""Mixed precision: one tuner trial per precision, same fixed settings, samples per second.

    .venv/bin/python bench/precision.py                 # CPU: fp32 and bf16 (autocast)
    .venv/bin/python bench/precision.py --precisions fp32,fp16,bf16   # on a CUDA GPU
    .venv/bin/python bench/precision.py --smoke

Each precision runs ``tuner search --precision P`` in a fresh process with a fresh study and
its own empty datasets cache, on the first ``--train-rows`` SST-2 rows and the packaged
MiniLM, with every searched value fixed (learning rate 5e-5, ``--epochs`` epochs, batch 16,
no warm-up, no smoothing) and ``--pruner none``. The figures are the trial's own records:
``train_samples_per_second`` (training rows x epochs over the time of the training loop,
evaluations excluded), the evaluation time and the dev accuracy.

What to expect: on an NVIDIA GPU with tensor cores (V100 and later for fp16, A100 and later
for bf16), fp16 and bf16 train this model about 2x faster than fp32 or more, at the same
accuracy within a point. On a CPU, fp16 is refused (it needs CUDA) and bf16 runs under
autocast: it checks that the path works and gives the same accuracy, not a speed-up (most
CPUs have no bf16 matrix units, so it is often slower).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Setup,
    add_common_args,
    child_env,
    emit,
    machine,
    make_setup,
    out_path,
    print_table,
    tuner_toml,
)

STUDY = "precision"


def run(setup: Setup, scratch: Path, precision: str, epochs: int) -> dict[str, Any]:
    import optuna

    studies = scratch / f"studies-{precision}"
    config = scratch / f"{precision}.toml"
    space = {
        "learning_rate": 5e-5,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": 16,
        "warmup_steps": 0.0,
        "label_smoothing_factor": 0.0,
    }
    config.write_text(tuner_toml(setup, studies, STUDY, space=space, pruner="none"))
    cmd = [sys.executable, "-m", "tuner.cli", "search", "--config", str(config)]
    cmd += ["--trials", "1", "--precision", precision, "--quiet"]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=child_env(setup, precision),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {"precision": precision, "error": (proc.stderr or proc.stdout).strip()[-300:]}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{studies}/tuner.db")
    trial = study.trials[0]
    attrs = trial.user_attrs
    return {
        "precision": precision,
        "train_samples_per_second": round(attrs["train_samples_per_second"], 2),
        "train_loop_seconds": round(attrs["train_loop_seconds"], 1),
        "eval_seconds": round(attrs["eval_seconds"], 1),
        "accuracy": trial.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "precision")
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="comma-separated, run in this order [default: fp32,bf16]",
    )
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    info = machine(warn=True)
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        setup = make_setup(args, Path(tmp))
        rows = [run(setup, Path(tmp), p, args.epochs) for p in args.precisions.split(",")]
    base = next((r for r in rows if r.get("precision") == "fp32" and "error" not in r), None)
    for row in rows:
        if base is not None and "error" not in row:
            row["speed_vs_fp32"] = round(
                row["train_samples_per_second"] / base["train_samples_per_second"], 2
            )
    print_table(rows, title="tuner trial per precision")
    emit({"machine": info, "train_rows": setup.train_rows, "runs": rows}, out_path(args))


if __name__ == "__main__":
    main()
