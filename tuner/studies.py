"""Inspect, export and delete studies: summaries, trial tables, importances, kept weights.

Reading is kept cheap on big studies: on SQLAlchemy storages the trial table is read straight
from Optuna's schema with a handful of queries that fetch only what is shown (no intermediate
values, no system attributes), instead of building every :class:`FrozenTrial`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from socketserver import ThreadingMixIn
from types import ModuleType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import TunerError
from tuner.export import (
    INFO_FILE,
    ExportInfo,
    locked,
    model_card,
    read_info,
    recover,
    swap_in,
)
from tuner.storage import SQLITE_BUSY_SECONDS, is_journal, open_storage, redact, storage_url

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

BEST_DIR = "best"  # the layout tuner.search writes
TRIALS_DIR = "trials"
# Importances are computed on at most this many complete trials (the most recent ones):
# PED-ANOVA took 0.2 s on 1,000 trials and 1.25 s on 8,000 (a busy 2-core machine).
IMPORTANCE_LIMIT = 1000
# The trial user attributes the table and the JSON/CSV output show; others are not read.
SHOWN_ATTRS = ("fail_reason", "train_seconds", "metrics")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class StudySummary:
    name: str
    direction: str
    user_attrs: Mapping[str, Any]
    counts: Mapping[str, int]
    best_value: float | None
    last_activity: datetime | None

    @property
    def trials(self) -> int:
        return sum(self.counts.values())

    @property
    def states_text(self) -> str:
        """Like ``9 complete, 2 pruned, 1 failed``: the states that occur."""
        words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
        words |= {"RUNNING": "running", "WAITING": "waiting"}
        parts = [f"{self.counts[s]} {w}" for s, w in words.items() if self.counts.get(s)]
        return ", ".join(parts) or "no trials"

    @property
    def task(self) -> str:
        return str(self.user_attrs.get("task", "-"))

    @property
    def model(self) -> str:
        return str(self.user_attrs.get("model", "-"))

    @property
    def metric(self) -> str:
        return str(self.user_attrs.get("metric", "value"))

    def as_json(self) -> dict[str, Any]:
        return {
            "study": self.name,
            "task": self.user_attrs.get("task"),
            "model": self.user_attrs.get("model"),
            "metric": self.user_attrs.get("metric"),
            "direction": self.direction,
            "n_trials": self.trials,
            "states": {state.lower(): self.counts.get(state, 0) for state in STATES},
            "best_value": self.best_value,
            "last_activity": _iso(self.last_activity),
            "user_attrs": dict(self.user_attrs),
        }


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    value: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    params: Mapping[str, Any]
    user_attrs: Mapping[str, Any]
    distributions: Mapping[str, BaseDistribution] = field(default_factory=dict, repr=False)

    @property
    def seconds(self) -> float | None:
        if self.datetime_start is None or self.datetime_complete is None:
            return None
        return (self.datetime_complete - self.datetime_start).total_seconds()

    @property
    def fail_reason(self) -> str:
        return str(self.user_attrs.get("fail_reason", ""))

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value,
            "datetime_start": _iso(self.datetime_start),
            "datetime_complete": _iso(self.datetime_complete),
            "duration_seconds": self.seconds,
            "params": dict(self.params),
            "train_seconds": self.user_attrs.get("train_seconds"),
            "metrics": self.user_attrs.get("metrics"),
            "fail_reason": self.user_attrs.get("fail_reason"),
        }


@dataclass(frozen=True)
class Importances:
    values: Mapping[str, float] | None
    used: int
    note: str = ""


@dataclass(frozen=True)
class StudyView:
    """One study, as ``tuner show`` and ``tuner report`` present it."""

    summary: StudySummary
    storage: str
    trials: list[TrialRow]
    best: TrialRow | None
    importances: Importances | None
    weights: Mapping[int, Path]

    def as_json(self) -> dict[str, Any]:
        imp = self.importances
        return {
            **self.summary.as_json(),
            "storage": redact(self.storage),
            "best": self.best.as_json() if self.best is not None else None,
            "importances": dict(imp.values) if imp is not None and imp.values else None,
            "importances_trials": imp.used if imp is not None else 0,
            "trials_with_weights": {str(n): str(p) for n, p in sorted(self.weights.items())},
            "trials": [t.as_json() for t in self.trials],
        }


@dataclass(frozen=True)
class Exported:
    trial: int
    source: Path
    dest: Path


@dataclass(frozen=True)
class Deleted:
    name: str
    trials: int
    folder: Path | None


def resolve_location(
    storage: str | None, studies_dir: Path | None, config_path: Path | None = None
) -> tuple[str, Path]:
    """The storage URL and studies folder, found as ``tuner search`` finds them.

    A flag wins, then ``[study] storage`` and ``studies_dir`` of the config file
    (``./tuner.toml`` if present), then ``$TUNER_STORAGE`` for the storage, then
    ``studies`` and its SQLite database.

    Raises:
        TunerError: the config file cannot be read, or those keys hold no string.
    """
    from tuner.config import DEFAULT_CONFIG, read_toml

    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG
    study: dict[str, Any] = {}
    if config_path is not None:
        table = read_toml(config_path).get("study", {})
        study = table if isinstance(table, dict) else {}
    if studies_dir is None:
        folder = _config_string(study, "studies_dir", config_path)
        studies_dir = Path("studies")
        if folder is not None and config_path is not None:
            path = Path(folder).expanduser()
            studies_dir = path if path.is_absolute() else config_path.parent / path
    if storage is None:
        storage = _config_string(study, "storage", config_path)
    return storage or os.environ.get("TUNER_STORAGE") or storage_url(studies_dir), studies_dir


def _config_string(table: dict[str, Any], key: str, config_path: Path | None) -> str | None:
    value = table.get(key)
    if value is None or (isinstance(value, str) and value):
        return value
    raise TunerError(f"{config_path}: [study] {key} must be a non-empty string, got {value!r}")


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:`` URL; ``None`` for other URLs and in-memory ones."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def connect(url: str) -> BaseStorage:
    """Open an existing storage for reading; a missing SQLite file is an error, not created.

    Raises:
        TunerError: no database file, or the storage cannot be opened.
    """
    _check_sqlite_file(url)
    return open_storage(url)


def _check_sqlite_file(url: str) -> None:
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise TunerError(f"no study database at {path}; run tuner search first or pass --storage")


def study_id(storage: BaseStorage, url: str, name: str) -> int:
    """The id of study ``name``; an unknown name is an error listing the known ones."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        pass
    raise _unknown_study(url, name, [s.study_name for s in storage.get_all_studies()])


def _unknown_study(url: str, name: str, names: list[str]) -> TunerError:
    known = f"known studies: {', '.join(names)}" if names else "it holds no study yet"
    return TunerError(f"no study '{name}' in {redact(url)}; {known}")


def list_studies(url: str) -> list[StudySummary]:
    """A summary of every study in the storage, in creation order."""
    engine = _read_engine(url)
    if engine is not None:
        return _summaries_sql(engine, _studies_sql(engine))
    storage = connect(url)
    return [
        _summary(s.study_name, _direction(s.directions), s.user_attrs, _fallback_rows(storage, s))
        for s in storage.get_all_studies()
    ]


def load_view(
    url: str,
    name: str,
    studies_dir: Path,
    importance: bool = True,
    importance_limit: int = IMPORTANCE_LIMIT,
) -> StudyView:
    """The study's trials, best trial, importances and kept weights.

    Raises:
        TunerError: the storage cannot be opened or has no study ``name``.
    """
    engine = _read_engine(url)
    if engine is not None:
        studies = {s.name: s for s in _studies_sql(engine)}
        if name not in studies:
            raise _unknown_study(url, name, list(studies))
        direction, user_attrs = studies[name].direction, studies[name].user_attrs
        rows = _rows_sql(engine, studies[name].sid)
    else:
        storage = connect(url)
        sid = study_id(storage, url, name)
        direction = _direction(storage.get_study_directions(sid))
        user_attrs = storage.get_study_user_attrs(sid)
        rows = [_row(t) for t in storage.get_all_trials(sid, deepcopy=False)]
    summary = _summary(name, direction, user_attrs, rows)
    best = _best(rows, direction)
    imp = importances(rows, direction, importance_limit) if importance else None
    return StudyView(summary, url, rows, best, imp, kept_weights(studies_dir, name))


def importances(
    rows: list[TrialRow], direction: str, limit: int = IMPORTANCE_LIMIT
) -> Importances:
    """PED-ANOVA importances (Optuna's default evaluator) on the last ``limit`` complete trials.

    Never raises: when they cannot be computed, ``values`` is ``None`` and ``note`` says why.
    """
    import optuna

    if direction not in ("maximize", "minimize"):
        return Importances(None, 0, "this study has several objectives")
    complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None and r.params]
    if len(complete) < 2:
        return Importances(None, len(complete), "they need at least 2 complete trials")
    used = complete[-limit:]
    trials = [
        optuna.trial.create_trial(
            params=dict(r.params),
            distributions=dict(r.distributions),
            value=r.value,
            state=optuna.trial.TrialState.COMPLETE,
        )
        for r in used
    ]
    importance = import_importance()
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=optuna.study.StudyDirection[direction.upper()])
        study.add_trials(trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = importance.get_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return Importances(None, len(used), f"they cannot be computed: {exc}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    if not values:
        return Importances(None, len(used), "no parameter varies across the complete trials")
    return Importances(values, len(used))


def import_importance() -> ModuleType:
    """``optuna.importance``, without the scikit-learn import that its fANOVA evaluator makes.

    PED-ANOVA, Optuna's default evaluator and the one tuner uses, needs no scikit-learn, but
    ``import optuna.importance`` imports it eagerly for fANOVA: 1.7 s on a busy 2-core machine,
    most of what ``tuner show`` took. Hidden during that import, scikit-learn is left out;
    afterwards fANOVA and mean-decrease-impurity evaluators are unavailable in this process.
    """
    if "optuna.importance" in sys.modules or "sklearn" in sys.modules:
        return importlib.import_module("optuna.importance")
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("optuna.importance")
    finally:
        del sys.modules["sklearn"]


def kept_weights(studies_dir: Path, name: str) -> dict[int, Path]:
    """Trial number -> folder of every trial whose model is on disk (``best/``, ``trials/N/``)."""
    folder = studies_dir / name
    kept: dict[int, Path] = {}
    info = read_info(folder / BEST_DIR)
    if info is not None and isinstance(info.get("trial"), int):
        kept[info["trial"]] = folder / BEST_DIR
    trials = folder / TRIALS_DIR
    if trials.is_dir():
        for sub in trials.iterdir():
            if sub.name.isdigit() and (sub / INFO_FILE).is_file():
                kept.setdefault(int(sub.name), sub)
    return dict(sorted(kept.items()))


def export_trial(
    url: str,
    studies_dir: Path,
    name: str,
    trial: int | None = None,
    to: Path | None = None,
    artifacts: Path | None = None,
) -> Exported:
    """Copy a kept model (the best one, or trial ``trial``'s) to ``to``, atomically.

    With ``artifacts``, a model that is not on disk here is fetched from that Optuna artifact
    store, where ``tuner search --artifacts`` put it.

    Raises:
        TunerError: unknown study or trial, weights not kept, or ``to`` holds other files.
    """
    storage = connect(url)
    sid = study_id(storage, url, name)
    if artifacts is not None:
        fetched = _from_artifacts(storage, sid, name, trial, to, artifacts, studies_dir)
        if fetched is not None:
            return fetched
    study_folder = studies_dir / name
    # The lock keeps a search from swapping best/ in while it is copied.
    guard = locked(study_folder) if study_folder.is_dir() else contextlib.nullcontext()
    with guard:
        recover(study_folder / BEST_DIR)
        kept = kept_weights(studies_dir, name)
        if trial is None:
            info = read_info(study_folder / BEST_DIR)
            if info is None or not isinstance(info.get("trial"), int):
                raise TunerError(
                    f"study '{name}' has no best model in {study_folder / BEST_DIR}; "
                    f"{_kept_text(kept)}; pass --studies-dir if the study's files are elsewhere"
                )
            trial = int(info["trial"])
        else:
            _check_trial(storage, sid, name, trial)
        source = kept.get(trial)
        if source is None:
            raise TunerError(f"trial {trial}'s weights were not kept; {_kept_text(kept)}")
        dest = to if to is not None else Path(f"{name}-trial{trial}")
        _check_dest(dest, source)
        _copy_atomically(source, dest)
    return Exported(trial, source, dest)


def _from_artifacts(
    storage: BaseStorage,
    sid: int,
    name: str,
    trial: int | None,
    to: Path | None,
    artifacts: Path,
    studies_dir: Path,
) -> Exported | None:
    """Fetch the trial's model from the artifact store when it is not kept on disk here."""
    from optuna.artifacts import FileSystemArtifactStore, download_artifact
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    if trial is None:
        trials = storage.get_all_trials(sid, deepcopy=False, states=(TrialState.COMPLETE,))
        if not trials:
            return None
        maximize = storage.get_study_directions(sid)[0] == StudyDirection.MAXIMIZE
        chosen = (max if maximize else min)(trials, key=lambda t: float(t.value or 0.0))
    else:
        _check_trial(storage, sid, name, trial)
        chosen = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(sid, trial))
    if chosen.number in kept_weights(studies_dir, name):
        return None
    artifact = chosen.user_attrs.get("model_artifact")
    if not isinstance(artifact, str):
        return None
    if not artifacts.is_dir():
        raise TunerError(f"--artifacts {artifacts}: no such folder")
    dest = to if to is not None else Path(f"{name}-trial{chosen.number}")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.absolute().parent) as scratch:
        archive = Path(scratch) / "model.tar.gz"
        try:
            download_artifact(
                artifact_store=FileSystemArtifactStore(artifacts),
                file_path=str(archive),
                artifact_id=artifact,
            )
        except Exception as exc:
            raise TunerError(
                f"trial {chosen.number}'s model artifact {artifact} cannot be read from "
                f"{artifacts}: {exc}"
            ) from exc
        unpacked = Path(scratch) / "model"
        shutil.unpack_archive(archive, unpacked, filter="data")
        _check_dest(dest, unpacked)
        _copy_atomically(unpacked, dest)
    return Exported(chosen.number, artifacts / artifact, dest)


def delete_study(url: str, studies_dir: Path, name: str) -> Deleted:
    """Delete the study from the storage, then its folder ``<studies-dir>/<name>/``.

    Raises:
        TunerError: unknown study, or its folder cannot be removed.
    """
    storage = connect(url)
    sid = study_id(storage, url, name)
    trials = storage.get_n_trials(sid)
    storage.delete_study(sid)
    folder = studies_dir / name
    if not _is_own_folder(name) or not folder.is_dir():
        return Deleted(name, trials, None)
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise TunerError(
            f"study '{name}' was deleted from the storage, but {folder} cannot be removed "
            f"({exc.strerror}); remove it by hand"
        ) from exc
    return Deleted(name, trials, folder)


def summarize(url: str, name: str) -> StudySummary:
    """The summary of one study (what ``tuner delete`` asks about)."""
    summaries = {s.name: s for s in list_studies(url)}
    if name not in summaries:
        study_id(connect(url), url, name)  # raises, listing the known studies
    return summaries[name]


def _is_own_folder(name: str) -> bool:
    """Whether ``<studies-dir>/<name>`` stays inside the studies folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _kept_text(kept: Mapping[int, Path]) -> str:
    return f"trials with weights: {', '.join(map(str, kept)) if kept else 'none'}"


def _check_trial(storage: BaseStorage, sid: int, name: str, trial: int) -> None:
    try:
        storage.get_trial_id_from_study_id_trial_number(sid, trial)
        return
    except KeyError:
        pass
    count = storage.get_n_trials(sid)
    numbers = f"its trials are numbered 0 to {count - 1}" if count else "it has no trial yet"
    raise TunerError(f"--trial {trial}: study '{name}' has no trial {trial}; {numbers}")


def _check_dest(dest: Path, source: Path) -> None:
    src, target = source.resolve(), dest.resolve()
    if target == src or src in target.parents:
        raise TunerError(f"--to {dest}: that is the kept model itself; pass a folder outside it")
    if dest.exists() and not dest.is_dir():
        raise TunerError(f"--to {dest} is a file; pass a new or empty folder")
    if dest.is_dir() and any(dest.iterdir()) and read_info(dest) is None:
        raise TunerError(
            f"--to {dest} already holds files that are not a tuner export; pass a new or "
            "empty folder"
        )


def _copy_atomically(source: Path, dest: Path) -> None:
    """Copy into a temporary folder beside ``dest``, then swap it in by renames."""
    parent = dest.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=parent))
    except OSError as exc:
        raise TunerError(f"--to {dest}: cannot write to {parent} ({exc.strerror})") from exc
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        if not (staging / "README.md").is_file():
            _write_card(staging)
        swap_in(staging, dest.absolute())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_card(folder: Path) -> None:
    info = read_info(folder)
    if info is None:
        return
    try:
        fields = {**info, "labels": tuple(info.get("labels", ()))}
        card = model_card(ExportInfo(**fields))
    except (TypeError, ValueError):
        return
    (folder / "README.md").write_text(card)


def _direction(directions: Iterable[Any]) -> str:
    names = [d.name.lower() for d in directions]
    return names[0] if len(names) == 1 else ",".join(names)


def _aware(moment: datetime | None, utc: bool = False) -> datetime | None:
    """The moment in UTC: Optuna's RDB columns hold naive UTC, its FrozenTrials naive local
    time (a journal's are aware)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC) if utc else moment.astimezone()
    return moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _summary(
    name: str, direction: str, user_attrs: Mapping[str, Any], rows: list[TrialRow]
) -> StudySummary:
    counts = dict.fromkeys(STATES, 0)
    last: datetime | None = None
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
        for moment in (r.datetime_start, r.datetime_complete):
            if moment is not None and (last is None or moment > last):
                last = moment
    best = _best(rows, direction)
    value = best.value if best is not None else None
    return StudySummary(name, direction, dict(user_attrs), counts, value, last)


def _best(rows: list[TrialRow], direction: str) -> TrialRow | None:
    complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    if not complete or direction not in ("maximize", "minimize"):
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda r: r.value if r.value is not None else 0.0)


def _row(trial: FrozenTrial) -> TrialRow:
    values = trial.values
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        value=values[0] if values else None,
        datetime_start=_aware(trial.datetime_start),
        datetime_complete=_aware(trial.datetime_complete),
        params=trial.params,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k in SHOWN_ATTRS},
        distributions=trial.distributions,
    )


def _fallback_rows(storage: BaseStorage, study: Any) -> list[TrialRow]:
    return [_row(t) for t in storage.get_all_trials(study._study_id, deepcopy=False)]


@dataclass(frozen=True)
class _StudyRecord:
    sid: int
    name: str
    direction: str
    user_attrs: dict[str, Any]


def _read_engine(url: str) -> Any:
    """A SQLAlchemy engine on Optuna's tables, or ``None`` for a Redis journal.

    Reading the tables directly skips what opening an ``RDBStorage`` does first (creating
    missing tables, Alembic's schema check): a third of ``tuner show``'s time on a busy
    machine, and a read never writes. When that fails, the storage is opened the usual way,
    which either explains the failure (without the password) or creates the missing tables.
    """
    if is_journal(url):
        return None
    _check_sqlite_file(url)
    import sqlalchemy

    engine = None
    try:
        connect_args = {"timeout": SQLITE_BUSY_SECONDS} if url.startswith("sqlite:") else {}
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect() as conn:
            studies = _models().StudyModel.__table__
            conn.execute(sqlalchemy.select(studies.c.study_id).limit(1))
        return engine
    except Exception:
        if engine is not None:
            engine.dispose()
    from optuna.storages import RDBStorage

    storage = open_storage(url)
    return storage.engine if isinstance(storage, RDBStorage) else None


def _models() -> Any:
    from optuna.storages._rdb import models

    return models


def _studies_sql(engine: Any) -> list[_StudyRecord]:
    """Every study's id, name, direction and user attributes, in creation order."""
    from sqlalchemy import select

    m = _models()
    s = m.StudyModel.__table__
    d = m.StudyDirectionModel.__table__
    a = m.StudyUserAttributeModel.__table__
    directions: dict[int, list[Any]] = {}
    attrs: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        studies = conn.execute(select(s.c.study_id, s.c.study_name).order_by(s.c.study_id)).all()
        for sid, direction in conn.execute(
            select(d.c.study_id, d.c.direction).order_by(d.c.study_id, d.c.objective)
        ):
            directions.setdefault(sid, []).append(direction)
        for sid, key, text in conn.execute(select(a.c.study_id, a.c.key, a.c.value_json)):
            attrs.setdefault(sid, {})[key] = json.loads(text)
    return [
        _StudyRecord(sid, name, _direction(directions.get(sid, [])), attrs.get(sid, {}))
        for sid, name in studies
    ]


def _summaries_sql(engine: Any, studies: list[_StudyRecord]) -> list[StudySummary]:
    """Counts, best value and last activity of every study in two grouped queries."""
    from sqlalchemy import func, select

    m = _models()
    t = m.TrialModel.__table__
    v = m.TrialValueModel.__table__
    counts: dict[int, dict[str, int]] = {}
    last: dict[int, datetime] = {}
    best: dict[int, tuple[float | None, float | None]] = {}
    with engine.connect() as conn:
        grouped = select(
            t.c.study_id,
            t.c.state,
            func.count(),
            func.max(t.c.datetime_start),
            func.max(t.c.datetime_complete),
        ).group_by(t.c.study_id, t.c.state)
        for sid, state, count, started, completed in conn.execute(grouped):
            counts.setdefault(sid, dict.fromkeys(STATES, 0))[state.name] = count
            for moment in (_aware(started, utc=True), _aware(completed, utc=True)):
                if moment is not None and (sid not in last or moment > last[sid]):
                    last[sid] = moment
        values = (
            select(t.c.study_id, func.max(v.c.value), func.min(v.c.value))
            .join(v, v.c.trial_id == t.c.trial_id)
            .where(t.c.state == _complete(), v.c.objective == 0)
            .group_by(t.c.study_id)
        )
        for sid, high, low in conn.execute(values):
            best[sid] = (high, low)
    summaries = []
    for s in studies:
        high, low = best.get(s.sid, (None, None))
        value = high if s.direction == "maximize" else low if s.direction == "minimize" else None
        summaries.append(
            StudySummary(
                s.name,
                s.direction,
                s.user_attrs,
                counts.get(s.sid, dict.fromkeys(STATES, 0)),
                value,
                last.get(s.sid),
            )
        )
    return summaries


def _complete() -> Any:
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def _rows_sql(engine: Any, sid: int) -> list[TrialRow]:
    """The trial table of one study from Optuna's schema: four queries, only shown columns."""
    from optuna.distributions import json_to_distribution
    from sqlalchemy import select

    m = _models()
    t = m.TrialModel.__table__
    v = m.TrialValueModel.__table__
    p = m.TrialParamModel.__table__
    a = m.TrialUserAttributeModel.__table__
    finite = m.TrialValueModel.TrialValueType.FINITE
    in_study = t.c.study_id == sid
    values: dict[int, float] = {}
    params: dict[int, dict[str, Any]] = {}
    dists: dict[int, dict[str, BaseDistribution]] = {}
    attrs: dict[int, dict[str, Any]] = {}
    parsed: dict[str, BaseDistribution] = {}
    with engine.connect() as conn:
        trials = conn.execute(
            select(t.c.trial_id, t.c.number, t.c.state, t.c.datetime_start, t.c.datetime_complete)
            .where(in_study)
            .order_by(t.c.number)
        ).all()
        query = select(v.c.trial_id, v.c.value, v.c.value_type).join(
            t, v.c.trial_id == t.c.trial_id
        )
        for tid, value, kind in conn.execute(query.where(in_study, v.c.objective == 0)):
            values[tid] = value if kind == finite else _infinite(kind)
        query = (
            select(p.c.trial_id, p.c.param_name, p.c.param_value, p.c.distribution_json)
            .join(t, p.c.trial_id == t.c.trial_id)
            .where(in_study)
            .order_by(p.c.param_id)
        )
        for tid, pname, internal, text in conn.execute(query):
            dist = parsed.get(text)
            if dist is None:
                dist = parsed[text] = json_to_distribution(text)
            params.setdefault(tid, {})[pname] = dist.to_external_repr(internal)
            dists.setdefault(tid, {})[pname] = dist
        query = (
            select(a.c.trial_id, a.c.key, a.c.value_json)
            .join(t, a.c.trial_id == t.c.trial_id)
            .where(in_study, a.c.key.in_(SHOWN_ATTRS))
        )
        for tid, key, text in conn.execute(query):
            attrs.setdefault(tid, {})[key] = json.loads(text)
    return [
        TrialRow(
            number=number,
            state=state.name,
            value=values.get(tid),
            datetime_start=_aware(started, utc=True),
            datetime_complete=_aware(completed, utc=True),
            params=params.get(tid, {}),
            user_attrs=attrs.get(tid, {}),
            distributions=dists.get(tid, {}),
        )
        for tid, number, state, started, completed in trials
    ]


def _infinite(kind: Any) -> float:
    return float("inf") if kind.name == "INF_POS" else float("-inf")


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def dashboard_server(url: str, host: str, port: int) -> WSGIServer:
    """optuna-dashboard's WSGI app on the storage, bound to ``host:port`` (not yet serving).

    Raises:
        TunerError: the storage cannot be opened, or the address cannot be bound.
    """
    from optuna_dashboard import wsgi

    app = wsgi(connect(url))
    try:
        return make_server(
            host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TunerError(
            f"--host {host} --port {port}: cannot listen there ({reason}); pass another --port"
        ) from exc
