"""Continue training from a run (--init-from) and promote it only if it answers better (--promote-if-better)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
from conftest import FIXTURES, TINY_RECIPE, invoke

from gptf.train.run_files import file_sha256


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gptf(*args: str) -> str:
    result = invoke(list(args))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return result.output  # type: ignore[attr-defined]


def test_ab_retraining_refuses_a_worse_run_and_promotes_a_better_one(workdir: Path) -> None:
    train, val = read_rows(workdir / "tiny_train.jsonl"), read_rows(workdir / "tiny_val.jsonl")
    write_jsonl(workdir / "worse.jsonl", [{**r, "completion": "不知道。"} for r in train])  # every answer wrong
    write_jsonl(workdir / "better.jsonl", train + val)  # adds the facts the held-out questions ask about
    run_dir, best = workdir / "checkpoints" / "tiny", workdir / "checkpoints" / "tiny" / "best"

    gptf("run", str(TINY_RECIPE))  # the current default weights, no best/ yet
    original = file_sha256(run_dir / "model.safetensors")

    # A: worse data. The weights we start from become best/ first, and stay there.
    out = gptf(
        "run", str(TINY_RECIPE), "--init-from", str(run_dir), "--promote-if-better",
        "data.train=worse.jsonl", "training.max_steps=40", "training.lr=1e-2",
    )  # fmt: skip
    assert "A  current best" in out and "B  new run" in out and "kept the current best" in out
    decision = json.loads((run_dir / "promotion.json").read_text(encoding="utf-8"))
    assert decision["decision"] == "kept" and decision["best_seeded_from_init"] is True
    assert decision["new"]["char_f1"] <= decision["best_before"]["char_f1"]
    assert file_sha256(best / "model.safetensors") == original != file_sha256(run_dir / "model.safetensors")

    # B: better data, more steps, starting from the best weights.
    out = gptf(
        "run", str(TINY_RECIPE), "--init-from", str(best), "--promote-if-better",
        "data.train=better.jsonl", "training.max_steps=100", "training.lr=1e-2",
    )  # fmt: skip
    assert "promoted" in out
    decision = json.loads((run_dir / "promotion.json").read_text(encoding="utf-8"))
    assert decision["decision"] == "promoted" and decision["metric"] == "char_f1"
    assert decision["new"]["char_f1"] > decision["best_before"]["char_f1"]
    assert file_sha256(best / "model.safetensors") == file_sha256(run_dir / "model.safetensors")
    assert json.loads((best / "promotion.json").read_text(encoding="utf-8")) == decision
    history = [json.loads(line) for line in (run_dir / "promotions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [d["decision"] for d in history] == ["kept", "promoted"]
    assert json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["init_from"] == str(best)
    gptf("generate", "--ckpt", str(best), "--prompt", "什么是注意力机制？")  # best/ is a complete run


def test_first_promotion_without_a_best(workdir: Path) -> None:
    out = gptf("run", str(TINY_RECIPE), "--promote-if-better")
    assert "there was no best yet" in out
    assert (workdir / "checkpoints" / "tiny" / "best" / "model.safetensors").is_file()


def test_init_from_starts_from_the_old_weights(workdir: Path) -> None:
    gptf("run", str(TINY_RECIPE), "training.max_steps=30")
    old = workdir / "checkpoints" / "old"
    (workdir / "checkpoints" / "tiny").rename(old)
    gptf("run", str(TINY_RECIPE), "--init-from", str(old), "training.max_steps=1", "training.lr=1e-9")
    # a step this small changes nothing visible: the new run's weights are the old ones, not a fresh start
    new = safetensors.torch.load_file(str(workdir / "checkpoints" / "tiny" / "model.safetensors"))
    before = safetensors.torch.load_file(str(old / "model.safetensors"))
    assert new.keys() == before.keys()
    assert max(float((new[k] - before[k]).abs().max()) for k in new) < 1e-6


def test_init_from_copies_the_tokenizer_when_the_recipe_has_none_yet(tiny_run: Path, workdir: Path) -> None:
    out = gptf("run", str(TINY_RECIPE), "--init-from", str(tiny_run), "tokenizer.path=fresh/tok.json")
    assert "tokenizer: copied" in out
    assert (workdir / "fresh" / "tok.json").read_bytes() == (tiny_run / "tokenizer.json").read_bytes()


def test_init_from_refuses_another_tokenizer(tiny_run: Path, workdir: Path) -> None:
    from gptf.data import read_jsonl, training_texts
    from gptf.plugins.tokenization.byte_bpe import ByteLevelBPE

    other = ByteLevelBPE(280)
    other.train(training_texts(read_jsonl(FIXTURES / "tiny_train.jsonl")))
    other.save(workdir / "other.json")
    result = invoke(["run", str(TINY_RECIPE), "--init-from", str(tiny_run), "tokenizer.path=other.json"])
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "differs from the recipe's tokenizer.path other.json: 300 vs 280 tokens" in result.output  # type: ignore[attr-defined]
    rebuild = invoke(["run", str(TINY_RECIPE), "--init-from", str(tiny_run), "tokenizer.rebuild=true"])
    assert rebuild.exit_code == 2 and "tokenizer.rebuild=true" in rebuild.output  # type: ignore[attr-defined]


def test_init_from_refuses_another_model_shape(tiny_run: Path, workdir: Path) -> None:
    (workdir / "tokenizer.json").write_bytes((tiny_run / "tokenizer.json").read_bytes())
    result = invoke(["run", str(TINY_RECIPE), "--init-from", str(tiny_run), "model.n_embd=64"])
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "do not fit this recipe's model (model.n_embd: 32 there, 64 here)" in result.output  # type: ignore[attr-defined]


@pytest.mark.parametrize("missing", ["val", "file"])
def test_promotion_needs_a_held_out_file(workdir: Path, missing: str) -> None:
    override = "data.val=null" if missing == "val" else "data.val=gone.jsonl"
    result = invoke(["run", str(TINY_RECIPE), "--promote-if-better", override])
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "data.val" in result.output  # type: ignore[attr-defined]
