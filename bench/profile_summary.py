"""Summarise a py-spy profile of ``tuner search`` (raw, collapsed stacks) by where time goes.

    py-spy record -r 50 -f raw -o bench/results/profile-fixed-trial.txt -- \\
        .venv/bin/tuner search --config bench/sst2-fixed.toml --trials 1 --pruner none \\
        --study-name prof-fixed --studies-dir /tmp/prof-studies
    .venv/bin/python bench/profile_summary.py bench/results/profile-fixed-trial.txt

Only the main thread counts (rich's refresh thread and tqdm's monitor only wait). Each
sample goes to the first category, in the order below, that one of its frames matches, so
the shares add up to 100%.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from common import print_table

# (category, substrings of a frame), matched in this order.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("evaluation: forward", ("evaluate (transformers/trainer.py",)),
    ("training: backward", ("backward (torch/_tensor.py",)),
    ("training: optimizer step and grad clipping", ("step (torch/optim", "clip_grad")),
    ("training: forward and loss", ("training_step (transformers/trainer.py",)),
    ("training: batches (sampler, collator)", ("_inner_training_loop",)),
    ("export (save_pretrained, model card)", ("export_best", "save_pretrained")),
    ("model load", ("from_pretrained",)),
    ("data load and tokenisation", ("prepare (tuner/training.py",)),
    ("storage and sampler", ("optuna/storages", "optuna/samplers")),
    ("imports", ("_find_and_load",)),
]


def summarise(path: Path) -> tuple[int, Counter[str]]:
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if stack.startswith("Thread._bootstrap"):
            continue  # not the main thread
        samples = int(number)
        total += samples
        frames = stack.split(";")
        for name, patterns in CATEGORIES:
            if any(p in frame for frame in frames for p in patterns):
                counts[name] += samples
                break
        else:
            counts["other"] += samples
    return total, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--rate", type=float, default=50.0, help="samples per second [50]")
    args = parser.parse_args()
    total, counts = summarise(args.profile)
    rows = [
        {"where": name, "seconds": n / args.rate, "share %": 100.0 * n / total}
        for name, n in counts.most_common()
    ]
    rows.append({"where": "total (main thread)", "seconds": total / args.rate, "share %": 100.0})
    print_table(rows, title=str(args.profile))


if __name__ == "__main__":
    main()
