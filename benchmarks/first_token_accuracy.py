"""Where does a wrong answer go wrong? Teacher-forced accuracy by answer position.

    python benchmarks/first_token_accuracy.py --ckpt checkpoints/teacher_3m
    python benchmarks/first_token_accuracy.py --ckpt RUN --data data/val.jsonl --data data/train.jsonl --limit 300

The reference answer is fed to the model token by token (teacher forcing) and, at each answer
position, we check whether the model's most likely next token is the reference's. Position 0 is
the first answer token: there the answer picks its concept. Later positions only have to continue
an answer already begun. The first-token accuracy is also split by whether the reference answer
begins with a word of the question (its first two characters appear in the prompt), because
copying a word from the question is much easier than recognising a concept described in other
words. Out-of-scope rows (the fixed decline answer) are left out of that split.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import torch
from bench_common import emit, machine, set_threads

from gptf.data import encode_sample, read_jsonl
from gptf.interfaces import DECLINE_TEXT
from gptf.run import load_run

POSITIONS = 6  # positions 0..4 on their own, 5 and later together


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a gptf run directory")
    parser.add_argument("--data", action="append", help="JSONL files (default: the run's val and train)")
    parser.add_argument("--limit", type=int, default=300, help="rows per file, a seeded random sample (0 = all)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    run = load_run(args.ckpt)
    model, tokenizer = run.model.eval(), run.tokenizer
    files = args.data or [p for p in (run.recipe.data.val, run.recipe.data.train) if p]
    results = {}
    for path in files:
        samples = read_jsonl(path)
        if args.limit and len(samples) > args.limit:
            samples = random.Random(0).sample(samples, args.limit)
        hits: dict[int, list[bool]] = defaultdict(list)
        by_copy: dict[str, list[bool]] = defaultdict(list)
        with torch.inference_mode():
            for sample in samples:
                encoded = encode_sample(tokenizer, sample)
                logits = model(torch.tensor([encoded.ids]))[0]
                start = encoded.answer_start
                predicted = logits[start - 1 : -1].argmax(-1).tolist()
                for position, (guess, target) in enumerate(zip(predicted, encoded.ids[start:], strict=True)):
                    hits[min(position, POSITIONS - 1)].append(guess == target)
                if sample.completion != DECLINE_TEXT:
                    copied = sample.completion[:2] in sample.prompt
                    by_copy["answer starts with a word of the question" if copied else "it does not"].append(
                        predicted[0] == encoded.ids[start]
                    )
        results[path] = {
            "rows": len(samples),
            "accuracy_by_position": {
                (str(p) if p < POSITIONS - 1 else f"{p}+"): round(sum(v) / len(v), 3) for p, v in sorted(hits.items())
            },
            "first_token_accuracy": {
                k: {"rows": len(v), "accuracy": round(sum(v) / len(v), 3)} for k, v in by_copy.items()
            },
        }
    emit(
        {
            "benchmark": "first_token_accuracy",
            "run": args.ckpt,
            "machine": machine(),
            "threads": threads,
            "files": results,
        }
    )


if __name__ == "__main__":
    main()
