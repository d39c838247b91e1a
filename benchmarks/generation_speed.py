"""Generation speed at batch 1: KV cache vs full recompute, fp32 vs int8, side by side.

    python benchmarks/generation_speed.py                 # ~1 minute
    python benchmarks/generation_speed.py --ckpt checkpoints/teacher_3m --repeats 20

Every contender answers the teacher recipe's demo prompts greedily with exactly
``--new-tokens`` (64) new tokens (<eos> is banned so that answers do not stop early), in turns.
gptf's contenders use the recipe's decoding constraints (ban special tokens, min_new_tokens,
repetition penalty, utf8_only), so their time is what ``gptf generate`` spends per token.
The naive contenders are the original release's way: its model (explicit attention, RoPE
recomputed) run over the whole sequence again for every token, plain argmax.

Reported: tokens/s (median over answers, and best), milliseconds per token, and the
first-token latency (prompt processing + one step). Without ``--ckpt`` the weights are
random (seeded): speed does not depend on what the weights say when the length is fixed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from bench_common import emit, machine, our_data, set_threads, teacher_recipe
from naive_reference import NaiveConfig, NaiveGPT, naive_generate

from gptf.build.components import build_constraints, build_model, build_quantizer, open_registry
from gptf.generate import Generation, Generator, SamplingSettings
from gptf.recipe import ComponentSpec


def ban_eos(specs: list[ComponentSpec]) -> list[ComponentSpec]:
    """The recipe's constraints, with <eos> added to the banned special tokens."""
    ban = ComponentSpec("ban_special_tokens", {"tokens": ["<pad>", "<bos>", "<unk>", "<eos>"]})
    return [ban] + [s for s in specs if s.name != "ban_special_tokens"]


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notice for eager dynamic quantization
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10, help="answers per contender (default 10)")
    parser.add_argument("--ckpt", default=None, help="a gptf run directory to take trained weights from")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--no-naive", action="store_true", help="skip the original-style recompute contenders")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    if args.ckpt:
        from gptf.run import load_run

        run = load_run(args.ckpt)
        recipe, registry, tokenizer, model = run.recipe, run.registry, run.tokenizer, run.model
        int8 = load_run(args.ckpt, quantized=True).model
    else:
        recipe = teacher_recipe()
        registry = open_registry()
        tokenizer = our_data().tokenizer
        torch.manual_seed(0)
        model = build_model(recipe, registry, tokenizer.vocab_size).eval()
        int8 = build_quantizer(recipe, registry).quantize(model)
    constraints = build_constraints(ban_eos(recipe.generation.constraints), registry, tokenizer)
    settings = SamplingSettings(max_new_tokens=args.new_tokens, temperature=0.0)
    prompts = recipe.demo_prompts or ["什么是注意力机制？"]

    def gptf_contender(
        m: torch.nn.Module, use_cache: bool, compiled: bool = False
    ) -> Callable[[str], tuple[float, float, int]]:
        generator = Generator(m, tokenizer, constraints, use_cache=use_cache, compile_decode=compiled)
        if compiled:  # compile now (cold: tens of seconds; warm, from inductor's disk cache: seconds)
            started = time.perf_counter()
            generator.generate(prompts[0], SamplingSettings(max_new_tokens=2, temperature=0.0))
            compile_s[0] = time.perf_counter() - started

        def answer(prompt: str) -> tuple[float, float, int]:
            out: Generation = generator.generate(prompt, settings)
            return out.total_s, out.first_token_s, len(out.tokens)

        return answer

    compile_s = [0.0]
    contenders: dict[str, Callable[[str], tuple[float, float, int]]] = {
        "gptf_kv_cache_fp32": gptf_contender(model, True),
        "gptf_kv_cache_fp32_compiled": gptf_contender(model, True, compiled=True),
        "gptf_recompute_fp32": gptf_contender(model, False),
        "gptf_kv_cache_int8": gptf_contender(int8, True),
        "gptf_recompute_int8": gptf_contender(int8, False),
    }
    if not args.no_naive:
        torch.manual_seed(0)
        naive = NaiveGPT(NaiveConfig(vocab_size=tokenizer.vocab_size)).eval()
        naive_int8 = quantize_int8(naive)
        prompt_ids = {p: Generator(model, tokenizer).prompt_ids(p) for p in prompts}

        def naive_contender(m: torch.nn.Module) -> Callable[[str], tuple[float, float, int]]:
            def answer(prompt: str) -> tuple[float, float, int]:
                started = time.perf_counter()
                tokens, first = naive_generate(m, prompt_ids[prompt], args.new_tokens)
                return time.perf_counter() - started, first, len(tokens)

            return answer

        contenders["naive_recompute_fp32"] = naive_contender(naive)
        contenders["naive_recompute_int8"] = naive_contender(naive_int8)

    for call in contenders.values():  # warm-up: first calls allocate and pick kernels
        call(prompts[0])
    answers: dict[str, list[tuple[float, float, int]]] = {name: [] for name in contenders}  # seconds, first, n
    for i in range(args.repeats):
        prompt = prompts[i % len(prompts)]
        for name, call in contenders.items():
            answers[name].append(call(prompt))

    results: dict[str, dict[str, Any]] = {}
    for name, runs in answers.items():
        rates = [tokens / seconds for seconds, _, tokens in runs]
        results[name] = {
            "tokens_per_s": round(statistics.median(rates)),
            "best_tokens_per_s": round(max(rates)),
            "ms_per_token": round(1e3 / statistics.median(rates), 3),
            "first_token_ms": round(statistics.median(first for _, first, _ in runs) * 1e3, 2),
            "tokens_per_answer": runs[0][2],
        }
    for base in ("naive_recompute_fp32", "gptf_recompute_fp32"):
        if base in results:
            for r in results.values():
                r[f"speedup_vs_{base}"] = round(r["tokens_per_s"] / results[base]["tokens_per_s"], 2)
    emit(
        {
            "benchmark": "generation_speed",
            "command": " ".join(["python benchmarks/generation_speed.py", *sys.argv[1:]]),
            "weights": args.ckpt or "random (seeded), teacher size",
            "compile_s": round(compile_s[0], 2),
            "constraints (gptf)": [s.name for s in ban_eos(recipe.generation.constraints)],
            "machine": {**machine(), "threads": threads},
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
