"""Open study storages: SQLAlchemy URLs (SQLite by default) and Redis journals."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import TunerError

DATABASE_FILE = "tuner.db"
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
# SQLite waits this long for a lock held by another worker or a dashboard reading the file.
SQLITE_BUSY_SECONDS = 120


def storage_url(studies_dir: Path) -> str:
    """The default storage: one SQLite database for all studies of a folder."""
    return f"sqlite:///{studies_dir / DATABASE_FILE}"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to print."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if "@" not in rest.split("/", 1)[0]:
        return url
    credentials, host = rest.split("@", 1)
    user = credentials.split(":", 1)[0]
    masked = f"{user}:***" if ":" in credentials else user
    return f"{scheme}://{masked}@{host}"


def _first_line(exc: BaseException, url: str) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    password = _password(url)
    return line.replace(password, "***") if password else line


def _password(url: str) -> str | None:
    rest = url.split("://", 1)[-1]
    credentials = rest.split("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
    return credentials.split(":", 1)[1] if ":" in credentials else None


def is_journal(url: str) -> bool:
    """Whether ``url`` names an Optuna journal on Redis rather than a SQLAlchemy database."""
    return url.startswith(("redis://", "rediss://", "unix://"))


@lru_cache(maxsize=16)
def open_storage(
    url: str,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
    stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """Open (creating tables if needed) the storage at ``url``.

    On SQLAlchemy storages Optuna's heartbeat is on: a trial whose worker died is marked FAIL
    after ``grace_seconds`` and handed to ``stale_callback`` (which may queue it again). Redis
    journals have no heartbeat in Optuna; :class:`JournalHeartbeat` does the same for them.

    Raises:
        TunerError: unknown scheme, unreachable server or bad credentials; the message never
            shows the password.
    """
    shown = redact(url)
    # Heartbeats and the retry callback are marked experimental; they are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        if is_journal(url):
            import redis
            from optuna.storages.journal import JournalRedisBackend

            redis.Redis.from_url(url, socket_connect_timeout=10).ping()
            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:"):
            engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
        else:
            engine_kwargs["pool_pre_ping"] = True
            if url.startswith("postgresql"):
                engine_kwargs["connect_args"] = {"connect_timeout": 10}
        storage = _create_rdb(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds,
            heartbeat_stale_trial_callback=stale_callback,
        )
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            _write_ahead_log(storage)
        return storage
    except ImportError as exc:
        raise TunerError(f"storage {shown}: a driver is missing ({exc.name}); install it") from exc
    except Exception as exc:
        raise TunerError(
            f"storage {shown} cannot be opened: {_first_line(exc, url)}; check the URL "
            "(sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0)"
        ) from exc


def _create_rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``; processes that create a new database at the same moment race to
    write its schema version, and the losers succeed on a second try."""
    import sqlalchemy.exc

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except sqlalchemy.exc.IntegrityError:
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _write_ahead_log(storage: optuna.storages.RDBStorage) -> None:
    """Switch a SQLite database to write-ahead logging, once; the file keeps the setting.

    Readers (optuna-dashboard, ``tuner show``) then never block a running search, and its
    writes no longer wait for a long read to end. WAL needs a local file system.
    """
    with storage.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        if str(mode).lower() != "wal":
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")


class StudyLock:
    """A lock shared by every worker of one study, on any machine that reaches its storage.

    Held from "are trials still needed?" until the new trial exists, so that workers
    together create exactly the trials asked for. SQLite: a file lock beside the database;
    PostgreSQL: an advisory lock; MySQL: GET_LOCK; Redis: a Redis lock. Other databases get
    no lock (at worst a trial or two too many when workers start trials at the same moment).
    """

    def __init__(self, url: str, study: str) -> None:
        self.url = url
        self.key = f"tuner:{study}"
        self._release: Callable[[], None] | None = None

    def acquire(self) -> None:
        if self._release is not None:
            return
        url = self.url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            self._release = _file_lock(Path(url[len("sqlite:///") :]).with_suffix(".lock"))
        elif url.startswith("postgresql"):
            self._release = _sql_lock(
                url,
                "SELECT pg_advisory_lock(hashtext(:key))",
                "SELECT pg_advisory_unlock(hashtext(:key))",
                self.key,
            )
        elif url.startswith("mysql"):
            self._release = _sql_lock(
                url, "SELECT GET_LOCK(:key, 600)", "SELECT RELEASE_LOCK(:key)", self.key
            )
        elif is_journal(url):
            import redis

            lock = redis.Redis.from_url(url).lock(f"{self.key}:lock", timeout=600)
            lock.acquire()
            self._release = lock.release
        else:
            self._release = lambda: None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def _file_lock(path: Path) -> Callable[[], None]:
    from tuner.export import file_lock

    stack = contextlib.ExitStack()
    stack.enter_context(file_lock(path))
    return stack.close


@lru_cache(maxsize=4)
def _engine(url: str) -> Any:
    import sqlalchemy

    return sqlalchemy.create_engine(url, pool_pre_ping=True, pool_size=1)


def _sql_lock(url: str, lock: str, unlock: str, key: str) -> Callable[[], None]:
    import sqlalchemy

    connection = _engine(url).connect()
    connection.execute(sqlalchemy.text(lock), {"key": key})

    def release() -> None:
        try:
            connection.execute(sqlalchemy.text(unlock), {"key": key})
        finally:
            connection.close()

    return release


class JournalHeartbeat:
    """Optuna's heartbeat for storages that lack one (the Redis journal).

    A thread stamps the running trial's system attribute every ``interval`` seconds;
    :meth:`stale_ids` finds RUNNING trials whose stamp is older than ``grace``, which the
    search fails and queues again as Optuna's ``fail_stale_trials`` does for databases.
    """

    ATTR = "tuner:heartbeat"

    def __init__(self, storage: optuna.storages.BaseStorage, interval: int, grace: int) -> None:
        self.storage = storage
        self.interval = interval
        self.grace = grace

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        stop = threading.Event()

        def beat() -> None:
            while not stop.is_set():
                self.storage.set_trial_system_attr(trial_id, self.ATTR, time.time())
                stop.wait(self.interval)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def stale_ids(self, study: optuna.Study) -> list[int]:
        """RUNNING trials whose last stamp is older than the grace period."""
        now = time.time()
        stale = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            stamp = trial.system_attrs.get(self.ATTR)
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = stamp if isinstance(stamp, (int, float)) else started
            if now - last > self.grace:
                stale.append(trial._trial_id)
        return stale
