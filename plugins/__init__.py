"""Built-in components. Each module is an ordinary gptf plugin: a component and the
``@hookimpl`` function that registers it, the same way a student's plugin does it."""

BUILTIN_MODULES: tuple[str, ...] = (
    "gptf.plugins.tokenization.byte_bpe",
    "gptf.plugins.positional.rope",
    "gptf.plugins.positional.learned",
    "gptf.plugins.positional.no_positions",
    "gptf.plugins.norms.rmsnorm",
    "gptf.plugins.norms.layernorm",
    "gptf.plugins.attention.sdpa",
    "gptf.plugins.attention.explicit",
    "gptf.plugins.mlp.silu",
    "gptf.plugins.optimizers.adamw",
    "gptf.plugins.schedulers.warmup_cosine",
    "gptf.plugins.schedulers.constant",
    "gptf.plugins.quantizers.dynamic_int8",
    "gptf.plugins.quantizers.no_quantization",
    "gptf.plugins.decoding.ban_special_tokens",
    "gptf.plugins.decoding.min_new_tokens",
    "gptf.plugins.decoding.repetition_penalty",
    "gptf.plugins.decoding.stop_strings",
)
