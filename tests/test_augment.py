"""Prompt augmentation adds filler-word variants of the questions, never new answers."""

from __future__ import annotations

from gptf.data import Sample, augment_prompts


def test_variants_keep_answers_and_core_words() -> None:
    samples = [Sample("什么是RoPE？", "旋转位置编码。", "a:1"), Sample("水的化学式", "H2O。", "a:2")]
    out = augment_prompts(samples, copies=3, seed=0)
    assert out[:2] == samples
    assert 2 < len(out) <= 8
    for variant in out[2:]:
        original = samples[0] if "RoPE" in variant.prompt else samples[1]
        assert variant.completion == original.completion
        assert original.prompt.rstrip("？") in variant.prompt
    assert len({s.prompt for s in out}) == len(out)  # no duplicates


def test_seeded_and_off_by_default() -> None:
    samples = [Sample(f"问题{i}", "答。") for i in range(20)]
    assert augment_prompts(samples, 2, seed=1) == augment_prompts(samples, 2, seed=1)
    assert augment_prompts(samples, 2, seed=1) != augment_prompts(samples, 2, seed=2)
    assert augment_prompts(samples, 0, seed=1) == samples
