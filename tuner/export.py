"""Write a study's best model to disk atomically.

The model is saved into a temporary folder beside the destination, then swapped in by
renames under a file lock, so a crash never leaves a half-written ``best/`` and two workers
finishing at once never interleave their writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

INFO_FILE = "tuner.json"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


class Saveable(Protocol):
    def save_pretrained(self, save_directory: str, /, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class ExportInfo:
    study: str
    trial: int
    task: str
    base_model: str
    metric: str
    direction: str
    value: float
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    pipeline_task: str
    labels: tuple[str, ...] = ()
    pipeline_import: str = ""
    pipeline_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "trial": self.trial,
            "task": self.task,
            "base_model": self.base_model,
            "metric": self.metric,
            "direction": self.direction,
            "value": self.value,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "pipeline_task": self.pipeline_task,
            "labels": list(self.labels),
            "pipeline_import": self.pipeline_import,
            "pipeline_kwargs": dict(self.pipeline_kwargs),
        }


def is_better(value: float, than: float | None, direction: str) -> bool:
    """Whether ``value`` beats ``than`` (``None`` is beaten by anything)."""
    if than is None:
        return True
    return value > than if direction == "maximize" else value < than


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (created if missing), shared by every process
    on this machine; the operating system drops it if the process dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` shared by every process on this machine."""
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock"):
        yield


def read_info(folder: Path) -> dict[str, Any] | None:
    """The ``tuner.json`` of an exported model, or ``None`` where there is none."""
    try:
        data = json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recover(dest: Path) -> None:
    """Undo what a crash during a swap left: restore a moved-away model, drop temporaries."""
    parent = dest.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f"{_OLD_PREFIX}{dest.name}-*"), key=lambda p: p.stat().st_mtime)
    if not dest.exists() and olds:
        os.rename(olds.pop(), dest)
    for leftover in [*olds, *parent.glob(f"{_TMP_PREFIX}{dest.name}-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def write_model(dest: Path, model: Saveable, tokenizer: Saveable, info: ExportInfo) -> Path:
    """Save model, tokenizer, ``tuner.json`` and a model card to ``dest``, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / INFO_FILE).write_text(json.dumps(info.as_json(), indent=2) + "\n")
        (staging / "README.md").write_text(model_card(info))
        _fsync_tree(staging)
        swap_in(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def swap_in(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by the finished folder ``staging`` (beside it) with two renames.

    A crash between them leaves the old folder as ``.old-<name>-*``, which :func:`recover`
    puts back.
    """
    old = dest.parent / f"{_OLD_PREFIX}{dest.name}-{uuid.uuid4().hex[:8]}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def export_if_best(
    dest: Path,
    model: Saveable,
    tokenizer: Saveable,
    info: ExportInfo,
    stored_best: float | None,
) -> bool:
    """Export when ``info.value`` beats both the stored study best and the model on disk.

    Returns:
        Whether the model was written.
    """
    with locked(dest.parent):
        recover(dest)
        if not is_better(info.value, stored_best, info.direction):
            return False
        current = read_info(dest)
        on_disk = current.get("value") if current is not None else None
        if isinstance(on_disk, (int, float)) and not is_better(
            info.value, float(on_disk), info.direction
        ):
            return False
        write_model(dest, model, tokenizer, info)
        return True


def model_card(info: ExportInfo) -> str:
    """A README for the exported model."""
    params = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in sorted(info.params.items()))
    metrics = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(info.metrics.items()))
    labels = ", ".join(f"`{label}`" for label in info.labels) or "none"
    setup = (
        f"import {info.pipeline_import}  # registers the pipeline\n"
        if info.pipeline_import
        else ""
    )
    options = "".join(f", {k}={v!r}" for k, v in info.pipeline_kwargs.items())
    return f"""---
library_name: transformers
base_model: {info.base_model}
pipeline_tag: {info.pipeline_task}
tags:
- tuner
- {info.task}
---

# {info.study}: best trial {info.trial}

Fine-tuned from `{info.base_model}` for the **{info.task}** task. This is the best of the
study's trials by validation **{info.metric}** ({info.direction}): **{info.value:.4f}**.

Labels: {labels}

## Use

```python
{setup}from transformers import pipeline

predict = pipeline("{info.pipeline_task}", model="path/to/this/folder"{options})
```

## Hyperparameters

| parameter | value |
|---|---|
{params}

## Validation metrics

| metric | value |
|---|---|
{metrics}
"""
