"""``gptf export``: a finished run as a folder the tools students meet next can open.

``--format hf`` writes a Hugging Face ``transformers`` folder in the **Llama** layout, the
architecture most tools understand (transformers, vLLM, llama.cpp's converter, ...)::

    OUT/
      config.json             LlamaConfig: sizes, rope_theta, rms_norm_eps, biases, tied embeddings
      generation_config.json  <bos>/<eos>/<pad> ids, greedy, the recipe's max_new_tokens
      model.safetensors       the fp32 weights, renamed and split into Llama's tensors
      tokenizer.json          the run's byte-level BPE, unchanged (same ids as gptf)
      tokenizer_config.json   specials, and a chat template that writes gptf's prompt format
      special_tokens_map.json
      README.md               how to ask it with transformers

How gptf's parts become Llama's (only components with an exact equivalent are exported):

    embed                 -> model.embed_tokens            (head tied to it: tie_word_embeddings)
    blocks[i].norm1/norm2 -> input_/post_attention_layernorm  (RMSNorm, eps -> rms_norm_eps)
    attn.qkv (q | k | v)  -> q_proj, k_proj, v_proj        (n_kv_head -> num_key_value_heads)
    attn.proj             -> o_proj
    RoPE (half-split)     -> Llama's rotate_half RoPE      (base -> rope_theta)
    SiLU MLP  down(silu(up(x)))       -> down(silu(gate(x)) * up(x)) with gate = our up and
                                         up = 0·x + 1 (zero weight, bias 1): exactly the same
    SwiGLU    down(silu(gate(x)) * up(x)) -> the same three matrices

Anything else (ALiBi, learned/sinusoidal/no positions, LayerNorm, GELU, a plugin's own
component, another tokenizer) has no Llama equivalent: export refuses, naming each one and
its recipe key, before writing anything. The folder is written beside ``OUT`` under a
temporary name, loaded back with transformers and checked against gptf (same prompt ids,
logits within :data:`CHECK_TOLERANCE`), and only then renamed to ``OUT``.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from gptf.build.components import component_slots
from gptf.data import format_prompt
from gptf.errors import GptfError, os_error_text

if TYPE_CHECKING:
    from gptf.build.registry import Registry
    from gptf.model import GPT
    from gptf.recipe import Recipe
    from gptf.run import LoadedRun

FORMATS = ("hf",)
#: The export check refuses a folder whose logits differ from gptf's by more than this.
CHECK_TOLERANCE = 1e-3
INSTALL_HINT = 'pip install "gptf[export]" -c constraints.txt   (transformers)'

#: The components with an exact Llama equivalent: (kind, name) -> the built-in plugin that must provide it.
SUPPORTED: dict[tuple[str, str], str] = {
    ("tokenizer", "byte_bpe"): "builtin.byte_bpe",
    ("positional", "rope"): "builtin.rope",
    ("norm", "rmsnorm"): "builtin.rmsnorm",
    ("attention", "sdpa"): "builtin.sdpa",
    ("attention", "explicit"): "builtin.explicit",
    ("mlp", "silu"): "builtin.silu",
    ("mlp", "swiglu"): "builtin.swiglu",
}
#: Why a built-in component cannot be exported, in one line.
NO_EQUIVALENT: dict[tuple[str, str], str] = {
    ("positional", "alibi"): "ALiBi adds a distance penalty to the attention scores; Llama has only RoPE",
    ("positional", "learned"): "learned position embeddings are added to the input; Llama has only RoPE",
    ("positional", "sinusoidal"): "sinusoidal position embeddings are added to the input; Llama has only RoPE",
    ("positional", "none"): "a model without positions; Llama always applies RoPE",
    ("norm", "layernorm"): "LayerNorm subtracts the mean (and adds a bias); Llama has only RMSNorm",
    ("mlp", "gelu"): "the GELU MLP; Llama's MLP uses SiLU (and Llama tools such as vLLM accept only SiLU)",
    ("tokenizer", "char"): "the character tokenizer has no Hugging Face tokenizer file; export supports byte_bpe",
    ("tokenizer", "sentencepiece"): "the SentencePiece tokenizer is not converted yet; export supports byte_bpe",
}
#: Recipe slots that decide the architecture (optimizer, scheduler, ... do not matter to an export).
ARCHITECTURE_KINDS = ("tokenizer", "positional", "norm", "attention", "mlp")


# ------------------------------------------------------------------ what can be exported


@attrs.frozen
class LlamaPlan:
    """The recipe in Llama's terms (checked: every component has an exact equivalent)."""

    rope_theta: float
    rms_norm_eps: float
    mlp: str  # "silu" (mapped onto the gated MLP) or "swiglu" (the same)


def component_params(registry: Registry, kind: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """A component's parameters as built: the factory's defaults, then the recipe's values."""
    info = registry.components[kind][name]
    values = {n: p.default for n, p in info.parameters().items() if p.default is not inspect.Parameter.empty}
    return {**values, **given}


def llama_plan(recipe: Recipe, registry: Registry, where: str) -> LlamaPlan:
    """The Llama layout of ``recipe``, or one :class:`GptfError` naming every component without one."""
    problems = []
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for slot in component_slots(recipe):
        if slot.kind not in ARCHITECTURE_KINDS:
            continue
        name, key = slot.spec.name, (slot.kind, slot.spec.name)
        plugin = registry.components[slot.kind][name].plugin
        if SUPPORTED.get(key) == plugin:
            chosen[slot.kind] = (name, component_params(registry, slot.kind, name, slot.spec.params))
        elif key in NO_EQUIVALENT and plugin.startswith("builtin."):
            problems.append(f"{slot.key}: {name} -- {NO_EQUIVALENT[key]}")
        else:
            problems.append(
                f"{slot.key}: {name} (from plugin '{plugin}') -- export knows only the built-in components "
                f"that Llama has: {supported_text(slot.kind)}"
            )
    if problems:
        noun = "component has" if len(problems) == 1 else "components have"
        lines = "\n".join(f"  - {p}" for p in problems)
        raise GptfError(
            f"{where}: cannot export to Hugging Face (Llama): {len(problems)} {noun} no Llama equivalent:\n{lines}",
            hint="export needs model.positional: rope, model.norm: rmsnorm, model.mlp: silu or swiglu, "
            "tokenizer.type: byte_bpe (as recipes/teacher_3m.yaml); nothing was written",
        )
    _, rope = chosen["positional"]
    _, norm = chosen["norm"]
    mlp, _ = chosen["mlp"]
    return LlamaPlan(rope_theta=float(rope["base"]), rms_norm_eps=float(norm["eps"]), mlp=mlp)


def supported_text(kind: str) -> str:
    return ", ".join(name for k, name in SUPPORTED if k == kind)


# ------------------------------------------------------------------ config and weights


def llama_config(model: GPT, plan: LlamaPlan, tokenizer: Any) -> dict[str, Any]:
    """``LlamaConfig`` keyword arguments for ``model``."""
    c = model.config
    hidden = model.blocks[0].mlp.down.in_features  # 4·d for SiLU, the rounded 2/3 of it for SwiGLU
    return {
        "vocab_size": c.vocab_size,
        "hidden_size": c.n_embd,
        "intermediate_size": hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_head,
        "head_dim": c.head_dim,  # attention scale 1/sqrt(head_dim), as gptf's
        "hidden_act": "silu",
        "max_position_embeddings": c.seq_len,
        "rms_norm_eps": plan.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": plan.rope_theta},
        "attention_bias": c.bias,
        "mlp_bias": c.bias or plan.mlp == "silu",  # the SiLU mapping needs up_proj's bias (= 1)
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "initializer_range": c.init_std,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": "float32",
    }


def llama_weights(model: GPT, plan: LlamaPlan) -> dict[str, torch.Tensor]:
    """gptf's fp32 weights under Llama's names; every parameter of ``model`` is used exactly once."""
    c = model.config
    kv_dim = c.n_kv_head * c.head_dim
    out: dict[str, torch.Tensor] = {}
    used: set[int] = set()

    def put(name: str, tensor: torch.Tensor) -> None:
        out[name] = tensor.detach().float().contiguous().clone()

    def take(param: torch.Tensor | None) -> torch.Tensor | None:
        if param is not None:
            used.add(id(param))
        return param

    def linear(prefix: str, layer: torch.nn.Linear, *, bias: bool) -> None:
        put(prefix + ".weight", take(layer.weight))
        if bias:
            b = take(layer.bias)
            put(prefix + ".bias", b if b is not None else torch.zeros(layer.out_features))

    put("model.embed_tokens.weight", take(model.embed.weight))
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        put(p + "input_layernorm.weight", take(block.norm1.weight))
        put(p + "post_attention_layernorm.weight", take(block.norm2.weight))
        qkv = block.attn.qkv
        for name, part in zip(("q", "k", "v"), take(qkv.weight).split([c.n_embd, kv_dim, kv_dim]), strict=True):
            put(f"{p}self_attn.{name}_proj.weight", part)
        if qkv.bias is not None:
            for name, part in zip(("q", "k", "v"), take(qkv.bias).split([c.n_embd, kv_dim, kv_dim]), strict=True):
                put(f"{p}self_attn.{name}_proj.bias", part)
        linear(p + "self_attn.o_proj", block.attn.proj, bias=c.bias)
        mlp, mlp_bias = block.mlp, c.bias or plan.mlp == "silu"
        if plan.mlp == "silu":  # down(silu(up(x))) = down(silu(gate(x)) * 1): gate <- up, up <- 0·x + 1
            linear(p + "mlp.gate_proj", mlp.up, bias=True)
            put(p + "mlp.up_proj.weight", torch.zeros_like(mlp.up.weight))
            put(p + "mlp.up_proj.bias", torch.ones(mlp.up.out_features))
        else:  # swiglu: the same three matrices
            linear(p + "mlp.gate_proj", mlp.gate, bias=mlp_bias)
            linear(p + "mlp.up_proj", mlp.up, bias=mlp_bias)
        linear(p + "mlp.down_proj", mlp.down, bias=mlp_bias)
    put("model.norm.weight", take(model.norm.weight))
    put("lm_head.weight", take(model.head.weight))  # the embedding again when tied (saved once)
    unused = [name for name, param in model.named_parameters() if id(param) not in used]
    if unused:  # a built-in component grew a parameter this mapping does not know: refuse, never drop it
        raise GptfError(f"export does not know where these weights go in Llama: {', '.join(unused)}")
    return out


# ------------------------------------------------------------------ tokenizer files


def chat_template() -> str:
    """gptf's prompt format as a Jinja chat template (what ``gptf chat`` feeds the model):

        <bos>用户:{question}\\n助手:{answer}\\n用户:{question}\\n助手:

    The question is normalised as gptf does (ASCII and full-width spaces dropped, then stripped).
    """
    return (
        "{{- bos_token -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{- '用户:' + (message['content'] | replace(' ', '') | replace('\\u3000', '') | trim) + '\\n' -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- '助手:' + message['content'] -}}{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}"
        "{%- else -%}"
        "{{- raise_exception('gptf models know only the roles user and assistant, not ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '助手:' -}}{%- endif -%}"
    )


def tokenizer_files(run: LoadedRun) -> dict[str, str]:
    """tokenizer.json (the run's, unchanged), tokenizer_config.json, special_tokens_map.json."""
    tok = run.tokenizer
    hf = tok.hf  # the byte-level BPE's own Hugging Face tokenizer: no post-processor adds specials
    specials = {
        "bos_token": hf.id_to_token(tok.bos_id),
        "eos_token": hf.id_to_token(tok.eos_id),
        "pad_token": hf.id_to_token(tok.pad_id),
        "unk_token": hf.id_to_token(tok.unk_id),
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": False,  # the chat template writes <bos>; encode() adds nothing (same ids as gptf)
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": run.model.config.seq_len,
        "padding_side": "left",  # batched generation pads on the left
        "chat_template": chat_template(),
    }
    return {
        "tokenizer.json": hf.to_str(pretty=True),
        "tokenizer_config.json": _json(config),
        "special_tokens_map.json": _json(specials),
    }


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


# ------------------------------------------------------------------ the folder


@attrs.frozen
class ExportReport:
    out: Path
    files: list[str]
    max_logit_diff: float
    prompts: list[str]
    transformers_version: str


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise GptfError(f"gptf export --format hf needs the transformers library ({exc})", hint=INSTALL_HINT) from None
    return transformers


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing file, or a non-empty folder unless ``force``: before any work is done."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise GptfError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GptfError(
            f"--out {out}: the folder exists and is not empty",
            hint="choose another --out, or add --force to replace it",
        )


def working_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write the export into (renamed to ``out`` once it is checked).
    Where none can be made (e.g. under /proc), the error names ``--out``, not this hidden folder."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    except OSError as exc:
        reason = os_error_text(OSError(exc.errno, exc.strerror))  # without the hidden folder's name
        raise GptfError(f"--out {out}: cannot make a folder there: {reason}") from exc


def export_hf(
    run: LoadedRun,
    out: Path,
    *,
    force: bool = False,
    prompts: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> ExportReport:
    """Write ``run`` to ``out`` as a transformers Llama folder, check it, then rename it into place."""
    out = Path(out)
    check_out(out, force)
    if run.quantized:
        raise GptfError("export uses the fp32 weights: open the run without --quantized")
    plan = llama_plan(run.recipe, run.registry, str(run.files.root))
    transformers = require_transformers()
    transformers.utils.logging.disable_progress_bar()  # gptf prints its own progress
    prompts = list(prompts) or list(run.recipe.demo_prompts) or ["什么是注意力机制？"]
    tmp = working_folder(out)
    try:
        progress("writing the Llama weights and config")
        write_model(transformers, run, plan, tmp)
        for name, text in tokenizer_files(run).items():
            (tmp / name).write_text(text, encoding="utf-8")
        (tmp / "README.md").write_text(model_card(run, plan, out, transformers.__version__), encoding="utf-8")
        progress("loading it back with transformers to compare with gptf")
        diff = check_folder(tmp, run, prompts)
        if diff > CHECK_TOLERANCE:
            raise GptfError(
                f"the exported model's logits differ from gptf's by {diff:.2e} (> {CHECK_TOLERANCE:g}); "
                "nothing was written",
                hint="this is a bug in gptf export: please report it with the run's recipe.yaml",
            )
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:  # the usual modes: mkdtemp's folder and some writers' files are private (0700/0600)
            os.chmod(tmp / name, 0o666 & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportReport(out, files, diff, prompts, transformers.__version__)


def write_model(transformers: Any, run: LoadedRun, plan: LlamaPlan, folder: Path) -> None:
    config = transformers.LlamaConfig(**llama_config(run.model, plan, run.tokenizer))
    config.architectures = ["LlamaForCausalLM"]
    llama = transformers.LlamaForCausalLM(config)
    llama.load_state_dict(llama_weights(run.model, plan), strict=True)  # every tensor, by name
    g = llama.generation_config
    g.bos_token_id, g.eos_token_id, g.pad_token_id = config.bos_token_id, config.eos_token_id, config.pad_token_id
    g.do_sample = False  # greedy, as gptf's recipes (temperature 0)
    g.max_new_tokens = run.recipe.generation.max_new_tokens
    llama.save_pretrained(folder)
    # rope_theta also at the top level, where tools written for transformers 4 look for it
    path = folder / "config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    saved["rope_theta"] = plan.rope_theta
    path.write_text(_json(saved), encoding="utf-8")


@torch.inference_mode()
def check_folder(folder: Path, run: LoadedRun, prompts: Sequence[str]) -> float:
    """Load ``folder`` as any transformers user would; the largest logit difference from gptf over ``prompts``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    worst = 0.0
    for prompt in prompts:
        ids = [run.tokenizer.bos_id, *run.tokenizer.encode(format_prompt(prompt))]
        messages = [{"role": "user", "content": prompt}]
        encoded = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        hf_ids = list(encoded["input_ids"])
        if hf_ids != ids:
            raise GptfError(
                f"the exported tokenizer's prompt ids for {prompt!r} differ from gptf's: {hf_ids} != {ids}",
                hint="this is a bug in gptf export: please report it with the run's recipe.yaml",
            )
        x = torch.tensor([ids])
        ours = run.model(x).float()
        theirs = hf_model(x).logits.float()
        worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` (checked by :func:`check_out`) is replaced."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old / out.name, out)  # put the old folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ the folder's README


def model_card(run: LoadedRun, plan: LlamaPlan, out: Path, transformers_version: str) -> str:
    r, c = run.recipe, run.model.config
    params = sum(p.numel() for p in run.model.parameters())
    if plan.mlp == "silu":
        mlp = (
            "gptf's SiLU MLP `down(silu(up(x)))` is stored as Llama's gated MLP `down(silu(gate(x)) * up(x))` "
            "with `gate_proj` = gptf's `up` and `up_proj` = 0·x + 1 (zero weights, bias 1): the same numbers. "
            "Fine-tuning may train `up_proj` too, which is fine: it is then an ordinary Llama MLP."
        )
    else:
        mlp = "gptf's SwiGLU is Llama's MLP as it is (gate_proj, up_proj, down_proj)."
    constraints = ", ".join(s.name for s in r.generation.constraints) or "none"
    memory = (
        "\n- The recipe answers with a memory of its taught answers (`generation.memory`), which is not part of"
        " the weights:\n  these are the model's own answers, as `gptf generate --no-memory` gives them."
        if r.generation.memory is not None
        else ""
    )
    question = (r.demo_prompts or ["什么是注意力机制？"])[0]
    kv = f" ({c.n_kv_head} key/value heads)" if c.n_kv_head != c.n_head else ""
    return f"""# {r.name}: a gptf model for transformers

A {params:,}-parameter Chinese GPT trained with gptf (recipe `{r.name}`), exported by
`gptf export --format hf` from `{run.files.root}` in the **Llama** layout, so
`AutoModelForCausalLM` / `AutoTokenizer` open it. 一个用 gptf 训练的中文小模型，以 Llama 格式导出。

{c.n_layer} layers, {c.n_head} heads{kv}, width {c.n_embd}, RoPE (theta {plan.rope_theta:g}), RMSNorm
(eps {plan.rms_norm_eps:g}), biases: {str(c.bias).lower()}, tied embeddings: {str(c.tie_embeddings).lower()},
context {c.seq_len} tokens; fp32 weights. Written with transformers {transformers_version}.

## Ask it / 提问

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("{out}")
model = AutoModelForCausalLM.from_pretrained("{out}")
chat = [{{"role": "user", "content": "{question}"}}]
q = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**q, max_new_tokens={r.generation.max_new_tokens}, do_sample=False)
print(tok.decode(out[0, q["input_ids"].shape[1] :], skip_special_tokens=True))
```

The chat template writes gptf's prompt format, `<bos>用户:{{question}}\n助手:` (spaces in the
question dropped, as gptf does; earlier turns go before it as in `gptf chat`). By hand, the same
ids are `[tok.bos_token_id] + tok.encode("用户:" + question + "\n助手:")`: the tokenizer never
adds special tokens by itself, so `tok.encode(text)` gives exactly gptf's ids for `text`.

## Notes

- Greedy answers (`do_sample=False`) equal `gptf generate --temperature 0 --no-constraints`, token
  for token. The recipe also used decoding constraints ({constraints}); transformers has similar
  options (`repetition_penalty=`, `min_new_tokens=`, `bad_words_ids=`), but not the same code, so
  answers with them may differ from gptf's.{memory}
- {mlp}
- The model was trained on {c.seq_len} tokens: keep prompt + answer within that.
"""
