"""tuner.studies and tuner.plots on studies made with Optuna directly: no training."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import tuner.studies
from tests.fake_study import make_study, write_weights
from tuner.errors import TunerError
from tuner.export import read_info
from tuner.plots import load_study, plotly_figures, render_report, write_plots
from tuner.studies import (
    _read_engine,
    _row,
    _rows_sql,
    delete_study,
    export_trial,
    importances,
    kept_weights,
    list_studies,
    load_view,
    resolve_location,
)

NAME = "sentiment-tiny"


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    return tmp_path / "studies"


@pytest.fixture
def url(studies: Path) -> str:
    return make_study(studies, NAME, trials=12, running=True)


def test_list_studies_summarises_each_study(studies: Path, url: str) -> None:
    make_study(studies, "other", trials=3)
    summaries = list_studies(url)
    assert [s.name for s in summaries] == [NAME, "other"]
    s = summaries[0]
    study = optuna.load_study(study_name=NAME, storage=url)
    assert s.task == "sentiment" and s.model == "tiny-bert" and s.metric == "accuracy"
    assert s.direction == "maximize"
    assert s.counts["COMPLETE"] == 9 and s.counts["PRUNED"] == 2 and s.counts["FAIL"] == 1
    assert s.counts["RUNNING"] == 1 and s.trials == 13
    assert s.best_value == pytest.approx(study.best_value)
    assert s.last_activity is not None and s.last_activity.tzinfo is not None
    assert s.as_json()["states"]["pruned"] == 2


def test_view_rows_match_optuna(studies: Path, url: str) -> None:
    view = load_view(url, NAME, studies)
    study = optuna.load_study(study_name=NAME, storage=url)
    trials = study.get_trials()
    assert [r.number for r in view.trials] == [t.number for t in trials]
    for row, trial in zip(view.trials, trials, strict=True):
        assert row.state == trial.state.name
        assert row.value == trial.value
        assert row.params == trial.params  # categorical choices in their external form
        assert row.user_attrs.get("fail_reason") == trial.user_attrs.get("fail_reason")
        assert row.user_attrs.get("metrics") == trial.user_attrs.get("metrics")
    assert view.best is not None and view.best.number == study.best_trial.number
    assert view.trials[6].fail_reason.startswith("RuntimeError")
    assert view.trials[0].seconds is not None and view.trials[-1].seconds is None


def test_sql_rows_equal_the_frozen_trial_rows(url: str) -> None:
    """The fast path (Optuna's tables) and the fallback (get_trials) agree."""
    study = optuna.load_study(study_name=NAME, storage=url)
    fast = _rows_sql(_read_engine(url), study._study_id)
    slow = [_row(t) for t in study.get_trials(deepcopy=False)]
    assert [r.as_json() for r in fast] == [r.as_json() for r in slow]


def test_storages_without_sql_read_through_optuna(
    studies: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis journal has no tables to query: the same view comes from get_trials."""
    fast = load_view(url, NAME, studies).as_json()
    summaries = [s.as_json() for s in list_studies(url)]
    monkeypatch.setattr(tuner.studies, "_read_engine", lambda url: None)
    assert load_view(url, NAME, studies).as_json() == fast
    assert [s.as_json() for s in list_studies(url)] == summaries
    with pytest.raises(TunerError, match="no study 'nope'"):
        load_view(url, "nope", studies)


def test_importances_cover_the_parameters(studies: Path, url: str) -> None:
    view = load_view(url, NAME, studies)
    assert view.importances is not None and view.importances.values is not None
    assert set(view.importances.values) == {
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
    }
    assert sum(view.importances.values.values()) == pytest.approx(1.0)
    assert view.importances.used == 9


def test_importances_use_at_most_the_limit(studies: Path, url: str) -> None:
    rows = load_view(url, NAME, studies, importance=False).trials
    assert importances(rows, "maximize", limit=4).used == 4


def test_importances_need_two_complete_trials(tmp_path: Path) -> None:
    url = make_study(tmp_path / "s", NAME, trials=1)
    view = load_view(url, NAME, tmp_path / "s")
    assert view.importances is not None and view.importances.values is None
    assert "at least 2 complete trials" in view.importances.note


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    url, _ = resolve_location(None, tmp_path / "nowhere")
    with pytest.raises(TunerError, match="no study database at .*nowhere/tuner.db"):
        list_studies(url)
    assert not (tmp_path / "nowhere").exists()


def test_location_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As in tuner search: a flag, then tuner.toml's [study], then $TUNER_STORAGE, defaults."""
    monkeypatch.chdir(tmp_path)
    assert resolve_location(None, None) == ("sqlite:///studies/tuner.db", Path("studies"))
    monkeypatch.setenv("TUNER_STORAGE", "sqlite:///env.db")
    assert resolve_location(None, None)[0] == "sqlite:///env.db"
    assert resolve_location("sqlite:///flag.db", None)[0] == "sqlite:///flag.db"
    (tmp_path / "tuner.toml").write_text('[study]\nstudies_dir = "runs"\n')
    monkeypatch.delenv("TUNER_STORAGE")
    assert resolve_location(None, None) == ("sqlite:///runs/tuner.db", Path("runs"))
    assert resolve_location(None, Path("flag"))[1] == Path("flag")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "other.toml").write_text('[study]\nstorage = "sqlite:///file.db"\nstudies_dir = "s"\n')
    assert resolve_location(None, None, conf / "other.toml") == ("sqlite:///file.db", conf / "s")
    (tmp_path / "tuner.toml").write_text("[study]\nstudies_dir = 3\n")
    with pytest.raises(TunerError, match=r"tuner.toml: \[study\] studies_dir must be a non-empty"):
        resolve_location(None, None)


def test_unknown_study_lists_the_known_ones(studies: Path, url: str) -> None:
    with pytest.raises(TunerError, match=f"no study 'nope' in .*; known studies: {NAME}"):
        load_view(url, "nope", studies)


def test_kept_weights_best_and_trial_folders(studies: Path, url: str) -> None:
    write_weights(studies / NAME / "best", NAME, 7)
    write_weights(studies / NAME / "trials" / "3", NAME, 3)
    (studies / NAME / "trials" / "5").mkdir()  # no tuner.json: not a kept model
    assert kept_weights(studies, NAME) == {
        3: studies / NAME / "trials" / "3",
        7: studies / NAME / "best",
    }


def test_export_copies_the_best_model(studies: Path, url: str, tmp_path: Path) -> None:
    write_weights(studies / NAME / "best", NAME, 7)
    done = export_trial(url, studies, NAME, to=tmp_path / "out")
    assert done.trial == 7 and done.dest == tmp_path / "out"
    assert read_info(tmp_path / "out") == read_info(studies / NAME / "best")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tuner.json",
        "README.md",
    } <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_a_kept_trial_and_replace_an_earlier_export(
    studies: Path, url: str, tmp_path: Path
) -> None:
    write_weights(studies / NAME / "best", NAME, 7)
    write_weights(studies / NAME / "trials" / "3", NAME, 3, value=0.8)
    dest = tmp_path / "out"
    export_trial(url, studies, NAME, to=dest)
    export_trial(url, studies, NAME, trial=3, to=dest)
    assert read_info(dest)["trial"] == 3  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "studies") == ["out"]


def test_export_default_destination(
    studies: Path, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_weights(studies / NAME / "best", NAME, 7)
    monkeypatch.chdir(tmp_path)
    assert export_trial(url, studies, NAME).dest == Path(f"{NAME}-trial7")
    assert (tmp_path / f"{NAME}-trial7" / "tuner.json").is_file()


def test_export_errors(studies: Path, url: str, tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="has no best model .*trials with weights: none"):
        export_trial(url, studies, NAME)
    write_weights(studies / NAME / "best", NAME, 7)
    write_weights(studies / NAME / "trials" / "3", NAME, 3)
    with pytest.raises(
        TunerError, match="trial 5's weights were not kept; trials with weights: 3, 7"
    ):
        export_trial(url, studies, NAME, trial=5)
    with pytest.raises(TunerError, match="has no trial 40; its trials are numbered 0 to 12"):
        export_trial(url, studies, NAME, trial=40)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(TunerError, match="not a tuner export"):
        export_trial(url, studies, NAME, to=busy)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(TunerError, match="kept model itself"):
        export_trial(url, studies, NAME, to=studies / NAME / "best")


def test_delete_removes_the_study_and_its_folder(studies: Path, url: str) -> None:
    make_study(studies, "other", trials=2)
    write_weights(studies / NAME / "best", NAME, 7)
    done = delete_study(url, studies, NAME)
    assert done.trials == 13 and done.folder == studies / NAME
    assert not (studies / NAME).exists()
    assert optuna.get_all_study_names(url) == ["other"]


def test_plot_files(studies: Path, url: str, tmp_path: Path) -> None:
    files = {f.name: f for f in write_plots(url, NAME, tmp_path / "plots")}
    assert set(files) == {"history", "importances", "parallel", "slice", "intermediate"}
    for f in files.values():
        assert f.html is not None and f.png is not None, f
        assert f.html.stat().st_size > 100_000  # plotly.js is inlined
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not re.search(r"<script[^>]*src=[\"']https?:", f.html.read_text())


def test_pruned_curves_are_marked(url: str) -> None:
    figures = {p.name: p for p in plotly_figures(load_study(url, NAME))}
    names = [trace.name for trace in figures["intermediate"].figure.data]
    assert "Trial4 (pruned)" in names and "Trial0" in names


def test_plots_that_cannot_be_drawn_are_skipped(tmp_path: Path) -> None:
    url = make_study(tmp_path / "s", NAME, trials=1)
    files = {f.name: f for f in write_plots(url, NAME, tmp_path / "plots")}
    assert files["importances"].html is None
    assert "at least 2 complete trials" in files["importances"].skipped
    assert files["history"].html is not None


def test_report_is_self_contained(studies: Path, url: str) -> None:
    view = load_view(url, NAME, studies)
    page = render_report(view, plotly_figures(load_study(url, NAME)))
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=[\"']https?:", page)
    assert page.count("Plotly.newPlot") == 5
    assert "RuntimeError: loss is NaN [step 3]" in page and "<h2>Best trial: " in page


def test_show_does_not_import_scikit_learn(url: str, studies: Path) -> None:
    """PED-ANOVA needs no scikit-learn; importing it was most of `tuner show`'s time."""
    code = (
        "import sys; from pathlib import Path; from tuner.studies import load_view; "
        f"v = load_view({url!r}, {NAME!r}, Path({str(studies)!r})); "
        "assert v.importances.values, v.importances; "
        "assert 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
