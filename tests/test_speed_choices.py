"""How gptf chooses precision and compilation on this machine: by its flags and a measurement
(gptf.build.speed). The hardware and the timings are faked here; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptf.build import speed
from gptf.recipe import recipe_from_dict

CPU = torch.device("cpu")


def fake_machine(monkeypatch: pytest.MonkeyPatch, flags: set[str], fp32_ms: float, bf16_ms: float) -> list[int]:
    probes: list[int] = []

    def probe(*args: object, **kwargs: object) -> tuple[float, float]:
        probes.append(1)
        return fp32_ms, bf16_ms

    monkeypatch.setattr(speed, "cpu_flags", lambda: flags)
    monkeypatch.setattr(speed, "probe_bf16", probe)
    return probes


def test_auto_is_fp32_without_native_bf16_and_does_not_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = fake_machine(monkeypatch, {"avx2", "fma"}, 10.0, 1.0)
    choice = speed.choose_precision("auto", CPU)
    assert choice.precision == "fp32" and "no native bf16" in choice.reason
    assert probes == []  # emulated bf16 is never even tried


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bf16_with_native_bf16_when_the_probe_is_faster(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    fake_machine(monkeypatch, {"avx2", flag}, 10.0, 6.0)
    choice = speed.choose_precision("auto", CPU)
    assert choice.precision == "bf16" and flag in choice.reason and "probe" in choice.reason


def test_auto_is_fp32_when_native_bf16_is_not_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_machine(monkeypatch, {"avx512_bf16"}, 10.0, 9.9)
    choice = speed.choose_precision("auto", CPU)
    assert choice.precision == "fp32" and "not faster" in choice.reason


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept(monkeypatch: pytest.MonkeyPatch, asked: str) -> None:
    probes = fake_machine(monkeypatch, set(), 1.0, 1.0)
    assert speed.choose_precision(asked, CPU).precision == asked
    assert probes == []


def test_the_real_probe_returns_two_timings() -> None:
    fp32_ms, bf16_ms = speed.probe_bf16(32, 16, 2, CPU, seconds=0.05)
    assert fp32_ms > 0 and bf16_ms > 0


def test_auto_is_a_recipe_value_and_the_trainer_uses_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from gptf.build.components import build_model, build_optimizer, build_scheduler, open_registry
    from gptf.data import Sample, tokenize_split
    from gptf.plugins.tokenization.char_level import CharTokenizer
    from gptf.train.trainer import Trainer

    fake_machine(monkeypatch, {"amx_bf16"}, 10.0, 5.0)
    recipe = recipe_from_dict(
        {
            "name": "p",
            "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "seq_len": 32},
            "training": {"precision": "auto"},
        }
    )
    samples = [Sample("你好", "世界")] * 4
    tok = CharTokenizer(300)
    tok.train(s.prompt + s.completion for s in samples)
    registry = open_registry()
    model = build_model(recipe, registry, tok.vocab_size)
    split = tokenize_split(samples, tok, 32, truncate=True, source="t")
    trainer = Trainer(
        config=recipe.training,
        model=model,
        train=split,
        val=None,
        pad_id=tok.pad_id,
        optimizer=build_optimizer(recipe, registry, model),
        schedule=build_scheduler(recipe, registry),
    )
    assert trainer.precision.precision == "bf16"


def test_run_json_records_the_precision(tiny_run: Path) -> None:
    info = json.loads((tiny_run / "run.json").read_text(encoding="utf-8"))
    assert info["precision"]["precision"] in ("fp32", "bf16") and info["precision"]["reason"]


def test_the_compiled_step_takes_at_most_four_batch_sizes() -> None:
    """Each batch size is a graph of its own (seconds to compile); after four, decoding stays eager."""
    step = speed.CompiledDecodeStep(torch.nn.Linear(2, 2))  # torch.compile is lazy: nothing compiles here
    step.graphs.update({(1, False), (8, False), (16, False), (32, False)})
    assert step.accepts(8) and not step.accepts(5)
    step.graphs.discard((32, False))
    assert step.accepts(5)
