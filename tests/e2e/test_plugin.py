"""The plugin of docs/plugins.md, installed with pip from a temporary folder, runs a search."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import sentiment_rows, write_jsonl

pytestmark = pytest.mark.slow

DOC = Path(__file__).parents[2] / "docs" / "plugins.md"


def doc_files() -> dict[str, str]:
    pattern = re.compile(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", re.S)
    return dict(pattern.findall(DOC.read_text()))


def test_documented_plugin_installs_and_searches(tmp_path: Path, tiny_model: Path) -> None:
    files = doc_files()
    assert set(files) == {"pyproject.toml", "tuner_topic/__init__.py"}
    source = tmp_path / "tuner-topic"
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip

    topics = ["sport", "music"]
    rows = [
        {"text": r["text"], "topic": topics[r["label"] == "positive"]}
        for r in sentiment_rows(40, seed=5)
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:28])
    validation = write_jsonl(tmp_path / "dev.jsonl", rows[28:])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
    tuner = [sys.executable, "-m", "tuner.cli"]
    listed = subprocess.run([*tuner, "tasks"], env=env, capture_output=True, text=True)
    assert "topic" in listed.stdout and "tuner_topic" in listed.stdout, listed.stderr
    run = subprocess.run(
        [*tuner, "search", "--task", "topic", "--model", str(tiny_model),
         "--train", str(train), "--validation", str(validation),
         "--studies-dir", str(tmp_path / "studies"), "--trials", "2", "--quiet"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    study = optuna.load_study(
        study_name=f"topic-{tiny_model.name}", storage=f"sqlite:///{tmp_path}/studies/tuner.db"
    )
    assert len(study.trials) == 2
    assert all(2 <= t.params["num_train_epochs"] <= 5 for t in study.trials)
