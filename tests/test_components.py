"""Each built-in component: shapes, and causality for attention + positions."""

from __future__ import annotations

import pytest
import torch

from gptf.build.components import open_registry
from gptf.errors import PluginError

REGISTRY = open_registry()
POSITIONALS = REGISTRY.names("positional")
ATTENTIONS = REGISTRY.names("attention")


def tiny_model(positional: str, attention: str, norm: str = "rmsnorm", mlp: str = "silu") -> torch.nn.Module:
    from gptf.build.components import build_model
    from gptf.recipe import recipe_from_dict

    recipe = recipe_from_dict(
        {
            "name": "probe",
            "model": {
                "n_layer": 2,
                "n_head": 2,
                "n_embd": 16,
                "seq_len": 16,
                "positional": positional,
                "attention": attention,
                "norm": norm,
                "mlp": mlp,
            },
        }
    )
    torch.manual_seed(0)
    return build_model(recipe, REGISTRY, 50).eval()


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_changing_a_future_token_never_changes_an_earlier_logit(positional: str, attention: str) -> None:
    model = tiny_model(positional, attention)
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 50
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (1, 12, 50)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_explicit_and_sdpa_attention_agree(positional: str) -> None:
    explicit, fused = tiny_model(positional, "explicit"), tiny_model(positional, "sdpa")
    ids = torch.randint(0, 50, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(explicit(ids), fused(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", REGISTRY.names("norm"))
def test_norms_keep_shape_and_normalise(norm: str) -> None:
    layer = REGISTRY.build("norm", norm, {}, "model.norm", dim=32)
    x = torch.randn(2, 5, 32) * 7 + 3
    y = layer(x)
    assert y.shape == x.shape
    assert y.pow(2).mean(-1).sqrt().mean().item() == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("mlp", REGISTRY.names("mlp"))
def test_mlps_keep_shape(mlp: str) -> None:
    block = REGISTRY.build("mlp", mlp, {}, "model.mlp", dim=16, hidden_dim=64, bias=True)
    assert block(torch.randn(2, 3, 16)).shape == (2, 3, 16)


def test_silu_mlp_parameter_count() -> None:
    block = REGISTRY.build("mlp", "silu", {}, "model.mlp", dim=16, hidden_dim=64, bias=True)
    assert sum(p.numel() for p in block.parameters()) == 8 * 16 * 16 + 5 * 16


def test_rope_rejects_odd_head_size() -> None:
    with pytest.raises(PluginError, match="head size must be even"):
        REGISTRY.build("positional", "rope", {}, "model.positional", n_embd=12, n_head=4, head_dim=3, seq_len=8)


def test_rope_preserves_norms_and_depends_on_relative_position() -> None:
    rope = REGISTRY.build("positional", "rope", {}, "model.positional", n_embd=16, n_head=1, head_dim=16, seq_len=32)
    q = torch.randn(1, 1, 1, 16)
    k = torch.randn(1, 1, 1, 16)

    def score(i: int, j: int) -> float:
        qi, _ = rope.rotate(q, q, torch.tensor([i]))
        _, kj = rope.rotate(k, k, torch.tensor([j]))
        return float((qi * kj).sum())

    rotated, _ = rope.rotate(q, q, torch.tensor([5]))
    assert rotated.norm().item() == pytest.approx(q.norm().item(), rel=1e-5)
    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-4)


@pytest.mark.parametrize("name", REGISTRY.names("scheduler"))
def test_schedulers_stay_positive_and_bounded(name: str) -> None:
    schedule = REGISTRY.build("scheduler", name, {}, "training.scheduler", max_steps=100)
    values = [schedule(s) for s in range(100)]
    assert all(0 < v <= 1.0 + 1e-9 for v in values)


def test_warmup_cosine_shape() -> None:
    schedule = REGISTRY.build(
        "scheduler", "warmup_cosine", {"warmup_steps": 10, "min_lr_ratio": 0.1}, "s", max_steps=110
    )
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1)


def test_dynamic_int8_roundtrip_is_exact() -> None:
    model = tiny_model("rope", "sdpa")
    quantizer = REGISTRY.build("quantizer", "dynamic_int8", {}, "quantizer")
    quantized = quantizer.quantize(model)
    tensors = quantizer.state_tensors(quantized)
    reloaded = quantizer.load(tiny_model("rope", "sdpa"), tensors)
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids), reloaded(ids))
        assert (quantized(ids) - model(ids)).abs().max() < 0.05
    int8 = [t for k, t in tensors.items() if k.endswith("weight_int8")]
    assert int8 and all(t.dtype == torch.int8 for t in int8)
