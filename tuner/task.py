"""The task plugin contract.

A task plugin is a subclass of :class:`Task` registered under the entry-point group
``tuner.tasks``. Plugins import this module and :mod:`tuner.errors`, nothing else from
``tuner``. Heavy libraries (torch, transformers, datasets) are imported inside methods so
that listing tasks stays fast.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tuner.errors import TunerError

if TYPE_CHECKING:
    import datasets
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

    Splits = dict[str, datasets.Dataset]
else:
    Splits = dict

__all__ = ["DataSpec", "Splits", "Task", "load_split", "require_columns", "source_name"]

DATA_SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "json"}


@dataclass(frozen=True)
class DataSpec:
    """Where a task's data comes from, as configured under ``[data]``.

    Either ``train`` and ``validation`` files (CSV, JSON or JSON Lines) or a Hugging Face
    Hub data set id in ``dataset``. ``options`` holds the task's own keys (column names,
    label names, maximum length), already merged with the task's ``option_defaults``.
    """

    train: str | None = None
    validation: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    max_train_rows: int | None = None
    max_validation_rows: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Task(abc.ABC):
    """A fine-tuning task: its data, preprocessing, model head and metric.

    Subclasses set the class attributes and implement the abstract methods. One instance
    serves a whole study: ``load_splits`` and ``preprocess`` run once, ``build_model`` and
    ``compute_metrics`` once per trial. State learnt from the data (label names, evaluation
    features) may be kept on the instance.

    Attributes:
        name: The entry-point key, e.g. ``"sentiment"``.
        default_model: A Hub id or folder used when neither ``--model`` nor the config names one.
        metric: The key of ``compute_metrics``'s result that the study optimises.
        direction: ``"maximize"`` or ``"minimize"``.
        pipeline_task: The ``transformers.pipeline`` task name the exported model serves.
        pipeline_import: A module to import first when the plugin registers that pipeline
            itself (empty when transformers has it).
        option_defaults: The task's own ``[data]`` keys with their defaults; any other key
            under ``[data]`` is an error.
    """

    name: ClassVar[str]
    default_model: ClassVar[str]
    metric: ClassVar[str]
    direction: ClassVar[str] = "maximize"
    pipeline_task: ClassVar[str] = ""
    pipeline_import: ClassVar[str] = ""
    option_defaults: ClassVar[Mapping[str, Any]] = {}
    trains: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        """Create the task.

        Args:
            options: Values for keys of ``option_defaults``; missing keys take the default.
        """
        unknown = sorted(set(options or {}) - set(self.option_defaults))
        if unknown:
            known = ", ".join(sorted(self.option_defaults)) or "none"
            raise TunerError(
                f"[data] {unknown[0]} is not an option of task '{self.name}'; "
                f"its options are: {known}"
            )
        self.options: dict[str, Any] = {**self.option_defaults, **(options or {})}

    @abc.abstractmethod
    def load_splits(self, data: DataSpec) -> Splits:
        """Load the raw data.

        Args:
            data: Where the data is and the task's options.

        Returns:
            ``{"train": Dataset, "validation": Dataset}``.
        """

    @abc.abstractmethod
    def preprocess(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Splits:
        """Tokenise the splits and align labels, without padding (batches are padded late).

        Args:
            splits: The result of ``load_splits``.
            tokenizer: The tokenizer of the model being tuned.

        Returns:
            The same keys, holding model-ready datasets.
        """

    @abc.abstractmethod
    def build_model(self, model_name: str) -> PreTrainedModel:
        """Load the pretrained model with a fresh head for this task.

        Args:
            model_name: A Hub id or a local folder.

        Returns:
            The model, with ``id2label``/``label2id`` set where the task has labels.
        """

    @abc.abstractmethod
    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """Score predictions on the validation set.

        Args:
            eval_pred: What ``transformers.Trainer`` passes to ``compute_metrics``.

        Returns:
            Metric names (no ``eval_`` prefix) to values; must contain ``metric``.
        """

    def search_space(self) -> dict[str, Any]:
        """Override the core's default search space for this task.

        Returns:
            A mapping in the form of the ``[space]`` table of ``tuner.toml``.
        """
        return {}

    def score(self, params: Mapping[str, Any], report: Callable[[int, float], None]) -> float:
        """Score ``params`` without ``Trainer``; only called when ``trains`` is ``False``.

        Args:
            params: The trial's parameters.
            report: Call with ``(step, value)`` after each evaluation; it raises
                ``optuna.TrialPruned`` when the pruner stops the trial.

        Returns:
            The value of ``metric``.
        """
        raise NotImplementedError(f"task '{self.name}' trains a model; it has no score()")

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the exported model's pipeline needs to predict as it was scored.

        Returns:
            Written to the model card and ``tuner.json``; empty by default.
        """
        return {}

    def data_collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """The collator that pads each batch to its own longest row.

        Args:
            tokenizer: The tokenizer of the model being tuned.

        Returns:
            A callable for ``Trainer(data_collator=...)``.
        """
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)


def load_split(data: DataSpec, split: str) -> datasets.Dataset:
    """Load one split (``"train"`` or ``"validation"``) from files or the Hub.

    Args:
        data: The data spec.
        split: ``"train"`` or ``"validation"``.

    Returns:
        The rows, capped at ``max_train_rows``/``max_validation_rows``.

    Raises:
        TunerError: the file is missing, has an unknown suffix or cannot be parsed, or the
            Hub data set cannot be loaded.
    """
    import datasets

    path = data.train if split == "train" else data.validation
    limit = data.max_train_rows if split == "train" else data.max_validation_rows
    if path is not None:
        rows = _load_file(Path(path), split)
    elif data.dataset is not None:
        rows = _load_hub(data, split)
    else:
        flag = "--train" if split == "train" else "--validation"
        key = "train" if split == "train" else "validation"
        raise TunerError(
            f"no {split} data: pass {flag} FILE or set [data] {key} (or [data] dataset) "
            "in tuner.toml"
        )
    assert isinstance(rows, datasets.Dataset)
    if len(rows) == 0:
        raise TunerError(f"{path or data.dataset}: the {split} data has no rows")
    if limit is not None and limit < len(rows):
        rows = rows.select(range(limit))
    return rows


def _load_file(path: Path, split: str) -> datasets.Dataset:
    import datasets

    if not path.is_file():
        raise TunerError(f"{path}: {split} data file not found")
    builder = DATA_SUFFIXES.get(path.suffix.lower())
    if builder is None:
        raise TunerError(
            f"{path}: unknown data file type '{path.suffix}'; use .csv, .json or .jsonl"
        )
    try:
        loaded = datasets.load_dataset(builder, data_files=str(path.resolve()), split="train")
    except Exception as exc:  # datasets raises many types for a malformed file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(f"{path}: cannot read {split} data: {reason}") from exc
    assert isinstance(loaded, datasets.Dataset)
    return loaded


def _load_hub(data: DataSpec, split: str) -> datasets.Dataset:
    import datasets

    name = data.train_split if split == "train" else data.validation_split
    try:
        loaded = datasets.load_dataset(data.dataset, data.dataset_config, split=name)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TunerError(
            f"[data] dataset '{data.dataset}': cannot load split '{name}' from the Hugging Face "
            f"Hub ({reason}); when offline, pass local files with --train and --validation"
        ) from exc
    assert isinstance(loaded, datasets.Dataset)
    return loaded


def require_columns(rows: datasets.Dataset, columns: Mapping[str, str], source: str) -> None:
    """Check that the rows have the configured columns.

    Args:
        rows: The loaded data.
        columns: Option key (e.g. ``"text_column"``) to the column name it configures.
        source: The file or data set name, for the message.

    Raises:
        TunerError: naming the first missing column and listing the columns found.
    """
    for key, column in columns.items():
        if column not in rows.column_names:
            found = ", ".join(rows.column_names)
            raise TunerError(
                f"{source}: no column '{column}' (columns found: {found}); "
                f"set [data] {key} in tuner.toml to the right one"
            )


def source_name(data: DataSpec, split: str) -> str:
    """The file or data set a split comes from, for messages."""
    path = data.train if split == "train" else data.validation
    return str(path) if path is not None else f"{data.dataset}[{split}]"
