"""One trial: a fresh model trained by ``transformers.Trainer``, pruned through a callback.

This is the only core module that imports torch and transformers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
import transformers
from transformers import (
    AutoTokenizer,
    EvalPrediction,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tuner.config import Config
from tuner.errors import TunerError
from tuner.models import ModelRef
from tuner.space import Choice, Fixed, Space
from tuner.task import Splits, Task

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Set by the core for every trial; a search space may not override them.
MANAGED_FIELDS = frozenset(
    {
        "output_dir",
        "eval_strategy",
        "eval_steps",
        "save_strategy",
        "save_steps",
        "logging_strategy",
        "logging_steps",
        "report_to",
        "seed",
        "data_seed",
        "fp16",
        "bf16",
        "use_cpu",
        "disable_tqdm",
        "per_device_eval_batch_size",
        "load_best_model_at_end",
        "push_to_hub",
        "do_train",
        "do_eval",
        "do_predict",
        "resume_from_checkpoint",
        "logging_nan_inf_filter",
    }
)

ProgressFn = Callable[[int, int], None]


class TrialFailed(Exception):
    """A trial that cannot produce a result (NaN loss); the study goes on."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA, MPS or the CPU allocator)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def halved_batch(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``params`` with half the per-device batch and twice the gradient accumulation, so the
    effective batch is unchanged; ``None`` when the batch cannot be halved."""
    batch = int(params.get("per_device_train_batch_size", 8))
    if batch < 2:
        return None
    accumulation = int(params.get("gradient_accumulation_steps", 1))
    return {
        **params,
        "per_device_train_batch_size": batch // 2,
        "gradient_accumulation_steps": accumulation * 2,
    }


def release_memory() -> None:
    """Give back what a failed trial held before trying again."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trainable_fields() -> set[str]:
    """``TrainingArguments`` fields a search space may set."""
    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init} - MANAGED_FIELDS


def check_space(space: Space, where: str) -> None:
    """Check every key names a settable ``TrainingArguments`` field and fixed values fit.

    Raises:
        TunerError: naming the key and what to do.
    """
    fields = trainable_fields()
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in space.items():
            if name not in fields:
                hint = (
                    " (set by tuner itself)"
                    if name in MANAGED_FIELDS
                    else "; see the transformers TrainingArguments documentation"
                )
                raise TunerError(
                    f"{where} {name}: not a TrainingArguments field that can be searched{hint}"
                )
            values: list[Any] = (
                [spec.value]
                if isinstance(spec, Fixed)
                else list(spec.choices)
                if isinstance(spec, Choice)
                else []
            )
            for value in values:
                try:
                    overrides: dict[str, Any] = {name: value}
                    TrainingArguments(output_dir=scratch, report_to="none", **overrides)
                except Exception as exc:
                    reason = str(exc).splitlines()[0]
                    raise TunerError(
                        f"{where} {name}: value {value!r} is rejected: {reason}"
                    ) from exc


def select_precision(requested: str, cuda: bool, bf16_supported: bool) -> str:
    """The precision a trial trains in.

    ``auto`` is bf16 on a CUDA GPU that has it natively (compute capability 8.0 and later),
    else fp16 on CUDA, else fp32. fp16 needs CUDA; bf16 also runs on a CPU (autocast),
    slowly on most.

    Raises:
        TunerError: fp16 or bf16 asked for where the hardware cannot run it.
    """
    if requested == "auto":
        if cuda:
            return "bf16" if bf16_supported else "fp16"
        return "fp32"
    if requested == "fp16" and not cuda:
        raise TunerError("--precision fp16 needs a CUDA GPU; use --precision auto, fp32 or bf16")
    if requested == "bf16" and cuda and not bf16_supported:
        raise TunerError(
            "--precision bf16: this GPU has no native bf16; use --precision fp16 or auto"
        )
    return requested


def hardware_precision(requested: str) -> str:
    """:func:`select_precision` for this machine.

    Only native bf16 counts: on older GPUs (a V100 or T4) ``torch.cuda.is_bf16_supported()``
    is true by emulation, which is slower than fp16 and often than fp32.
    """
    cuda = torch.cuda.is_available()
    native = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    return select_precision(requested, cuda, native)


@dataclass
class Prepared:
    """What every trial of a study shares: the task, tokenizer and tokenised data."""

    task: Task
    model: ModelRef
    tokenizer: PreTrainedTokenizerBase
    splits: Splits
    precision: str
    eval_order: list[int] | None = None
    evals_per_epoch: int = 1


def quiet_libraries() -> None:
    """Silence per-trial library chatter; the CLI shows progress itself."""
    import datasets

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def load_tokenizer(model: ModelRef) -> PreTrainedTokenizerBase:
    """Load the model's tokenizer; a model that cannot be found is a :class:`TunerError`."""
    try:
        return AutoTokenizer.from_pretrained(model.location)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        how = "the Hub is offline (HF_HUB_OFFLINE=1)" if offline else "no local copy or Hub access"
        raise TunerError(
            f"model '{model.spec}' cannot be loaded ({how}); pass --model with a local folder, "
            "a Hub id in the local cache, or sentence-transformers/all-MiniLM-L6-v2 "
            "(packaged)"
        ) from exc


def prepare(task: Task, model: ModelRef, config: Config) -> Prepared:
    """Load and tokenise the data once for the whole study."""
    quiet_libraries()
    precision = hardware_precision(config.study.precision)
    splits = task.load_splits(config.data)
    tokenizer = load_tokenizer(model)
    processed = task.preprocess(splits, tokenizer)
    order = longest_first(processed["validation"])
    evals = config.train.evals_per_epoch or auto_evals_per_epoch(
        len(processed["train"]), len(processed["validation"])
    )
    return Prepared(task, model, tokenizer, processed, precision, order, evals)


# Evaluating a row costs about 0.4 of training on it (a forward pass against forward,
# backward and optimizer step: 6.2 ms against 16 ms per SST-2 row for MiniLM on 2 CPU cores).
EVAL_TO_TRAIN_ROW_COST = 0.4
MAX_EVAL_SHARE = 0.2
MAX_EVALS_PER_EPOCH = 4


def auto_evals_per_epoch(train_rows: int, validation_rows: int) -> int:
    """Evaluations per epoch for ``evals_per_epoch = "auto"``: as many as keep evaluation
    within about a fifth of the training time, from 1 to 4.

    Sub-epoch evaluations let the pruner stop a trial sooner, but each one runs over the
    whole validation set. With 1,000 training rows and 872 validation rows, two per epoch
    took 37% of each SST-2 trial, so that data gets one; with 10,000 training rows it gets 4.
    """
    if validation_rows <= 0:
        return 1
    affordable = MAX_EVAL_SHARE * train_rows / (EVAL_TO_TRAIN_ROW_COST * validation_rows)
    return max(1, min(MAX_EVALS_PER_EPOCH, int(affordable)))


def longest_first(rows: Any) -> list[int] | None:
    """Row indices from the longest ``input_ids`` to the shortest (ties in row order): the
    order evaluation runs in, so each batch pads little. ``None`` where there are no
    ``input_ids`` (evaluation then runs in row order)."""
    if "input_ids" not in getattr(rows, "column_names", ()):
        return None
    lengths = [len(ids) for ids in rows["input_ids"]]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


class _Order(torch.utils.data.Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


class OrderedEvalTrainer(Trainer):
    """A ``Trainer`` whose evaluation batches run in ``eval_order`` (longest first), while
    ``compute_metrics`` still sees predictions in the rows' own order.

    With length-grouped training batches, transformers 5 also evaluates in a shuffled,
    length-grouped order and hands ``compute_metrics`` the predictions in that order. A
    metric that matches predictions to rows by position (extractive QA's post-processing
    over the windows of each question) would then score the wrong rows. Here the order is
    fixed and undone before the task sees the predictions, and evaluation leaves torch's
    random generators untouched, so the schedule of evaluations does not change training.
    """

    def __init__(self, *args: Any, eval_order: list[int] | None = None, **kwargs: Any) -> None:
        compute = kwargs.pop("compute_metrics", None)
        self.eval_order = eval_order
        if compute is not None and eval_order is not None:
            kwargs["compute_metrics"] = lambda pred: compute(in_row_order(pred, eval_order))
        super().__init__(*args, **kwargs)

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        if self.eval_order is None or len(eval_dataset) != len(self.eval_order):
            return torch.utils.data.SequentialSampler(eval_dataset)
        return _Order(self.eval_order)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        # Iterating a DataLoader draws its base seed from torch's global generator, so each
        # evaluation would shift every later dropout mask, and a trial would train
        # differently with another evaluation schedule. Evaluation leaves the generators
        # as it found them.
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)


def in_row_order(pred: EvalPrediction, order: list[int]) -> EvalPrediction:
    """``pred`` with every array's rows put back where ``order`` took them from."""
    index = np.asarray(order)

    def restore(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return type(value)(restore(v) for v in value)
        array = np.asarray(value)
        if array.ndim == 0 or len(array) != len(index):
            raise ValueError(
                f"evaluation returned {len(array)} rows for {len(index)} validation rows"
            )
        restored = np.empty_like(array)
        restored[index] = array
        return restored

    return EvalPrediction(
        predictions=restore(pred.predictions),
        label_ids=restore(pred.label_ids),
        inputs=restore(pred.inputs),
        losses=restore(pred.losses),
    )


class PruningCallback(TrainerCallback):
    """Reports each evaluation to the Optuna trial and stops training when it should prune.

    Steps are evaluation indices (``epoch * evals_per_epoch``), so trials with different
    batch sizes are compared at the same share of their training.
    """

    def __init__(self, trial: optuna.Trial, metric: str, evals_per_epoch: int) -> None:
        self.trial = trial
        self.key = f"eval_{metric}"
        self.evals_per_epoch = evals_per_epoch
        self.pruned_at: int | None = None
        self.last_eval_step = -1
        self.history: list[dict[str, float]] = []
        self.final = False
        self.reported: set[int] = set()

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics or self.key not in metrics:
            return
        value = float(metrics[self.key])
        step = max(1, round((state.epoch or 0) * self.evals_per_epoch))
        self.last_eval_step = state.global_step
        self.history.append(
            {
                "step": step,
                "epoch": float(state.epoch or 0),
                "value": value,
                "seconds": float(metrics.get("eval_runtime", 0.0)),
                "during_training": float(not self.final),
            }
        )
        if not math.isfinite(value):
            raise TrialFailed(f"{self.key} is {value} at step {state.global_step}")
        if step not in self.reported:
            self.reported.add(step)
            self.trial.report(value, step)
        # An evaluation at the last step ends the trial anyway: pruning it would save no
        # compute and only throw its result away.
        last = state.max_steps > 0 and state.global_step >= state.max_steps
        if not self.final and not last and self.trial.should_prune():
            self.pruned_at = step
            control.should_training_stop = True


class LossGuard(TrainerCallback):
    """Fails the trial at the first NaN or infinite training loss."""

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrialFailed(f"training loss is {loss} at step {state.global_step}")


class ProgressCallback(TrainerCallback):
    """Passes (step, max_steps) to the CLI's display."""

    def __init__(self, report: ProgressFn) -> None:
        self.report = report

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.report(0, state.max_steps)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.report(state.global_step, state.max_steps)


@dataclass
class TrialOutcome:
    value: float
    metrics: dict[str, float]
    model: PreTrainedModel
    train_seconds: float
    eval_history: list[dict[str, float]] = field(default_factory=list)
    pruned_at: int | None = None
    timing: dict[str, float] = field(default_factory=dict)


def _timing(
    history: list[dict[str, float]], train_metrics: Mapping[str, float], rows: int, epochs: float
) -> dict[str, float]:
    """Training time without the evaluations run inside it, and the training throughput.

    ``Trainer``'s own ``train_runtime`` includes the evaluations run during training.
    """
    inside = sum(e["seconds"] for e in history if e["during_training"])
    evaluations = sum(e["seconds"] for e in history)
    training = max(float(train_metrics.get("train_runtime", 0.0)) - inside, 1e-9)
    return {
        "train_loop_seconds": round(training, 3),
        "eval_seconds": round(evaluations, 3),
        "train_samples_per_second": round(rows * epochs / training, 2),
    }


def _steps_per_epoch(rows: int, params: Mapping[str, Any]) -> int:
    batch = int(params.get("per_device_train_batch_size", 8))
    accumulation = int(params.get("gradient_accumulation_steps", 1))
    return max(1, math.ceil(math.ceil(rows / batch) / accumulation))


def training_arguments(
    params: Mapping[str, Any], config: Config, prepared: Prepared, seed: int, output_dir: str
) -> TrainingArguments:
    """The ``TrainingArguments`` of one trial: sampled values plus the core's settings."""
    evals = prepared.evals_per_epoch
    eval_steps = max(1, round(_steps_per_epoch(len(prepared.splits["train"]), params) / evals))
    extra: dict[str, Any] = {}
    if config.train.max_steps_per_trial is not None:
        extra["max_steps"] = config.train.max_steps_per_trial
    return TrainingArguments(
        output_dir=output_dir,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, min(eval_steps, 10)),
        logging_nan_inf_filter=False,
        report_to="none",
        seed=seed,
        data_seed=seed,
        fp16=prepared.precision == "fp16",
        bf16=prepared.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        per_device_eval_batch_size=config.train.eval_batch_size,
        train_sampling_strategy="group_by_length" if config.train.group_by_length else "random",
        **{**dict(params), **extra},
    )


def run_trial(
    trial: optuna.Trial,
    params: Mapping[str, Any],
    prepared: Prepared,
    config: Config,
    progress: ProgressFn | None = None,
) -> TrialOutcome:
    """Train one model with ``params`` and evaluate it.

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        TrialFailed: the loss or the metric became NaN or infinite.
    """
    task = prepared.task
    seed = config.study.seed + trial.number
    output_dir = tempfile.mkdtemp(prefix="tuner-trial-")
    try:
        transformers.set_seed(seed)
        model = task.build_model(prepared.model.location)
        args = training_arguments(params, config, prepared, seed, output_dir)
        pruning = PruningCallback(trial, task.metric, prepared.evals_per_epoch)
        callbacks: list[TrainerCallback] = [pruning, LossGuard()]
        if progress is not None:
            callbacks.append(ProgressCallback(progress))
        trainer = OrderedEvalTrainer(
            model=model,
            args=args,
            train_dataset=prepared.splits["train"],
            eval_dataset=prepared.splits["validation"],
            processing_class=prepared.tokenizer,
            data_collator=task.data_collator(prepared.tokenizer),
            compute_metrics=task.compute_metrics,
            callbacks=callbacks,
            eval_order=prepared.eval_order,
        )
        # disable_tqdm=True makes Trainer print every log dict; the CLI shows progress itself.
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        output = trainer.train()
        if pruning.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at evaluation {pruning.pruned_at}")
        pruning.final = True
        if pruning.last_eval_step != trainer.state.global_step:
            trainer.evaluate()
        seconds = time.perf_counter() - started
        last = pruning.history[-1]["value"] if pruning.history else math.nan
        metrics = _final_metrics(trainer)
        timing = _timing(
            pruning.history,
            output.metrics,
            len(prepared.splits["train"]),
            float(trainer.state.epoch or 0.0),
        )
        return TrialOutcome(last, metrics, model, seconds, pruning.history, timing=timing)
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _final_metrics(trainer: Trainer) -> dict[str, float]:
    for entry in reversed(trainer.state.log_history):
        if any(key.startswith("eval_") for key in entry):
            return {
                key.removeprefix("eval_"): float(value)
                for key, value in entry.items()
                if key.startswith("eval_") and isinstance(value, (int, float))
            }
    return {}
