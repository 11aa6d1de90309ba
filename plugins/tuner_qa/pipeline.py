"""A ``transformers.pipeline`` for extractive question answering.

transformers 5 removed its ``"question-answering"`` pipeline. Importing this module registers
``"extractive-question-answering"``, which answers with a span of the context the way the
``qa`` task scores it: long contexts are cut into overlapping windows and the best span over
all windows wins.

    import tuner_qa.pipeline  # registers the task
    from transformers import pipeline

    answer = pipeline("extractive-question-answering", model="studies/qa-.../best")
    answer(question="Who wrote it?", context="It was written by Ada in 1843.")
    # {'answer': 'Ada', 'score': ..., 'start': 18, 'end': 21}
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import AutoModelForQuestionAnswering, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from tuner_qa.postprocess import best_spans

TASK = "extractive-question-answering"

__all__ = ["TASK", "ExtractiveQuestionAnsweringPipeline"]


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """Answer ``question`` with the best span of ``context``.

    Options (call or constructor keywords): ``max_length`` (384) and ``doc_stride`` (128)
    for the windows, ``n_best`` (20) and ``max_answer_length`` (30 tokens) for the spans.
    """

    _load_processor = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_tokenizer = True  # type: ignore[assignment]

    def _sanitize_parameters(
        self,
        max_length: int | None = None,
        doc_stride: int | None = None,
        n_best: int | None = None,
        max_answer_length: int | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        windows = {"max_length": max_length, "doc_stride": doc_stride}
        spans = {"n_best": n_best, "max_answer_length": max_answer_length}
        return (
            {k: v for k, v in windows.items() if v is not None},
            {},
            {k: v for k, v in spans.items() if v is not None},
        )

    def __call__(  # type: ignore[override]
        self,
        inputs: dict[str, str] | list[dict[str, str]] | None = None,
        *,
        question: str | None = None,
        context: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs is None:
            if question is None or context is None:
                raise ValueError("give question= and context=, or {'question', 'context'} dicts")
            inputs = {"question": question, "context": context}
        return super().__call__(inputs, **kwargs)

    def preprocess(  # type: ignore[override]
        self, inputs: dict[str, str], max_length: int = 384, doc_stride: int = 128
    ) -> dict[str, Any]:
        tokenizer = self.tokenizer
        assert tokenizer is not None
        limit = min(max_length, tokenizer.model_max_length)
        encoded = tokenizer(
            inputs["question"].lstrip(),
            inputs["context"],
            truncation="only_second",
            max_length=limit,
            stride=min(doc_stride, limit // 2),
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        offsets = [
            [
                tuple(span) if sequence == 1 else None
                for span, sequence in zip(
                    encoded["offset_mapping"][i].tolist(), encoded.sequence_ids(i), strict=True
                )
            ]
            for i in range(len(encoded["input_ids"]))
        ]
        names = [n for n in tokenizer.model_input_names if n in encoded]
        return {
            "model_inputs": {name: encoded[name] for name in names},
            "offsets": offsets,
            "context": inputs["context"],
        }

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        output = self.model(**inputs["model_inputs"])
        return {
            "start_logits": output.start_logits,
            "end_logits": output.end_logits,
            "offsets": inputs["offsets"],
            "context": inputs["context"],
        }

    def postprocess(  # type: ignore[override]
        self, outputs: dict[str, Any], n_best: int = 20, max_answer_length: int = 30
    ) -> dict[str, Any]:
        start = outputs["start_logits"].float().numpy()
        end = outputs["end_logits"].float().numpy()
        offsets = outputs["offsets"]
        (span,) = best_spans(start, end, [0] * len(offsets), offsets, 1, n_best, max_answer_length)
        context: str = outputs["context"]
        if span is None:
            return {"answer": "", "score": 0.0, "start": 0, "end": 0}
        # A probability-like score: the span's logit sum against every start/end pair.
        total = np.logaddexp.reduce(start.ravel()) + np.logaddexp.reduce(end.ravel())
        score, first, last = span
        return {
            "answer": context[first:last],
            "score": float(np.exp(score - total)),
            "start": first,
            "end": last,
        }


PIPELINE_REGISTRY.register_pipeline(
    TASK,
    pipeline_class=ExtractiveQuestionAnsweringPipeline,
    pt_model=AutoModelForQuestionAnswering,
    type="text",
)
