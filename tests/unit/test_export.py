from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tuner.export import ExportInfo, export_if_best, is_better, read_info, recover, write_model


class FakeModel:
    def __init__(self, tag: str, fail: bool = False) -> None:
        self.tag = tag
        self.fail = fail

    def save_pretrained(self, folder: str, *args: Any, **kwargs: Any) -> None:
        Path(folder, "weights.bin").write_text(self.tag)
        if self.fail:
            raise RuntimeError("disk full")


def info(value: float, trial: int = 0) -> ExportInfo:
    return ExportInfo(
        study="s",
        trial=trial,
        task="sentiment",
        base_model="m",
        metric="accuracy",
        direction="maximize",
        value=value,
        params={"learning_rate": 1e-4},
        metrics={"accuracy": value},
        pipeline_task="text-classification",
        labels=("neg", "pos"),
    )


def test_is_better() -> None:
    assert is_better(0.5, None, "maximize")
    assert is_better(0.6, 0.5, "maximize") and not is_better(0.5, 0.5, "maximize")
    assert is_better(0.4, 0.5, "minimize") and not is_better(0.6, 0.5, "minimize")


def test_write_model_writes_info_and_card(tmp_path: Path) -> None:
    dest = write_model(tmp_path / "best", FakeModel("a"), FakeModel("tok"), info(0.7, 3))
    data = json.loads((dest / "tuner.json").read_text())
    assert data["trial"] == 3 and data["value"] == 0.7 and data["labels"] == ["neg", "pos"]
    assert 'pipeline("text-classification"' in (dest / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_only_a_better_model_replaces_the_best(tmp_path: Path) -> None:
    dest = tmp_path / "best"
    assert export_if_best(dest, FakeModel("a"), FakeModel("t"), info(0.7, 1), None)
    assert not export_if_best(dest, FakeModel("b"), FakeModel("t"), info(0.6, 2), None)
    assert (dest / "weights.bin").read_text() == "t"  # tokenizer wrote last in the fake
    assert read_info(dest)["trial"] == 1  # type: ignore[index]
    assert export_if_best(dest, FakeModel("c"), FakeModel("t"), info(0.8, 3), 0.7)
    assert read_info(dest)["trial"] == 3  # type: ignore[index]
    assert not export_if_best(dest, FakeModel("d"), FakeModel("t"), info(0.75, 4), 0.9)


def test_a_failed_write_leaves_the_old_best(tmp_path: Path) -> None:
    dest = tmp_path / "best"
    write_model(dest, FakeModel("a"), FakeModel("t"), info(0.5, 1))
    with pytest.raises(RuntimeError, match="disk full"):
        write_model(dest, FakeModel("b", fail=True), FakeModel("t"), info(0.9, 2))
    assert read_info(dest)["trial"] == 1  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_recover_after_a_crash_between_the_renames(tmp_path: Path) -> None:
    dest = tmp_path / "best"
    write_model(dest, FakeModel("a"), FakeModel("t"), info(0.5, 1))
    os.rename(dest, tmp_path / ".old-best-1234")
    (tmp_path / ".tmp-best-xyz").mkdir()
    recover(dest)
    assert read_info(dest)["trial"] == 1  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
