"""Seeing inside: which tokens a text becomes, and where each attention head looks.

``gptf tokenize`` shows every token of a text with its id and the bytes it stands for
(byte-level BPE may cut a Chinese character, 3 bytes in UTF-8, into pieces).
``gptf attention`` runs a trained model on a prompt and saves, for every layer, a
heatmap per head: row = the token that is looking, column = the token it looks at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gptf.data import BROKEN_TEXT_HINT, format_prompt, has_broken_character
from gptf.errors import CheckpointError, GptfError
from gptf.interfaces import SPECIAL_TOKENS, Tokenizer
from gptf.model import SelfAttention
from gptf.plots import PLOTS_HINT, chinese_font, plots_available, save_attention_heatmaps
from gptf.recipe import ComponentSpec

# ------------------------------------------------------------------ tokens


@attrs.frozen
class TokenRow:
    index: int
    token_id: int
    text: str  # what a reader sees
    raw: bytes  # what the token stands for


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A readable label: the token's characters, a special token's name, or its bytes
    in hex when they are only part of a character."""
    specials = dict(
        zip((tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.unk_id), SPECIAL_TOKENS, strict=True)
    )
    if token_id in specials:
        return specials[token_id]
    raw = tokenizer.token_bytes(token_id)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return " ".join(f"\\x{b:02x}" for b in raw)  # part of a character
    return text.replace("\n", "\\n").replace(" ", "␣") if text else f"<{token_id}>"


def token_rows(tokenizer: Tokenizer, ids: list[int]) -> list[TokenRow]:
    return [TokenRow(i, t, token_text(tokenizer, t), tokenizer.token_bytes(t)) for i, t in enumerate(ids)]


def tokens_table(tokenizer: Tokenizer, text: str, as_prompt: bool = False) -> tuple[Table, str]:
    """The table for ``gptf tokenize`` and a one-line summary."""
    if has_broken_character(text):
        raise GptfError(f"the text cannot be split into tokens: {BROKEN_TEXT_HINT}")
    if as_prompt:  # exactly what the model sees before it answers
        ids = [tokenizer.bos_id, *tokenizer.encode(format_prompt(text))]
    else:
        ids = tokenizer.encode(text)
    table, partial = ids_table(tokenizer, ids)
    shown = format_prompt(text) if as_prompt else text
    summary = f"{len(shown)} characters -> {len(ids)} tokens ({len(shown) / max(len(ids), 1):.2f} characters per token)"
    if partial:
        summary += f"; {partial} token(s) hold only part of a character"
    return table, summary


def ids_table(tokenizer: Tokenizer, ids: list[int]) -> tuple[Table, int]:
    """One row per token: position, label, id and bytes; and how many are partial characters."""
    table = Table(title_justify="left")
    for column, justify in (("#", "right"), ("token", "left"), ("id", "right"), ("bytes (UTF-8)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    partial = 0
    for row in token_rows(tokenizer, ids):
        hexed = " ".join(f"{b:02x}" for b in row.raw) or "-"
        if row.raw and row.text.startswith("\\x"):
            partial += 1
            hexed += "  (part of a character)"
        table.add_row(str(row.index), Text(row.text), str(row.token_id), hexed)  # Text: "[" is not markup
    return table, partial


def load_tokenizer(
    ckpt: Path | None, recipe: Path | None, console: Console, *, trust_plugins: bool = False
) -> Tokenizer:
    """The tokenizer of a run directory, or of a recipe (trained and saved first if needed).
    A run's plugin code files are refused unless ``trust_plugins`` (as in :func:`gptf.run.load_run`)."""
    if (ckpt is None) == (recipe is None):
        raise GptfError("give exactly one of --ckpt DIR (a trained run) or --recipe FILE")
    from gptf.build.components import new_tokenizer, open_registry, registry_for
    from gptf.recipe import load_recipe, read_recipe_file, recipe_from_dict
    from gptf.train.run_files import RunFiles

    if ckpt is not None:
        files = RunFiles(ckpt)
        files.require()
        loaded_recipe = recipe_from_dict(read_recipe_file(files.recipe), str(files.recipe))
        from gptf.run import refuse_untrusted_plugins

        refuse_untrusted_plugins(loaded_recipe, files, trust_plugins)
        tokenizer = new_tokenizer(loaded_recipe, open_registry(loaded_recipe.plugins, files.root))
        try:
            tokenizer.load(files.tokenizer)
        except Exception as exc:
            raise CheckpointError(f"{files.tokenizer}: cannot load the tokenizer ({exc})") from exc
        return tokenizer
    from gptf.data import read_jsonl
    from gptf.run import prepare_tokenizer

    loaded = load_recipe(recipe)  # type: ignore[arg-type]
    registry = registry_for(loaded)
    path = Path(loaded.recipe.tokenizer.path)
    samples = [] if path.is_file() and not loaded.recipe.tokenizer.rebuild else read_jsonl(loaded.recipe.data.train)
    return prepare_tokenizer(loaded.recipe, registry, samples, console)


# ------------------------------------------------------------------ attention


@attrs.frozen
class AttentionMaps:
    ids: list[int]
    labels: list[str]
    weights: list[torch.Tensor]  # per layer: (H, T, T), each row sums to 1
    answer: str | None


def explicit_twin(run: Any) -> torch.nn.Module:
    """The run's model with its attention core swapped for ``explicit``, which can keep
    its weights. Attention cores have no parameters (the projections live in the model),
    so the weights load unchanged and the outputs are the same."""
    from gptf.build.components import build_model

    recipe = run.recipe
    if recipe.model.attention.name != "explicit":
        recipe = attrs.evolve(recipe, model=attrs.evolve(recipe.model, attention=ComponentSpec("explicit")))
    model = build_model(recipe, run.registry, run.tokenizer.vocab_size)
    missing, unexpected = model.load_state_dict(run.model.state_dict(), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"attention '{run.recipe.model.attention.name}' of this run has weights of its own "
            f"({sorted(unexpected)[:3]}), so it cannot be swapped for 'explicit' to draw attention maps"
        )
    return model.eval()


def attention_maps(run: Any, prompt: str, with_answer: bool = False) -> AttentionMaps:
    """Run the model once over the templated prompt (and its greedy answer) and record
    every layer's attention weights."""
    from gptf.run import sampling_settings

    generator = run.generator()
    ids = generator.prompt_ids(prompt)
    answer = None
    if with_answer:
        generation = generator.generate(prompt, sampling_settings(run.recipe, temperature=0.0))
        ids += [t.token_id for t in generation.tokens]
        answer = generation.text
    model = explicit_twin(run)
    cores = [m.attention for m in model.modules() if isinstance(m, SelfAttention)]  # layer order
    for core in cores:
        core.record = True
    with torch.no_grad():
        model(torch.tensor([ids]))
    weights = [core.last_weights[0] for core in cores]  # (H, T, T) each
    return AttentionMaps(ids, [token_text(run.tokenizer, i) for i in ids], weights, answer)


def save_attention(maps: AttentionMaps, prompt: str, out: Path, console: Console) -> list[Path]:
    """``attention.json`` always; one PNG per layer when matplotlib is installed."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "prompt": prompt,
        "answer": maps.answer,
        "tokens": maps.labels,
        "ids": maps.ids,
        "layers": [[[[round(float(w), 5) for w in row] for row in head] for head in layer] for layer in maps.weights],
    }
    (out / "attention.json").write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    saved = [out / "attention.json"]
    if not plots_available():
        console.print(f"(no heatmaps: matplotlib is not installed; {PLOTS_HINT})", highlight=False, markup=False)
        return saved
    labels, font = maps.labels, chinese_font()
    if font is None and any(not label.isascii() for label in labels):
        labels = [str(i) for i in range(len(labels))]
        console.print(
            "note: no font that can draw Chinese was found, so the heatmaps label tokens by number (#); "
            "see the table above. Install e.g. fonts-noto-cjk to see the characters.",
            highlight=False,
        )
    for layer, weights in enumerate(maps.weights):
        title = f"layer {layer}: {prompt}" if font else f"layer {layer}"
        path = save_attention_heatmaps(weights.numpy(), labels, out / f"layer{layer}.png", title)
        if path is not None:
            saved.append(path)
    return saved
