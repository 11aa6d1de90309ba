"""Every user mistake: one `Error:` line, exit status 1, no traceback, the study untouched."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import write_jsonl
from tuner.cli import main


def run(args: list[str], cwd: Path) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def trial_count(studies: Path) -> int | None:
    db = studies / "tuner.db"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master")}
        if "trials" not in tables:
            return 0
        return int(conn.execute("select count(*) from trials").fetchone()[0])


@pytest.fixture
def base(tmp_path: Path, tiny_model: Path, sentiment_data: tuple[Path, Path]) -> list[str]:
    train, validation = sentiment_data
    return [
        "search",
        "--task", "sentiment",
        "--model", str(tiny_model),
        "--train", str(train),
        "--validation", str(validation),
        "--studies-dir", str(tmp_path / "studies"),
        "--trials", "1",
    ]  # fmt: skip


def assert_user_error(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], output


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def test_unknown_task_lists_known_ones(tmp_path: Path, base: list[str]) -> None:
    code, out = run(with_flag(base, "--task", "sentimnt"), tmp_path)
    assert_user_error(code, out, "unknown task 'sentimnt'", "sentiment")
    assert trial_count(tmp_path / "studies") is None


def test_malformed_toml_names_file_and_line(tmp_path: Path, base: list[str]) -> None:
    (tmp_path / "tuner.toml").write_text("[study]\ntrials = = 3\n")
    code, out = run(base, tmp_path)
    assert_user_error(code, out, "tuner.toml: invalid TOML", "line 2")


def test_invalid_toml_value_names_the_dotted_key(tmp_path: Path, base: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[study]\ntrials = "forty"\n')
    code, out = run(base + ["--config", str(config)], tmp_path)
    assert_user_error(code, out, "[study] trials must be a positive integer", '"forty"'.strip('"'))


def test_missing_data_file(tmp_path: Path, base: list[str]) -> None:
    code, out = run(with_flag(base, "--train", str(tmp_path / "nope.jsonl")), tmp_path)
    assert_user_error(code, out, "nope.jsonl: train data file not found")
    assert trial_count(tmp_path / "studies") is None


def test_missing_column_lists_the_columns_found(tmp_path: Path, base: list[str]) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"sentence": "good film", "label": "positive"}])
    code, out = run(with_flag(base, "--train", str(bad)), tmp_path)
    assert_user_error(
        code, out, "no column 'text'", "columns found: sentence, label", "text_column"
    )


def test_unknown_label_in_validation(tmp_path: Path, base: list[str]) -> None:
    bad = write_jsonl(tmp_path / "dev.jsonl", [{"text": "good film", "label": "meh"}])
    code, out = run(with_flag(base, "--validation", str(bad)), tmp_path)
    assert_user_error(code, out, "row 1", "label 'meh' is not one of the labels")


@pytest.mark.parametrize("value", ["0", "-3"])
def test_trials_must_be_positive(tmp_path: Path, base: list[str], value: str) -> None:
    code, out = run(with_flag(base, "--trials", value), tmp_path)
    assert_user_error(code, out, f"--trials must be a positive integer, got {value}")


@pytest.mark.parametrize(("flag", "value"), [("--sampler", "bayes"), ("--pruner", "early")])
def test_unknown_sampler_or_pruner(tmp_path: Path, base: list[str], flag: str, value: str) -> None:
    code, out = run(with_flag(base, flag, value), tmp_path)
    assert_user_error(code, out, f"{flag} must be one of", value)


def test_unknown_space_key(tmp_path: Path, base: list[str]) -> None:
    config = tmp_path / "space.toml"
    config.write_text("[space]\nwarmup_ratio = { low = 0.0, high = 0.1 }\n")
    code, out = run(base + ["--config", str(config)], tmp_path)
    assert_user_error(code, out, "[space] warmup_ratio: not a TrainingArguments field")
    assert trial_count(tmp_path / "studies") is None


def test_model_folder_not_found(tmp_path: Path, base: list[str]) -> None:
    code, out = run(with_flag(base, "--model", str(tmp_path / "no-model")), tmp_path)
    assert_user_error(code, out, "model folder", "not found")


def test_hub_model_unavailable_offline(tmp_path: Path, base: list[str]) -> None:
    code, out = run(with_flag(base, "--model", "nobody/no-such-model"), tmp_path)
    assert_user_error(code, out, "model 'nobody/no-such-model' cannot be loaded", "offline")
    assert not trial_count(tmp_path / "studies")


def test_unwritable_studies_dir(tmp_path: Path, base: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, out = run(with_flag(base, "--studies-dir", str(blocker / "studies")), tmp_path)
    assert_user_error(code, out, "studies dir", "cannot be created", "--studies-dir")


def test_storage_url_that_cannot_be_opened_hides_the_password(
    tmp_path: Path, base: list[str]
) -> None:
    url = "postgresql://tuner:hunter2@127.0.0.1:1/nodb"
    code, out = run(base + ["--storage", url], tmp_path)
    assert_user_error(
        code, out, "storage postgresql://tuner:***@127.0.0.1:1/nodb cannot be opened"
    )
    assert "hunter2" not in out


def test_unknown_storage_scheme(tmp_path: Path, base: list[str]) -> None:
    code, out = run(base + ["--storage", "mongodb://x:pw@localhost/db"], tmp_path)
    assert_user_error(code, out, "cannot be opened")
    assert ":pw@" not in out


def test_hub_dataset_offline_is_a_clear_error(tmp_path: Path, base: list[str]) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[data]\ndataset = "nobody/no-such-dataset"\n')
    args = [a for a in base]
    for flag in ("--train", "--validation"):
        i = args.index(flag)
        del args[i : i + 2]
    code, out = run(args + ["--config", str(config)], tmp_path)
    assert_user_error(code, out, "[data] dataset 'nobody/no-such-dataset'", "--train")


def test_fp16_on_cpu(tmp_path: Path, base: list[str]) -> None:
    code, out = run(base + ["--precision", "fp16"], tmp_path)
    assert_user_error(code, out, "fp16 needs a CUDA GPU")
