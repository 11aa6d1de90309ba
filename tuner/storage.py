"""Open study storages: SQLAlchemy URLs (SQLite by default) and Redis journals."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna

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


@lru_cache(maxsize=8)
def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating tables if needed) the storage at ``url``.

    Heartbeats are on: a trial whose worker died is marked FAIL after the grace period and
    queued again with the same parameters.

    Raises:
        TunerError: unknown scheme, unreachable server or bad credentials; the message never
            shows the password.
    """
    shown = redact(url)
    # Heartbeats and their retry callback are marked experimental; they are what we rely on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            from optuna.storages.journal import JournalRedisBackend

            backend = JournalRedisBackend(url)
            return optuna.storages.JournalStorage(backend)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:"):
            engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
        else:
            engine_kwargs["pool_pre_ping"] = True
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=retry,
        )
    except ImportError as exc:
        raise TunerError(f"storage {shown}: a driver is missing ({exc.name}); install it") from exc
    except Exception as exc:
        raise TunerError(
            f"storage {shown} cannot be opened: {_first_line(exc, url)}; check the URL "
            "(sqlite:///file.db, postgresql://user@host/db, redis://host:6379/0)"
        ) from exc
