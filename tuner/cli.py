"""The ``tuner`` command line: parse flags, call the core, render with rich."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tuner.errors import TunerError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from rich.console import Console

    from tuner.search import SearchPlan, SearchResult
    from tuner.studies import Importances, StudyView, TrialRow


class TunerGroup(click.Group):
    """Turns a :class:`TunerError` into ``Error: ...`` and exit status 1, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TunerError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo(
                "Interrupted: finished trials are kept; run the same command to go on.",
                err=True,
            )
            sys.exit(130)


@click.group(cls=TunerGroup)
@click.version_option(package_name="tuner")
def main() -> None:
    """Hyperparameter search for fine-tuning Hugging Face transformers."""


@main.command()
def tasks() -> None:
    """List the installed task plugins."""
    from rich.console import Console
    from rich.table import Table

    from tuner.registry import load_task_class, task_names

    table = Table("task", "metric", "direction", "default model", "plugin")
    for name in task_names():
        try:
            cls = load_task_class(name)
        except TunerError as exc:
            table.add_row(name, "-", "-", "-", f"[red]{exc}[/red]")
            continue
        table.add_row(name, cls.metric, cls.direction, cls.default_model, cls.__module__)
    Console().print(table)


@main.command()
@click.option("--task", help="Task plugin name (see `tuner tasks`).")
@click.option("--trials", type=int, help="Total finished trials the study should hold.")
@click.option("--model", help="Hub id or local model folder.")
@click.option("--train", type=click.Path(path_type=Path), help="Training data (CSV/JSON/JSONL).")
@click.option(
    "--validation", type=click.Path(path_type=Path), help="Validation data (CSV/JSON/JSONL)."
)
@click.option("--study-name", help="Study name [default: <task>-<model>].")
@click.option("--storage", help="Storage URL [default: sqlite:///<studies-dir>/tuner.db].")
@click.option("--studies-dir", type=click.Path(path_type=Path), help="[default: studies]")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Config file [default: ./tuner.toml if present].",
)
@click.option("--sampler", help="tpe (default), random, cmaes, gp or grid.")
@click.option("--pruner", help="median (default), hyperband, sha, wilcoxon or none.")
@click.option("--precision", help="auto (default), fp32, fp16 or bf16.")
@click.option("--timeout", type=float, help="Stop starting trials after this many seconds.")
@click.option("--seed", type=int, help="Seed of the sampler and of trial 0 [default: 42].")
@click.option("--workers", type=int, help="Worker processes on this machine [default: 1].")
@click.option("--gpus", help="GPUs to spread workers over: all, or indices like 0,1.")
@click.option("--worker-index", type=int, help="Offsets this worker's sampler seed [default: 0].")
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    help="Also store each new best model in this Optuna artifact store (a folder).",
)
@click.option("--quiet", is_flag=True, help="Print only the result.")
def search(config_path: Path | None, quiet: bool, **flags: Any) -> None:
    """Run (or continue) a hyperparameter search."""
    from rich.console import Console

    from tuner.config import load_config
    from tuner.search import run_search

    config = load_config(config_path, flags)
    # A scheduler stops a job with SIGTERM: end like Ctrl-C, with the running trial FAIL.
    signal.signal(signal.SIGTERM, _interrupt)

    def run(events: Any = None) -> SearchResult:
        if config.study.workers > 1:
            from tuner.workers import run_workers

            return run_workers(config, config_path, flags, events)
        return run_search(config, events)

    # Paths and commands in the output must stay copyable: never wrap them.
    console = Console(soft_wrap=True)
    if quiet:
        result = run()
    else:
        with LiveDisplay(console, config.study.trials) as display:
            result = run(display)
        _summary(console, display.trials)
    _result(console, result)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class LiveDisplay:
    """A rich view of the running study: totals, best so far and the running trial."""

    def __init__(self, console: Console, target: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.target = target
        self.trials: list[FrozenTrial] = []
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best: tuple[int, float] | None = None
        self.direction = "maximize"
        self.metric = "value"
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.study_bar = self.progress.add_task("study", total=target, status="")
        self.trial_bar = self.progress.add_task("trial", total=1, status="", visible=False)

    def __enter__(self) -> LiveDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _status(self) -> str:
        c = self.counts
        best = f"best {self.metric} {self.best[1]:.4f} (trial {self.best[0]})" if self.best else ""
        return f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed  {best}"

    def on_start(self, plan: SearchPlan, finished: int) -> None:
        from tuner.storage import redact

        self.metric = plan.task.metric
        self.direction = plan.task.direction
        self.console.print(
            f"[bold]{plan.study_name}[/bold]: task {plan.task.name}, model {plan.model.spec}, "
            f"storage {redact(plan.storage)}"
        )
        if finished:
            self.console.print(f"continuing: {finished} of {self.target} trials already finished")
        self.progress.update(self.study_bar, completed=finished, status=self._status())
        # Started only now, so that input errors found while planning print alone.
        self.progress.start()

    def on_trial_start(self, number: int, params: dict[str, Any]) -> None:
        self.progress.update(
            self.trial_bar,
            description=f"trial {number}",
            completed=0,
            total=None,
            visible=True,
            status=_short_params(params),
        )

    def on_progress(self, step: int, total: int) -> None:
        self.progress.update(self.trial_bar, completed=step, total=max(total, 1))

    def on_trial_end(self, trial: FrozenTrial) -> None:
        from tuner.export import is_better

        self.trials.append(trial)
        self.counts[trial.state.name] = self.counts.get(trial.state.name, 0) + 1
        if trial.state.name == "COMPLETE" and trial.value is not None:
            if self.best is None or is_better(trial.value, self.best[1], self.direction):
                self.best = (trial.number, trial.value)
        self.progress.update(self.trial_bar, visible=False)
        self.progress.advance(self.study_bar)
        self.progress.update(self.study_bar, status=self._status())


def _short_params(params: dict[str, Any]) -> str:
    names = {
        "learning_rate": "lr",
        "num_train_epochs": "epochs",
        "per_device_train_batch_size": "batch",
        "warmup_steps": "warmup",
        "label_smoothing_factor": "smoothing",
    }
    return " ".join(f"{names.get(k, k)}={_fmt(v)}" for k, v in params.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _duration(trial: FrozenTrial) -> str:
    if trial.datetime_start and trial.datetime_complete:
        return f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.1f}s"
    return "-"


def _summary(console: Console, trials: list[FrozenTrial]) -> None:
    from rich.table import Table

    if not trials:
        return
    table = Table("trial", "state", "value", "time", "parameters", "note", title="This run")
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        note = t.user_attrs.get("fail_reason", "")
        if t.user_attrs.get("exported"):
            note = "new best, exported"
        table.add_row(
            str(t.number), t.state.name, value, _duration(t), _short_params(t.params), note
        )
    console.print(table)


def _result(console: Console, result: SearchResult) -> None:
    from tuner.storage import redact

    console.print(
        f"study {result.study_name}: {result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed ({result.ran} run now)"
    )
    if result.best is None:
        console.print("no trial has completed yet")
        return
    best = result.best
    console.print(f"best trial: {best.number}  {result.metric} = {best.value:.4f}")
    console.print(f"best parameters: {_short_params(best.params)}")
    if result.best_dir is not None:
        console.print(f"best model: {result.best_dir}")
    console.print(f"open the study: optuna-dashboard {redact(result.storage)}")


# Inspecting studies: tuner studies, show, export, plot, report, dashboard, delete.

SHOW_LAST = 100


def _storage_options(command: click.decorators.FC) -> click.decorators.FC:
    command = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        help="Config file for [study] storage and studies_dir [default: ./tuner.toml if present].",
    )(command)
    command = click.option(
        "--studies-dir",
        type=click.Path(path_type=Path),
        help="Folder with tuner.db and one folder per study [default: [study] studies_dir, "
        "else studies].",
    )(command)
    return click.option(
        "--storage",
        help="Storage URL [default: $TUNER_STORAGE, else sqlite:///<studies-dir>/tuner.db].",
    )(command)


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def _when(moment: Any) -> str:
    return f"{moment.astimezone():%Y-%m-%d %H:%M}" if moment is not None else "-"


@main.command("studies")
@_storage_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def studies_command(
    storage: str | None, studies_dir: Path | None, config_path: Path | None, fmt: str
) -> None:
    """List the studies in the storage: task, model, trials, best value, last activity."""
    import json

    from tuner.storage import redact
    from tuner.studies import list_studies, resolve_location

    url, _ = resolve_location(storage, studies_dir, config_path)
    summaries = list_studies(url)
    if fmt == "json":
        click.echo(json.dumps([s.as_json() for s in summaries], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=True)
    if not summaries:
        console.print(f"no study in {redact(url)} yet; run tuner search", markup=False)
        return
    table = Table("study", "task", "model", "trials", "best", "last activity")
    table.title = f"studies in {redact(url)}"
    table.columns[0].no_wrap = True
    table.columns[2].overflow = "fold"
    for s in summaries:
        best = f"{s.metric} {s.best_value:.4f}" if s.best_value is not None else "-"
        table.add_row(
            escape(s.name),
            escape(s.task),
            escape(s.model),
            f"{s.trials}: {s.states_text}" if s.trials else "0",
            escape(best),
            _when(s.last_activity),
        )
    console.print(table)


@main.command()
@click.argument("study")
@_storage_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="json and csv hold every trial, for scripts.",
)
@click.option(
    "--last",
    type=click.IntRange(min=0),
    default=SHOW_LAST,
    show_default=True,
    help="Rows of the trial table (the most recent trials); 0 shows every trial.",
)
@click.option("--no-importance", is_flag=True, help="Skip the parameter importances.")
def show(
    study: str,
    storage: str | None,
    studies_dir: Path | None,
    config_path: Path | None,
    fmt: str,
    last: int,
    no_importance: bool,
) -> None:
    """Show a study: its trials, the best trial and parameter importances."""
    from tuner.studies import load_view, resolve_location

    url, studies_dir = resolve_location(storage, studies_dir, config_path)
    importance = not no_importance and fmt != "csv"
    view = load_view(url, study, studies_dir, importance=importance)
    if fmt == "json":
        import json

        click.echo(json.dumps(view.as_json(), indent=2))
    elif fmt == "csv":
        _write_csv(view.trials)
    else:
        _show_table(view, last)


def _write_csv(trials: list[TrialRow]) -> None:
    import csv

    params: list[str] = []
    metrics: list[str] = []
    for t in trials:
        params.extend(p for p in t.params if p not in params)
        found = t.user_attrs.get("metrics")
        if isinstance(found, dict):
            metrics.extend(m for m in found if m not in metrics)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    fixed = ["number", "state", "value", "datetime_start", "datetime_complete", "duration_seconds"]
    writer.writerow(
        [*fixed, "train_seconds", *(f"params_{p}" for p in params),
         *(f"metrics_{m}" for m in metrics), "fail_reason"]
    )  # fmt: skip
    for t in trials:
        row = t.as_json()
        found = t.user_attrs.get("metrics")
        found = found if isinstance(found, dict) else {}
        writer.writerow(
            [*(row[k] if row[k] is not None else "" for k in fixed),
             row["train_seconds"] if row["train_seconds"] is not None else "",
             *(t.params.get(p, "") for p in params), *(found.get(m, "") for m in metrics),
             t.fail_reason]
        )  # fmt: skip


def _show_table(view: StudyView, last: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from tuner.storage import redact

    s = view.summary
    console = Console(soft_wrap=True, highlight=False)
    from rich.markup import escape

    console.print(
        f"[bold]{escape(s.name)}[/bold]: task {escape(s.task)}, model {escape(s.model)}, "
        f"metric {escape(s.metric)} ({s.direction})"
    )
    console.print(f"storage {redact(view.storage)}", markup=False)
    counts = s.counts
    console.print(
        f"trials: {s.trials} ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
        f"{counts['FAIL']} failed, {counts['RUNNING']} running)"
    )
    shown = view.trials[-last:] if last else view.trials
    table = Table("trial", "state", "value", "duration", "parameters", "note")
    best_number = view.best.number if view.best is not None else None
    for t in shown:
        note = t.fail_reason
        if t.number == best_number:
            note = "best"
        if t.number in view.weights:
            note = f"{note}, weights kept" if note else "weights kept"
        value = f"{t.value:.4f}" if t.value is not None else "-"
        table.add_row(
            str(t.number),
            t.state,
            value,
            _seconds(t.seconds),
            escape(_short_params(dict(t.params))),
            escape(note),
        )
    if len(shown) < len(view.trials):
        table.caption = (
            f"the last {len(shown)} of {len(view.trials)} trials; --last 0 shows all, "
            "--format csv writes them for scripts"
        )
    if view.trials:
        console.print(table)
    best = view.best
    if best is None:
        console.print("no trial has completed yet")
    else:
        console.print(
            f"best trial: {best.number}  {s.metric} = {best.value:.4f}  "
            f"{_short_params(dict(best.params))}",
            markup=False,
        )
        if best.number in view.weights:
            console.print(f"best model: {view.weights[best.number]}", markup=False)
    _show_importances(console, view.importances)


def _show_importances(console: Console, importances: Importances | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    if importances is None:
        return
    if not importances.values:
        console.print(f"parameter importances: not shown, {importances.note}", markup=False)
        return
    table = Table(
        "parameter",
        "importance",
        "",
        title=f"parameter importances (PED-ANOVA, {importances.used} complete trials)",
    )
    for name, value in importances.values.items():
        table.add_row(escape(name), f"{value:.3f}", "█" * max(1, round(value * 30)))
    console.print(table)


@main.command()
@click.argument("study")
@click.option("--trial", type=int, help="Trial number [default: the best trial].")
@click.option(
    "--to",
    type=click.Path(path_type=Path),
    help="Destination folder [default: ./<study>-trial<N>].",
)
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    help="Fetch the model from this Optuna artifact store when it is not on disk here.",
)
@_storage_options
def export(
    study: str,
    trial: int | None,
    to: Path | None,
    artifacts: Path | None,
    storage: str | None,
    studies_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Copy a kept model (the best trial's, or trial N's) with its tokenizer and card."""
    from tuner.studies import export_trial, resolve_location

    url, studies_dir = resolve_location(storage, studies_dir, config_path)
    done = export_trial(url, studies_dir, study, trial, to, artifacts)
    click.echo(f"exported trial {done.trial} of study {study} (from {done.source}) to {done.dest}")


@main.command()
@click.argument("study")
@click.option(
    "--to",
    type=click.Path(path_type=Path),
    help="Folder for the plot files [default: <studies-dir>/<study>/plots].",
)
@_storage_options
def plot(
    study: str,
    to: Path | None,
    storage: str | None,
    studies_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Write the study's plots as standalone HTML files and PNG images."""
    from tuner.plots import write_plots
    from tuner.studies import resolve_location

    url, studies_dir = resolve_location(storage, studies_dir, config_path)
    folder = to if to is not None else studies_dir / study / "plots"
    for f in write_plots(url, study, folder):
        if f.html is None:
            click.echo(f"skipped {f.title.lower()}: {f.skipped}")
            continue
        png = f" and {f.png.name}" if f.png is not None else f" (no PNG: {f.skipped})"
        click.echo(f"{f.title.lower()}: {f.html}{png}")


@main.command()
@click.argument("study")
@click.option(
    "--to",
    type=click.Path(path_type=Path),
    help="The HTML file [default: <studies-dir>/<study>/report.html].",
)
@click.option("--no-importance", is_flag=True, help="Skip the parameter importances.")
@_storage_options
def report(
    study: str,
    to: Path | None,
    no_importance: bool,
    storage: str | None,
    studies_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Write one self-contained HTML page about the study, readable offline."""
    from tuner.plots import load_study, write_report
    from tuner.studies import load_view, resolve_location

    url, studies_dir = resolve_location(storage, studies_dir, config_path)
    view = load_view(url, study, studies_dir, importance=not no_importance)
    dest = to if to is not None else studies_dir / study / "report.html"
    write_report(view, load_study(url, study), dest)
    click.echo(f"report: {dest}")


@main.command()
@_storage_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
def dashboard(
    storage: str | None, studies_dir: Path | None, config_path: Path | None, host: str, port: int
) -> None:
    """Start optuna-dashboard on the study storage."""
    import signal

    from tuner.storage import redact
    from tuner.studies import dashboard_server, resolve_location

    url, _ = resolve_location(storage, studies_dir, config_path)
    server = dashboard_server(url, host, port)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"optuna-dashboard on {redact(url)}")
    click.echo(f"open http://{shown}:{server.server_port}/  (Ctrl-C stops it)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            "warning: the dashboard has no login and can edit and delete studies; anyone "
            f"who reaches {host}:{server.server_port} can",
            err=True,
        )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("dashboard stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


@main.command()
@click.argument("study")
@click.option("--yes", is_flag=True, help="Delete without asking (for scripts).")
@_storage_options
def delete(
    study: str,
    yes: bool,
    storage: str | None,
    studies_dir: Path | None,
    config_path: Path | None,
) -> None:
    """Delete a study from the storage and its folder (models, plots, report)."""
    from tuner.storage import redact
    from tuner.studies import delete_study, resolve_location, summarize

    url, studies_dir = resolve_location(storage, studies_dir, config_path)
    summary = summarize(url, study)
    folder = studies_dir / study
    running = summary.counts.get("RUNNING", 0)
    what = f"study '{study}' ({summary.trials} trials"
    what += f", {running} running" if running else ""
    what += f") from {redact(url)}"
    what += f" and the folder {folder}" if folder.is_dir() else ""
    if not yes:
        try:
            confirmed = click.confirm(f"Delete {what}?", default=False)
        except click.Abort:
            click.echo()
            raise TunerError(
                f"no confirmation given; pass --yes to delete study '{study}' without asking"
            ) from None
        if not confirmed:
            click.echo("nothing deleted")
            return
    done = delete_study(url, studies_dir, study)
    removed = f" and removed {done.folder}" if done.folder is not None else ""
    click.echo(f"deleted study '{study}' ({done.trials} trials){removed}")


if __name__ == "__main__":
    main()
