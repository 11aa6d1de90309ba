"""Score an exported NER model on the WNUT-17 dev set with seqeval, independently of tuner.

The trial's reported F1 must equal what a user gets from the exported folder:

    python bench/check_ner_export.py --model bench/results/studies/bench-wnut17/best
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/results/studies/bench-wnut17/best")
    parser.add_argument("--dev", default="../shared/data/ner/dev.jsonl")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    import torch
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(args.model).eval()
    id2label = model.config.id2label
    gold: list[list[str]] = []
    predicted: list[list[str]] = []
    for line in Path(args.dev).read_text().splitlines():
        row = json.loads(line)
        words = row["tokens"]
        encoded = tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=args.max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            ids = model(**encoded).logits[0].argmax(-1).tolist()
        # A word's tag is its first sub-token's, as CoNLL scoring of sub-word models does.
        tags = ["O"] * len(words)
        seen: set[int] = set()
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None and word not in seen:
                seen.add(word)
                tags[word] = id2label[ids[position]]
        gold.append(list(row["ner_tags"]))
        predicted.append(tags)
    score = f1_score(gold, predicted)
    print(f"seqeval F1 of {args.model} on {args.dev}: {score:.4f}")
    print(json.dumps({"model": args.model, "seqeval_f1": round(float(score), 4)}))


if __name__ == "__main__":
    main()
