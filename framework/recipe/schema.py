"""The recipe's shape: typed, frozen records for every section of a recipe YAML.

A recipe composes components (chosen by name, see :class:`ComponentSpec`) and the numbers
that size the model and the run. Reading the YAML lives in :mod:`gptf.recipe.yaml_file`,
``extends`` and ``KEY=VALUE`` overrides in :mod:`gptf.recipe.compose`, and turning plain
data into these records, with every problem reported at once, in :mod:`gptf.recipe.structure`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs


@attrs.frozen
class ComponentSpec:
    """A component choice: its registered ``name`` and its own parameters."""

    name: str
    params: dict[str, Any] = attrs.field(factory=dict)


def _spec(name: str, **params: Any) -> Any:
    return attrs.Factory(lambda: ComponentSpec(name, dict(params)))


@attrs.frozen
class TokenizerConfig:
    type: ComponentSpec = _spec("byte_bpe")
    path: str = "tokenizer/tokenizer.json"
    vocab_size: int = 824
    rebuild: bool = False  # retrain even if ``path`` exists


@attrs.frozen
class DataConfig:
    train: str = "data/train.jsonl"
    val: str | None = "data/val.jsonl"
    test: str | None = None
    truncate: bool = True  # samples longer than seq_len: cut (True) or refuse (False)
    augment_copies: int = 0  # extra filler-word variants of each train prompt (gptf.data)


@attrs.frozen
class ModelConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    seq_len: int = 128
    n_kv_head: int | None = None  # None: same as n_head
    mlp_ratio: int = 4
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    positional: ComponentSpec = _spec("rope")
    norm: ComponentSpec = _spec("rmsnorm")
    attention: ComponentSpec = _spec("sdpa")
    mlp: ComponentSpec = _spec("silu")
    block: ComponentSpec = _spec("prenorm")  # how a layer wires norm, attention and MLP


@attrs.frozen
class TrainingConfig:
    max_steps: int = 2000
    # seconds for the training steps and their evaluations on *this* machine: gptf run times a few
    # steps first and trains max_steps, or as many (in 50s) as fit (gptf.train.time_budget)
    time_budget_s: float | None = None
    batch_size: int = 16
    micro_batch: int = 16
    bucket_batches: int = 1  # >1: group each window of this many batches by sample length (less padding)
    answer_start_tokens: int = 0  # each answer's first N tokens (they name the concept) ...
    answer_start_weight: float = 1.0  # ... count this many times in the loss (gptf.train.answer_weights)
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    optimizer: ComponentSpec = _spec("adamw")
    scheduler: ComponentSpec = _spec("warmup_cosine")
    eval_interval: int = 100
    log_interval: int = 10
    save_interval: int = 0  # 0: only at the end
    threads: int | None = None  # None: PyTorch's default (physical cores)
    precision: Literal["auto", "fp32", "bf16"] = "fp32"  # auto: gptf.build.speed.choose_precision
    compile: bool = False
    activation_checkpointing: bool = False  # recompute each block's activations in backward: less memory
    side_by_side: bool = True  # a step's micro-batches on several threads at once where the weights stay the same
    seed: int = 42
    callbacks: list[ComponentSpec] = attrs.field(factory=list)


@attrs.frozen
class MemoryConfig:
    """``generation.memory``: answer with a memory of the taught answers beside the model
    (:mod:`gptf.decoding.taught_memory`; needs data.train)."""

    weight: float = 0.6  # share of the next-token probability the recalled answers vote with
    neighbours: int = 10  # taught answers recalled per question: those of the most similar taught questions
    temperature: float = 0.05  # how much more the closest question's answer counts (softmax of similarity / this)


@attrs.frozen
class GenerationConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    constraints: list[ComponentSpec] = attrs.field(factory=list)
    answer_filter: ComponentSpec = _spec("none")  # e.g. {name: confidence, threshold: -1.0}
    compile: bool = False  # the one-token step under torch.compile (gptf.build.speed): pays off only for many tokens
    draft: bool = True  # greedy answers by draft and verify (gptf.generate.DraftBank): same tokens, fewer model calls
    beams: int = 1  # >1: greedy answers by beam search over this many candidate answers (gptf.decoding.beam_search)
    # which finished candidate answers: the likeliest (mean token log-probability), or the likeliest
    # among those taught for questions most like this one (gptf.decoding.taught_questions; needs data.train)
    beam_choice: Literal["likelihood", "taught_question"] = "likelihood"
    memory: MemoryConfig | None = None  # null: the model alone


@attrs.frozen
class Recipe:
    """A fully resolved, validated recipe."""

    name: str
    plugins: list[str] = attrs.field(factory=list)
    output_dir: str | None = None
    tokenizer: TokenizerConfig = attrs.Factory(TokenizerConfig)
    data: DataConfig = attrs.Factory(DataConfig)
    model: ModelConfig = attrs.Factory(ModelConfig)
    training: TrainingConfig = attrs.Factory(TrainingConfig)
    quantizer: ComponentSpec = _spec("dynamic_int8")
    generation: GenerationConfig = attrs.Factory(GenerationConfig)
    demo_prompts: list[str] = attrs.field(factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir or f"checkpoints/{self.name}")


@attrs.frozen
class LoadedRecipe:
    """A recipe plus where it came from."""

    recipe: Recipe
    chain: list[Path]  # the file, then what it extends, ...
    base_dir: Path  # folder of the recipe file: plugin paths are relative to it
    data: dict[str, Any]  # the merged plain dict, as saved in a run directory
    overrides: tuple[str, ...] = ()  # the KEY=VALUE texts applied, to repeat them (gptf run --resume)
