"""Search spaces as data: parameter specs, the default space, overrides and sampling.

Parameters are named after ``transformers.TrainingArguments`` fields so that sampled values
pass through unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError

if TYPE_CHECKING:
    import optuna

Scalar = int | float | str | bool


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False
    step: float | None = None
    default: float | None = None


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1
    default: int | None = None


@dataclass(frozen=True)
class Choice:
    choices: tuple[Scalar, ...]
    default: Scalar | None = None


@dataclass(frozen=True)
class Fixed:
    value: Scalar


Param = FloatRange | IntRange | Choice | Fixed
Space = dict[str, Param]

# Ranges chosen so that a short budget is not spent on learning rates too small to move a
# pretrained encoder in a few epochs; the defaults form the first trial of a new study.
DEFAULT_SPACE: Space = {
    "learning_rate": FloatRange(1e-5, 2e-4, log=True, default=5e-5),
    "num_train_epochs": IntRange(1, 4, default=3),
    "per_device_train_batch_size": Choice((8, 16, 32), default=16),
    # Below 1, transformers reads warmup_steps as a fraction of the training steps.
    "warmup_steps": FloatRange(0.0, 0.2, default=0.0),
    "label_smoothing_factor": FloatRange(0.0, 0.2, default=0.0),
}

_RANGE_KEYS = {"low", "high", "log", "step", "default"}
_CHOICE_KEYS = {"choices", "default"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool))


def parse_param(name: str, value: Any, where: str, base: Param | None = None) -> Param:
    """Build a parameter spec from a ``[space]`` value.

    ``base`` is the spec being overridden: a table with only some range keys (say
    ``{ high = 3e-4 }``) narrows or widens it and keeps the rest.

    Raises:
        TunerError: naming ``where`` (e.g. ``tuner.toml: [space] learning_rate``).
    """
    if _is_scalar(value):
        return Fixed(value)
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, Mapping):
        raise TunerError(
            f"{where}: expected a value, a list of choices or a table with low/high or "
            f"choices, got {value!r}"
        )
    if "choices" in value:
        unknown = sorted(set(value) - _CHOICE_KEYS)
        if unknown:
            raise TunerError(f"{where}.{unknown[0]}: unknown key; with choices use only default")
        choices = value["choices"]
        if not isinstance(choices, list) or not choices or not all(map(_is_scalar, choices)):
            raise TunerError(f"{where}.choices must be a non-empty list of values")
        default = value.get("default")
        if default is not None and default not in choices:
            raise TunerError(f"{where}.default {default!r} is not one of the choices")
        if default is None and isinstance(base, Choice) and base.default in choices:
            default = base.default
        return Choice(tuple(choices), default)
    unknown = sorted(set(value) - _RANGE_KEYS)
    if unknown:
        raise TunerError(
            f"{where}.{unknown[0]}: unknown key; use low, high, log, step, default or choices"
        )
    fields = dict(value)
    if isinstance(base, (FloatRange, IntRange)):
        fields = {
            "low": base.low,
            "high": base.high,
            "log": base.log,
            "step": base.step,
            **fields,
        }
        inherited = base.default
        if "default" not in value and inherited is not None:
            fields["default"] = inherited if fields["low"] <= inherited <= fields["high"] else None
    for key in ("low", "high"):
        if key not in fields:
            raise TunerError(f"{where}: a range needs both low and high (missing {key})")
        if not _is_number(fields[key]):
            raise TunerError(f"{where}.{key} must be a number, got {fields[key]!r}")
    low, high = fields["low"], fields["high"]
    log = fields.get("log", False)
    if not isinstance(log, bool):
        raise TunerError(f"{where}.log must be true or false, got {log!r}")
    if low > high:
        raise TunerError(f"{where}: low {low} is greater than high {high}")
    if log and low <= 0:
        raise TunerError(f"{where}: a log range needs low > 0, got {low}")
    step = fields.get("step")
    if step is not None and (not _is_number(step) or step <= 0):
        raise TunerError(f"{where}.step must be a positive number, got {step!r}")
    default = fields.get("default")
    if default is not None and (not _is_number(default) or not low <= default <= high):
        raise TunerError(f"{where}.default {default!r} is outside [{low}, {high}]")
    if all(isinstance(fields.get(k), int) for k in ("low", "high")) and (
        step is None or isinstance(step, int)
    ):
        if log and step not in (None, 1):
            raise TunerError(f"{where}: a log range cannot have a step")
        return IntRange(int(low), int(high), log, int(step or 1), default)
    if log and step is not None:
        raise TunerError(f"{where}: a log range cannot have a step")
    return FloatRange(float(low), float(high), log, step, default)


def merge_space(base: Space, overrides: Mapping[str, Any], where: str) -> Space:
    """Apply a ``[space]``-style table on top of ``base``."""
    merged = dict(base)
    for name, value in overrides.items():
        merged[name] = parse_param(name, value, f"{where} {name}", base.get(name))
    return merged


def build_space(
    task_overrides: Mapping[str, Any], layers: list[tuple[str, Mapping[str, Any]]]
) -> Space:
    """The default space, then the task's overrides, then each config layer in order."""
    space = merge_space(DEFAULT_SPACE, task_overrides, "task search_space()")
    for where, table in layers:
        space = merge_space(space, table, where)
    return space


def suggest(space: Space, trial: optuna.Trial) -> dict[str, Any]:
    """Sample every parameter of ``space`` for ``trial``; fixed values are recorded too."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, FloatRange):
            params[name] = trial.suggest_float(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, IntRange):
            params[name] = trial.suggest_int(
                name, spec.low, spec.high, log=spec.log, step=spec.step
            )
        elif isinstance(spec, Choice):
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        else:
            params[name] = trial.suggest_categorical(name, [spec.value])
    return params


def default_point(space: Space) -> dict[str, Any]:
    """The first trial of a new study: each parameter's default, else a middle value."""
    point: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, Fixed):
            point[name] = spec.value
        elif isinstance(spec, Choice):
            point[name] = spec.default if spec.default is not None else spec.choices[0]
        elif spec.default is not None:
            point[name] = spec.default
        elif spec.log:
            point[name] = math.sqrt(spec.low * spec.high)
        else:
            point[name] = (spec.low + spec.high) / 2
        if isinstance(spec, IntRange):
            point[name] = int(round(point[name]))
    return point


def grid(space: Space) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value each parameter can take.

    Raises:
        TunerError: a float range has no step, so it has no finite grid.
    """
    values: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if isinstance(spec, Fixed):
            values[name] = [spec.value]
        elif isinstance(spec, Choice):
            values[name] = list(spec.choices)
        elif isinstance(spec, IntRange) and not spec.log:
            values[name] = list(range(spec.low, spec.high + 1, spec.step))
        elif isinstance(spec, FloatRange) and spec.step is not None:
            count = int(math.floor((spec.high - spec.low) / spec.step + 1e-9)) + 1
            values[name] = [round(spec.low + i * spec.step, 12) for i in range(count)]
        else:
            raise TunerError(
                f"[space] {name}: the grid sampler needs choices (or a range with a step) for "
                "every parameter; give choices = [...] or use another sampler"
            )
    return values


def describe(spec: Param) -> str:
    """A short human form of a spec, for tables."""
    if isinstance(spec, Fixed):
        return f"= {spec.value!r}"
    if isinstance(spec, Choice):
        return "{" + ", ".join(map(repr, spec.choices)) + "}"
    scale = " log" if spec.log else ""
    step = f" step {spec.step}" if spec.step not in (None, 1) else ""
    return f"[{spec.low:g}, {spec.high:g}]{scale}{step}"
