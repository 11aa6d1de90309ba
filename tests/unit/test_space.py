from __future__ import annotations

import optuna
import pytest

from tuner.errors import TunerError
from tuner.space import (
    DEFAULT_SPACE,
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    build_space,
    default_point,
    describe,
    grid,
    merge_space,
    parse_param,
    suggest,
)


def test_default_space_covers_the_core_parameters() -> None:
    assert set(DEFAULT_SPACE) == {
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "warmup_steps",
        "label_smoothing_factor",
    }
    lr = DEFAULT_SPACE["learning_rate"]
    assert isinstance(lr, FloatRange) and lr.log and lr.low >= 1e-5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.01, Fixed(0.01)),
        ("cosine", Fixed("cosine")),
        ([1, 2], Choice((1, 2))),
        ({"choices": ["a", "b"], "default": "b"}, Choice(("a", "b"), "b")),
        ({"low": 1, "high": 4}, IntRange(1, 4)),
        ({"low": 0.0, "high": 0.3, "step": 0.1}, FloatRange(0.0, 0.3, step=0.1)),
        ({"low": 1e-5, "high": 1e-3, "log": True}, FloatRange(1e-5, 1e-3, log=True)),
    ],
)
def test_parse_param(value: object, expected: object) -> None:
    assert parse_param("x", value, "[space] x") == expected


def test_partial_override_narrows_and_keeps_the_rest() -> None:
    space = merge_space(DEFAULT_SPACE, {"learning_rate": {"high": 1e-4}}, "[space]")
    lr = space["learning_rate"]
    assert isinstance(lr, FloatRange)
    assert (lr.low, lr.high, lr.log) == (1e-5, 1e-4, True)


def test_add_and_fix_fields() -> None:
    space = build_space(
        {"num_train_epochs": {"low": 1, "high": 2}},
        [("[space]", {"weight_decay": {"low": 0.0, "high": 0.1}, "warmup_steps": 0.0})],
    )
    assert space["num_train_epochs"] == IntRange(1, 2)
    assert space["weight_decay"] == FloatRange(0.0, 0.1)
    assert space["warmup_steps"] == Fixed(0.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"low": 5, "high": 1}, "low 5 is greater than high 1"),
        ({"low": 0.0, "high": 1.0, "log": True}, "log range needs low > 0"),
        ({"low": 1}, "needs both low and high"),
        ({"low": 1, "high": 2, "scale": "log"}, r"\[space\] x.scale: unknown key"),
        ({"choices": []}, "non-empty list"),
        ({"choices": [1, 2], "default": 3}, "not one of the choices"),
        ({"low": "a", "high": 2}, "low must be a number"),
        ({"low": 1, "high": 3, "default": 9}, "outside"),
        (None, "expected a value"),
    ],
)
def test_parse_errors_name_the_key(value: object, message: str) -> None:
    with pytest.raises(TunerError, match=message):
        parse_param("x", value, "[space] x")


def test_default_point_is_the_first_trial() -> None:
    space = build_space({}, [("[space]", {"weight_decay": {"low": 0.0, "high": 0.2}})])
    point = default_point(space)
    assert point["learning_rate"] == 5e-5
    assert point["num_train_epochs"] == 3
    assert point["per_device_train_batch_size"] == 16
    assert point["weight_decay"] == pytest.approx(0.1)


def test_grid_needs_finite_values() -> None:
    space = {"a": Choice((1, 2)), "b": IntRange(1, 3), "c": Fixed("x")}
    space["d"] = FloatRange(0.0, 0.2, step=0.1)
    assert grid(space) == {"a": [1, 2], "b": [1, 2, 3], "c": ["x"], "d": [0.0, 0.1, 0.2]}
    with pytest.raises(TunerError, match="grid sampler needs choices"):
        grid(DEFAULT_SPACE)


def test_suggest_records_every_parameter() -> None:
    space = build_space({}, [("[space]", {"lr_scheduler_type": "cosine"})])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(space, trial)
    assert set(params) == set(space)
    assert params["lr_scheduler_type"] == "cosine"
    assert 1e-5 <= params["learning_rate"] <= 2e-4
    assert params["per_device_train_batch_size"] in (8, 16, 32)
    assert trial.params == params


def test_describe() -> None:
    assert describe(FloatRange(1e-5, 1e-3, log=True)) == "[1e-05, 0.001] log"
    assert describe(Choice((8, 16))) == "{8, 16}"
    assert describe(Fixed(3)) == "= 3"


def test_an_override_keeps_the_base_default_when_it_still_fits() -> None:
    space = merge_space(
        DEFAULT_SPACE,
        {
            "per_device_train_batch_size": [8, 16],
            "learning_rate": {"low": 1e-4, "high": 1e-3},
            "num_train_epochs": {"low": 1, "high": 5},
        },
        "[space]",
    )
    assert default_point(space)["per_device_train_batch_size"] == 16
    assert space["num_train_epochs"] == IntRange(1, 5, default=3)
    lr = space["learning_rate"]
    assert isinstance(lr, FloatRange) and lr.default is None and lr.log
