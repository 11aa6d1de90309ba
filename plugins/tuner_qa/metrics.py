"""SQuAD v1.1 exact match and F1, as the official ``evaluate-v1.1.py`` computes them."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["exact_match", "normalize_answer", "squad_scores", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 over the bags of normalised words; 0.0 when they share none (even both empty)."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(reference).split()
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision = shared / len(predicted)
    recall = shared / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Mean exact match and F1, each the best over a question's reference answers.

    Args:
        predictions: One answer text per question.
        references: The reference answers of each question (at least one each).

    Returns:
        ``exact_match`` and ``f1`` as fractions in 0..1 (the official script reports
        percentages, 100 times these).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    pairs = list(zip(predictions, references, strict=True))
    em = sum(max(exact_match(p, r) for r in refs) for p, refs in pairs)
    f1 = sum(max(token_f1(p, r) for r in refs) for p, refs in pairs)
    return {"exact_match": em / len(predictions), "f1": f1 / len(predictions)}
