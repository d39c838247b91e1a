"""Speed-ups that must not change results: each fast path is checked against the plain one.

* gradient accumulation: a batch of 16 as 4 micro-batches of 4 gives the gradient of 16 at once;
* right-padding to the batch's longest row: a sample's loss does not depend on its neighbours;
* length bucketing only regroups the samples of a window of batches;
* the KV cache: greedy answers with the cache equal those without it, token for token;
* the rewritten hot paths (RoPE rotation, RMSNorm, score bias once per forward) equal the
  formulas they replace.
No timing here: speed is measured by ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, ROOT, TINY_RECIPE, copy_tiny_data

from gptf.build.components import build_model, build_optimizer, build_scheduler, open_registry
from gptf.data import IGNORE, Sample, pad_batch, sample_stream, step_samples, tokenize_split
from gptf.generate import Generator, SamplingSettings
from gptf.plugins.tokenization.byte_bpe import ByteLevelBPE
from gptf.recipe import recipe_from_dict
from gptf.train.trainer import Trainer

REGISTRY = open_registry()
POSITIONALS = REGISTRY.names("positional")
SAMPLES = [
    Sample(r["prompt"], r["completion"])
    for r in map(json.loads, (FIXTURES / "tiny_train.jsonl").read_text(encoding="utf-8").splitlines())
]


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def tokenizer() -> ByteLevelBPE:
    tok = ByteLevelBPE(300)
    tok.train(s.prompt + s.completion for s in SAMPLES)
    return tok


def small_recipe(**training: object) -> object:
    model = {"n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 64}
    return recipe_from_dict({"name": "probe", "model": model, "training": {"threads": 1, **training}})


def make_trainer(tokenizer: ByteLevelBPE, **training: object) -> Trainer:
    recipe = small_recipe(**training)
    torch.manual_seed(0)
    model = build_model(recipe, REGISTRY, tokenizer.vocab_size)
    train = tokenize_split(SAMPLES, tokenizer, 64, truncate=True, source="tiny")
    return Trainer(
        config=recipe.training,
        model=model,
        train=train,
        val=None,
        pad_id=tokenizer.pad_id,
        optimizer=build_optimizer(recipe, REGISTRY, model),
        schedule=build_scheduler(recipe, REGISTRY),
    )


def test_gradient_accumulation_equals_the_full_batch(tokenizer: ByteLevelBPE) -> None:
    """16 samples as 4 micro-batches of 4 and as 1 of 16: the same loss and gradients (fp32)."""
    settings = {"batch_size": 16, "grad_clip": 0.0, "max_steps": 10}
    accumulated = make_trainer(tokenizer, micro_batch=4, **settings)
    whole = make_trainer(tokenizer, micro_batch=16, **settings)
    a, b = accumulated.train_step(), whole.train_step()
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for (name, p), q in zip(accumulated.model.named_parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=f"gradient of {name}")


def test_accumulation_is_not_a_mean_of_micro_batch_means(tokenizer: ByteLevelBPE) -> None:
    """The test above can fail: the original's mean-of-means gives a different gradient."""
    trainer = make_trainer(tokenizer, batch_size=16, micro_batch=4, grad_clip=0.0)
    trainer.train_step()
    expected = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad()
    split = trainer.train_split
    chunks = [list(range(i, i + 4)) for i in range(0, 16, 4)]
    for chunk in chunks:
        x, y = pad_batch([split.inputs[i] for i in chunk], [split.targets[i] for i in chunk], trainer.pad_id)
        logits = trainer.model(x)
        (F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE) / len(chunks)).backward()
    assert any(not torch.allclose(p.grad, expected[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.parametrize("positional", POSITIONALS)
def test_padding_does_not_change_a_samples_loss(tokenizer: ByteLevelBPE, positional: str) -> None:
    """Right-padding to the longest row: each row's loss equals the loss of that sample alone."""
    recipe = recipe_from_dict(
        {"name": "probe", "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 64, "positional": positional}}
    )
    torch.manual_seed(0)
    model = build_model(recipe, REGISTRY, tokenizer.vocab_size).eval()
    split = tokenize_split(SAMPLES[:6], tokenizer, 64, truncate=True, source="tiny")
    x, y = pad_batch(split.inputs, split.targets, tokenizer.pad_id)
    assert len({len(t) for t in split.inputs}) > 1, "the rows must differ in length for this test"
    with torch.no_grad():
        batched = F.cross_entropy(model(x).transpose(1, 2), y, ignore_index=IGNORE, reduction="none").sum(1)
        for row, (xi, yi) in enumerate(zip(split.inputs, split.targets, strict=True)):
            alone = F.cross_entropy(model(xi[None])[0], yi, ignore_index=IGNORE, reduction="sum")
            torch.testing.assert_close(batched[row], alone, rtol=1e-5, atol=1e-5)


def test_width_rounded_to_a_multiple(tokenizer: ByteLevelBPE) -> None:
    """Rounding the width up (as bf16 training does) adds only ignored padding, never past the limit."""
    split = tokenize_split(SAMPLES[:6], tokenizer, 64, truncate=True, source="tiny")
    x, y = pad_batch(split.inputs, split.targets, tokenizer.pad_id)
    x16, y16 = pad_batch(split.inputs, split.targets, tokenizer.pad_id, multiple=16, max_width=64)
    width = x.size(1)
    assert x16.size(1) == min(-(-width // 16) * 16, 64) and x16.size(1) % 16 == 0
    assert torch.equal(x16[:, :width], x) and torch.equal(y16[:, :width], y)
    assert (x16[:, width:] == tokenizer.pad_id).all() and (y16[:, width:] == IGNORE).all()
    capped, _ = pad_batch(split.inputs, split.targets, tokenizer.pad_id, multiple=1000, max_width=width + 1)
    assert capped.size(1) == width + 1
    recipe = small_recipe()
    torch.manual_seed(0)
    model = build_model(recipe, REGISTRY, tokenizer.vocab_size).eval()
    with torch.no_grad():
        plain = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        rounded = F.cross_entropy(model(x16).flatten(0, 1), y16.flatten(), ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(rounded, plain, rtol=1e-5, atol=1e-5)


def test_only_bf16_on_cpu_rounds_widths(tokenizer: ByteLevelBPE) -> None:
    assert make_trainer(tokenizer, precision="fp32").pad_multiple == 1
    assert make_trainer(tokenizer, precision="bf16").pad_multiple == 16


def tiny_model(positional: str, vocab_size: int, seq_len: int = 64) -> torch.nn.Module:
    recipe = recipe_from_dict(
        {
            "name": "probe",
            "model": {"n_layer": 2, "n_head": 4, "n_embd": 32, "seq_len": seq_len, "positional": positional},
        }
    )
    torch.manual_seed(1)
    return build_model(recipe, REGISTRY, vocab_size).eval()


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_logits_equal_full_recompute(positional: str) -> None:
    """A prompt, then one token at a time through the cache: the logits of a full forward."""
    model = tiny_model(positional, 50)
    ids = torch.randint(0, 50, (1, 30), generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1)
        parts = [model(ids[:, :10], cache)] + [model(ids[:, t : t + 1], cache) for t in range(10, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_greedy_answer_with_cache_equals_without(tokenizer: ByteLevelBPE, positional: str) -> None:
    model = tiny_model(positional, tokenizer.vocab_size)
    with torch.no_grad():  # larger weights: clear winners at every step, so the test is about the cache
        for p in model.parameters():
            p.mul_(8.0 if p.dim() >= 2 else 1.0)
    settings = SamplingSettings(max_new_tokens=40, temperature=0.0)
    for prompt in ("什么是注意力机制？", "解释RoPE"):
        cached = Generator(model, tokenizer, use_cache=True, draft=False).generate(prompt, settings)
        recomputed = Generator(model, tokenizer, use_cache=False).generate(prompt, settings)
        assert len(cached.tokens) > 5
        assert [t.token_id for t in cached.tokens] == [t.token_id for t in recomputed.tokens]
        assert cached.stop_reason == recomputed.stop_reason


@pytest.mark.parametrize("positional", POSITIONALS)
def test_fixed_shape_decode_step_equals_the_cached_forward(positional: str) -> None:
    """decode_step (the whole cache, masked; what torch.compile compiles) gives the logits of
    forward(ids, cache), for one new token at a time and for a token with guesses after it."""
    model = tiny_model(positional, 50)
    ids = torch.randint(0, 50, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain, fixed = model.new_cache(2), model.new_cache(2)
        model(ids[:, :10], plain), model(ids[:, :10], fixed)
        t = 10
        for width in (1, 3, 1, 5, 2, 1, 4, 1, 2):  # 20 tokens, fed 1 or several at a time
            expected = model(ids[:, t : t + width], plain)
            at = torch.arange(fixed.length, fixed.length + width)
            got = model.decode_step(ids[:, t : t + width], at, fixed.layer_keys, fixed.layer_values)
            fixed.advance(width)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            t += width
        assert t == 30
        # the buffers hold the same keys and values as the cache that grew token by token
        torch.testing.assert_close(fixed.keys[:, :, :, :30], plain.keys[:, :, :, :30], rtol=1e-5, atol=1e-5)


def strong_model(positional: str, vocab_size: int) -> torch.nn.Module:
    model = tiny_model(positional, vocab_size)
    with torch.no_grad():  # larger weights: clear winners at every step, so the test is about the decoding path
        for p in model.parameters():
            p.mul_(8.0 if p.dim() >= 2 else 1.0)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("positional", ["rope", "learned", "alibi", "none"])
def test_compiled_decoding_is_token_identical(tokenizer: ByteLevelBPE, positional: str) -> None:
    """Greedy answers through the compiled decode step (torch.compile) equal the eager ones, and
    one graph serves every token (no recompiling as the answer grows)."""
    model = strong_model(positional, tokenizer.vocab_size)
    settings = SamplingSettings(max_new_tokens=30, temperature=0.0)
    compiled = Generator(model, tokenizer, compile_decode=True, draft=False)  # the plain loop, compiled
    for prompt in ("什么是注意力机制？", "解释RoPE"):
        eager = Generator(model, tokenizer, draft=False).generate(prompt, settings)
        fast = compiled.generate(prompt, settings)
        assert len(eager.tokens) > 5
        assert [t.token_id for t in fast.tokens] == [t.token_id for t in eager.tokens]
        assert fast.stop_reason == eager.stop_reason
    assert compiled.compiled_step is not None and compiled.compiled_step.compiled_batches == {1}


@pytest.mark.slow
def test_the_compiled_step_takes_any_number_of_guesses_in_one_graph() -> None:
    """One compiled graph for a single token and one for a token with any number of guesses: the
    logits equal the eager forward's, and 2, 3, 7 or 12 tokens at a time compile nothing new."""
    from torch._dynamo.utils import counters

    from gptf.build.speed import CompiledDecodeStep

    model = tiny_model("rope", 50)
    step = CompiledDecodeStep(model)
    ids = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, fixed = model.new_cache(1), model.new_cache(1)
        model(ids[:, :10], plain), model(ids[:, :10], fixed)
        graphs_before = counters["stats"]["unique_graphs"]
        t = 10
        for width in (1, 2, 3, 1, 7, 12, 1, 2):
            expected = model(ids[:, t : t + width], plain)
            at = torch.arange(fixed.length, fixed.length + width)
            got = step(ids[:, t : t + width], at, fixed.layer_keys, fixed.layer_values)
            fixed.advance(width)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            t += width
    assert counters["stats"]["unique_graphs"] - graphs_before == 2
    assert step.graphs == {(1, False), (1, True)} and step.compile_s > 0


def test_measures_are_recorded_only_when_asked(tokenizer: ByteLevelBPE) -> None:
    model = strong_model("rope", tokenizer.vocab_size)
    settings = SamplingSettings(max_new_tokens=10, temperature=0.0)
    (plain,) = Generator(model, tokenizer).decode([Generator(model, tokenizer).prompt_ids("你好")], settings)
    (measured,) = Generator(model, tokenizer, measures=True).decode(
        [Generator(model, tokenizer).prompt_ids("你好")], settings
    )
    assert plain.logprobs == [] and len(measured.logprobs) == len(measured.state.new_ids) > 0
    assert plain.state.new_ids == measured.state.new_ids


def test_rope_rotation_equals_the_two_halves_formula() -> None:
    """The fast rotation is the textbook one, bit for bit, at any positions."""
    rope = REGISTRY.build("positional", "rope", {}, "model.positional", n_embd=64, n_head=4, head_dim=16, seq_len=40)
    q, k = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16)
    positions = torch.arange(20, 27)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, 16, 2).float() / 16)
    angles = torch.outer(torch.arange(40).float(), inv_freq)[positions]  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()

    def textbook(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    fast_q, fast_k = rope.rotate(q, k, positions)
    assert torch.equal(fast_q, textbook(q))
    assert torch.equal(fast_k, textbook(k))


def test_rmsnorm_equals_its_formula() -> None:
    norm = REGISTRY.build("norm", "rmsnorm", {}, "model.norm", dim=32)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(32))
    x = torch.randn(3, 5, 32)
    expected = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + norm.eps) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-6, atol=1e-6)


def test_naive_reference_has_the_teacher_parameter_count() -> None:
    """The benchmarks' stand-in for the original release is the same size as gptf's teacher."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from naive_reference import NaiveConfig, NaiveGPT

    assert sum(p.numel() for p in NaiveGPT(NaiveConfig(vocab_size=824)).parameters()) == 3_368_192


def test_the_gemm_floor_does_the_teacher_steps_matrix_products() -> None:
    """benchmarks/train_speed.py's ``gemm_floor`` (the fastest a step could be) multiplies every weight
    of the teacher's linear layers, and only those: all its parameters but the norms' and the biases
    (the embedding is the output layer's weight), and consumes the same samples as gptf's step."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_common import gptf_trainer, our_data
    from train_speed import gemm_floor_contender

    data = our_data()
    floor = gemm_floor_contender(data)
    model = gptf_trainer(data).trainer.model
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    small = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 1)  # norm weights, biases
    assert linear + small == floor.params == 3_368_192
    gptf = gptf_trainer(data).trainer
    floor.step()
    gptf.train_step()
    assert floor.tokens() == gptf.state.tokens_seen > 0


def test_without_bucketing_the_data_order_is_the_plain_stream() -> None:
    lengths = [(7 * i) % 50 + 5 for i in range(200)]
    for step in (0, 3, 12, 40):
        assert step_samples(lengths, 42, step, 16) == sample_stream(200, 42, step * 16, 16)


def test_length_bucketing_regroups_each_window_by_length() -> None:
    """Bucketing only regroups: each window of W batches holds the same samples as the plain
    stream, every batch is drawn once, and a batch's lengths are close together."""
    lengths = [(7 * i) % 50 + 5 for i in range(200)]
    W, batch = 8, 16
    for window in range(3):
        batches = [step_samples(lengths, 42, window * W + slot, batch, W) for slot in range(W)]
        assert sorted(i for b in batches for i in b) == sorted(sample_stream(200, 42, window * W * batch, W * batch))
        plain = [sample_stream(200, 42, (window * W + slot) * batch, batch) for slot in range(W)]
        spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
        plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain)
        assert spread < plain_spread / 3
    assert step_samples(lengths, 42, 5, batch, W) == step_samples(lengths, 42, 5, batch, W)  # resumable


def test_bucketed_training_runs_and_pads_less(tokenizer: ByteLevelBPE) -> None:
    plain = make_trainer(tokenizer, batch_size=8, micro_batch=8, bucket_batches=1)
    bucketed = make_trainer(tokenizer, batch_size=8, micro_batch=8, bucket_batches=3)

    def padded_tokens(trainer: Trainer) -> int:
        rows = [step_samples(trainer.lengths, 42, s, 8, trainer.config.bucket_batches) for s in range(3)]
        return sum(len(r) * max(trainer.lengths[i] for i in r) for r in rows)

    assert padded_tokens(bucketed) < padded_tokens(plain)
    for _ in range(3):
        assert bucketed.train_step()["loss"] > 0


def test_sdpa_under_bf16_autocast_attends_in_fp32() -> None:
    """The fused CPU kernel is slow in bf16, so under autocast attention runs in fp32."""
    attention = REGISTRY.build(
        "attention", "sdpa", {}, "model.attention", n_head=2, n_kv_head=2, head_dim=8, seq_len=16
    )
    q, k, v = (torch.randn(1, 2, 5, 8).to(torch.bfloat16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, attention(q.float(), k.float(), v.float()).to(torch.bfloat16))


def test_bf16_training_step_matches_fp32_closely(tokenizer: ByteLevelBPE) -> None:
    fp32 = make_trainer(tokenizer, batch_size=8, micro_batch=8)
    bf16 = make_trainer(tokenizer, batch_size=8, micro_batch=8, precision="bf16")
    assert bf16.train_step()["loss"] == pytest.approx(fp32.train_step()["loss"], rel=2e-2)


def test_bf16_weights_are_cast_once_per_step_with_the_same_result(tokenizer: ByteLevelBPE) -> None:
    """Under bf16 the micro-batches share one autocast region, so each weight is cast to bf16 once
    per step (not once per micro-batch), and the step updates the weights exactly as a step whose
    micro-batches each cast the weights again."""
    from torch.utils._python_dispatch import TorchDispatchMode

    settings = {"batch_size": 8, "micro_batch": 2, "precision": "bf16", "grad_clip": 0.0}
    trainer, reference = make_trainer(tokenizer, **settings), make_trainer(tokenizer, **settings)
    weight = trainer.model.blocks[0].attn.qkv.weight
    casts = 0

    class CountWeightCasts(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal casts
            kwargs = kwargs or {}
            if func is torch.ops.aten._to_copy.default and args[0] is weight:
                casts += kwargs.get("dtype") == torch.bfloat16
            return func(*args, **kwargs)

    with CountWeightCasts():
        trainer.train_step()
    assert casts == 1  # 4 micro-batches, one cast of the weight

    # the reference: every micro-batch in its own autocast region (the weights cast 4 times)
    reference.without_autocast = contextlib.nullcontext  # type: ignore[method-assign]
    own_region = reference.autocast
    reference.autocast = lambda: contextlib.nullcontext()  # type: ignore[method-assign]
    reference.loss_sum = _in_own_region(reference.loss_sum, own_region)  # type: ignore[method-assign]
    reference.train_step()
    for mine, theirs in zip(trainer.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def _in_own_region(loss_sum, region):
    def wrapped(*args, **kwargs):
        with region():
            return loss_sum(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("fused", [True, False])
def test_gptf_adamw_updates_exactly_as_torch_adamw(fused: bool) -> None:
    """The AdamW plugin calls torch.optim.AdamW's methods without their torch.compile decorators:
    the same weights and the same optimizer state (what checkpoints save) after several steps."""
    from gptf.plugins.optimizers.adamw import AdamW

    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4))
    theirs_model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.SiLU(), torch.nn.Linear(32, 4))
    theirs_model.load_state_dict(ours_model.state_dict())

    def groups(model: torch.nn.Module) -> list[dict]:
        return [
            {"params": [model[0].weight, model[2].weight], "weight_decay": 0.1},
            {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0},
        ]

    ours = AdamW(groups(ours_model), lr=1e-2, betas=(0.9, 0.95), fused=fused)
    theirs = torch.optim.AdamW(groups(theirs_model), lr=1e-2, betas=(0.9, 0.95), fused=fused)
    for step in range(6):
        x = torch.randn(8, 16)
        for model, optimizer in ((ours_model, ours), (theirs_model, theirs)):
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 * (step + 1) / 6
            model(x).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in ours_model.parameters())
    for a, b in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        assert torch.equal(a, b)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for index, state in theirs_state["state"].items():
        for key, value in state.items():
            assert torch.equal(ours_state["state"][index][key], value), (index, key)
    reloaded = AdamW(groups(ours_model), lr=1e-2, betas=(0.9, 0.95), fused=fused)
    reloaded.load_state_dict(theirs_state)
    assert torch.equal(reloaded.state_dict()["state"][0]["exp_avg"], theirs_state["state"][0]["exp_avg"])


def test_a_whole_run_does_not_import_the_compiler(tmp_path: Path) -> None:
    """A whole tiny ``gptf run`` (checks, training with the AdamW plugin, saving, quantization, answers)
    leaves torch._dynamo and sympy (~70 MB) unimported: they were imported by torch.optim's methods
    and by the recipe check's build on the meta device. In a fresh interpreter: this test process
    may have imported them for other tests."""
    copy_tiny_data(tmp_path)
    code = (
        "import os, sys\n"
        "from rich.console import Console\n"
        "from gptf.recipe import load_recipe\n"
        "from gptf.run import run_recipe\n"
        f"loaded = load_recipe({str(TINY_RECIPE)!r}, ['output_dir=run', 'tokenizer.path=tok.json'])\n"
        "run_recipe(loaded, Console(file=open(os.devnull, 'w')))\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:] + result.stderr[-2000:]


@pytest.mark.slow
def test_past_the_compilers_graph_limit_decoding_goes_on_uncompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch keeps a limited number of graphs per function, counting every model of the process; a
    compiled step past that limit warns once and decodes uncompiled, with the same logits."""
    import torch._dynamo

    from gptf.build.speed import CompiledDecodeStep

    torch._dynamo.reset()
    monkeypatch.setattr(CompiledDecodeStep, "RECOMPILE_LIMIT", 1)
    with torch._dynamo.config.patch(recompile_limit=1):  # (restored afterwards, as the compiler does it)
        for number, positional in enumerate(("rope", "learned")):  # the second model needs a second graph
            model = tiny_model(positional, 50)
            step = CompiledDecodeStep(model)
            ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                plain, fixed = model.new_cache(1), model.new_cache(1)
                model(ids[:, :10], plain), model(ids[:, :10], fixed)
                expected = model(ids[:, 10:11], plain)
                at = torch.tensor([fixed.length])
                if number == 0:
                    got = step(ids[:, 10:11], at, fixed.layer_keys, fixed.layer_values)
                    assert not step.eager
                else:
                    with pytest.warns(RuntimeWarning, match="decoding uncompiled from now on"):
                        got = step(ids[:, 10:11], at, fixed.layer_keys, fixed.layer_values)
                    assert step.eager
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    assert torch._dynamo.config.recompile_limit >= 1  # the setting is still there


def test_greedy_pick_takes_the_short_way_only_where_it_gives_the_same_answer() -> None:
    """pick_token at temperature 0: scores with NaN, +inf or -inf give what the full clean-up gives
    (NaN never chosen, +inf counts as the largest finite score, -inf as impossible), and scores
    that are all NaN are a clear error."""
    from gptf.errors import GptfError
    from gptf.generate import pick_token

    greedy = SamplingSettings(temperature=0.0)

    def cleaned_up(scores: torch.Tensor) -> tuple[int, float]:  # the long way, written out
        clean = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
        token = int(torch.argmax(clean))
        return token, float(torch.softmax(clean, dim=-1)[token])

    generator = torch.Generator().manual_seed(0)
    for case in range(40):
        scores = torch.randn(50, generator=generator) * 5
        if case % 4 == 1:
            scores[torch.randint(0, 50, (3,), generator=generator)] = float("nan")
        if case % 4 == 2:
            scores[torch.randint(0, 50, (1,), generator=generator)] = float("inf")
        if case % 4 == 3:
            scores[torch.randint(0, 50, (10,), generator=generator)] = float("-inf")
        assert pick_token(scores, greedy, None) == cleaned_up(scores)
    every_token_banned = torch.full((5,), float("-inf"))  # (the constraints never ban all: still an answer)
    assert pick_token(every_token_banned, greedy, None) == cleaned_up(every_token_banned)
    with pytest.raises(GptfError, match="no usable score"):
        pick_token(torch.full((5,), float("nan")), greedy, None)
