"""Entity-level scores for BIO-tagged sequences, as seqeval computes them in default mode.

seqeval is only a test dependency, so the chunking rules of
``seqeval.metrics.sequence_labeling.get_entities`` (CoNLL ``conlleval`` semantics) are
reimplemented here: an ``I-X`` that does not continue an ``X`` entity starts a new one, an
entity ends at a change of type, at ``B-``/``O``, or at the end of the sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["entities", "entity_type", "score_entities"]

Entity = tuple[str, int, int]


def entity_type(tag: str) -> str:
    """The entity type of a tag, ``"PER"`` for ``"B-PER"``; ``"_"`` when it has none."""
    return tag[1:].split("-", maxsplit=1)[-1] or "_"


def entities(sentences: Iterable[Sequence[str]]) -> set[Entity]:
    """The entities of tagged sentences, as ``(type, first, last)`` token positions.

    Positions count through all sentences with one separator position after each, as
    seqeval numbers them, so entities of different sentences never coincide.
    """
    found: set[Entity] = set()
    prev_tag, prev_type, begin = "O", "", 0
    position = 0
    for sentence in sentences:
        # The "O" after each sentence closes an entity that runs to the sentence end.
        for chunk in [*sentence, "O"]:
            tag, type_ = chunk[0], entity_type(chunk)
            if _ends(prev_tag, tag, prev_type, type_):
                found.add((prev_type, begin, position - 1))
            if _starts(prev_tag, tag, prev_type, type_):
                begin = position
            prev_tag, prev_type = tag, type_
            position += 1
    return found


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def score_entities(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], types: Iterable[str] = ()
) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity matches, plus F1 per type.

    Args:
        gold: The reference tags, one list per sentence.
        predicted: The predicted tags, with the same lengths.
        types: Entity types to report even if neither side has one (their F1 is 0).

    Returns:
        ``precision``, ``recall``, ``f1`` and ``f1_<type>`` for every type, each 0 when
        undefined (no predicted or no gold entities), as seqeval's ``zero_division`` default.
    """
    true_set = entities(gold)
    pred_set = entities(predicted)
    scores = dict(zip(("precision", "recall", "f1"), _prf(true_set, pred_set), strict=True))
    all_types = sorted({*types, *(e[0] for e in true_set), *(e[0] for e in pred_set)})
    for name in all_types:
        _, _, f1 = _prf(
            {e for e in true_set if e[0] == name}, {e for e in pred_set if e[0] == name}
        )
        scores[f"f1_{name}"] = f1
    return scores


def _prf(true_set: set[Entity], pred_set: set[Entity]) -> tuple[float, float, float]:
    hits = len(true_set & pred_set)
    precision = hits / len(pred_set) if pred_set else 0.0
    recall = hits / len(true_set) if true_set else 0.0
    # Same operation order as seqeval, so the float results are identical.
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
