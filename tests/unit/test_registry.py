from __future__ import annotations

import pytest

from tuner.errors import TunerError
from tuner.registry import load_task_class, task_names
from tuner.task import Task


def test_built_in_tasks_come_from_entry_points() -> None:
    assert {"sentiment", "ner", "qa"} <= set(task_names())
    cls = load_task_class("sentiment")
    assert issubclass(cls, Task)
    assert cls.name == "sentiment" and cls.metric == "accuracy"


def test_unknown_task_lists_the_known_ones() -> None:
    with pytest.raises(
        TunerError, match=r"unknown task 'sentimnet'; installed tasks: .*sentiment"
    ):
        load_task_class("sentimnet")


def test_fake_plugin_is_found(fake_plugin: str) -> None:
    assert fake_plugin in task_names()
    cls = load_task_class(fake_plugin)
    assert cls.metric == "score"


def test_plugin_with_wrong_name_is_rejected(fake_plugin_factory) -> None:  # type: ignore[no-untyped-def]
    name = fake_plugin_factory("mislabelled", class_name_attr="other")
    with pytest.raises(TunerError, match="must equal its entry-point key"):
        load_task_class(name)


def test_task_rejects_unknown_options() -> None:
    cls = load_task_class("sentiment")
    with pytest.raises(
        TunerError, match=r"\[data\] text_col is not an option of task 'sentiment'"
    ):
        cls({"text_col": "x"})
