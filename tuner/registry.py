"""Task plugins, found through the entry-point group ``tuner.tasks``.

Listing reads only entry-point metadata; a task's module is imported when the task is used.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from tuner.errors import TunerError
from tuner.task import Task

GROUP = "tuner.tasks"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def task_names() -> list[str]:
    """The names of the installed task plugins, sorted."""
    return sorted(_entry_points())


def load_task_class(name: str) -> type[Task]:
    """Import the task registered under ``name``.

    Raises:
        TunerError: no such task (the message lists the installed ones), or the plugin is
            broken.
    """
    found = _entry_points()
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise TunerError(f"unknown task '{name}'; installed tasks: {known}")
    entry = found[name]
    try:
        cls = entry.load()
    except Exception as exc:
        raise TunerError(f"task plugin '{name}' ({entry.value}) failed to import: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TunerError(f"task plugin '{name}' ({entry.value}) is not a tuner.task.Task")
    if getattr(cls, "name", None) != name:
        raise TunerError(
            f"task plugin '{name}' ({entry.value}) declares name "
            f"'{getattr(cls, 'name', None)}'; the class name attribute must equal its "
            "entry-point key"
        )
    return cls
