"""Read and validate ``tuner.toml`` into frozen dataclasses.

Precedence: a CLI flag, then the file (``[tasks.<task>]`` over the top-level tables), then
the built-in defaults. The rest of the code gets the typed :class:`Config`, never raw TOML.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.task import DataSpec

DEFAULT_CONFIG = Path("tuner.toml")
SAMPLERS = ("tpe", "random", "cmaes", "gp", "grid")
PRUNERS = ("median", "hyperband", "sha", "wilcoxon", "none")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

_TOP = {"study", "data", "train", "space", "tasks"}
_TASK_TABLE = {"model", "data", "train", "space"}
_DATA_CORE = {
    "train",
    "validation",
    "dataset",
    "dataset_config",
    "train_split",
    "validation_split",
    "max_train_rows",
    "max_validation_rows",
}


@dataclass(frozen=True)
class StudyConfig:
    task: str
    model: str | None = None
    trials: int = 20
    name: str | None = None
    storage: str | None = None
    studies_dir: Path = Path("studies")
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 42
    timeout: float | None = None
    precision: str = "auto"
    start_from_defaults: bool = True
    max_failures_in_a_row: int = 3
    workers: int = 1
    gpus: str | None = None
    worker_index: int | None = None
    heartbeat_seconds: int = 30
    grace_seconds: int = 120
    max_retries: int = 1
    artifacts: Path | None = None


@dataclass(frozen=True)
class TrainConfig:
    evals_per_epoch: int | None = None  # None: "auto", see tuner.training.auto_evals_per_epoch
    eval_batch_size: int = 64
    group_by_length: bool = True
    max_steps_per_trial: int | None = None


@dataclass(frozen=True)
class Config:
    study: StudyConfig
    train: TrainConfig
    data: DataSpec
    space_layers: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    path: Path | None = None


def _fail(where: str, message: str) -> TunerError:
    return TunerError(f"{where} {message}")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; errors name the file and line."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise TunerError(f"{path}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TunerError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise TunerError(f"{path}: cannot read config file: {exc.strerror}") from exc


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise _fail(where, f"[{key}] must be a table")
    return dict(value)


def _check_keys(table: Mapping[str, Any], known: set[str] | tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise _fail(where, f"unknown key '{key}'; known keys: {', '.join(sorted(known))}")


def _positive_int(value: Any, where: str, allow_zero: bool = False) -> int:
    ok = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise _fail(where, f"must be {kind} integer, got {value!r}")
    return int(value)


def _one_of(value: Any, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise _fail(where, f"must be one of {', '.join(options)}, got {value!r}")
    return str(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"must be a non-empty string, got {value!r}")
    return value


def _path(value: Any, where: str, base: Path) -> str:
    text = _string(value, where)
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else base / path)


def load_config(config_path: Path | None, flags: Mapping[str, Any]) -> Config:
    """Build the configuration of one ``tuner search`` from flags, file and defaults.

    Args:
        config_path: ``--config``; when ``None``, ``./tuner.toml`` is read if it exists.
        flags: CLI values that were given (``None`` values are ignored). Keys are
            ``StudyConfig`` fields plus ``train`` and ``validation`` (data files).

    Raises:
        TunerError: the file cannot be parsed, or a key or value is invalid.
    """
    flags = {k: v for k, v in flags.items() if v is not None}
    if "study_name" in flags:
        flags["name"] = flags.pop("study_name")
    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    raw: dict[str, Any] = read_toml(config_path) if config_path is not None else {}
    name = str(config_path) if config_path is not None else "tuner.toml"
    base = config_path.parent if config_path is not None else Path(".")
    _check_keys(raw, _TOP, f"{name}:")

    study_raw = _table(raw, "study", f"{name}:")
    task = flags.get("task", study_raw.get("task"))
    if task is None:
        raise TunerError("no task given: pass --task NAME or set [study] task in tuner.toml")
    task = _string(task, f"{name}: [study] task")

    tasks = _table(raw, "tasks", f"{name}:")
    task_raw = tasks.get(task, {})
    if not isinstance(task_raw, Mapping):
        raise _fail(f"{name}:", f"[tasks.{task}] must be a table")
    _check_keys(task_raw, _TASK_TABLE, f"{name}: [tasks.{task}]")

    study = _study(name, base, study_raw, task_raw, flags, task)
    train = _train(name, _table(raw, "train", f"{name}:"), task_raw.get("train", {}), task)
    data = _data(
        name, base, _table(raw, "data", f"{name}:"), task_raw.get("data", {}), flags, task
    )
    layers: list[tuple[str, Mapping[str, Any]]] = []
    space_top = _table(raw, "space", f"{name}:")
    if space_top:
        layers.append((f"{name}: [space]", space_top))
    space_task = task_raw.get("space", {})
    if not isinstance(space_task, Mapping):
        raise _fail(f"{name}:", f"[tasks.{task}.space] must be a table")
    if space_task:
        layers.append((f"{name}: [tasks.{task}.space]", dict(space_task)))
    return Config(study, train, data, tuple(layers), config_path)


def _study(
    name: str,
    base: Path,
    raw: Mapping[str, Any],
    task_raw: Mapping[str, Any],
    flags: Mapping[str, Any],
    task: str,
) -> StudyConfig:
    where = f"{name}: [study]"
    known = {f for f in StudyConfig.__dataclass_fields__}
    _check_keys(raw, known, where)
    values: dict[str, Any] = {"task": task}
    merged = {**raw, **({"model": task_raw["model"]} if "model" in task_raw else {})}
    for key, value in merged.items():
        if key == "task":
            continue
        values[key] = _study_value(key, value, f"{where} {key}", base)
    for key, value in flags.items():
        if key in known and key != "task":
            value = str(value) if isinstance(value, Path) else value
            flag = "--study-name" if key == "name" else f"--{key.replace('_', '-')}"
            values[key] = _study_value(key, value, flag, Path("."))
    return StudyConfig(**values)


def _study_value(key: str, value: Any, where: str, base: Path) -> Any:
    if key in (
        "trials",
        "seed",
        "max_failures_in_a_row",
        "workers",
        "worker_index",
        "heartbeat_seconds",
        "grace_seconds",
        "max_retries",
    ):
        zero_ok = key in ("seed", "worker_index", "max_retries")
        return _positive_int(value, where, allow_zero=zero_ok)
    if key == "gpus":
        text = _string(str(value), where)
        if text != "all" and not all(part.strip().isdigit() for part in text.split(",")):
            raise _fail(where, f"must be 'all' or GPU indices like 0,1,3, got {value!r}")
        return text
    if key == "timeout":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise _fail(where, f"must be a positive number of seconds, got {value!r}")
        return float(value)
    if key == "sampler":
        return _one_of(value, SAMPLERS, where)
    if key == "pruner":
        return _one_of(value, PRUNERS, where)
    if key == "precision":
        return _one_of(value, PRECISIONS, where)
    if key in ("studies_dir", "artifacts"):
        return Path(_path(value, where, base))
    if key == "start_from_defaults":
        if not isinstance(value, bool):
            raise _fail(where, f"must be true or false, got {value!r}")
        return value
    if key == "model":
        text = _string(value, where)
        local = base / text
        return str(local) if not Path(text).is_absolute() and local.is_dir() else text
    return _string(value, where)


def _train(name: str, raw: Mapping[str, Any], task_raw: Any, task: str) -> TrainConfig:
    if not isinstance(task_raw, Mapping):
        raise _fail(f"{name}:", f"[tasks.{task}.train] must be a table")
    merged = {**raw, **task_raw}
    where = f"{name}: [train]"
    _check_keys(merged, set(TrainConfig.__dataclass_fields__), where)
    values: dict[str, Any] = {}
    for key, value in merged.items():
        if key == "group_by_length":
            if not isinstance(value, bool):
                raise _fail(f"{where} {key}", f"must be true or false, got {value!r}")
            values[key] = value
        elif key == "evals_per_epoch" and value == "auto":
            values[key] = None  # decided from the data: tuner.training.auto_evals_per_epoch
        elif key == "evals_per_epoch":
            try:
                values[key] = _positive_int(value, f"{where} {key}")
            except TunerError:
                raise _fail(
                    f"{where} {key}", f'must be "auto" or a positive integer, got {value!r}'
                ) from None
        else:
            values[key] = _positive_int(value, f"{where} {key}")
    return TrainConfig(**values)


def _data(
    name: str,
    base: Path,
    raw: Mapping[str, Any],
    task_raw: Any,
    flags: Mapping[str, Any],
    task: str,
) -> DataSpec:
    if not isinstance(task_raw, Mapping):
        raise _fail(f"{name}:", f"[tasks.{task}.data] must be a table")
    merged = {**raw, **task_raw}
    where = f"{name}: [data]"
    core: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in merged.items():
        if key not in _DATA_CORE:
            options[key] = value
        elif key in ("train", "validation"):
            core[key] = _path(value, f"{where} {key}", base)
        elif key in ("max_train_rows", "max_validation_rows"):
            core[key] = _positive_int(value, f"{where} {key}")
        else:
            core[key] = _string(value, f"{where} {key}")
    for key in ("train", "validation"):
        if key in flags:
            core[key] = str(flags[key])
    if "dataset" in core and ("train" in flags or "validation" in flags):
        del core["dataset"]
    if "labels" in options and isinstance(options["labels"], str):
        options["labels"] = _path(options["labels"], f"{where} labels", base)
    return DataSpec(**core, options=options)
