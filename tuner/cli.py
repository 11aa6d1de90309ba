"""The ``tuner`` command line: parse flags, call the core, render with rich."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tuner.errors import TunerError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial
    from rich.console import Console

    from tuner.search import SearchPlan, SearchResult


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
@click.option("--quiet", is_flag=True, help="Print only the result.")
def search(config_path: Path | None, quiet: bool, **flags: Any) -> None:
    """Run (or continue) a hyperparameter search."""
    from rich.console import Console

    from tuner.config import load_config
    from tuner.search import run_search

    config = load_config(config_path, flags)
    # Paths and commands in the output must stay copyable: never wrap them.
    console = Console(soft_wrap=True)
    if quiet:
        result = run_search(config)
    else:
        with LiveDisplay(console, config.study.trials) as display:
            result = run_search(config, display)
        _summary(console, display.trials)
    _result(console, result)


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


if __name__ == "__main__":
    main()
