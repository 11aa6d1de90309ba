"""Shared helpers of the benchmark scripts: data and model, smoke fixtures, timers, output.

Every script prints a table, then exactly one JSON line (also written to ``--out`` when
given). ``--smoke`` swaps the packaged MiniLM and SST-2 for a tiny random BERT and 48
generated rows (the fixtures of ``tests/conftest.py``), so a script runs in seconds.

torch already runs as many intra-op threads as the machine has cores (2 of 2 here), so the
scripts leave ``torch.set_num_threads`` alone; every run, tuner's and the peers', gets the
library default.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.conftest (the smoke fixtures)

DEFAULT_DATA = Path("../shared/data/sentiment")  # relative to the repository root
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = ["negative", "positive"]
SMOKE_TRAIN_ROWS = 48
SMOKE_VALIDATION_ROWS = 24
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

os.environ.update(OFFLINE)


@dataclass(frozen=True)
class Setup:
    """What one benchmark trains on: model and data, real or smoke."""

    model: str  # what tuner's --model gets: the Hub id (resolved to the package) or a folder
    model_dir: str  # the folder from_pretrained loads
    train: str
    validation: str
    train_rows: int
    smoke: bool
    scratch: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Setup:
        return cls(**json.loads(text))


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--data``, ``--train-rows``, ``--smoke`` and ``--out`` (default
    ``bench/results/<name>.json``, ``<name>-smoke.json`` with ``--smoke``)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with train.jsonl and dev.jsonl, relative to the repository root "
        f"[default: {DEFAULT_DATA}]",
    )
    parser.add_argument("--train-rows", type=int, default=1000, help="first N training rows")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny random BERT and 48 generated rows"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"also write the JSON here [default: bench/results/{name}.json]",
    )
    parser.set_defaults(result_name=name)
    # Internal: a child process of the script gets the parent's setup.
    parser.add_argument("--setup", help=argparse.SUPPRESS)


def make_setup(args: argparse.Namespace, scratch: Path) -> Setup:
    """The model and data of this run; ``--smoke`` writes them into ``scratch``."""
    if args.setup:
        return Setup.from_json(args.setup)
    if args.smoke:
        from transformers.utils import logging

        from tests.conftest import (
            NEGATIVE,
            NEUTRAL,
            POSITIVE,
            sentiment_rows,
            write_jsonl,
            write_tiny_bert,
        )

        logging.disable_progress_bar()
        folder = write_tiny_bert(scratch / "tiny-bert", POSITIVE + NEGATIVE + NEUTRAL)
        # Integer labels, as in SST-2, so the smoke run takes the same code path.
        train = write_jsonl(
            scratch / "data" / "train.jsonl",
            sentiment_rows(SMOKE_TRAIN_ROWS, seed=1, string_labels=False),
        )
        dev = write_jsonl(
            scratch / "data" / "dev.jsonl",
            sentiment_rows(SMOKE_VALIDATION_ROWS, seed=2, string_labels=False),
        )
        rows = min(args.train_rows, SMOKE_TRAIN_ROWS)
        return Setup(str(folder), str(folder), str(train), str(dev), rows, True, str(scratch))
    from tuner.models import resolve_model

    data = args.data if args.data.is_absolute() else REPO / args.data
    train, dev = data / "train.jsonl", data / "dev.jsonl"
    for path in (train, dev):
        if not path.is_file():
            raise SystemExit(f"{path}: not found; pass --data with the SST-2 jsonl folder")
    location = resolve_model(MODEL).location
    return Setup(
        MODEL, location, str(train), str(dev), args.train_rows, False, str(scratch.resolve())
    )


def child_env(setup: Setup, name: str) -> dict[str, str]:
    """Environment of a benchmarked process: offline, its own empty datasets cache (so no
    run reuses the JSON parse or tokenisation cached by an earlier one).

    Smoke runs get one torch thread: the tiny model gains nothing from more, and on a busy
    machine two threads waiting on each other made it 12x slower. Real runs keep torch's
    default (one thread per core).
    """
    env = {**os.environ, **OFFLINE}
    env["HF_DATASETS_CACHE"] = str(Path(setup.scratch) / f"hf-datasets-{name}")
    if setup.smoke:
        env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return env


def tuner_toml(
    setup: Setup,
    studies_dir: Path,
    name: str,
    space: Mapping[str, Any] | None = None,
    pruner: str | None = None,
) -> str:
    """A ``tuner.toml`` for ``setup``: everything else stays at tuner's defaults."""
    lines = [
        "[study]",
        'task = "sentiment"',
        f"model = {json.dumps(setup.model)}",
        f"name = {json.dumps(name)}",
        f"studies_dir = {json.dumps(str(studies_dir))}",
    ]
    if pruner:
        lines.append(f"pruner = {json.dumps(pruner)}")
    lines += [
        "",
        "[data]",
        f"train = {json.dumps(setup.train)}",
        f"validation = {json.dumps(setup.validation)}",
        f"max_train_rows = {setup.train_rows}",
        f"labels = {json.dumps(LABELS)}",
    ]
    if space:
        lines += ["", "[space]"] + [f"{k} = {json.dumps(v)}" for k, v in space.items()]
    return "\n".join(lines) + "\n"


def load_splits(setup: Setup) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The raw train (first ``train_rows``) and validation rows, as a tutorial loads them."""
    import datasets

    train = datasets.load_dataset("json", data_files=setup.train, split="train")
    dev = datasets.load_dataset("json", data_files=setup.validation, split="train")
    assert isinstance(train, datasets.Dataset) and isinstance(dev, datasets.Dataset)
    return train.select(range(min(setup.train_rows, len(train)))), dev


def accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` of the peers' runs: the same accuracy tuner's sentiment task
    computes (argmax of the logits against the gold label)."""
    import numpy as np

    logits = eval_pred.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": float((predicted == np.asarray(eval_pred.label_ids)).mean())}


def seconds_since(start: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else (moment - start).total_seconds()


# ---------------------------------------------------------------------------------------
# Timers

LOOPS = frozenset({"train loop", "eval loop"})


@dataclass
class Span:
    category: str
    start: float
    end: float
    outermost_loop: bool


class Profiler:
    """Wall time per category, on the main thread only (Optuna's heartbeat thread and
    dataloader workers are not timed).

    ``patch`` wraps a function or method so each call is timed. Time is exclusive: a call's
    time minus the timed calls nested in it, so the categories add up to the time covered
    and nothing is counted twice. Each exclusive time is also marked as inside or outside
    the loops, i.e. nested or not in a call of a category of :data:`LOOPS`.

    ``mark_segments`` wraps a function whose each call starts a new segment (one trial);
    everything before the first call is the segment ``setup``.
    """

    def __init__(self) -> None:
        self.main = threading.get_ident()
        self.stack: list[list[Any]] = []  # [category, start, nested seconds]
        self.segment = "setup"
        self.segments: list[tuple[str, float]] = []
        self.exclusive: dict[tuple[str, str, bool], float] = defaultdict(float)
        self.loop_seconds: dict[str, float] = defaultdict(float)
        self.spans: list[Span] = []
        self.results: dict[str, list[Any]] = defaultdict(list)
        self._undo: list[Callable[[], None]] = []

    def _in_loop(self) -> bool:
        return any(frame[0] in LOOPS for frame in self.stack)

    def wrap(self, category: str, fn: Callable[..., Any], keep: bool = False) -> Any:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self.main:
                return fn(*args, **kwargs)
            outer_loop = category in LOOPS and not self._in_loop()
            frame: list[Any] = [category, time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                result = fn(*args, **kwargs)
                if keep:
                    self.results[category].append(result)
                return result
            finally:
                end = time.perf_counter()
                self.stack.pop()
                elapsed = end - frame[1]
                in_loop = category in LOOPS or self._in_loop()
                self.exclusive[(self.segment, category, in_loop)] += elapsed - frame[2]
                if self.stack:
                    self.stack[-1][2] += elapsed
                if outer_loop:
                    self.loop_seconds[self.segment] += elapsed
                if category in LOOPS:
                    self.spans.append(Span(category, frame[1], end, outer_loop))

        return timed

    def patch(self, owner: Any, name: str, category: str, keep: bool = False) -> None:
        """Time calls of ``owner.name`` (a module function or a class's method)."""
        raw = inspect.getattr_static(owner, name)
        if not isinstance(raw, (types.FunctionType, types.BuiltinFunctionType)):
            raise TypeError(f"{owner!r}.{name} is not a plain function")
        had = name in vars(owner)
        setattr(owner, name, self.wrap(category, raw, keep))
        self._undo.append(
            (lambda: setattr(owner, name, raw)) if had else (lambda: delattr(owner, name))
        )

    def patch_public(self, cls: type, category: str, also: Sequence[str] = ()) -> None:
        """Time every public method of ``cls`` (and ``also``), e.g. a storage's queries."""
        for name in sorted({*dir(cls), *also}):
            if (name.startswith("_") and name not in also) or not isinstance(
                inspect.getattr_static(cls, name), types.FunctionType
            ):
                continue
            self.patch(cls, name, category)

    def mark_segments(self, owner: Any, name: str, prefix: str) -> None:
        raw = inspect.getattr_static(owner, name)
        count = [0]

        @functools.wraps(raw)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self.segment = f"{prefix} {count[0]}"
            count[0] += 1
            self.segments.append((self.segment, time.perf_counter()))
            return raw(*args, **kwargs)

        had = name in vars(owner)
        setattr(owner, name, marked)
        self._undo.append(
            (lambda: setattr(owner, name, raw)) if had else (lambda: delattr(owner, name))
        )

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    @contextmanager
    def active(self) -> Iterator[Profiler]:
        try:
            yield self
        finally:
            self.restore()

    def train_without_eval(self) -> list[tuple[float, int]]:
        """Per outermost ``train loop`` call: its wall time minus the evaluations inside it,
        and the number of those evaluations."""
        trains = [s for s in self.spans if s.category == "train loop" and s.outermost_loop]
        evals = [s for s in self.spans if s.category == "eval loop"]
        out = []
        for train in trains:
            inner = [e for e in evals if train.start <= e.start and e.end <= train.end]
            seconds = train.end - train.start - sum(e.end - e.start for e in inner)
            out.append((seconds, len(inner)))
        return out


# ---------------------------------------------------------------------------------------
# Output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.001:
            return f"{value:.2e}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def print_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> None:
    """A Markdown table of ``rows`` (columns: the union of their keys, in order)."""
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def out_path(args: argparse.Namespace) -> Path:
    """Where the JSON goes: ``--out``, else ``bench/results/<name>[-smoke].json`` (a smoke
    run never overwrites a real result)."""
    if args.out is not None:
        return Path(args.out)
    suffix = "-smoke" if args.smoke else ""
    return Path("bench/results") / f"{args.result_name}{suffix}.json"


def emit(result: Mapping[str, Any], out: Path | None) -> None:
    """Print the one JSON line; also write it to ``out``."""
    line = json.dumps(result, default=str)
    if out is not None:
        path = out if out.is_absolute() else REPO / out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
    print(line, flush=True)


def last_json_line(text: str) -> dict[str, Any]:
    """The JSON object a child process printed last."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValueError("the child process printed no JSON line")


def machine(warn: bool = False) -> dict[str, Any]:
    """CPU count and load; with ``warn``, a warning on stderr when the machine is busy.

    On a busy machine torch's intra-op threads wait on each other: here, with a load
    average of 3.5 on 2 cores, the smoke model trained 12x slower with 2 threads than with
    1. Timings taken then are neither fast nor stable, so run the benchmarks on an idle
    machine and compare only figures taken in one run.
    """
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if warn and load > cpus / 2:
        print(
            f"warning: load average {load:.2f} on {cpus} cores: other processes compete for "
            "the CPU, so these timings will be slow and noisy; run on an idle machine",
            file=sys.stderr,
        )
    return {"cpus": cpus, "load_average_1min": round(load, 2)}
