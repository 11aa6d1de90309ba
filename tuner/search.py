"""Create or load the Optuna study, run trials until it holds the requested total."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import Config
from tuner.errors import TunerError
from tuner.models import ModelRef, resolve_model
from tuner.registry import load_task_class
from tuner.space import Space, build_space, default_point, grid, suggest
from tuner.storage import open_storage, redact, storage_url

if TYPE_CHECKING:
    from tuner.task import Task
    from tuner.training import Prepared, TrialOutcome

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
BEST_DIR = "best"


class SearchEvents(Protocol):
    """What the CLI's display hears about; every method may do nothing."""

    def on_start(self, plan: SearchPlan, finished: int) -> None: ...

    def on_trial_start(self, number: int, params: dict[str, Any]) -> None: ...

    def on_progress(self, step: int, total: int) -> None: ...

    def on_trial_end(self, trial: FrozenTrial) -> None: ...


class NoEvents:
    def on_start(self, plan: SearchPlan, finished: int) -> None:
        pass

    def on_trial_start(self, number: int, params: dict[str, Any]) -> None:
        pass

    def on_progress(self, step: int, total: int) -> None:
        pass

    def on_trial_end(self, trial: FrozenTrial) -> None:
        pass


@dataclass(frozen=True)
class SearchPlan:
    """Everything settled before the first trial."""

    config: Config
    task: Task
    model: ModelRef
    space: Space
    study_name: str
    storage: str
    study_dir: Path

    @property
    def best_dir(self) -> Path:
        return self.study_dir / BEST_DIR


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    storage: str
    best: FrozenTrial | None
    best_dir: Path | None
    complete: int
    pruned: int
    failed: int
    ran: int
    metric: str
    direction: str

    @property
    def dashboard_command(self) -> str:
        return f"optuna-dashboard {redact(self.storage)}"


def default_study_name(task: str, model: ModelRef) -> str:
    return f"{task}-{model.short_name}"


def plan_search(config: Config) -> SearchPlan:
    """Resolve task, model, space and storage; fails before anything is written.

    Raises:
        TunerError: any invalid setting.
    """
    task_cls = load_task_class(config.study.task)
    task = task_cls(config.data.options)
    model = resolve_model(config.study.model or task_cls.default_model)
    space = build_space(task.search_space(), list(config.space_layers))
    if config.study.sampler == "grid":
        grid(space)
    name = config.study.name or default_study_name(task_cls.name, model)
    if "/" in name or name.startswith("."):
        raise TunerError(f"--study-name '{name}': use a name without '/' or a leading '.'")
    studies_dir = config.study.studies_dir
    storage = config.study.storage or os.environ.get("TUNER_STORAGE") or storage_url(studies_dir)
    _check_writable(studies_dir)
    return SearchPlan(config, task, model, space, name, storage, studies_dir / name)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TunerError(
            f"studies dir {folder} cannot be created ({exc.strerror}); pass --studies-dir "
            "with a writable folder"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TunerError(
            f"studies dir {folder} is not writable; pass --studies-dir with a writable folder"
        )


def make_sampler(name: str, seed: int, space: Space) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=5, multivariate=True, constant_liar=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(grid(space), seed=seed)
    raise TunerError(f"unknown sampler '{name}'")


def make_pruner(name: str, evals_per_epoch: int) -> optuna.pruners.BasePruner:
    # Nothing is pruned within the first epoch: the first evaluations of a pretrained encoder
    # with a fresh head mostly sit at the majority class, whatever the parameters.
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=evals_per_epoch)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=evals_per_epoch, reduction_factor=3)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=evals_per_epoch, reduction_factor=3
        )
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=evals_per_epoch)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TunerError(f"unknown pruner '{name}'")


def open_study(plan: SearchPlan) -> optuna.Study:
    """Create the study, or load it and check it belongs to the same task."""
    config = plan.config
    storage = open_storage(plan.storage)
    sampler = make_sampler(config.study.sampler, config.study.seed, plan.space)
    pruner = make_pruner(config.study.pruner, config.train.evals_per_epoch)
    direction = optuna.study.StudyDirection[plan.task.direction.upper()]
    try:
        study = optuna.create_study(
            study_name=plan.study_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner
        )
        _check_compatible(study, plan)
        return study
    study.set_user_attr("task", plan.task.name)
    study.set_user_attr("model", plan.model.spec)
    study.set_user_attr("metric", plan.task.metric)
    study.set_user_attr("train", config.data.train or config.data.dataset)
    study.set_user_attr("validation", config.data.validation or config.data.dataset)
    if config.study.start_from_defaults:
        study.enqueue_trial(default_point(plan.space), skip_if_exists=True)
    return study


def _check_compatible(study: optuna.Study, plan: SearchPlan) -> None:
    task = study.user_attrs.get("task")
    if task is not None and task != plan.task.name:
        raise TunerError(
            f"study '{plan.study_name}' holds trials of task '{task}', not "
            f"'{plan.task.name}'; pass another --study-name"
        )
    wanted = optuna.study.StudyDirection.MAXIMIZE
    if plan.task.direction == "minimize":
        wanted = optuna.study.StudyDirection.MINIMIZE
    if study.direction != wanted:
        raise TunerError(
            f"study '{plan.study_name}' is to {study.direction.name.lower()}, but task "
            f"'{plan.task.name}' wants to {plan.task.direction}; pass another --study-name"
        )


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _stored_best(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def _fail_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def _label_names(model: Any) -> tuple[str, ...]:
    """The model's label names; none for heads without labels (transformers' LABEL_<i>)."""
    names = tuple(str(v) for v in getattr(model.config, "id2label", {}).values())
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return ()
    return names


def make_objective(
    plan: SearchPlan, prepared: Prepared, events: SearchEvents
) -> Callable[[optuna.Trial], float]:
    from tuner.export import ExportInfo, export_if_best
    from tuner.training import run_trial

    def objective(trial: optuna.Trial) -> float:
        params = suggest(plan.space, trial)
        events.on_trial_start(trial.number, params)
        try:
            outcome: TrialOutcome = run_trial(
                trial, params, prepared, plan.config, events.on_progress
            )
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", _fail_reason(exc))
            raise
        trial.set_user_attr("train_seconds", round(outcome.train_seconds, 3))
        trial.set_user_attr("metrics", outcome.metrics)
        info = ExportInfo(
            study=plan.study_name,
            trial=trial.number,
            task=plan.task.name,
            base_model=plan.model.spec,
            metric=plan.task.metric,
            direction=plan.task.direction,
            value=outcome.value,
            params=params,
            metrics=outcome.metrics,
            pipeline_task=plan.task.pipeline_task,
            labels=_label_names(outcome.model),
            pipeline_import=plan.task.pipeline_import,
            pipeline_kwargs=plan.task.pipeline_kwargs(),
        )
        exported = export_if_best(
            plan.best_dir, outcome.model, prepared.tokenizer, info, _stored_best(trial.study)
        )
        trial.set_user_attr("exported", exported)
        return outcome.value

    return objective


def run_search(config: Config, events: SearchEvents | None = None) -> SearchResult:
    """Run trials until the study holds ``config.study.trials`` finished ones.

    Raises:
        TunerError: invalid input (before the study is touched), or too many trials in a
            row failed.
    """
    from tuner.training import check_space, prepare

    events = events or NoEvents()
    plan = plan_search(config)
    where = f"{config.path or 'tuner.toml'}: [space]"
    check_space(plan.space, where)
    prepared = prepare(plan.task, plan.model, config)
    study = open_study(plan)
    objective = make_objective(plan, prepared, events)
    target = config.study.trials
    deadline = time.monotonic() + config.study.timeout if config.study.timeout else None
    counts = _counts(study)
    events.on_start(plan, sum(counts[s] for s in FINISHED))
    ran = 0
    failures_in_a_row = 0
    ours: list[FrozenTrial] = []

    def finished(study: optuna.Study, trial: FrozenTrial) -> None:
        ours.append(trial)
        events.on_trial_end(trial)

    while True:
        counts = _counts(study)
        if sum(counts[s] for s in FINISHED) + counts[TrialState.RUNNING] >= target:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
        study.optimize(
            objective,
            n_trials=1,
            timeout=remaining,
            catch=(Exception,),
            callbacks=[finished],
            gc_after_trial=True,
        )
        if not ours:
            break
        ran += 1
        last = ours[-1]
        failures_in_a_row = failures_in_a_row + 1 if last.state == TrialState.FAIL else 0
        ours.clear()
        if failures_in_a_row >= config.study.max_failures_in_a_row:
            reason = last.user_attrs.get("fail_reason", "unknown")
            raise TunerError(
                f"{failures_in_a_row} trials in a row failed, the last with {reason}; the "
                f"study '{plan.study_name}' keeps them; fix the cause and run again"
            )
    return _result(study, plan, ran)


def _result(study: optuna.Study, plan: SearchPlan, ran: int) -> SearchResult:
    counts = _counts(study)
    best = None
    try:
        best = study.best_trial
    except ValueError:
        pass
    return SearchResult(
        study_name=plan.study_name,
        storage=plan.storage,
        best=best,
        best_dir=plan.best_dir if plan.best_dir.is_dir() else None,
        complete=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        ran=ran,
        metric=plan.task.metric,
        direction=plan.task.direction,
    )
