"""The components added for ablations: sinusoidal and ALiBi positions, GELU and SwiGLU,
grouped-/multi-query attention, linear-decay and warmup-stable-decay schedules, the
character-level and SentencePiece tokenizers. (Shapes and causality of every registered
positional encoding and attention core are also covered by test_components.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_gptf

from gptf.build.components import build_model, count_parameters, open_registry
from gptf.errors import PluginError
from gptf.recipe import load_recipe, recipe_from_dict
from gptf.tools.plugin_check import CORPUS

REGISTRY = open_registry()
TEXTS = ["用户:什么是注意力机制？\n助手:注意力机制让模型关注最相关的词。", "用户:你好\n助手:你好！我是一个小模型。"] * 3
UNSEEN = "魑魅魍魉 😀 new words\n"


def model_with(n_kv_head: int, positional: str = "rope", attention: str = "sdpa", **extra: object) -> torch.nn.Module:
    recipe = recipe_from_dict(
        {
            "name": "probe",
            "model": {
                "n_layer": 2,
                "n_head": 4,
                "n_kv_head": n_kv_head,
                "n_embd": 32,
                "seq_len": 24,
                "positional": positional,
                "attention": attention,
                **extra,
            },
        }
    )
    torch.manual_seed(0)
    return build_model(recipe, REGISTRY, 50).eval()


# ------------------------------------------------------------------ grouped- and multi-query attention


@pytest.mark.parametrize("n_kv_head", [2, 1], ids=["gqa", "mqa"])
@pytest.mark.parametrize("positional", REGISTRY.names("positional"))
@pytest.mark.parametrize("attention", REGISTRY.names("attention"))
def test_grouped_query_attention_is_causal(n_kv_head: int, positional: str, attention: str) -> None:
    model = model_with(n_kv_head, positional, attention)
    ids = torch.randint(0, 50, (1, 14))
    changed = ids.clone()
    changed[0, 9:] = (changed[0, 9:] + 1) % 50
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (1, 14, 50)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("n_kv_head", [2, 1])
@pytest.mark.parametrize("positional", ["rope", "alibi"])
def test_grouped_query_explicit_and_sdpa_agree(n_kv_head: int, positional: str) -> None:
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        explicit = model_with(n_kv_head, positional, "explicit")(ids)
        fused = model_with(n_kv_head, positional, "sdpa")(ids)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)


def test_fewer_kv_heads_means_fewer_parameters() -> None:
    mha, gqa, mqa = (count_parameters(model_with(n)) for n in (4, 2, 1))
    kv_per_head = 2 * (32 * 8 + 8)  # K and V projections of one head: weights and biases
    assert mha - gqa == 2 * 2 * kv_per_head  # 2 layers x 2 heads fewer
    assert mha - mqa == 2 * 3 * kv_per_head


@pytest.mark.parametrize("positional", REGISTRY.names("positional"))
@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_kv_cache_matches_full_forward(positional: str, n_kv_head: int) -> None:
    model = model_with(n_kv_head, positional)
    ids = torch.randint(0, 50, (1, 12))

    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1)
        parts = [model(ids[:, :5], cache)] + [model(ids[:, t : t + 1], cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_gqa_and_mqa_recipes_shrink_the_teacher() -> None:
    counts = {}
    for name in ("gqa", "mqa"):
        loaded = load_recipe(ROOT / "recipes" / "ablations" / f"{name}.yaml")
        counts[name] = count_parameters(build_model(loaded.recipe, REGISTRY, 824))
    assert counts == {"gqa": 3_105_024, "mqa": 2_973_440}


# ------------------------------------------------------------------ positions


def test_alibi_slopes_follow_the_paper() -> None:
    from gptf.plugins.positional.alibi import alibi_slopes

    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    six = alibi_slopes(6)
    assert len(six) == 6 and len(set(six.tolist())) == 6 and bool((six > 0).all())


def test_alibi_bias_penalises_distance_linearly() -> None:
    alibi = REGISTRY.build("positional", "alibi", {}, "p", n_embd=16, n_head=2, head_dim=8, seq_len=16)
    bias = alibi.score_bias(torch.arange(3, 6), torch.arange(0, 6))  # queries 3..5 (cache), keys 0..5
    assert bias.shape == (2, 3, 6)
    assert torch.all(bias[:, 0, 3] == 0)  # a token and itself: no penalty
    torch.testing.assert_close(bias[0, 2, :6], -0.0625 * torch.tensor([5.0, 4, 3, 2, 1, 0]))  # slope 2^-4
    assert sum(p.numel() for p in alibi.parameters()) == 0


def test_sinusoidal_table_is_fixed_and_scaled() -> None:
    sinus = REGISTRY.build("positional", "sinusoidal", {"scale": 1.0}, "p", n_embd=6, n_head=2, head_dim=3, seq_len=8)
    x = torch.zeros(1, 8, 6)
    table = sinus.embed(x, torch.arange(8))[0]
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))  # sin 0, cos 0
    assert table[3, 0].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item())
    assert sum(p.numel() for p in sinus.parameters()) == 0 and not sinus.state_dict()  # nothing to learn or save
    odd = REGISTRY.build("positional", "sinusoidal", {}, "p", n_embd=7, n_head=1, head_dim=7, seq_len=4)
    assert odd.embed(torch.zeros(1, 4, 7), torch.arange(4)).shape == (1, 4, 7)


# ------------------------------------------------------------------ feed-forward


def test_gelu_has_the_silu_parameter_count() -> None:
    gelu = REGISTRY.build("mlp", "gelu", {}, "m", dim=16, hidden_dim=64, bias=True)
    assert sum(p.numel() for p in gelu.parameters()) == 8 * 16 * 16 + 5 * 16
    with pytest.raises(PluginError, match="approximate must be"):
        REGISTRY.build("mlp", "gelu", {"approximate": "fast"}, "m", dim=16, hidden_dim=64, bias=True)


def test_swiglu_hidden_size_and_parameter_count() -> None:
    from gptf.plugins.mlp.swiglu import swiglu_hidden_size

    assert swiglu_hidden_size(1024) == 688  # 2/3 * 1024 = 682.7, up to a multiple of 8
    assert swiglu_hidden_size(1024, multiple_of=64) == 704
    swiglu = REGISTRY.build("mlp", "swiglu", {}, "m", dim=256, hidden_dim=1024, bias=True)
    assert sum(p.numel() for p in swiglu.parameters()) == 3 * 256 * 688 + 2 * 688 + 256 == 530_016
    x = torch.randn(2, 3, 256)
    assert swiglu(x).shape == x.shape


def test_inspect_reports_the_swiglu_count(tmp_path: Path) -> None:
    result = run_gptf(["inspect", str(ROOT / "recipes" / "ablations" / "swiglu.yaml")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "parameters: 3,385,984" in result.stdout  # the teacher + 4 x (530,016 - 525,568)
    assert "swiglu" in result.stdout


# ------------------------------------------------------------------ schedulers


def test_linear_decay_shape() -> None:
    schedule = REGISTRY.build("scheduler", "linear_decay", {"warmup_steps": 10}, "s", max_steps=110)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)  # halfway down from 1.0 to 0.1
    assert schedule(110) == pytest.approx(0.1)


def test_warmup_stable_decay_shape() -> None:
    schedule = REGISTRY.build("scheduler", "warmup_stable_decay", {}, "s", max_steps=100)
    assert schedule(0) == pytest.approx(0.2)  # 5 warm-up steps
    assert [schedule(s) for s in (5, 40, 79, 80)] == [1.0, 1.0, 1.0, 1.0]  # flat until the last 20%
    assert schedule(90) == pytest.approx(0.55)
    assert schedule(100) == pytest.approx(0.1)
    with pytest.raises(PluginError, match="warmup_ratio \\+ decay_ratio"):
        REGISTRY.build("scheduler", "warmup_stable_decay", {"decay_ratio": 0.99}, "s", max_steps=100)


# ------------------------------------------------------------------ tokenizers


def new_tokenizer(name: str, vocab_size: int, **params: object) -> object:
    return REGISTRY.build("tokenizer", name, params, "tokenizer.type", vocab_size=vocab_size)


def test_char_tokenizer_one_token_per_character_with_byte_fallback(tmp_path: Path) -> None:
    tokenizer = new_tokenizer("char", 300)
    tokenizer.train(iter(TEXTS))
    assert tokenizer.vocab_size == 300  # padded with reserved ids: exactly what the recipe asks
    text = "注意力机制"
    assert len(tokenizer.encode(text)) == 5
    for sample in (TEXTS[0], UNSEEN):
        ids = tokenizer.encode(sample)
        assert tokenizer.decode(ids) == sample
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == sample.encode("utf-8")
    assert len(tokenizer.encode("魑")) == 3  # unseen: its 3 UTF-8 bytes
    assert tokenizer.unk_id not in tokenizer.encode(UNSEEN)
    path = tmp_path / "char.json"
    tokenizer.save(path)
    again = new_tokenizer("char", 300)
    again.load(path)
    assert again.encode(UNSEEN + TEXTS[1]) == tokenizer.encode(UNSEEN + TEXTS[1])
    assert (again.bos_id, again.eos_id, again.pad_id, again.unk_id) == (0, 1, 2, 3)


def test_char_tokenizer_keeps_the_most_frequent_characters() -> None:
    tokenizer = new_tokenizer("char", 4 + 256 + 3)  # room for 3 characters
    tokenizer.train(iter(["aaaa bbb cc d"]))
    assert tokenizer.tokens[260:] == ["a", " ", "b"]  # a x4, then space and b x3 (ties: code point order)
    assert tokenizer.encode("cab") == [tokenizer.byte_ids[ord("c")], 260, 262]  # c only as its byte


def test_char_tokenizer_without_byte_fallback_uses_unk() -> None:
    tokenizer = new_tokenizer("char", 10, byte_fallback=False)
    tokenizer.train(iter(["abc"]))
    assert tokenizer.encode("abz") == [tokenizer.encode("a")[0], tokenizer.encode("b")[0], tokenizer.unk_id]
    with pytest.raises(PluginError, match="too small"):
        new_tokenizer("char", 100)


def test_sentencepiece_trains_and_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("sentencepiece")
    tokenizer = new_tokenizer("sentencepiece", 400)
    tokenizer.train(iter(CORPUS))  # the plugin check's texts: enough for 400 pieces
    assert tokenizer.vocab_size == 400
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id) == (0, 1, 2, 3)
    for sample in (TEXTS[0], UNSEEN):
        ids = tokenizer.encode(sample)
        assert tokenizer.decode(ids) == sample  # full-width ？ kept, unseen characters as bytes
        assert b"".join(tokenizer.token_bytes(i) for i in ids) == sample.encode("utf-8")
    path = tmp_path / "sp.json"
    tokenizer.save(path)
    again = new_tokenizer("sentencepiece", 400)
    again.load(path)
    assert again.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])


def test_sentencepiece_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # as if it were not installed
    with pytest.raises(PluginError, match=r'pip install "gptf\[sentencepiece\]"'):
        new_tokenizer("sentencepiece", 400)


def test_sentencepiece_is_an_optional_extra_in_pyproject() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'sentencepiece = ["sentencepiece' in text
