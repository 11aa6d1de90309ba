"""tuner studies, show, export, plot, report and delete on a study made without training."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from tests.cli.test_errors import assert_user_error
from tests.fake_study import make_study, write_weights
from tuner.cli import main

NAME = "sentiment-tiny"


def run(args: list[str], cwd: Path, stdin: str | None = None) -> tuple[int, str]:
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args, input=stdin)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def ok(args: list[str], cwd: Path, stdin: str | None = None) -> str:
    code, out = run(args, cwd, stdin)
    assert code == 0, out
    assert "Traceback" not in out
    return out


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    folder = tmp_path / "studies"
    make_study(folder, NAME, trials=12)
    write_weights(folder / NAME / "best", NAME, 7)
    return folder


@pytest.fixture
def where(studies: Path) -> list[str]:
    return ["--studies-dir", str(studies)]


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = ok(["--help"], tmp_path)
    for command in ("studies", "show", "export", "plot", "report", "dashboard", "delete"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


def test_studies(tmp_path: Path, studies: Path, where: list[str]) -> None:
    make_study(studies, "other", trials=2)
    out = ok(["studies", *where], tmp_path)
    assert NAME in out and "other" in out and "sentiment" in out
    best = optuna.load_study(study_name=NAME, storage=f"sqlite:///{studies}/tuner.db").best_value
    assert f"{best:.4f}" in out
    data = json.loads(ok(["studies", *where, "--format", "json"], tmp_path))
    assert [d["study"] for d in data] == [NAME, "other"]
    assert data[0]["n_trials"] == 12 and data[0]["states"]["fail"] == 1


def test_studies_reads_tuner_storage(
    tmp_path: Path, studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNER_STORAGE", f"sqlite:///{studies}/tuner.db")
    assert NAME in ok(["studies"], tmp_path)


def test_studies_dir_from_tuner_toml(tmp_path: Path, studies: Path) -> None:
    (tmp_path / "tuner.toml").write_text(f'[study]\nstudies_dir = "{studies.name}"\n')
    assert NAME in ok(["studies"], tmp_path)
    assert "best trial: 7" in ok(["show", NAME, "--no-importance"], tmp_path)


def test_show_table(tmp_path: Path, where: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = ok(["show", NAME, *where], tmp_path)
    assert "12 (9 complete, 2 pruned, 1 failed, 0 running)" in out
    assert "best trial: 7" in out and f"{NAME}/best" in out
    assert "RuntimeError: loss is NaN [step 3]" in out
    assert "parameter importances" in out and "learning_rate" in out
    out = ok(["show", NAME, *where, "--last", "3", "--no-importance"], tmp_path)
    assert "the last 3 of 12 trials" in out and "parameter importances" not in out


def test_show_json(tmp_path: Path, studies: Path, where: list[str]) -> None:
    data = json.loads(ok(["show", NAME, *where, "--format", "json"], tmp_path))
    assert [t["number"] for t in data["trials"]] == list(range(12))
    assert data["best"]["number"] == 7
    assert data["trials_with_weights"] == {"7": str(studies / NAME / "best")}
    assert set(data["importances"]) == {
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
    }
    assert data["trials"][6]["fail_reason"].startswith("RuntimeError")
    assert data["trials"][0]["metrics"]["f1"] == pytest.approx(data["trials"][0]["value"] - 0.02)


def test_show_csv(tmp_path: Path, where: list[str]) -> None:
    rows = list(
        csv.DictReader(io.StringIO(ok(["show", NAME, *where, "--format", "csv"], tmp_path)))
    )
    assert len(rows) == 12
    assert rows[4]["state"] == "PRUNED" and rows[4]["value"] == ""
    assert rows[0]["params_per_device_train_batch_size"] == "8"
    assert rows[6]["fail_reason"].startswith("RuntimeError")


def test_export(tmp_path: Path, where: list[str]) -> None:
    out = ok(["export", NAME, *where], tmp_path)
    dest = tmp_path / f"{NAME}-trial7"
    assert f"exported trial 7 of study {NAME}" in out
    assert json.loads((dest / "tuner.json").read_text())["trial"] == 7
    assert (dest / "README.md").is_file() and (dest / "model.safetensors").is_file()
    ok(["export", NAME, *where, "--trial", "7", "--to", str(tmp_path / "again")], tmp_path)
    assert (tmp_path / "again" / "config.json").is_file()


def test_export_a_trial_without_weights(tmp_path: Path, where: list[str]) -> None:
    code, out = run(["export", NAME, *where, "--trial", "5"], tmp_path)
    assert_user_error(code, out, "trial 5's weights were not kept; trials with weights: 7")


def test_export_bad_trial_number(tmp_path: Path, where: list[str]) -> None:
    code, out = run(["export", NAME, *where, "--trial", "99"], tmp_path)
    assert_user_error(code, out, f"--trial 99: study '{NAME}' has no trial 99", "0 to 11")


def test_export_into_a_folder_of_other_files(tmp_path: Path, where: list[str]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, out = run(["export", NAME, *where, "--to", "mine"], tmp_path)
    assert_user_error(code, out, "--to mine already holds files that are not a tuner export")


def test_plot(tmp_path: Path, studies: Path, where: list[str]) -> None:
    out = ok(["plot", NAME, *where], tmp_path)
    folder = studies / NAME / "plots"
    for name in ("history", "importances", "parallel", "slice", "intermediate"):
        html, png = folder / f"{name}.html", folder / f"{name}.png"
        assert html.stat().st_size > 0 and png.stat().st_size > 0, out
        assert png.read_bytes().startswith(b"\x89PNG")
        assert "<html>" in html.read_text()[:200]
    ok(["plot", NAME, *where, "--to", "elsewhere"], tmp_path)
    assert (tmp_path / "elsewhere" / "history.png").is_file()


def test_report(tmp_path: Path, studies: Path, where: list[str]) -> None:
    out = ok(["report", NAME, *where], tmp_path)
    page = (studies / NAME / "report.html").read_text()
    assert str(studies / NAME / "report.html") in out
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=[\"']?https?:", page)
    assert "<h2>Trials</h2>" in page and "Parameter importances" in page
    assert page.count("<script") >= 6  # plotly.js once, then one script per figure


def test_delete_with_yes(tmp_path: Path, studies: Path, where: list[str]) -> None:
    make_study(studies, "other", trials=2)
    out = ok(["delete", NAME, *where, "--yes"], tmp_path)
    assert f"deleted study '{NAME}' (12 trials) and removed {studies / NAME}" in out
    assert not (studies / NAME).exists()
    assert optuna.get_all_study_names(f"sqlite:///{studies}/tuner.db") == ["other"]


def test_delete_asks(tmp_path: Path, studies: Path, where: list[str]) -> None:
    out = ok(["delete", NAME, *where], tmp_path, stdin="n\n")
    assert "nothing deleted" in out and (studies / NAME).is_dir()
    out = ok(["delete", NAME, *where], tmp_path, stdin="y\n")
    assert f"deleted study '{NAME}'" in out and not (studies / NAME).exists()


def test_delete_without_yes_and_no_input_refuses(
    tmp_path: Path, studies: Path, where: list[str]
) -> None:
    code, out = run(["delete", NAME, *where], tmp_path)
    assert_user_error(code, out, "no confirmation given; pass --yes")
    assert (studies / NAME).is_dir()
    assert optuna.get_all_study_names(f"sqlite:///{studies}/tuner.db") == [NAME]


@pytest.mark.parametrize(
    "command",
    [["show"], ["export"], ["plot"], ["report"], ["delete", "--yes"]],
    ids=lambda c: c[0],
)
def test_unknown_study_lists_the_known_ones(
    tmp_path: Path, where: list[str], command: list[str]
) -> None:
    code, out = run([command[0], "sentimnt", *command[1:], *where], tmp_path)
    assert_user_error(code, out, "no study 'sentimnt' in", f"known studies: {NAME}")


@pytest.mark.parametrize("command", [["studies"], ["show", NAME], ["dashboard", "--port", "0"]])
def test_no_database_is_not_created(tmp_path: Path, command: list[str]) -> None:
    code, out = run([*command, "--studies-dir", "empty"], tmp_path)
    assert_user_error(code, out, "no study database at empty/tuner.db", "tuner search")
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("command", [["studies"], ["show", NAME], ["delete", NAME, "--yes"]])
def test_unreachable_storage_hides_the_password(tmp_path: Path, command: list[str]) -> None:
    url = "postgresql://u:secret@127.0.0.1:1/x"
    code, out = run([*command, "--storage", url], tmp_path)
    assert_user_error(code, out, "storage postgresql://u:***@127.0.0.1:1/x cannot be opened")
    assert "secret" not in out


def test_dashboard_port_in_use(tmp_path: Path, where: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = run(["dashboard", *where, "--port", str(port)], tmp_path)
    assert_user_error(code, out, f"--port {port}: cannot listen there", "pass another --port")
