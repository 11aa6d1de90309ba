"""Workers against the real PostgreSQL and Redis of the development and CI machines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/15"

# A task that scores parameters after a short sleep instead of training: many trials,
# many processes, seconds of CPU.
SCORE_TASK = """
import math
import time

from tuner.task import Task


class FakeTask(Task):
    name = "{name}"
    default_model = "none"
    metric = "score"
    trains = False
    option_defaults = {{"sleep": 0.02}}

    def load_splits(self, data):
        return {{}}

    def preprocess(self, splits, tokenizer):
        raise NotImplementedError

    def build_model(self, model_name):
        raise NotImplementedError

    def compute_metrics(self, eval_pred):
        raise NotImplementedError

    def score(self, params, report):
        time.sleep(float(self.options["sleep"]))
        value = -abs(math.log10(params["learning_rate"]) + 4.0)
        report(1, value)
        return value
"""


@pytest.fixture
def score_task(fake_plugin_factory) -> str:  # type: ignore[no-untyped-def]
    return fake_plugin_factory("score", source=SCORE_TASK)


@pytest.fixture
def study_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def postgres(study_name: str) -> Iterator[str]:
    import optuna

    yield POSTGRES
    try:
        optuna.delete_study(study_name=study_name, storage=POSTGRES)
    except KeyError:
        pass


@pytest.fixture
def redis_url(study_name: str) -> Iterator[str]:
    """The Redis journal; tests run in parallel on it, so each cleans up only its own study."""
    import optuna

    from tuner.storage import open_storage

    yield REDIS
    try:
        optuna.delete_study(study_name=study_name, storage=open_storage(REDIS))
    except KeyError:
        pass
