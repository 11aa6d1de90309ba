from __future__ import annotations

from pathlib import Path

import pytest

from tuner.config import load_config
from tuner.errors import TunerError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tuner.toml"
    path.write_text(text)
    return path


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"task": "sentiment"})
    assert config.study.task == "sentiment"
    assert config.study.trials == 20
    assert config.study.sampler == "tpe"
    assert config.study.pruner == "median"
    assert config.study.precision == "auto"
    assert config.study.studies_dir == Path("studies")
    assert config.train.evals_per_epoch is None  # "auto"
    assert config.space_layers == ()


def test_flag_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[study]\ntask = "sentiment"\ntrials = 7\nsampler = "random"\n')
    config = load_config(path, {"trials": 3, "sampler": None})
    assert config.study.trials == 3
    assert config.study.sampler == "random"
    assert config.study.pruner == "median"


@pytest.mark.parametrize(("text", "expected"), [('"auto"', None), ("3", 3)])
def test_evals_per_epoch_is_auto_or_a_count(
    tmp_path: Path, text: str, expected: int | None
) -> None:
    path = write(tmp_path, f'[study]\ntask = "sentiment"\n[train]\nevals_per_epoch = {text}\n')
    assert load_config(path, {}).train.evals_per_epoch == expected


def test_default_file_is_read_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, '[study]\ntask = "sentiment"\ntrials = 9\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(None, {}).study.trials == 9


def test_task_table_overrides_top_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[study]
task = "sentiment"
[data]
train = "a.jsonl"
max_length = 64
[space]
learning_rate = { low = 1e-5, high = 1e-4, log = true }
[tasks.sentiment]
model = "some/model"
[tasks.sentiment.data]
train = "b.jsonl"
[tasks.sentiment.space]
num_train_epochs = 2
[tasks.ner.data]
train = "ner.jsonl"
""",
    )
    config = load_config(path, {})
    assert config.study.model == "some/model"
    assert config.data.train == str(tmp_path / "b.jsonl")
    assert config.data.options == {"max_length": 64}
    assert [where for where, _ in config.space_layers] == [
        f"{path}: [space]",
        f"{path}: [tasks.sentiment.space]",
    ]
    ner = load_config(path, {"task": "ner"})
    assert ner.data.train == str(tmp_path / "ner.jsonl")
    assert ner.study.model is None


def test_cli_data_files_win_and_are_not_rebased(tmp_path: Path) -> None:
    path = write(tmp_path, '[study]\ntask = "sentiment"\n[data]\ntrain = "a.jsonl"\n')
    config = load_config(path, {"train": Path("x/train.csv")})
    assert config.data.train == "x/train.csv"


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[study]\ntask = "sentiment"\ntrials = \n')
    with pytest.raises(TunerError, match=r"tuner.toml: invalid TOML: .*line 3"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[study]\ntask = "sentiment"\ntrials = "forty"\n',
            r"\[study\] trials must be a positive integer, got .forty.",
        ),
        (
            '[study]\ntask = "sentiment"\ntrials = 0\n',
            r"\[study\] trials must be a positive integer",
        ),
        (
            '[study]\ntask = "sentiment"\nsampler = "bayes"\n',
            r"\[study\] sampler must be one of tpe, random",
        ),
        (
            '[study]\ntask = "sentiment"\npruner = "early"\n',
            r"\[study\] pruner must be one of median",
        ),
        ('[study]\ntask = "sentiment"\ncolour = "red"\n', r"\[study\] unknown key 'colour'"),
        ('[study]\ntask = "sentiment"\n[datas]\n', r"unknown key 'datas'"),
        (
            '[study]\ntask = "sentiment"\n[train]\nevals_per_epoch = 0\n',
            r'\[train\] evals_per_epoch must be "auto" or a positive integer, got 0',
        ),
        (
            '[study]\ntask = "sentiment"\n[data]\nmax_train_rows = -5\n',
            r"\[data\] max_train_rows must be a positive integer",
        ),
        (
            '[study]\ntask = "sentiment"\n[tasks.sentiment]\nsampler = "tpe"\n',
            r"\[tasks.sentiment\] unknown key 'sampler'",
        ),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TunerError, match=message):
        load_config(write(tmp_path, text), {})


def test_flag_errors_name_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TunerError, match=r"--trials must be a positive integer, got -2"):
        load_config(None, {"task": "sentiment", "trials": -2})
    with pytest.raises(TunerError, match=r"--precision must be one of auto, fp32, fp16, bf16"):
        load_config(None, {"task": "sentiment", "precision": "fp8"})


def test_missing_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TunerError, match="no task given: pass --task"):
        load_config(None, {})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="config file not found"):
        load_config(tmp_path / "nope.toml", {"task": "sentiment"})
