"""Generation speed at batch 1: KV cache, draft and verify, compiled step and full recompute, side by side.

    python benchmarks/generation_speed.py --threads 1                                  # random weights, ~1 minute
    python benchmarks/generation_speed.py --threads 1 --ckpt checkpoints/teacher_3m    # real questions, a few minutes

Two conditions:

* **A trained run (``--ckpt``): real questions.** Every contender answers the held-out questions
  (``--questions``, default the run's ``data.val``) greedily with the run's own decoding constraints,
  stopping naturally at ``<eos>``, as ``gptf generate`` does. Contenders: the plain KV-cache loop
  (one token per model call), draft and verify (guesses from the run's training answers, checked
  in one call: same tokens, fewer calls; its acceptance rate and tokens per model call are
  reported, and every answer is checked to be token-identical to the plain loop's), both of them
  again through the compiled decode step (``generation.compile``: one graph for a token, one for a
  token and its guesses; checked token-identical too), and the original release's full recompute
  producing the same number of tokens per question; and beam search (``--beams``, default the
  recipe's ``generation.beams``, at least 2), eager and compiled, which gives other answers (the
  most likely of several candidates), so its tokens/s counts its own tokens. ``--fixed-length``
  gives the other condition with the trained weights instead.
* **Fixed length (no ``--ckpt``: random, seeded weights).** The teacher recipe's demo prompts,
  exactly ``--new-tokens`` (64) new tokens each (<eos> banned), fp32 and int8, KV cache and
  recompute. Speed does not depend on what the weights say when the length is fixed, but draft
  and verify does: random weights repeat no taught answer, nearly every guess is wrong, and the
  draft contender here shows what failing guesses cost, not what drafting gains.

The naive contenders are the original release's way: its model (explicit attention, RoPE
recomputed) run over the whole sequence again for every token, plain argmax. A token is any token
the model produced, the final <eos> included. Reported: tokens/s (all tokens / all seconds),
milliseconds per token, the first-token latency (prompt processing + one step; median), and the
ratio to the naive recompute.
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
from gptf.decoding.answer_workers import processes_possible, side_by_side_answers
from gptf.generate import DraftBank, Generation, Generator, SamplingSettings, greedy_answers
from gptf.recipe import ComponentSpec

#: one answer: seconds, first-token seconds, tokens (the final <eos> included), model calls, drafted, accepted
Answer = tuple[float, float, int, int, int, int]


def ban_eos(specs: list[ComponentSpec]) -> list[ComponentSpec]:
    """The recipe's constraints, with <eos> added to the banned special tokens."""
    ban = ComponentSpec("ban_special_tokens", {"tokens": ["<pad>", "<bos>", "<unk>", "<eos>"]})
    return [ban] + [s for s in specs if s.name != "ban_special_tokens"]


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notice for eager dynamic quantization
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def produced(out: Generation) -> int:
    """Tokens the model produced for an answer: its tokens, and the <eos> that ended it."""
    return len(out.tokens) + (out.stop_reason == "eos")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64, help="fixed length: tokens per answer")
    parser.add_argument("--repeats", type=int, default=None, help="fixed length: answers per contender (10); "
                        "real questions: rounds over the questions (1)")  # fmt: skip
    parser.add_argument("--ckpt", default=None, help="a trained gptf run: answer real questions with it")
    parser.add_argument("--questions", default=None, help="with --ckpt: a JSONL file (default: the run's data.val)")
    parser.add_argument("--limit", type=int, default=0, help="with --ckpt: the first N questions only (0 = all)")
    parser.add_argument("--fixed-length", action="store_true", help="with --ckpt: the fixed-length condition")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--no-naive", action="store_true", help="skip the original-style recompute contenders")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled-step contender")
    parser.add_argument(
        "--beams",
        type=int,
        default=None,
        help="trained run: the beam search contender's beams (default: the recipe's, at least 2; 1 = none)",
    )
    args = parser.parse_args()
    threads = set_threads(args.threads)
    if args.ckpt and not args.fixed_length:
        result = real_questions(args)
    else:
        result = fixed_length(args)
    emit(
        {
            "benchmark": "generation_speed",
            "command": " ".join(["python benchmarks/generation_speed.py", *sys.argv[1:]]),
            **result,
            "machine": {**machine(), "threads": threads},
        }
    )


def real_questions(args: argparse.Namespace) -> dict[str, Any]:
    """A trained run answers held-out questions; every contender produces the same tokens."""
    from gptf.data import read_jsonl
    from gptf.run import load_run, sampling_settings

    run = load_run(args.ckpt)
    path = args.questions or run.recipe.data.val
    if not path:
        raise SystemExit("the run has no data.val: pass --questions FILE.jsonl")
    prompts = [s.prompt for s in read_jsonl(path)]
    if args.limit:
        prompts = prompts[: args.limit]
    settings = sampling_settings(run.recipe, temperature=0.0, top_k=0, top_p=1.0)
    started = time.perf_counter()
    bank = run.draft_bank()
    bank_s = time.perf_counter() - started
    plain = run.generator(draft=False, beams=1)  # the run's constraints and answer filter, as gptf generate
    draft = run.generator(draft=True, beams=1)
    beams = max(run.recipe.generation.beams, 2) if args.beams is None else args.beams
    contenders: dict[str, Callable[[str], Generation]] = {
        "gptf_kv_cache_fp32": lambda p: plain.generate(p, settings),
        "gptf_draft_verify_fp32": lambda p: draft.generate(p, settings),
    }
    if beams > 1:  # other answers (the most likely of `beams` candidates): its own tokens per second
        searching = run.generator(beams=beams)
        contenders[f"gptf_beam_search_{beams}_fp32"] = lambda p: searching.generate(p, settings)
    compile_s = None
    if not args.no_compile:
        # the plain loop and draft and verify, each step after the prompt through the compiled decode step
        compiled = run.generator(draft=False, beams=1, compile=True)
        compiled_draft = run.generator(draft=True, beams=1, compile=True)  # (the run's one compiled step, shared)
        started = time.perf_counter()  # compile now (cold: tens of seconds; warm, from inductor's disk cache: seconds)
        compiled.generate(prompts[0], SamplingSettings(max_new_tokens=2, temperature=0.0))
        compiled_draft.generate(prompts[0], settings)  # the graph for a token and its guesses
        compile_s = round(time.perf_counter() - started, 2)
        contenders["gptf_kv_cache_fp32_compiled"] = lambda p: compiled.generate(p, settings)
        contenders["gptf_draft_verify_fp32_compiled"] = lambda p: compiled_draft.generate(p, settings)
        if beams > 1:  # beam search's steps through the compiled step too (a graph for its batch of `beams` rows)
            compiled_beams = run.generator(beams=beams, compile=True)
            started = time.perf_counter()
            compiled_beams.generate(prompts[0], settings)
            compile_s = round(compile_s + time.perf_counter() - started, 2)
            contenders[f"gptf_beam_search_{beams}_fp32_compiled"] = lambda p: compiled_beams.generate(p, settings)
    naive = None
    if not args.no_naive:
        torch.manual_seed(0)
        naive = NaiveGPT(NaiveConfig(vocab_size=run.tokenizer.vocab_size)).eval()

    for call in contenders.values():  # warm-up: first calls allocate and pick kernels
        call(prompts[0])
    answers: dict[str, list[Answer]] = {name: [] for name in [*contenders, "naive_recompute_fp32"]}
    # per contender that should give the plain loop's answers: how many were token-identical to them
    same_as_plain = ("gptf_draft_verify_fp32", "gptf_kv_cache_fp32_compiled", "gptf_draft_verify_fp32_compiled")
    identical = dict.fromkeys(same_as_plain, 0)
    beam_names = (f"gptf_beam_search_{beams}_fp32", f"gptf_beam_search_{beams}_fp32_compiled")
    same_beams = 0  # compiled beam search: answers token-identical to eager beam search
    asked = len(prompts) * (args.repeats or 1)  # answers per contender
    taught: list[bool] = []  # per answer: the model repeated a taught answer word for word
    taught_answers = {tuple(seq) for seq in bank.sequences}
    for _ in range(args.repeats or 1):
        for prompt in prompts:  # every contender answers this question, in turn
            outs = {}
            for name, call in contenders.items():
                out = outs[name] = call(prompt)
                answers[name].append(
                    (out.total_s, out.first_token_s, produced(out), out.model_calls, out.drafted, out.accepted)
                )
            if all(name in outs for name in beam_names):
                eager_ids, compiled_ids = ([t.token_id for t in outs[name].tokens] for name in beam_names)
                same_beams += eager_ids == compiled_ids
            reference = outs["gptf_kv_cache_fp32"]
            for name in identical:
                if name in outs:
                    same = [t.token_id for t in outs[name].tokens] == [t.token_id for t in reference.tokens]
                    identical[name] += same and outs[name].stop_reason == reference.stop_reason
            ids_out = [t.token_id for t in reference.tokens] + [run.tokenizer.eos_id] * (reference.stop_reason == "eos")
            taught.append(tuple(ids_out) in taught_answers)
            if naive is not None:
                ids = plain.prompt_ids(prompt)
                wanted = produced(reference)
                began = time.perf_counter()
                tokens, first = naive_generate(naive, ids, wanted)
                answers["naive_recompute_fp32"].append((time.perf_counter() - began, first, len(tokens), wanted, 0, 0))
    if naive is None:
        del answers["naive_recompute_fp32"]
    results = summarise(answers)
    # where the speed comes from: answers that repeat a taught answer vs the rest (which the bank guesses badly)
    by_kind = {}
    for kind, wanted in (("repeat a taught answer", True), ("are anything else", False)):
        subset = {name: [r for r, t in zip(runs, taught, strict=True) if t == wanted] for name, runs in answers.items()}
        if subset["gptf_kv_cache_fp32"]:
            by_kind[f"{kind} ({len(subset['gptf_kv_cache_fp32'])} answers)"] = {
                name: {k: v for k, v in r.items() if k in ("tokens_per_s", "tokens_per_model_call", "acceptance")}
                | ({"vs_naive": r["speedup_vs_naive_recompute_fp32"]} if "speedup_vs_naive_recompute_fp32" in r else {})
                for name, r in summarise(subset).items()
            }
    # gptf eval answers many questions at once (greedy_answers): batches vs one at a time, and the
    # batches one after the other (this process's threads on every operation) vs side by side (one
    # thread per worker, as many workers as threads: what gptf eval and gptf run do), by worker
    # processes (where they can be forked) and by threads, taking turns; greedy, and as the run itself
    # answers (beam search, with the recipe's memory)
    rounds = args.repeats or 1
    answering = {"greedy": draft} | (
        {f"beam search, {beams} beams (as the run answers)": searching} if beams > 1 else {}
    )
    kinds = {"processes": True, "threads": False} if processes_possible() else {"threads": False}
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for what, generator in answering.items():
            began = time.perf_counter()
            greedy_answers(generator, prompts, settings.max_new_tokens, workers=1)
            times.setdefault(f"{what}: batches of up to 32 of the same length, one after the other", []).append(
                time.perf_counter() - began
            )
            with side_by_side_answers() as workers:
                for kind, processes in kinds.items():  # (the first: what gptf eval does here)
                    began = time.perf_counter()
                    greedy_answers(generator, prompts, settings.max_new_tokens, processes=processes)
                    label = f"{what}: the same batches side by side, {workers} worker {kind} of 1 thread"
                    seconds = time.perf_counter() - began
                    times.setdefault(label + (" (gptf eval)" if kind == next(iter(kinds)) else ""), []).append(seconds)
    evaluation = {label: round(min(seconds), 2) for label, seconds in times.items()}
    for label, name in (("draft and verify", "gptf_draft_verify_fp32"), ("plain loop", "gptf_kv_cache_fp32")):
        evaluation[f"{label}, one question at a time"] = round(sum(r[0] for r in answers[name]) / rounds, 2)
    return {
        "condition": "trained model, real questions: greedy, the run's decoding constraints, natural stop at <eos>",
        "weights": args.ckpt,
        "questions": f"{path} ({len(prompts)} questions x {args.repeats or 1} round(s))",
        "n_questions": len(prompts),
        "draft_bank": f"{len(bank)} distinct answers of {run.recipe.data.train} ({bank_s:.2f} s to build)",
        "identical_to_plain": {
            name: f"{same}/{asked} answers token-identical" for name, same in identical.items() if name in contenders
        }
        | (
            {beam_names[1]: f"{same_beams}/{asked} answers token-identical to eager beams"}
            if beam_names[1] in contenders
            else {}
        ),
        "compile_s": compile_s,
        "constraints (gptf)": [s.name for s in run.recipe.generation.constraints],
        "results": results,
        "results_by_answer": by_kind,
        f"all {len(prompts)} questions, seconds": evaluation,
    }


def fixed_length(args: argparse.Namespace) -> dict[str, Any]:
    """Exactly ``--new-tokens`` per answer (<eos> banned), random weights unless ``--ckpt``."""
    if args.ckpt:
        from gptf.run import load_run

        run = load_run(args.ckpt)
        recipe, registry, tokenizer, model = run.recipe, run.registry, run.tokenizer, run.model
        int8 = load_run(args.ckpt, quantized=True).model
        bank = run.draft_bank()
    else:
        recipe = teacher_recipe()
        registry = open_registry()
        data = our_data()
        tokenizer = data.tokenizer
        torch.manual_seed(0)
        model = build_model(recipe, registry, tokenizer.vocab_size).eval()
        int8 = build_quantizer(recipe, registry).quantize(model)
        bank = DraftBank.from_texts((s.completion for s in data.train), tokenizer)
    constraints = build_constraints(ban_eos(recipe.generation.constraints), registry, tokenizer)
    settings = SamplingSettings(max_new_tokens=args.new_tokens, temperature=0.0)
    prompts = recipe.demo_prompts or ["什么是注意力机制？"]
    compile_s = [0.0]

    def gptf_contender(
        m: torch.nn.Module, use_cache: bool, compiled: bool = False, draft: bool = False
    ) -> Callable[[str], Answer]:
        generator = Generator(
            m, tokenizer, constraints, use_cache=use_cache, compile_decode=compiled, draft=draft, draft_bank=bank
        )
        if compiled:  # compile now (cold: tens of seconds; warm, from inductor's disk cache: seconds)
            started = time.perf_counter()
            generator.generate(prompts[0], SamplingSettings(max_new_tokens=2, temperature=0.0))
            compile_s[0] = time.perf_counter() - started

        def answer(prompt: str) -> Answer:
            out = generator.generate(prompt, settings)
            return out.total_s, out.first_token_s, len(out.tokens), out.model_calls, out.drafted, out.accepted

        return answer

    contenders: dict[str, Callable[[str], Answer]] = {
        "gptf_kv_cache_fp32": gptf_contender(model, True),
        "gptf_draft_verify_fp32": gptf_contender(model, True, draft=True),
    }
    if not args.no_compile:
        contenders["gptf_kv_cache_fp32_compiled"] = gptf_contender(model, True, compiled=True)
    contenders["gptf_recompute_fp32"] = gptf_contender(model, False)
    contenders["gptf_kv_cache_int8"] = gptf_contender(int8, True)
    contenders["gptf_recompute_int8"] = gptf_contender(int8, False)
    if not args.no_naive:
        torch.manual_seed(0)
        naive = NaiveGPT(NaiveConfig(vocab_size=tokenizer.vocab_size)).eval()
        naive_int8 = quantize_int8(naive)
        prompt_ids = {p: Generator(model, tokenizer).prompt_ids(p) for p in prompts}

        def naive_contender(m: torch.nn.Module) -> Callable[[str], Answer]:
            def answer(prompt: str) -> Answer:
                started = time.perf_counter()
                tokens, first = naive_generate(m, prompt_ids[prompt], args.new_tokens)
                return time.perf_counter() - started, first, len(tokens), len(tokens), 0, 0

            return answer

        contenders["naive_recompute_fp32"] = naive_contender(naive)
        contenders["naive_recompute_int8"] = naive_contender(naive_int8)

    for call in contenders.values():  # warm-up: first calls allocate and pick kernels
        call(prompts[0])
    answers: dict[str, list[Answer]] = {name: [] for name in contenders}
    for i in range(args.repeats or 10):
        prompt = prompts[i % len(prompts)]
        for name, call in contenders.items():
            answers[name].append(call(prompt))
    results = summarise(answers)
    for r in results.values():
        r["tokens_per_answer"] = args.new_tokens
    return {
        "condition": f"fixed length: {args.new_tokens} tokens per answer, <eos> banned",
        "weights": args.ckpt or "random (seeded), teacher size",
        "note": "draft and verify guesses from taught answers; weights that repeat none of them (random ones) "
        "make nearly every guess wrong, so here it shows what failing guesses cost, not what drafting gains: "
        "measure it with a trained run on real questions (--ckpt)",
        "compile_s": round(compile_s[0], 2) if not args.no_compile else None,
        "constraints (gptf)": [s.name for s in ban_eos(recipe.generation.constraints)],
        "results": results,
    }


def summarise(answers: dict[str, list[Answer]]) -> dict[str, dict[str, Any]]:
    """Per contender: tokens/s over all answers, ms/token, median first token, model calls, guesses."""
    results: dict[str, dict[str, Any]] = {}
    for name, runs in answers.items():
        seconds = sum(r[0] for r in runs)
        tokens = sum(r[2] for r in runs)
        calls, drafted, accepted = (sum(r[i] for r in runs) for i in (3, 4, 5))
        result: dict[str, Any] = {
            "tokens_per_s": round(tokens / seconds),
            "ms_per_token": round(1e3 * seconds / tokens, 3),
            "first_token_ms": round(statistics.median(r[1] for r in runs) * 1e3, 2),
            "tokens": tokens,
        }
        if not name.startswith("naive"):
            result["tokens_per_model_call"] = round(tokens / calls, 2)  # the prompt's call included
        if drafted:
            result["acceptance"] = round(accepted / drafted, 3)  # guessed tokens the model agreed with
            result["drafted"] = drafted
        results[name] = result
    for base in ("naive_recompute_fp32", "gptf_kv_cache_fp32"):
        if base in results:
            for r in results.values():
                r[f"speedup_vs_{base}"] = round(r["tokens_per_s"] / results[base]["tokens_per_s"], 2)
    return results


if __name__ == "__main__":
    main()
