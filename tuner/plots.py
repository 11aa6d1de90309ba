"""Plot files (Optuna's plotly and matplotlib figures) and the self-contained HTML report."""

from __future__ import annotations

import html
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.storage import redact
from tuner.studies import StudyView, TrialRow, connect, import_importance, study_id

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# No logo or "edit in Chart Studio" link: the page must not point anywhere online.
PLOTLY_CONFIG = {"displaylogo": False, "showSendToCloud": False}
PNG_DPI = 120
LEGEND_MAX = 40  # more learning curves than this: no legend in the PNG


@dataclass(frozen=True)
class PlotSpec:
    name: str
    title: str
    function: str
    check: Callable[[Sequence[FrozenTrial]], str]


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    figure: Any = None
    skipped: str = ""


@dataclass(frozen=True)
class PlotFile:
    name: str
    title: str
    html: Path | None
    png: Path | None
    skipped: str = ""


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state.name == "COMPLETE" and t.values]


def _needs_complete(trials: Sequence[FrozenTrial]) -> str:
    return "" if _complete(trials) else "no trial has completed yet"


def _needs_params(trials: Sequence[FrozenTrial]) -> str:
    if not _complete(trials):
        return "no trial has completed yet"
    return "" if any(t.params for t in _complete(trials)) else "the trials have no parameters"


def _needs_variation(trials: Sequence[FrozenTrial]) -> str:
    complete = _complete(trials)
    if len(complete) < 2:
        return "importances need at least 2 complete trials"
    names = {name for t in complete for name in t.params}
    if not any(len({repr(t.params.get(n)) for t in complete}) > 1 for n in names):
        return "no parameter varies across the complete trials"
    return ""


def _needs_curves(trials: Sequence[FrozenTrial]) -> str:
    reported = any(t.intermediate_values for t in trials if t.state.name != "FAIL")
    return "" if reported else "no trial reported intermediate values"


PLOTS = (
    PlotSpec("history", "Optimisation history", "plot_optimization_history", _needs_complete),
    PlotSpec("importances", "Parameter importances", "plot_param_importances", _needs_variation),
    PlotSpec("parallel", "Parallel coordinates", "plot_parallel_coordinate", _needs_params),
    PlotSpec("slice", "Slice", "plot_slice", _needs_params),
    PlotSpec("intermediate", "Intermediate values", "plot_intermediate_values", _needs_curves),
)


def load_study(url: str, name: str) -> optuna.Study:
    """An in-memory copy of the study, so that each plot does not read the storage again.

    Raises:
        TunerError: the storage cannot be opened or has no study ``name``.
    """
    import optuna

    storage = connect(url)
    study_id(storage, url, name)
    import_importance()  # before optuna.visualization imports it with scikit-learn
    stored = optuna.load_study(study_name=name, storage=storage)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(study_name=name, directions=stored.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(stored.get_trials(deepcopy=False))
    for key, value in stored.user_attrs.items():
        copy.set_user_attr(key, value)
    return copy


def plotly_figures(study: optuna.Study) -> list[Plot]:
    """Optuna's plotly figures of the study; a plot that cannot be drawn is skipped, with why."""
    import optuna.visualization as vis

    return [_draw(spec, study, getattr(vis, spec.function), _mark_pruned_plotly) for spec in PLOTS]


def matplotlib_figures(study: optuna.Study) -> list[Plot]:
    """The same plots drawn by Optuna's matplotlib backend (for PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as vis

    return [_draw(spec, study, getattr(vis, spec.function), _mark_pruned_mpl) for spec in PLOTS]


def _draw(
    spec: PlotSpec,
    study: optuna.Study,
    function: Callable[..., Any],
    mark_pruned: Callable[[Any, set[int]], None],
) -> Plot:
    import optuna

    trials = study.get_trials(deepcopy=False)
    reason = spec.check(trials)
    if reason:
        return Plot(spec.name, spec.title, skipped=reason)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            # Optuna marks its matplotlib backend experimental; the figures are what we want.
            warnings.simplefilter("ignore")
            if spec.name == "intermediate":
                figure = function(study)
            else:
                figure = function(study, target_name=study.user_attrs.get("metric", "value"))
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as exc:
        return Plot(spec.name, spec.title, skipped=f"it cannot be drawn: {exc}")
    finally:
        optuna.logging.set_verbosity(verbosity)
    if spec.name == "intermediate":
        mark_pruned(figure, {t.number for t in trials if t.state.name == "PRUNED"})
    return Plot(spec.name, spec.title, figure)


def _mark_pruned_plotly(figure: Any, pruned: set[int]) -> None:
    """Dot the learning curves of pruned trials and say so in their hover name."""
    for trace in figure.data:
        if _trial_number(trace.name) in pruned:
            trace.update(line={"dash": "dot"}, name=f"{trace.name} (pruned)")


def _mark_pruned_mpl(axes: Any, pruned: set[int]) -> None:
    lines = axes.get_lines()
    for line in lines:
        if _trial_number(str(line.get_label())) in pruned:
            line.set_linestyle(":")
            line.set_label(f"{line.get_label()} (pruned)")
    if axes.get_legend() is None:
        return
    if len(lines) <= LEGEND_MAX:
        axes.legend(bbox_to_anchor=(1.05, 1), loc="upper left", borderaxespad=0.0, fontsize=7)
        return
    # A legend of hundreds of trials hides the plot; say what the line styles mean instead.
    axes.get_legend().remove()
    axes.set_title(f"{axes.get_title()} ({len(lines)} trials; dotted: pruned)")


def _trial_number(label: str | None) -> int | None:
    text = (label or "").removeprefix("Trial")
    return int(text) if text.isdigit() else None


def write_plots(url: str, name: str, folder: Path) -> list[PlotFile]:
    """Write ``<plot>.html`` (standalone, plotly.js inlined) and ``<plot>.png`` into ``folder``.

    Raises:
        TunerError: unknown study, or ``folder`` cannot be written.
    """
    study = load_study(url, name)
    _make_dir(folder, "plots folder")
    pages, images = plotly_figures(study), matplotlib_figures(study)
    import matplotlib.pyplot as plt  # after matplotlib_figures chose the Agg backend

    files = []
    for page, image in zip(pages, images, strict=True):
        if page.skipped:
            files.append(PlotFile(page.name, page.title, None, None, page.skipped))
            continue
        html_path = folder / f"{page.name}.html"
        _write_atomically(
            html_path,
            page.figure.to_html(include_plotlyjs=True, full_html=True, config=PLOTLY_CONFIG),
        )
        png_path: Path | None = None
        if image.figure is not None:
            png_path = folder / f"{page.name}.png"
            figure = _figure_of(image.figure)
            figure.savefig(png_path, dpi=PNG_DPI, bbox_inches="tight")
            plt.close(figure)
        files.append(PlotFile(page.name, page.title, html_path, png_path, image.skipped))
    return files


def _figure_of(axes: Any) -> Any:
    """The matplotlib Figure of what Optuna returned: one Axes or an array of them."""
    if hasattr(axes, "figure"):
        return axes.figure
    return axes.flat[0].figure


def _make_dir(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TunerError(
            f"{what} {folder} cannot be created ({exc.strerror}); pass --to with a writable path"
        ) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TunerError(f"{what} {folder} is not writable; pass --to with a writable path")


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_report(view: StudyView, study: optuna.Study, dest: Path) -> Path:
    """One self-contained HTML page: summary, best parameters, importances, plots, trials.

    Raises:
        TunerError: ``dest`` cannot be written.
    """
    _make_dir(dest.parent, "report folder")
    _write_atomically(dest, render_report(view, plotly_figures(study)))
    return dest


def render_report(view: StudyView, plots: list[Plot]) -> str:
    from plotly.offline import get_plotlyjs

    s = view.summary
    title = f"tuner report: {s.name}"
    sections = [
        f"<h1>{_e(s.name)}</h1>",
        _summary_table(view),
        _best_section(view),
        _importance_section(view),
        "<h2>Plots</h2>",
        *(_plot_section(p) for p in plots),
        _trials_section(view.trials),
        f"<footer>Written by tuner on {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.</footer>",
    ]
    body = "\n".join(sections)
    # plotly.js is inlined once for all figures, so the page works offline.
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_e(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
{body}
</body>
</html>
"""


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.75em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bar { background: #4c78a8; height: 0.8em; display: inline-block; }
.note { color: #777; font-style: italic; }
tr.PRUNED td { color: #8a6d00; } tr.FAIL td { color: #b00020; } tr.RUNNING td { color: #1565c0; }
footer { color: #777; margin-top: 2em; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _summary_table(view: StudyView) -> str:
    s = view.summary
    best = view.best
    pairs = [
        ("task", _e(s.task)),
        ("model", _e(s.model)),
        ("metric", f"{_e(s.metric)} ({_e(s.direction)})"),
        ("training data", _e(s.user_attrs.get("train", "-"))),
        ("validation data", _e(s.user_attrs.get("validation", "-"))),
        ("storage", _e(redact(view.storage))),
        ("trials", f"{s.trials}: {_e(s.states_text)}"),
        ("best", f"trial {best.number}: {_num(best.value)}" if best else "no complete trial"),
        ("last activity", _e(f"{s.last_activity:%Y-%m-%d %H:%M}" if s.last_activity else "-")),
    ]
    return f"<table>{_rows(pairs)}</table>"


def _best_section(view: StudyView) -> str:
    best = view.best
    if best is None:
        return "<h2>Best trial</h2><p class='note'>No trial has completed yet.</p>"
    params = _rows([(k, _e(_value(v))) for k, v in best.params.items()])
    metrics = best.user_attrs.get("metrics")
    metric_rows = ""
    if isinstance(metrics, dict) and metrics:
        metric_rows = "<h3>Validation metrics</h3><table>" + _rows(
            [(k, _e(_value(v))) for k, v in metrics.items()]
        )
        metric_rows += "</table>"
    weights = view.weights.get(best.number)
    where = f"<p>Model: <code>{_e(weights)}</code></p>" if weights else ""
    return (
        f"<h2>Best trial: {best.number}</h2><p>{_e(view.summary.metric)} = "
        f"<b>{_num(best.value)}</b></p>{where}<h3>Parameters</h3><table>{params}</table>"
        f"{metric_rows}"
    )


def _importance_section(view: StudyView) -> str:
    imp = view.importances
    head = "<h2>Parameter importances</h2>"
    if imp is None:
        return head + "<p class='note'>Not computed.</p>"
    if not imp.values:
        return head + f"<p class='note'>Not shown: {_e(imp.note)}.</p>"
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='num'>{v:.3f}</td>"
        f"<td><span class='bar' style='width:{max(v, 0.0) * 300:.0f}px'></span></td></tr>"
        for k, v in imp.values.items()
    )
    note = f"PED-ANOVA (Optuna's default evaluator) on {imp.used} complete trials."
    return f"{head}<p class='note'>{_e(note)}</p><table>{rows}</table>"


def _plot_section(plot: Plot) -> str:
    head = f"<h3>{_e(plot.title)}</h3>"
    if plot.figure is None:
        return f"{head}<p class='note'>Not drawn: {_e(plot.skipped)}.</p>"
    div = plot.figure.to_html(
        full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG, default_height="480px"
    )
    return head + div


def _trials_section(trials: list[TrialRow]) -> str:
    names: list[str] = []
    for t in trials:
        names.extend(n for n in t.params if n not in names)
    head = "".join(
        f"<th>{_e(h)}</th>" for h in ["trial", "state", "value", "duration", *names, "note"]
    )
    body = []
    for t in trials:
        seconds = f"{t.seconds:.1f}s" if t.seconds is not None else "-"
        cells = [str(t.number), t.state, _num(t.value), seconds]
        cells += [_value(t.params[n]) if n in t.params else "" for n in names]
        cells.append(t.fail_reason)
        tds = "".join(
            f"<td class='num'>{_e(c)}</td>" if i in (0, 2, 3) else f"<td>{_e(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr class='{t.state}'>{tds}</tr>")
    return (
        f"<h2>Trials</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )
