"""Draft and verify (gptf.generate.DraftBank, Generator.decode_drafted) must not change an answer.

* a chunk of tokens fed through the KV cache gives the logits of a full forward, also after the
  cache was cut back (KVCache.truncate);
* greedy answers with guesses equal the plain loop's, token for token, with every constraint of the
  teacher recipe, and so do their stop reasons and the answer filter's measures: whether the guesses
  are all right, partly right, always wrong, or come from the context only;
* sampling, and int8 weights, keep the plain loop;
* the bank of a run comes from its training answers, and without one nothing fails.
No timing here: speed is measured by ``benchmarks/generation_speed.py``.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES

from gptf.build.components import build_model, open_registry
from gptf.data import read_jsonl
from gptf.generate import DraftBank, Generation, Generator, SamplingSettings, lookup_in_context
from gptf.interfaces import FinishedAnswer
from gptf.model import KVCache
from gptf.plugins.answer_filters.confidence import ConfidenceFilter
from gptf.recipe import recipe_from_dict
from gptf.run import LoadedRun, draft_bank, load_run

REGISTRY = open_registry()
PROMPTS = [s.prompt for s in read_jsonl(FIXTURES / "tiny_train.jsonl") + read_jsonl(FIXTURES / "tiny_val.jsonl")]
PROMPTS += ["你好", "什么是注意力机制？请详细说明", "RoPE RoPE RoPE", "为什么", "解释一下量化和蒸馏的区别"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)


def tiny_model(positional: str, attention: str, vocab_size: int = 50) -> torch.nn.Module:
    model = {"n_layer": 2, "n_head": 2, "n_embd": 32, "seq_len": 64, "positional": positional, "attention": attention}
    recipe = recipe_from_dict({"name": "probe", "model": model})
    torch.manual_seed(1)
    return build_model(recipe, REGISTRY, vocab_size).eval()


@pytest.mark.parametrize("attention", REGISTRY.names("attention"))
@pytest.mark.parametrize("positional", REGISTRY.names("positional"))
def test_chunked_cached_forward_equals_the_full_forward(positional: str, attention: str) -> None:
    """Chunks of several tokens after cached ones: positions and the causal mask continue after
    the cache, so the logits are those of one forward over the whole sequence."""
    model = tiny_model(positional, attention)
    ids = torch.randint(0, 50, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(ids)
        cache = model.new_cache(1)
        bounds = [0, 9, 10, 14, 21, 22, 30, 40]  # chunks of 9, 1, 4, 7, 1, 8, 10 tokens
        parts = [model(ids[:, a:b], cache) for a, b in itertools.pairwise(bounds)]
        assert cache.length == 40
        torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)

        # guesses that were wrong: feed them, cut the cache back, feed the right tokens
        cache = model.new_cache(1)
        model(ids[:, :20], cache)
        model(torch.randint(0, 50, (1, 8), generator=torch.Generator().manual_seed(1)), cache)
        cache.truncate(20)
        again = model(ids[:, 20:40], cache)
        torch.testing.assert_close(again, full[:, 20:40], rtol=1e-5, atol=1e-5)


def test_truncating_the_kv_cache() -> None:
    cache = KVCache(n_layer=1, batch=1, n_kv_head=1, max_len=8, head_dim=2)
    cache.update(0, torch.ones(1, 1, 5, 2), torch.ones(1, 1, 5, 2))
    cache.advance(5)
    cache.truncate(3)
    assert cache.length == 3
    keys, _ = cache.update(0, torch.full((1, 1, 2, 2), 7.0), torch.zeros(1, 1, 2, 2))
    assert keys.shape[2] == 5 and keys[0, 0, :, 0].tolist() == [1, 1, 1, 7, 7]  # written over, not appended
    cache.truncate(3)  # the same length again: allowed
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="cannot truncate"):
            cache.truncate(bad)


# ------------------------------------------------------------------ the bank's guesses


def test_the_bank_guesses_what_followed_the_longest_ending() -> None:
    bank = DraftBank([[1, 2, 3, 4, 5], [9, 2, 3, 6, 7], [8, 2, 3, 6, 7], [1, 2]], max_ngram=4, agreement=0.6)
    assert len(bank) == 4
    # ending (2, 3): three places, 6 follows two of them (2/3 >= 0.6), then 7 follows both
    assert bank.propose([0, 2, 3], 15) == [6, 7]
    # ending (1, 2, 3) matches one place only: its whole continuation
    assert bank.propose([1, 2, 3], 15) == [4, 5]
    assert DraftBank([[1, 2, 3, 4, 5]], max_draft=2).propose([1, 2], 15) == [3, 4]  # never beyond max_draft
    assert bank.propose([1, 2, 3], 1) == [4]  # never beyond the limit
    assert bank.propose([1, 2, 3], 0) == []
    # ending (2,): 4 places, 3 after three of them (3/3 that go on), then 4/6/6: 6 has 2 of 3 votes, then 7;
    # but (5, 2) was found only in part (its last token), so the guess stops at 2**1 - 1 = 1 token
    assert bank.propose([5, 2], 15) == [3]
    assert bank.propose([2], 15) == [3, 6, 7]  # the whole ending found: as far as the answers agree
    strict = DraftBank([[1, 2, 3], [1, 4, 5]], agreement=0.6)
    assert strict.propose([7, 1], 15) == []  # the taught answers part ways at once: no guess, no context search
    assert DraftBank([[1, 2, 3]], max_draft=0).propose([1], 5) == []
    # an answer's first tokens are looked up among the answers' first tokens
    starts = DraftBank([[5, 1, 2], [1, 9, 9]])
    assert starts.propose([7, 8, 1], 15) == []  # 1 is followed by 2 once, by 9 once: no majority
    assert starts.propose([7, 8, 1], 15, start=2) == [9, 9]  # the answer [1]: only [1, 9, 9] begins so
    assert starts.propose([7, 8, 5, 1], 15, start=2) == [2]  # the answer [5, 1]


def test_a_guess_after_a_partly_matched_ending_stays_short() -> None:
    """Only an ending found whole says the answer retells a taught one (see DraftBank._lookup)."""
    bank = DraftBank([list(range(1, 20))], max_ngram=4)
    assert bank.propose([2, 3, 4, 5], 30) == list(range(6, 20))  # the last 4 tokens are taught: all of it
    assert bank.propose([0, 0, 4, 5], 30) == [6, 7, 8]  # only (4, 5) is: 2**2 - 1 tokens
    assert bank.propose([0, 0, 0, 5], 30) == [6]  # only (5,): 1 token
    beginning = DraftBank([[4, 5, *range(6, 20)]])  # the answer so far is a taught answer's beginning: all of it
    assert beginning.propose([7, 8, 4, 5], 30, start=2) == list(range(6, 20))


def test_without_a_bank_the_context_is_searched() -> None:
    empty = DraftBank()
    assert len(empty) == 0
    # the ending (5, 6) occurred before: what followed it then
    assert empty.propose([5, 6, 7, 8, 1, 5, 6], 3) == [7, 8, 1]
    assert empty.propose([5, 6, 7, 8, 1, 6], 3) == []  # a single token says too little
    assert empty.propose([], 3) == [] and empty.propose([4], 3) == []
    assert lookup_in_context([1, 2, 3, 1, 2, 3, 1, 2], 4, 10) == (3, 1, 2)  # the latest occurrence, longest ending
    bank = DraftBank([[40, 41, 42]])
    assert bank.propose([5, 6, 9, 5, 6], 4) == [9, 5, 6]  # the bank never saw 6: the context instead


# ------------------------------------------------------------------ answers: exactly the plain loop's


class ScriptedBank(DraftBank):
    """Guesses from a script: the plain loop's own answers (all right), or each token changed."""

    def __init__(self, answers: dict[tuple[int, ...], list[int]], wrong_every: int = 0) -> None:
        super().__init__()
        self.answers, self.wrong_every = answers, wrong_every

    def propose(self, context: Sequence[int], limit: int, start: int | None = None) -> list[int]:
        for prompt, answer in self.answers.items():
            if tuple(context[: len(prompt)]) == prompt:
                done = len(context) - len(prompt)
                guess = list(answer[done : done + min(limit, 6)])
                if self.wrong_every:  # every wrong_every-th guessed token is wrong (1: all of them)
                    guess = [(t + 1) % 200 if (done + i) % self.wrong_every == 0 else t for i, t in enumerate(guess)]
                return guess
        return []


def finished(generator: Generator, prompts: Sequence[str]) -> list[FinishedAnswer]:
    """The plain loop's answers to ``prompts`` as an answer filter sees them."""
    settings = SamplingSettings(max_new_tokens=20, temperature=0.0)
    rows = [generator.decode([generator.prompt_ids(p)], settings)[0] for p in prompts]
    return [row.finished_answer(p) for row, p in zip(rows, prompts, strict=True)]


def tokens_of(g: Generation) -> list[int]:
    return [t.token_id for t in g.tokens]


def same_answer(drafted: Generation, plain: Generation) -> None:
    assert tokens_of(drafted) == tokens_of(plain), plain.prompt
    assert (drafted.stop_reason, drafted.text, drafted.raw_text) == (plain.stop_reason, plain.text, plain.raw_text)
    assert [t.probability for t in drafted.tokens] == pytest.approx([t.probability for t in plain.tokens], abs=1e-5)
    assert (drafted.declined, drafted.model_text) == (plain.declined, plain.model_text)
    if plain.confidence is None:
        assert drafted.confidence is None
    elif math.isinf(plain.confidence):
        assert drafted.confidence == plain.confidence
    else:
        assert drafted.confidence == pytest.approx(plain.confidence, abs=1e-5)


def teacher_generators(run: LoadedRun, **options: object) -> tuple[Generator, Generator]:
    """The plain loop and draft and verify, both with every constraint of the teacher recipe
    (ban_special_tokens, min_new_tokens, repetition_penalty 1.1, utf8_only) plus stop strings."""
    plain = run.generator(stops=["。", "，"], draft=False)
    drafting = run.generator(stops=["。", "，"], draft=True)
    for name, value in options.items():
        setattr(drafting, name, value)
    return plain, drafting


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    loaded = load_run(tiny_run)
    names = [s.name for s in loaded.recipe.generation.constraints]
    assert {"ban_special_tokens", "min_new_tokens", "repetition_penalty", "utf8_only"} <= set(names)
    return loaded


@pytest.mark.parametrize("wrong_every", [0, 3, 1])
def test_drafted_answers_equal_the_plain_loop(run: LoadedRun, wrong_every: int) -> None:
    """Guesses all right (0), one in three wrong (3), all wrong (1): the same answers, the same
    stop reasons and the same per-token measures; right guesses save model calls."""
    plain, drafting = teacher_generators(run)
    settings = SamplingSettings(max_new_tokens=20, temperature=0.0)
    answers = {}
    for prompt in PROMPTS:
        ids = tuple(plain.prompt_ids(prompt))
        answers[ids] = [*tokens_of(plain.generate(prompt, settings)), run.tokenizer.eos_id]
    drafting.draft_bank = ScriptedBank(answers, wrong_every)
    # an answer filter that declines some of the answers but not all, on one of its measures: the
    # threshold goes in the widest gap between two answers' confidences
    measure = {0: "mean_logprob", 3: "min_logprob", 1: "entropy"}[wrong_every]
    plain.measures = True
    judge = ConfidenceFilter(run.tokenizer, measure=measure)
    confidences = sorted(judge.confidence(a) for a in finished(plain, PROMPTS))
    low, high = max(itertools.pairwise(confidences), key=lambda pair: pair[1] - pair[0])
    assert high - low > 1e-4  # a threshold well clear of every answer's confidence
    for generator in (plain, drafting):
        generator.answer_filter = ConfidenceFilter(run.tokenizer, threshold=(low + high) / 2, measure=measure)
        generator.measures = True
    saved_calls = declined = 0
    for prompt in PROMPTS:
        expected = plain.generate(prompt, settings)
        got = drafting.generate(prompt, settings)
        same_answer(got, expected)
        declined += got.declined
        assert expected.drafted == 0 and expected.model_calls == len(expected.tokens) + (expected.stop_reason == "eos")
        assert got.accepted <= got.drafted
        if wrong_every == 1:
            assert got.accepted == 0
        saved_calls += expected.model_calls - got.model_calls
        ids = plain.prompt_ids(prompt)
        rows = plain.decode([ids], settings)[0], drafting.decode_drafted(ids, settings)
        assert rows[1].logprobs == pytest.approx(rows[0].logprobs, abs=1e-5)  # what the answer filter reads
        assert rows[1].entropies == pytest.approx(rows[0].entropies, abs=1e-5)
    assert 0 < declined < len(PROMPTS)
    if wrong_every == 0:
        assert saved_calls > len(PROMPTS)  # the right guesses saved model calls
    if wrong_every == 1:
        assert saved_calls == 0


def test_the_runs_bank_and_the_context_only_bank_give_the_plain_answers(run: LoadedRun, tiny_run: Path) -> None:
    settings = SamplingSettings(max_new_tokens=30, temperature=0.0)
    plain, _ = teacher_generators(run)
    bank = DraftBank.from_texts((s.completion for s in read_jsonl(tiny_run.parent / "tiny_train.jsonl")), run.tokenizer)
    for chosen in (bank, DraftBank()):
        _, drafting = teacher_generators(run, draft_bank=chosen)
        for prompt in PROMPTS:
            same_answer(drafting.generate(prompt, settings), plain.generate(prompt, settings))


def test_the_budget_and_seq_len_end_a_drafted_answer_as_the_plain_loop(run: LoadedRun) -> None:
    """<eos> banned, so only the budget (max_new_tokens, or the room left in seq_len) ends an answer;
    all-right guesses reach it inside one verify call."""
    from gptf.build.components import build_constraints
    from gptf.recipe import ComponentSpec

    ban = ComponentSpec("ban_special_tokens", {"tokens": ["<pad>", "<bos>", "<unk>", "<eos>"]})
    specs = [ban, *(s for s in run.recipe.generation.constraints if s.name != "ban_special_tokens")]
    constraints = build_constraints(specs, run.registry, run.tokenizer)
    plain = Generator(run.model, run.tokenizer, constraints, draft=False)
    drafting = Generator(run.model, run.tokenizer, constraints)
    for budget in (1, 2, 3, 7):
        settings = SamplingSettings(max_new_tokens=budget, temperature=0.0)
        for prompt in PROMPTS[:8]:
            expected = plain.generate(prompt, settings)
            ids = tuple(plain.prompt_ids(prompt))
            drafting.draft_bank = ScriptedBank({ids: tokens_of(expected) * 3})
            got = drafting.generate(prompt, settings)
            same_answer(got, expected)
            assert (len(got.tokens), got.stop_reason) == (budget, "max_new_tokens")
    seq_len = run.model.config.seq_len
    context = [run.tokenizer.bos_id, *run.tokenizer.encode("什么是注意力机制？" * 20)][: seq_len - 5]
    settings = SamplingSettings(max_new_tokens=seq_len, temperature=0.0)
    expected = plain.generate("x", settings, context_ids=context)
    assert (len(expected.tokens), expected.stop_reason) == (5, "seq_len")
    for bank in (ScriptedBank({tuple(context): tokens_of(expected) * 3}), DraftBank()):
        drafting.draft_bank = bank
        same_answer(drafting.generate("x", settings, context_ids=context), expected)


def test_sampling_and_int8_keep_the_plain_loop(run: LoadedRun, tiny_run: Path) -> None:
    drafting = run.generator(draft=True)
    assert drafting.drafts(SamplingSettings(temperature=0.0))
    assert not drafting.drafts(SamplingSettings(temperature=0.7))
    sampled = drafting.generate("你好", SamplingSettings(max_new_tokens=10, temperature=0.7), seed=3)
    assert sampled.drafted == 0 and sampled.model_calls == len(sampled.tokens) + (sampled.stop_reason == "eos")
    again = run.generator(draft=False).generate("你好", SamplingSettings(max_new_tokens=10, temperature=0.7), seed=3)
    assert tokens_of(sampled) == tokens_of(again)
    # int8 activations are quantized per call: a chunk of tokens rounds differently, so no drafting
    assert not load_run(tiny_run, quantized=True).generator(draft=True).draft
    assert not Generator(run.model, run.tokenizer, use_cache=False).draft  # recompute: nothing to verify with
    assert not run.generator(draft=False).draft


# ------------------------------------------------------------------ where a run's bank comes from


def test_a_runs_bank_is_built_from_its_training_answers(
    run: LoadedRun, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = read_jsonl(FIXTURES / "tiny_train.jsonl")
    distinct = list(dict.fromkeys(s.completion for s in train))
    eos = run.tokenizer.eos_id
    monkeypatch.chdir(tiny_run.parent)  # data.train is read where gptf run read it
    bank = draft_bank(run.recipe, run.tokenizer)
    assert len(bank) == len(distinct) < len(train)
    assert [list(s) for s in bank.sequences] == [[*run.tokenizer.encode(c), eos] for c in distinct]
    fresh = load_run(tiny_run)
    assert fresh.draft_bank() is fresh.draft_bank()  # built once per run, shared by its generators
    assert fresh.generator().draft_bank is fresh.draft_bank()

    monkeypatch.chdir(tmp_path)  # no training file here: an empty bank (context only), no error
    assert len(draft_bank(run.recipe, run.tokenizer)) == 0
    assert load_run(tiny_run).generator().generate("你好", SamplingSettings(max_new_tokens=5)).tokens
    (tmp_path / "tiny_train.jsonl").mkdir()  # not a file
    assert len(draft_bank(run.recipe, run.tokenizer)) == 0
    shutil.rmtree(tmp_path / "tiny_train.jsonl")
    good = '{"prompt": "问", "completion": "答案。"}'
    (tmp_path / "tiny_train.jsonl").write_text(f"{good}\nnot json\n{good}\n", encoding="utf-8")
    assert len(draft_bank(run.recipe, run.tokenizer)) == 1  # the good lines
    (tmp_path / "tiny_train.jsonl").write_bytes(b"\xff\xfe broken")
    assert len(draft_bank(run.recipe, run.tokenizer)) == 0

    monkeypatch.chdir(tiny_run.parent)
    off = run.recipe.generation.__class__(**{**_fields(run.recipe.generation), "draft": False})
    recipe = run.recipe.__class__(**{**_fields(run.recipe), "generation": off})
    assert len(draft_bank(recipe, run.tokenizer)) == 0  # generation.draft: false reads nothing


def _fields(record: object) -> dict[str, object]:
    import attrs

    return {f.name: getattr(record, f.name) for f in attrs.fields(type(record))}


def test_the_recipe_key_is_checked_and_switches_drafting_off(run: LoadedRun) -> None:
    from gptf.errors import RecipeError
    from gptf.recipe import load_recipe

    tiny = FIXTURES / "tiny.yaml"
    assert load_recipe(tiny).recipe.generation.draft is True
    assert load_recipe(tiny, ["generation.draft=false"]).recipe.generation.draft is False
    with pytest.raises(RecipeError, match="draft"):
        load_recipe(tiny, ["generation.draft=sometimes"])


def test_the_commands_draft_unless_told_not_to(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gptf generate --stats says how many guesses were kept; --no-draft gives the same answer one
    token per call; chat and serve take --no-draft too."""
    from conftest import invoke

    from gptf.tools.serve import ChatService

    monkeypatch.chdir(tiny_run.parent)  # where the run's training file is: a real bank
    args = ["generate", "--ckpt", str(tiny_run), "--prompt", "什么是注意力机制？", "--temperature", "0", "--stats"]
    drafted, plain = invoke(args), invoke([*args, "--no-draft"])
    assert drafted.exit_code == 0 and plain.exit_code == 0, drafted.output + plain.output
    assert drafted.stdout == plain.stdout
    assert "model calls" in drafted.stderr and "model calls" in plain.stderr
    assert "guessed tokens kept" not in plain.stderr
    run = load_run(tiny_run)
    assert ChatService(run, [])._generator(1.1).draft
    assert not ChatService(run, [], draft=False)._generator(1.1).draft
    for command in ("generate", "chat", "serve"):  # a plain flag, not a pair with a "--no-no-draft"
        usage = invoke([command, "--help"]).stdout
        assert "--no-draft" in usage and "--no-no-" not in usage


def test_a_runs_generators_share_one_compiled_step(tiny_run: Path) -> None:
    """generation.compile: true: the generators of one run (serve's, one per repetition penalty; chat's,
    with beams and without) share one compiled step, so the graphs compile once per process; the
    int8 weights never compile (nothing is compiled here: torch.compile waits for the first call)."""
    import attrs

    run = load_run(tiny_run)
    run.recipe = attrs.evolve(run.recipe, generation=attrs.evolve(run.recipe.generation, compile=True))
    greedy, beams = run.generator(repetition_penalty=1.1, beams=1), run.generator(repetition_penalty=1.3, beams=4)
    assert greedy.compiled_step is not None and greedy.compiled_step is beams.compiled_step
    assert run.generator(use_cache=False).compiled_step is None
    quantized = load_run(tiny_run, quantized=True)
    quantized.recipe = run.recipe
    assert quantized.generator().compiled_step is None


@pytest.mark.slow
def test_chat_and_serve_compile_before_the_first_question(tiny_run: Path) -> None:
    """With generation.compile (or --compile), `gptf chat` and `gptf serve` answer a question nobody asked
    at start-up, which compiles the graphs the first student would otherwise wait for; without, nothing."""
    from gptf.cli.ask import compile_before_the_first_question
    from gptf.tools.serve import ChatService

    run = load_run(tiny_run)
    plain = run.generator()
    plain.generate = None  # type: ignore[assignment]  # (would fail if called)
    compile_before_the_first_question(plain, ["你好"], SamplingSettings(max_new_tokens=4))
    service = ChatService(run, ["什么是注意力机制？"], compile=True)  # gptf serve --compile
    compile_before_the_first_question(service.default_generator(), service.examples, service.defaults)
    step = run.compiled_step()
    assert step.graphs and step.compile_s > 0
    assert service.default_generator().compiled_step is step


def test_a_computer_that_cannot_compile_answers_uncompiled(tiny_run: Path) -> None:
    """No C++ compiler (a student's laptop): `--compile` says so in one line at start-up, and the
    answers come uncompiled, the same as without --compile."""
    import io

    import torch._dynamo.exc
    from rich.console import Console

    from gptf.cli import ask

    run = load_run(tiny_run)
    generator = run.generator(beams=1, draft=False, compile=True)

    def no_compiler(*args: object) -> torch.Tensor:
        missing = RuntimeError("InvalidCxxCompiler: no working C++ compiler")
        raise torch._dynamo.exc.BackendCompilerFailed(None, missing, None)

    generator.compiled_step._fn = no_compiler  # type: ignore[union-attr]
    shown = io.StringIO()
    console = ask.err_console
    ask.err_console = Console(file=shown, width=200)
    try:
        ask.compile_before_the_first_question(generator, ["你好"], SamplingSettings(max_new_tokens=4))
    finally:
        ask.err_console = console
    assert "decoding uncompiled from now on: InvalidCxxCompiler: no working C++ compiler" in shown.getvalue()
    assert "compiled in" not in shown.getvalue() and generator.compiled_step.eager  # type: ignore[union-attr]
    settings = SamplingSettings(max_new_tokens=12, temperature=0.0)
    plain = run.generator(beams=1, draft=False)
    question = "什么是注意力机制？"
    assert tokens_of(generator.generate(question, settings)) == tokens_of(plain.generate(question, settings))


@pytest.mark.slow
def test_drafting_with_the_compiled_step_gives_the_plain_answers(run: LoadedRun) -> None:
    """generation.compile: true and drafting together: every call after the prompt goes through the
    compiled step, one graph for a single token and one for a token and its guesses (any number of
    them: no recompiling); the answers stay the plain loop's."""
    plain, _ = teacher_generators(run)
    both = Generator(run.model, run.tokenizer, plain.constraints, compile_decode=True, draft=True)
    settings = SamplingSettings(max_new_tokens=20, temperature=0.0)
    answers = {tuple(plain.prompt_ids(p)): tokens_of(plain.generate(p, settings)) for p in PROMPTS[:6]}

    class EveryOtherCall(ScriptedBank):  # some calls with guesses, some without
        def propose(self, context: Sequence[int], limit: int, start: int | None = None) -> list[int]:
            return super().propose(context, limit) if len(context) % 2 else []

    both.draft_bank = EveryOtherCall(answers, wrong_every=3)
    drafted = 0
    for prompt in PROMPTS[:6]:
        got = both.generate(prompt, settings)
        same_answer(got, plain.generate(prompt, settings))
        drafted += got.drafted
    assert drafted > 0 and both.compiled_step is not None and both.compiled_step.compiled_batches == {1}
    assert both.compiled_step.graphs == {(1, False), (1, True)}
