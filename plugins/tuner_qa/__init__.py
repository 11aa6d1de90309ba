"""Extractive question answering (SQuAD v1.1 style) for tuner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.task import DataSpec, Splits, Task, load_split, require_columns, source_name
from tuner_qa.metrics import squad_scores
from tuner_qa.postprocess import Offsets, best_answers

if TYPE_CHECKING:
    import datasets
    from transformers import EvalPrediction, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["QaTask"]


class QaTask(Task):
    """Find the answer to a question as a span of its context.

    Contexts longer than ``max_length`` tokens are cut into windows that overlap by
    ``doc_stride`` tokens. Each window is a training row whose target is the answer span,
    or the first token (``[CLS]``) when the answer is not wholly inside it. Validation
    windows get targets the same way, so the Trainer reports an evaluation loss; the
    metric is computed on the answers picked over all windows of each question.

    The windows' question index and token offsets, which the model must not receive, are
    kept on the task (``preprocess`` stores them, ``compute_metrics`` reads them) and are
    not columns of the validation data set; ``compute_metrics`` therefore expects the
    predictions of that data set, in its order (the Trainer does not shuffle evaluation).
    """

    name = "qa"
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    metric = "f1"
    direction = "maximize"
    # transformers 5 dropped its "question-answering" pipeline; tuner_qa.pipeline registers
    # this one, which decodes windows exactly as compute_metrics does.
    pipeline_task = "extractive-question-answering"
    pipeline_import = "tuner_qa.pipeline"
    option_defaults = {
        "id_column": "id",
        "context_column": "context",
        "question_column": "question",
        "answers_column": "answers",
        "max_length": 384,
        "doc_stride": 128,
        "n_best": 20,
        "max_answer_length": 30,
    }

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        for key in ("id_column", "context_column", "question_column", "answers_column"):
            if not isinstance(self.options[key], str) or not self.options[key]:
                raise TunerError(f"[data] {key} must be a column name (a string)")
        minimums = {"max_length": 8, "doc_stride": 0, "n_best": 1, "max_answer_length": 1}
        for key, least in minimums.items():
            value = self.options[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise TunerError(
                    f"[data] {key} must be an integer of at least {least}, got {value!r}"
                )
        if self.options["doc_stride"] >= self.options["max_length"]:
            raise TunerError(
                f"[data] doc_stride ({self.options['doc_stride']}) must be smaller than "
                f"max_length ({self.options['max_length']}); windows overlap by doc_stride tokens"
            )
        # Set by preprocess for compute_metrics: one entry per validation question ...
        self.eval_contexts: list[str] = []
        self.eval_references: list[list[str]] = []
        # ... and one per validation window.
        self.eval_feature_examples: list[int] = []
        self.eval_feature_offsets: list[Offsets] = []
        self.sources: dict[str, str] = {}

    def load_splits(self, data: DataSpec) -> Splits:
        columns = {
            key: self.options[key]
            for key in ("id_column", "context_column", "question_column", "answers_column")
        }
        splits = {}
        for split in ("train", "validation"):
            rows = load_split(data, split)
            source = source_name(data, split)
            require_columns(rows, columns, source)
            self._check_rows(rows, source)
            splits[split] = rows
            self.sources[split] = source
        return splits

    def _check_rows(self, rows: datasets.Dataset, source: str) -> None:
        ids = rows[self.options["id_column"]]
        contexts = rows[self.options["context_column"]]
        questions = rows[self.options["question_column"]]
        answers = rows[self.options["answers_column"]]
        for row, values in enumerate(zip(ids, contexts, questions, answers, strict=True), start=1):
            problem = self._row_problem(*values)
            if problem:
                raise TunerError(f"{source}: row {row}: {problem}")

    def _row_problem(self, id_: Any, context: Any, question: Any, answers: Any) -> str | None:
        """What is wrong with one row, as ``"<field> ...; <what to do>"``, or ``None``."""
        id_column = self.options["id_column"]
        context_column = self.options["context_column"]
        question_column = self.options["question_column"]
        field = self.options["answers_column"]
        if id_ is None or id_ == "":
            return f"{id_column} is missing; give each question an id"
        if not isinstance(context, str) or not context.strip():
            return f"{context_column} is missing or empty; give the passage text"
        if not isinstance(question, str) or not question.strip():
            return f"{question_column} is missing or empty; give the question text"
        shape = f'give {field} as {{"text": [...], "answer_start": [...]}}'
        if not isinstance(answers, Mapping):
            return f"{field} is missing or not an object; {shape}"
        texts, starts = answers.get("text"), answers.get("answer_start")
        if not isinstance(texts, list):
            return f"{field} has no text list; {shape}"
        if not isinstance(starts, list):
            return f"{field} has no answer_start list; {shape}"
        if len(texts) != len(starts):
            return (
                f"{field} has {len(texts)} texts but {len(starts)} answer_start values; "
                "give one start per text"
            )
        if not texts:
            return f"{field} has no answer; give at least one (every question must have one)"
        for i, (text, start) in enumerate(zip(texts, starts, strict=True)):
            if not isinstance(text, str) or not text:
                return f"{field}.text[{i}] is not a non-empty string; give the answer text"
            if isinstance(start, bool) or not isinstance(start, int):
                return f"{field}.answer_start[{i}] {start!r} is not an integer character offset"
            found = context[start : start + len(text)] if start >= 0 else ""
            if found != text:
                return (
                    f"{field}.answer_start[{i}] is {start} but the context there reads "
                    f"{found!r}, not the answer {text!r}; give the 0-based character offset "
                    "of the answer in the context"
                )
        return None

    def preprocess(self, splits: Splits, tokenizer: PreTrainedTokenizerBase) -> Splits:
        if not tokenizer.is_fast:
            raise TunerError(
                f"task 'qa' needs a fast tokenizer (one with offset mappings); "
                f"{type(tokenizer).__name__} is not"
            )
        max_length = min(int(self.options["max_length"]), tokenizer.model_max_length)
        stride = int(self.options["doc_stride"])
        if stride >= max_length:
            raise TunerError(
                f"[data] doc_stride ({stride}) must be smaller than the maximum length "
                f"({max_length}, the smaller of [data] max_length and the model's limit)"
            )
        questions = self.options["question_column"]
        contexts = self.options["context_column"]
        answers = self.options["answers_column"]
        # A tokenizer that pads on the left gets the context first, as in the HF recipe.
        question_first = tokenizer.padding_side == "right"
        context_index = 1 if question_first else 0

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
            asked = [q.lstrip() for q in batch[questions]]  # some questions start with spaces
            given = batch[contexts]
            encoded = tokenizer(
                asked if question_first else given,
                given if question_first else asked,
                truncation="only_second" if question_first else "only_first",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            samples = encoded.pop("overflow_to_sample_mapping")
            all_offsets = encoded.pop("offset_mapping")
            starts, ends, examples, offsets = [], [], [], []
            for i, sample in enumerate(samples):
                window = [
                    span if sequence == context_index else None
                    for span, sequence in zip(all_offsets[i], encoded.sequence_ids(i), strict=True)
                ]
                answer = batch[answers][sample]
                start_char = answer["answer_start"][0]
                start, end = answer_tokens(
                    window, start_char, start_char + len(answer["text"][0]), cls_index=0
                )
                starts.append(start)
                ends.append(end)
                examples.append(indices[sample])
                offsets.append(window)
            return {
                **encoded,
                "start_positions": starts,
                "end_positions": ends,
                "example_index": examples,
                "window_offsets": offsets,
            }

        processed = {}
        for split, rows in splits.items():
            self._check_question_lengths(rows, tokenizer, max_length, stride, split)
            features = rows.map(
                encode, batched=True, with_indices=True, remove_columns=rows.column_names
            )
            if split == "validation":
                self.eval_contexts = list(rows[contexts])
                self.eval_references = [list(a["text"]) for a in rows[answers]]
                self.eval_feature_examples = list(features["example_index"])
                self.eval_feature_offsets = [
                    [tuple(o) if o is not None else None for o in window]
                    for window in features["window_offsets"]
                ]
            processed[split] = features.remove_columns(["example_index", "window_offsets"])
        return processed

    def _check_question_lengths(
        self,
        rows: datasets.Dataset,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        stride: int,
        split: str,
    ) -> None:
        # The tokenizer aborts the process (a Rust panic) when the overlap does not fit next
        # to the question, so check each question before splitting contexts into windows.
        room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - stride
        asked = [q.lstrip() for q in rows[self.options["question_column"]]]
        lengths = [len(ids) for ids in tokenizer(asked, add_special_tokens=False)["input_ids"]]
        source = self.sources.get(split, f"{split} data")
        for row, length in enumerate(lengths, start=1):
            if length >= room:
                raise TunerError(
                    f"{source}: row {row}: {self.options['question_column']} is {length} "
                    f"tokens long, which leaves no room for the context in windows of "
                    f"{max_length} tokens overlapping by {stride}; shorten the question, raise "
                    "[data] max_length or lower [data] doc_stride"
                )

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {
            key: self.options[key]
            for key in ("max_length", "doc_stride", "n_best", "max_answer_length")
        }

    def build_model(self, model_name: str) -> PreTrainedModel:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(model_name)

    def compute_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """SQuAD v1.1 exact match and F1 of the best span per question, as fractions 0..1.

        The official script reports percentages (100 times these values).
        """
        import numpy as np

        if not self.eval_feature_offsets:
            raise RuntimeError("QaTask.compute_metrics called before preprocess")
        predictions = eval_pred.predictions
        if not isinstance(predictions, (tuple, list)) or len(predictions) < 2:
            raise ValueError("expected (start_logits, end_logits) predictions from a QA model")
        answers = best_answers(
            np.asarray(predictions[0]),
            np.asarray(predictions[1]),
            self.eval_feature_examples,
            self.eval_feature_offsets,
            self.eval_contexts,
            n_best=int(self.options["n_best"]),
            max_answer_length=int(self.options["max_answer_length"]),
        )
        return squad_scores(answers, self.eval_references)


def answer_tokens(
    offsets: Offsets, start_char: int, end_char: int, cls_index: int = 0
) -> tuple[int, int]:
    """The first and last token of the answer ``[start_char, end_char)`` in one window.

    Args:
        offsets: The character span of each token, ``None`` outside the context.
        start_char: Where the answer starts in the context.
        end_char: Where it ends (exclusive).
        cls_index: The position to point at when the answer is not wholly in the window.

    Returns:
        ``(start, end)`` token positions, both inclusive.
    """
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside:
        return cls_index, cls_index
    first, last = inside[0], inside[-1]
    if _span(offsets, first)[0] > start_char or _span(offsets, last)[1] < end_char:
        return cls_index, cls_index
    start = first
    while start < last and _span(offsets, start + 1)[0] <= start_char:
        start += 1
    end = last
    while end > start and _span(offsets, end - 1)[1] >= end_char:
        end -= 1
    return start, end


def _span(offsets: Offsets, index: int) -> Sequence[int]:
    span = offsets[index]
    assert span is not None
    return span
