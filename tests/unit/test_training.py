from __future__ import annotations

from typing import Any

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from tuner.errors import TunerError
from tuner.space import Choice, Fixed, FloatRange, build_space
from tuner.training import (
    LossGuard,
    PruningCallback,
    TrialFailed,
    auto_evals_per_epoch,
    check_space,
    hardware_precision,
    select_precision,
    trainable_fields,
)


class FakeTrial:
    """Records reports; prunes from the evaluation index ``prune_from`` on."""

    def __init__(self, prune_from: int | None = None) -> None:
        self.reports: list[tuple[float, int]] = []
        self.prune_from = prune_from

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune_from is not None and self.reports[-1][1] >= self.prune_from


def evaluate(
    callback: PruningCallback, epoch: float, value: float, epochs: int = 4
) -> TrainerControl:
    state = TrainerState()
    state.epoch = epoch
    state.global_step = int(epoch * 10)
    state.max_steps = epochs * 10
    control = TrainerControl()
    args: Any = None
    callback.on_evaluate(args, state, control, metrics={"eval_accuracy": value, "eval_loss": 1.0})
    return control


def test_pruning_callback_reports_every_evaluation_by_index() -> None:
    trial = FakeTrial()
    callback = PruningCallback(trial, "accuracy", evals_per_epoch=2)  # type: ignore[arg-type]
    for epoch, value in [(0.5, 0.6), (1.0, 0.7), (1.5, 0.75)]:
        assert not evaluate(callback, epoch, value).should_training_stop
    assert trial.reports == [(0.6, 1), (0.7, 2), (0.75, 3)]
    assert callback.pruned_at is None


def test_pruning_callback_stops_training_when_the_trial_should_prune() -> None:
    trial = FakeTrial(prune_from=2)
    callback = PruningCallback(trial, "accuracy", evals_per_epoch=2)  # type: ignore[arg-type]
    assert not evaluate(callback, 0.5, 0.5).should_training_stop
    assert evaluate(callback, 1.0, 0.5).should_training_stop
    assert callback.pruned_at == 2


def test_final_evaluation_is_never_pruned() -> None:
    trial = FakeTrial(prune_from=1)
    callback = PruningCallback(trial, "accuracy", evals_per_epoch=2)  # type: ignore[arg-type]
    callback.final = True
    assert not evaluate(callback, 1.0, 0.5).should_training_stop
    assert trial.reports == [(0.5, 2)]


def test_evaluation_at_the_last_step_is_reported_but_never_pruned() -> None:
    # Pruning there would save nothing and only discard a finished trial's result.
    trial = FakeTrial(prune_from=2)
    callback = PruningCallback(trial, "accuracy", evals_per_epoch=2)  # type: ignore[arg-type]
    assert not evaluate(callback, 0.5, 0.5, epochs=1).should_training_stop
    assert not evaluate(callback, 1.0, 0.5, epochs=1).should_training_stop
    assert trial.reports == [(0.5, 1), (0.5, 2)]
    assert callback.pruned_at is None


def test_nan_metric_and_loss_fail_the_trial() -> None:
    callback = PruningCallback(FakeTrial(), "accuracy", 2)  # type: ignore[arg-type]
    with pytest.raises(TrialFailed, match="eval_accuracy is nan"):
        evaluate(callback, 0.5, float("nan"))
    args: Any = None
    with pytest.raises(TrialFailed, match="training loss is nan"):
        LossGuard().on_log(args, TrainerState(), TrainerControl(), logs={"loss": float("nan")})
    LossGuard().on_log(args, TrainerState(), TrainerControl(), logs={"loss": 0.3})


@pytest.mark.parametrize(
    ("requested", "cuda", "bf16", "expected"),
    [
        ("auto", False, False, "fp32"),
        ("auto", True, True, "bf16"),
        ("auto", True, False, "fp16"),
        ("fp32", True, True, "fp32"),
        ("fp16", True, True, "fp16"),
        ("bf16", False, False, "bf16"),
        ("bf16", True, True, "bf16"),
    ],
)
def test_precision_selection(requested: str, cuda: bool, bf16: bool, expected: str) -> None:
    assert select_precision(requested, cuda, bf16) == expected


def test_precision_the_hardware_cannot_run() -> None:
    with pytest.raises(TunerError, match="fp16 needs a CUDA GPU"):
        select_precision("fp16", False, False)
    with pytest.raises(TunerError, match="this GPU has no native bf16"):
        select_precision("bf16", True, False)


@pytest.mark.parametrize(("major", "expected"), [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_takes_bf16_only_where_the_gpu_has_it_natively(
    monkeypatch: pytest.MonkeyPatch, major: int, expected: str
) -> None:
    # A V100 or T4 (7.x) can hold bf16 tensors, so torch calls bf16 "supported" there by
    # emulation; it is slow, so auto must take fp16. The device is faked under torch's own
    # check.
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(major=major)
    )
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)
    assert torch.cuda.is_bf16_supported()  # emulation counts for torch
    assert hardware_precision("auto") == expected
    if major < 8:
        with pytest.raises(TunerError, match="no native bf16"):
            hardware_precision("bf16")


@pytest.mark.parametrize(
    ("train", "validation", "expected"),
    [
        (1000, 872, 1),  # SST-2 benchmark: two evaluations would take 37% of a trial
        (1000, 0, 1),
        (5000, 872, 2),
        (8000, 872, 4),
        (67349, 872, 4),  # all of SST-2: capped
        (10, 1000, 1),
    ],
)
def test_auto_evaluations_keep_evaluation_a_small_share(
    train: int, validation: int, expected: int
) -> None:
    assert auto_evals_per_epoch(train, validation) == expected


def test_trainable_fields_follow_the_installed_transformers() -> None:
    fields = trainable_fields()
    assert {"learning_rate", "warmup_steps", "weight_decay", "lr_scheduler_type"} <= fields
    assert "output_dir" not in fields and "eval_strategy" not in fields
    assert "warmup_ratio" not in fields and "evaluation_strategy" not in fields


def test_check_space_accepts_the_default_and_added_fields() -> None:
    space = build_space({}, [("[space]", {"weight_decay": {"low": 0.0, "high": 0.1}})])
    space["lr_scheduler_type"] = Choice(("linear", "cosine"))
    space["gradient_accumulation_steps"] = Fixed(2)
    check_space(space, "[space]")


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (
            "warmup_ratio",
            FloatRange(0.0, 0.1),
            r"\[space\] warmup_ratio: not a TrainingArguments field",
        ),
        ("learning_rte", Fixed(0.1), r"\[space\] learning_rte: not a TrainingArguments field"),
        ("output_dir", Fixed("x"), "set by tuner itself"),
        (
            "lr_scheduler_type",
            Choice(("linear", "wobbly")),
            r"lr_scheduler_type: value 'wobbly' is rejected",
        ),
    ],
)
def test_check_space_errors(name: str, spec: Any, message: str) -> None:
    with pytest.raises(TunerError, match=message):
        check_space({name: spec}, "[space]")


def test_bf16_autocast_runs_on_cpu() -> None:
    """The bf16 path that GPUs take is also valid on a CPU: TrainingArguments accept it."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(output_dir=folder, bf16=True, use_cpu=True, report_to="none")
    assert args.mixed_precision == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
