"""Questions in traditional characters: does a trained run answer them as it answers simplified ones?

    python benchmarks/traditional_questions.py --ckpt checkpoints/teacher_3m     # ~40 s on 2 cores

The val and test questions of data/ are written again in Taiwan's traditional script by OpenCC
(``s2twp``: characters *and* Taiwan's words, 软件 -> 軟體, as a student in Taipei would type them), the
answers left as they are; then ``gptf eval`` scores the run on both versions side by side. gptf asks
the model every question in simplified characters (``gptf.data.normalize_prompt``, OpenCC's ``hk2s``:
characters only), so what is left of the gap is the words that differ between the two places.
Prints one JSON object: per split, exact match, char F1, right concept on taught topics, and how many
out-of-scope questions were declined.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import opencc
from bench_common import ROOT, emit


def traditional_copy(source: Path, target: Path) -> None:
    """``source`` with every prompt in Taiwan's traditional script (answers and other fields unchanged)."""
    to_traditional = opencc.OpenCC("s2twp")
    with source.open(encoding="utf-8") as lines, target.open("w", encoding="utf-8") as out:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                row["prompt"] = to_traditional.convert(row["prompt"])
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="checkpoints/teacher_3m", help="a finished run (default: the teacher's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for split in ("val", "test"):
            simplified = ROOT / "data" / f"{split}.jsonl"
            traditional = Path(folder) / f"{split}_traditional.jsonl"
            traditional_copy(simplified, traditional)
            files += [simplified, traditional]
        scores = Path(folder) / "scores.json"
        command = ["gptf", "eval", "--ckpt", args.ckpt, "--out", str(scores)]
        for path in files:
            command += ["--data", str(path)]
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        if finished.returncode != 0:
            sys.exit(finished.stderr.strip() or f"gptf eval exited with {finished.returncode}")
        splits = json.loads(scores.read_text(encoding="utf-8"))["splits"]
    emit(
        {
            "benchmark": "traditional_questions",
            "command": " ".join(["python benchmarks/traditional_questions.py", *sys.argv[1:]]),
            "run": args.ckpt,
            "splits": {
                s["name"]: {
                    "questions": s["evaluated"],
                    "exact_match": s["exact_match"],
                    "char_f1": s["char_f1"],
                    "right_concept_on_taught_topics": s["in_scope_right_concept"],
                    "out_of_scope_declined": s["out_of_scope_declined"],
                }
                for s in splits
            },
        }
    )


if __name__ == "__main__":
    main()
