"""Turn start/end logits over context windows into one answer text per question."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Offsets", "Span", "best_answers", "best_spans"]

# Character span of each token of a window; None for tokens outside the context.
Offsets = Sequence[tuple[int, int] | Sequence[int] | None]
# The best answer of a question: (score, first character, end character) in its context.
Span = tuple[float, int, int]


def best_answers(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    feature_examples: Sequence[int],
    feature_offsets: Sequence[Offsets],
    contexts: Sequence[str],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[str]:
    """The text of each question's best span; see :func:`best_spans`, ``""`` where none."""
    spans = best_spans(
        start_logits,
        end_logits,
        feature_examples,
        feature_offsets,
        len(contexts),
        n_best,
        max_answer_length,
    )
    return [
        contexts[i][span[1] : span[2]] if span is not None else "" for i, span in enumerate(spans)
    ]


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    feature_examples: Sequence[int],
    feature_offsets: Sequence[Offsets],
    questions: int,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> list[Span | None]:
    """Pick the highest-scoring span of each question over all of its windows.

    A span's score is its start logit plus its end logit. Only context tokens are
    candidates: in each window the ``n_best`` best starts and ``n_best`` best ends among
    them are paired, and pairs that end before they start or are longer than
    ``max_answer_length`` tokens are skipped.

    Args:
        start_logits: ``(windows, tokens)``; rows may be padded past a window's length.
        end_logits: Same shape as ``start_logits``.
        feature_examples: For each window, the index of its question in ``contexts``.
        feature_offsets: For each window, the character span of each token, ``None`` outside
            the context.
        questions: How many questions the windows belong to.
        n_best: Starts and ends considered per window.
        max_answer_length: The longest answer, in tokens.

    Returns:
        Per question, ``(score, start, end)`` in characters of its context, or ``None`` when
        no window has a valid span.
    """
    import numpy as np

    if not len(start_logits) == len(end_logits) == len(feature_examples) == len(feature_offsets):
        raise ValueError(
            f"{len(start_logits)} start and {len(end_logits)} end logit rows for "
            f"{len(feature_offsets)} windows; the predictions do not match the evaluation data"
        )
    best: list[Span | None] = [None] * questions
    for row, (example, offsets) in enumerate(zip(feature_examples, feature_offsets, strict=True)):
        width = min(len(offsets), len(start_logits[row]))
        candidates = np.array([i for i in range(width) if offsets[i] is not None], dtype=np.int64)
        if candidates.size == 0:
            continue
        starts_row = np.asarray(start_logits[row], dtype=np.float64)
        ends_row = np.asarray(end_logits[row], dtype=np.float64)
        # Stable sorts on negated logits: ties go to the earlier token.
        starts = candidates[np.argsort(-starts_row[candidates], kind="stable")[:n_best]]
        ends = candidates[np.argsort(-ends_row[candidates], kind="stable")[:n_best]]
        for start in starts:
            for end in ends:
                if end < start or end - start + 1 > max_answer_length:
                    continue
                score = float(starts_row[start] + ends_row[end])
                current = best[example]
                if current is None or score > current[0]:
                    first, last = offsets[start], offsets[end]
                    assert first is not None and last is not None
                    best[example] = (score, int(first[0]), int(last[1]))
    return best
