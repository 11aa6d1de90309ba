"""Create or load the Optuna study, run trials until it holds the requested total."""

from __future__ import annotations

import gc
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from tuner.config import Config
from tuner.errors import TunerError
from tuner.models import ModelRef, resolve_model
from tuner.registry import load_task_class
from tuner.space import Space, build_space, default_point, grid, suggest
from tuner.storage import (
    JournalHeartbeat,
    StudyLock,
    is_journal,
    open_storage,
    redact,
    storage_url,
)

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


def worker_index(config: Config) -> int:
    """This worker's index: ``--worker-index``, else a scheduler's array index, else 0.

    It offsets the sampler's seed, so that workers started together do not draw the same
    random parameters.
    """
    if config.study.worker_index is not None:
        return config.study.worker_index
    for name in ("TUNER_WORKER_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def open_study(
    plan: SearchPlan, storage: optuna.storages.BaseStorage, evals_per_epoch: int = 1
) -> optuna.Study:
    """Create the study, or load it and check it belongs to the same task."""
    config = plan.config
    seed = config.study.seed + worker_index(config)
    sampler = make_sampler(config.study.sampler, seed, plan.space)
    pruner = make_pruner(config.study.pruner, evals_per_epoch)
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


class BudgetedRetry:
    """Queue a trial whose worker died again, with the same parameters, while the study
    still has room for it under ``target`` (Optuna's retry callback does the queueing)."""

    def __init__(self, target: int, max_retry: int) -> None:
        self.target = target
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(study.get_trials(deepcopy=False)) < self.target:
            self.retry(study, trial)


def make_objective(
    plan: SearchPlan,
    prepared: Prepared | None,
    events: SearchEvents,
    on_created: Callable[[optuna.Trial], None],
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        on_created(trial)
        params = suggest(plan.space, trial)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        events.on_trial_start(trial.number, params)
        try:
            if prepared is None:
                return _score(plan, trial, params)
            return _train(plan, prepared, trial, params, events)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", _fail_reason(exc))
            raise

    return objective


def _score(plan: SearchPlan, trial: optuna.Trial, params: dict[str, Any]) -> float:
    """A task that does not train with Trainer scores the parameters itself."""

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    started = time.perf_counter()
    value = float(plan.task.score(params, report))
    trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 3))
    return value


def _train(
    plan: SearchPlan,
    prepared: Prepared,
    trial: optuna.Trial,
    params: dict[str, Any],
    events: SearchEvents,
) -> float:
    from tuner.export import ExportInfo, export_if_best
    from tuner.training import halved_batch, is_out_of_memory, release_memory, run_trial

    try:
        outcome: TrialOutcome = run_trial(trial, params, prepared, plan.config, events.on_progress)
    except Exception as exc:
        smaller = halved_batch(params)
        if not is_out_of_memory(exc) or smaller is None:
            raise
        # Same effective batch in half the memory: half the batch, twice the accumulation.
        release_memory()
        trial.set_user_attr("oom_retry", {k: smaller[k] for k in OOM_KEYS})
        try:
            outcome = run_trial(trial, smaller, prepared, plan.config, events.on_progress)
        except Exception as again:
            if is_out_of_memory(again):
                raise TrialOutOfMemory(
                    f"out of memory at batch {params['per_device_train_batch_size']} and again "
                    f"at {smaller['per_device_train_batch_size']}"
                ) from again
            raise
    trial.set_user_attr("train_seconds", round(outcome.train_seconds, 3))
    for key, value in outcome.timing.items():
        trial.set_user_attr(key, value)
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
    if exported and plan.config.study.artifacts is not None:
        trial.set_user_attr("model_artifact", upload_model(trial, plan.best_dir, plan))
    return outcome.value


def upload_model(trial: optuna.Trial, folder: Path, plan: SearchPlan) -> str:
    """Store an exported model in the study's Optuna artifact store, for workers that do
    not share a file system; ``tuner export`` fetches it from there.

    Returns:
        The artifact id.
    """
    import shutil
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    assert plan.config.study.artifacts is not None
    plan.config.study.artifacts.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(plan.config.study.artifacts)
    with tempfile.TemporaryDirectory() as scratch:
        archive = shutil.make_archive(
            str(Path(scratch) / f"{plan.study_name}-trial{trial.number}"), "gztar", folder
        )
        return upload_artifact(artifact_store=store, file_path=archive, study_or_trial=trial)


OOM_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps")


class TrialOutOfMemory(Exception):
    """A trial ran out of memory even at half its batch size."""


def run_search(config: Config, events: SearchEvents | None = None) -> SearchResult:
    """Run trials until the study holds ``config.study.trials`` finished ones.

    Several processes (on one machine or many) may run this against one storage: trials are
    created under a :class:`~tuner.storage.StudyLock`, so together they create exactly the
    trials asked for.

    Raises:
        TunerError: invalid input (before the study is touched), or too many trials in a
            row failed.
    """
    events = events or NoEvents()
    # The display reports trials itself; Optuna's log lines would repeat them.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    plan = plan_search(config)
    target = config.study.trials
    if plan.task.trains:
        # torch and transformers load only for tasks that train.
        from tuner.training import check_space, prepare

        check_space(plan.space, f"{config.path or 'tuner.toml'}: [space]")
        prepared: Prepared | None = prepare(plan.task, plan.model, config)
        # What is loaded so far lives for the whole run: keep the collector that runs after
        # every trial from scanning torch's and transformers' objects again and again.
        gc.freeze()
    else:
        plan.task.load_splits(config.data)
        prepared = None
    retry = BudgetedRetry(target, config.study.max_retries)
    beat, grace = config.study.heartbeat_seconds, config.study.grace_seconds
    storage = open_storage(plan.storage, beat, grace, retry)
    study = open_study(plan, storage, prepared.evals_per_epoch if prepared else 1)
    journal = JournalHeartbeat(storage, beat, grace) if is_journal(plan.storage) else None
    lock = StudyLock(plan.storage, plan.study_name)
    created: list[optuna.Trial] = []

    def on_created(trial: optuna.Trial) -> None:
        created.append(trial)
        lock.release()

    objective = make_objective(plan, prepared, events, on_created)
    if journal is not None:
        objective = _with_heartbeat(objective, journal)
    deadline = time.monotonic() + config.study.timeout if config.study.timeout else None
    events.on_start(plan, _finished(study))
    ran = 0
    failures_in_a_row = 0
    ours: list[FrozenTrial] = []

    def finished(study: optuna.Study, trial: FrozenTrial) -> None:
        ours.append(trial)
        events.on_trial_end(trial)

    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        try:
            _fail_stale(study, journal, retry)
            counts = _counts(study)
            if not _needs_trials(counts, target):
                if not counts[TrialState.RUNNING]:
                    break
                # Trials of other workers are running: wait for them to finish, or to go
                # stale and be queued again, which this worker then runs.
                lock.release()
                time.sleep(min(beat, 5))
                continue
            remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
            study.optimize(
                objective,
                n_trials=1,
                timeout=remaining,
                catch=(Exception,),
                callbacks=[finished],
                gc_after_trial=True,
            )
        finally:
            lock.release()
        if not ours:
            break
        ran += 1
        last = ours.pop()
        failures_in_a_row = failures_in_a_row + 1 if last.state == TrialState.FAIL else 0
        if failures_in_a_row >= config.study.max_failures_in_a_row:
            reason = last.user_attrs.get("fail_reason", "unknown")
            raise TunerError(
                f"{failures_in_a_row} trials in a row failed, the last with {reason}; the "
                f"study '{plan.study_name}' keeps them; fix the cause and run again"
            )
    return _result(study, plan, ran)


LOST = "worker lost: no heartbeat within the grace period"


def _fail_stale(
    study: optuna.Study, journal: JournalHeartbeat | None, retry: BudgetedRetry
) -> None:
    """Optuna's ``fail_stale_trials``, recording why the trial failed before failing it."""
    storage = study._storage
    if journal is not None:
        stale = journal.stale_ids(study)
    elif isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        stale = storage._get_stale_trial_ids(study._study_id)
    else:
        return
    for trial_id in stale:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", LOST)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                retry(study, storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first


def _finished(study: optuna.Study) -> int:
    counts = _counts(study)
    return sum(counts[s] for s in FINISHED)


def _needs_trials(counts: dict[TrialState, int], target: int) -> bool:
    """Whether another trial may start: one is queued, or fewer than ``target`` exist.

    Every trial that exists will finish (a running one, or one whose worker died and is
    failed by the heartbeat), so creating trials only while fewer than ``target`` exist
    makes the study end with exactly ``target`` finished trials.
    """
    if counts[TrialState.WAITING]:
        return True
    return sum(counts.values()) < target


def _with_heartbeat(
    objective: Callable[[optuna.Trial], float], journal: JournalHeartbeat
) -> Callable[[optuna.Trial], float]:
    def beating(trial: optuna.Trial) -> float:
        with journal.beating(trial._trial_id):
            return objective(trial)

    return beating


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
