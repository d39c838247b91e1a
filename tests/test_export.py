"""gptf export --format hf: transformers opens the folder as a Llama and answers exactly as gptf does.

The parity tests need transformers (``gptf[export]``, in the test extra) and skip without it;
the refusals and the --out rules are checked before transformers is ever imported.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
import torch
from conftest import TINY_RECIPE, invoke

from gptf.build.components import build_model
from gptf.errors import GptfError
from gptf.generate import Generator, SamplingSettings
from gptf.recipe import ComponentSpec
from gptf.run import LoadedRun, load_run
from gptf.tools.conversation import Turn, conversation_ids
from gptf.tools.export import check_out, export_hf, llama_plan, require_transformers

PROMPTS = ["什么是注意力机制？", "解释蒸馏水与纯水区别？", "什么 是 RoPE", "Why is the sky blue? 天空为什么是蓝色的"]


def needs_transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    return load_run(tiny_run)


def variant(run: LoadedRun, seed: int, **model: object) -> LoadedRun:
    """``run`` with other model settings and random weights (biases and norm gains too, so a
    wrongly mapped bias or gain shows), large enough that greedy choices are clear."""
    recipe = attrs.evolve(run.recipe, model=attrs.evolve(run.recipe.model, **model))
    net = build_model(recipe, run.registry, run.tokenizer.vocab_size).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.dim() == 1:
                param.copy_((1.0 if "norm" in name else 0.0) + 0.3 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return attrs.evolve(run, recipe=recipe, model=net)


def hf_open(folder: Path):
    transformers = needs_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def prompt_ids(run: LoadedRun, prompt: str) -> list[int]:
    return Generator(run.model, run.tokenizer, []).prompt_ids(prompt)


def max_logit_diff(run: LoadedRun, hf_model, prompts: list[str]) -> float:
    worst = 0.0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt_ids(run, prompt)])
            worst = max(worst, float((run.model(ids) - hf_model(ids).logits).abs().max()))
    return worst


def greedy_pairs(run: LoadedRun, hf_model, prompts: list[str], max_new_tokens: int) -> list[tuple[list, list]]:
    """(gptf's greedy tokens without constraints, transformers' greedy tokens) per prompt."""
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    plain = Generator(run.model, run.tokenizer, [])  # decoding constraints off
    pairs = []
    for prompt in prompts:
        ours = [t.token_id for t in plain.generate(prompt, settings).tokens]
        ids = prompt_ids(run, prompt)
        budget = min(max_new_tokens, run.model.config.seq_len - len(ids))  # gptf stops at seq_len too
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=budget, do_sample=False)
        theirs = out[0, len(ids) :].tolist()
        if theirs and theirs[-1] == run.tokenizer.eos_id:  # transformers keeps the <eos> it stopped at
            theirs = theirs[:-1]
        pairs.append((ours, theirs))
    return pairs


def test_tiny_run_exports_and_transformers_answers_like_gptf(run: LoadedRun, tmp_path: Path) -> None:
    needs_transformers()
    out = tmp_path / "tiny-hf"
    report = export_hf(run, out)
    assert report.max_logit_diff < 1e-4
    assert sorted(report.files) == sorted(os.listdir(out))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    hf_model, _ = hf_open(out)
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    c = hf_model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.hidden_size) == (2, 2, 32)
    assert (c.max_position_embeddings, c.rms_norm_eps, c.rope_parameters["rope_theta"]) == (64, 1e-6, 10000.0)
    assert c.tie_word_embeddings and hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    assert max_logit_diff(run, hf_model, PROMPTS) < 1e-4
    for ours, theirs in greedy_pairs(run, hf_model, PROMPTS, max_new_tokens=30):
        assert ours == theirs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize(
    "model",
    [
        {},  # the teacher's layout: SiLU MLP with biases, tied embeddings
        {"n_kv_head": 1},  # GQA: 2 query heads share 1 key/value head
        {"mlp": ComponentSpec("swiglu")},
        {"bias": False, "tie_embeddings": False},
        {"positional": ComponentSpec("rope", {"base": 500.0}), "norm": ComponentSpec("rmsnorm", {"eps": 1e-3})},
        {"attention": ComponentSpec("explicit"), "mlp": ComponentSpec("swiglu"), "bias": False, "n_kv_head": 1},
    ],
    ids=["silu", "gqa", "swiglu", "no-bias-untied", "rope-base-eps", "explicit-swiglu-gqa"],
)
def test_variants_match_logits_and_greedy_answers(run: LoadedRun, tmp_path: Path, model: dict) -> None:
    needs_transformers()
    changed = variant(run, seed=1, **model)
    export_hf(changed, tmp_path / "out")
    hf_model, _ = hf_open(tmp_path / "out")
    c = changed.model.config
    assert hf_model.config.num_key_value_heads == c.n_kv_head
    assert hf_model.config.tie_word_embeddings == c.tie_embeddings
    assert max_logit_diff(changed, hf_model, PROMPTS) < 1e-4
    pairs = greedy_pairs(changed, hf_model, PROMPTS[:2], max_new_tokens=40)
    assert all(len(ours) > 5 for ours, _ in pairs)  # random weights: long answers, no early <eos>
    for ours, theirs in pairs:
        assert ours == theirs


def test_tokenizer_ids_and_chat_template_equal_gptfs(run: LoadedRun, tmp_path: Path) -> None:
    needs_transformers()
    export_hf(run, tmp_path / "out")
    _, tok = hf_open(tmp_path / "out")
    assert type(tok).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    ours = run.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (
        ours.bos_id,
        ours.eos_id,
        ours.pad_id,
        ours.unk_id,
    )
    texts = [*PROMPTS, "用户:你好\n助手:", "  spaces  and\ttabs ", "emoji 😀 and 乱码", "<bos>literal<eos>", ""]
    for text in texts:
        assert tok.encode(text) == ours.encode(text), text  # nothing added: the same ids
        assert tok(text)["input_ids"] == ours.encode(text), text
        assert tok.decode(ours.encode(text), skip_special_tokens=True) == ours.decode(ours.encode(text))
    for prompt in [*PROMPTS, "\u3000全角\u3000空格\u3000", " 前后空格 "]:
        messages = [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert list(ids) == prompt_ids(run, prompt), prompt
    history = [Turn("什么是注意力机制？", "注意力让每个词参考前面的词。"), Turn("你好", "你好！")]
    messages = []
    for turn in history:
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
    messages.append({"role": "user", "content": "它 有什么用？"})
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert list(ids) == conversation_ids(ours, history, "它 有什么用？", seq_len=10_000, answer_room=0).ids


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"positional": ComponentSpec("alibi")}, ["model.positional: alibi -- ALiBi"]),
        ({"positional": ComponentSpec("learned")}, ["model.positional: learned -- learned position embeddings"]),
        ({"positional": ComponentSpec("sinusoidal")}, ["model.positional: sinusoidal"]),
        ({"positional": ComponentSpec("none")}, ["model.positional: none"]),
        (
            {"norm": ComponentSpec("layernorm"), "mlp": ComponentSpec("gelu")},
            ["2 components have", "model.norm: layernorm -- LayerNorm", "model.mlp: gelu -- the GELU MLP"],
        ),
    ],
    ids=["alibi", "learned", "sinusoidal", "none", "layernorm+gelu"],
)
def test_components_without_a_llama_equivalent_are_refused(
    run: LoadedRun, tmp_path: Path, model: dict, expected: list[str]
) -> None:
    changed = variant(run, seed=0, **model)
    with pytest.raises(GptfError) as caught:
        export_hf(changed, tmp_path / "out")
    message = str(caught.value)
    assert "cannot export to Hugging Face (Llama)" in message and "nothing was written" in message
    for part in expected:
        assert part in message
    assert os.listdir(tmp_path) == []  # no OUT, no temporary folder


def test_a_plugins_own_component_is_refused_by_name(run: LoadedRun, tmp_path: Path) -> None:
    from gptf.build.registry import ComponentInfo

    registry = run.registry
    original = registry.components["norm"].get("scalenorm")
    registry.components["norm"]["scalenorm"] = ComponentInfo("norm", "scalenorm", lambda dim: None, "scalenorm")
    try:
        recipe = attrs.evolve(run.recipe, model=attrs.evolve(run.recipe.model, norm=ComponentSpec("scalenorm")))
        with pytest.raises(GptfError, match=r"model\.norm: scalenorm \(from plugin 'scalenorm'\)"):
            llama_plan(recipe, registry, "run")
    finally:
        if original is None:
            del registry.components["norm"]["scalenorm"]
        else:
            registry.components["norm"]["scalenorm"] = original


def test_out_rules_before_any_work(tmp_path: Path) -> None:
    check_out(tmp_path / "new", force=False)  # does not exist: fine
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", force=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(GptfError, match="exists and is not empty"):
        check_out(full, force=False)
    check_out(full, force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GptfError, match="not a folder"):
        check_out(tmp_path / "file", force=True)


def test_cli_export_refuses_alibi_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    from conftest import copy_tiny_data
    from rich.console import Console

    from gptf.recipe import load_recipe
    from gptf.run import run_recipe

    copy_tiny_data(tmp_path)
    overrides = [f"output_dir={tmp_path / 'alibi'}", f"tokenizer.path={tmp_path / 'tok.json'}"]
    overrides += ["model.positional=alibi", "training.max_steps=1", "demo_prompts=[]"]
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        run_recipe(load_recipe(TINY_RECIPE, overrides), Console(file=open(os.devnull, "w")), final_eval=False)  # noqa: SIM115
    finally:
        os.chdir(old)
    out = tmp_path / "alibi-hf"
    result = invoke(["export", "--ckpt", str(tmp_path / "alibi"), "--format", "hf", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "model.positional: alibi" in result.stderr and "Traceback" not in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".alibi-hf")]


def test_cli_export_then_force(tiny_run: Path, tmp_path: Path) -> None:
    needs_transformers()
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    args = ["export", "--ckpt", str(tiny_run), "--format", "hf", "--out", str(out)]
    refused = invoke(args)
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert os.listdir(out) == ["old.txt"]
    result = invoke([*args, "--force"])
    assert result.exit_code == 0, result.output
    assert "logits within" in result.stdout
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert "apply_chat_template" in (out / "README.md").read_text(encoding="utf-8")
    assert invoke(["export", "--ckpt", str(tiny_run), "--format", "gguf", "--out", str(tmp_path / "x")]).exit_code == 2


def test_out_where_no_folder_can_be_made_is_named(tiny_run: Path) -> None:
    """The error names --out, not the hidden working folder beside it (was: /proc/.x.export-abc1: ...)."""
    needs_transformers()
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no new folder can be made")
    out = "/proc/gptf-no-such-folder"
    result = invoke(["export", "--ckpt", str(tiny_run), "--format", "hf", "--out", out])
    assert result.exit_code == 2, result.output
    assert f"--out {out}: cannot make a folder there: no such file or directory" in result.stderr
    assert ".export-" not in result.output and "Traceback" not in result.output


def test_python_api_export(tiny_run: Path, tmp_path: Path) -> None:
    needs_transformers()
    import gptf.api as gptf

    report = gptf.open_run(tiny_run).export(tmp_path / "hf")
    assert report.out == tmp_path / "hf" and report.max_logit_diff < 1e-4 and "model.safetensors" in report.files


def test_without_transformers_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(GptfError, match=r"gptf\[export\]"):
        require_transformers()
