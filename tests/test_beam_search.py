"""Beam search (gptf.decoding.beam_search): greedy answers chosen by the whole answer's likelihood.

* with one beam it is greedy decoding, token for token, under every constraint of the teacher recipe;
* on a model whose best first token leads nowhere, it finds the answer of highest mean
  log-probability (checked against every possible answer), where greedy does not;
* many prompts in one batch, the KV cache rows rearranged each step, give the answers of one prompt
  at a time and of no cache at all;
* the answer filter reads the winner's own per-token measures;
* the recipe key, the commands' --beams and chat's /beams refuse bad values by name.
No timing here: speed is measured by ``benchmarks/generation_speed.py``.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, TINY_RECIPE, invoke
from rich.console import Console

from gptf.data import read_jsonl
from gptf.generate import Generator, SamplingSettings, greedy_answers
from gptf.model import KVCache
from gptf.recipe import load_recipe
from gptf.run import LoadedRun, load_run, run_recipe

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)

PROMPTS = [s.prompt for s in read_jsonl(FIXTURES / "tiny_train.jsonl") + read_jsonl(FIXTURES / "tiny_val.jsonl")]
PROMPTS += ["你好", "什么是注意力机制？请详细说明", "为什么", "解释一下量化和蒸馏的区别"]
GREEDY = SamplingSettings(max_new_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    return load_run(tiny_run)


def answer_ids(generator: Generator, prompt: str) -> list[int]:
    return [t.token_id for t in generator.generate(prompt, GREEDY).tokens]


def test_one_beam_is_greedy_decoding(run: LoadedRun) -> None:
    """beams=1 through the beam search code gives the plain loop's tokens and measures, with the
    teacher recipe's constraints (ban_special_tokens, min_new_tokens, repetition penalty, utf8_only)
    and stop strings."""
    plain = run.generator(stops=["。"], draft=False, beams=1)
    plain.measures = True
    for prompt in PROMPTS:
        ids = plain.prompt_ids(prompt)
        (expected,) = plain.decode([ids], GREEDY)
        (got,) = plain.decode_beams([ids], GREEDY)  # the beam search code, with one beam
        assert got.state.new_ids == expected.state.new_ids, prompt
        assert got.stop_reason == expected.stop_reason
        assert got.logprobs == pytest.approx(expected.logprobs, abs=1e-5)
        assert got.entropies == pytest.approx(expected.entropies, abs=1e-5)


class Bigram(torch.nn.Module):
    """A model whose next-token scores depend on the last token only (a table), so every answer's
    log-probability can be computed by hand. Decoded without a KV cache."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.config = type("Config", (), {"seq_len": 32})()

    def forward(self, ids: torch.Tensor, cache: object = None) -> torch.Tensor:
        return self.table[ids]  # (B, T, V)


class Letters:
    """A tokenizer of single letters: 0 = <eos>, 1.. = a, b, c, ..."""

    eos_id, bos_id, pad_id, unk_id = 0, 9, 9, 9

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(ord("a") + i - 1) for i in ids)


def mean_logprob(table: torch.Tensor, start: int, answer: list[int]) -> float:
    logprobs = table.log_softmax(-1)
    path = [start, *answer, 0]
    return sum(float(logprobs[a, b]) for a, b in itertools.pairwise(path)) / (len(answer) + 1)


def test_beam_search_finds_the_most_likely_whole_answer_where_greedy_does_not() -> None:
    """After the prompt token 5: "a" is the likeliest first token but leads to a flat, unsure
    continuation; "b" is a little less likely and then certain. Greedy says "a...", beam search the
    answer of highest mean log-probability over *all* answers of up to 3 tokens (enumerated here)."""
    vocab = 6
    table = torch.full((vocab, vocab), 0.0)
    table[5] = torch.tensor([-9.0, 2.0, 1.8, -9.0, -9.0, -9.0])  # first token: a (0.55) or b (0.45)
    table[1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -9.0])  # after a: anything, unsure
    table[2] = torch.tensor([-9.0, -9.0, -9.0, 9.0, -9.0, -9.0])  # after b: c, surely
    table[3] = torch.tensor([9.0, -9.0, -9.0, -9.0, -9.0, -9.0])  # after c: the end, surely
    table[4] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -9.0])
    generator = Generator(Bigram(table), Letters(), use_cache=False, draft=False, measures=True)  # type: ignore[arg-type]
    settings = SamplingSettings(max_new_tokens=3, temperature=0.0)
    (greedy,) = generator.decode([[5]], settings)
    assert greedy.state.new_ids[0] == 1  # "a"
    answers = [list(a) for n in (1, 2, 3) for a in itertools.product(range(1, 5), repeat=n)]
    best = max(answers, key=lambda a: mean_logprob(table, 5, a))
    assert best == [2, 3]  # "bc", then <eos>
    for beams in (2, 4, 30):
        generator.beams = beams
        (found,) = generator.decode_beams([[5]], settings)
        assert found.state.new_ids == best and found.stop_reason == "eos"
        answer_only = mean_logprob(table, 5, best) * (len(best) + 1) - found_eos(table)
        assert sum(found.logprobs) == pytest.approx(answer_only, abs=1e-5)
    generator.beams = 4
    assert generator.generate("x", settings, context_ids=[5]).raw_text == "bc"


def found_eos(table: torch.Tensor) -> float:
    """The <eos> step of "bc": part of the ranking score, not of the answer's own measures."""
    return float(table.log_softmax(-1)[3, 0])


def test_a_batch_of_prompts_gives_the_answers_of_one_at_a_time_and_of_no_cache(run: LoadedRun) -> None:
    """The KV cache rows are rearranged every step (a candidate continues its parent's row, copied
    only when a parent has two children, rebuilt when a prompt is done): any slip there would change
    an answer. So: all prompts batched == each alone == recomputed without a cache."""
    batched = run.generator(answer_filter=False, beams=4)
    uncached = run.generator(answer_filter=False, beams=4, use_cache=False)
    together = greedy_answers(batched, PROMPTS, GREEDY.max_new_tokens)
    for prompt, answer in zip(PROMPTS, together, strict=True):
        alone = batched.generate(prompt, GREEDY)
        assert answer.text == alone.text, prompt
        assert answer_ids(uncached, prompt) == [t.token_id for t in alone.tokens], prompt
    greedy = run.generator(answer_filter=False, beams=1, draft=False)
    assert any(answer_ids(greedy, p) != answer_ids(batched, p) for p in PROMPTS)  # beams changed something


@pytest.mark.slow
def test_beam_search_through_the_compiled_step_gives_the_eager_answers(run: LoadedRun) -> None:
    """generation.compile: every step after the prompt goes through the compiled decode step, with the
    cache rows rearranged between steps as eagerly; the answers are the eager ones, alone and two
    prompts in one batch. (Before the unfilled slots of a rearranged cache were zeroed, this read
    whatever the memory held there: NaN, now and then.)"""
    from gptf.build.speed import CompiledDecodeStep

    model = run.model
    eager = run.generator(answer_filter=False, beams=4)
    compiled = run.generator(answer_filter=False, beams=4)
    compiled.compiled_step = CompiledDecodeStep(model)
    for prompt in PROMPTS[:8]:
        assert answer_ids(compiled, prompt) == answer_ids(eager, prompt), prompt
    same_length = [p for p in PROMPTS if len(eager.prompt_ids(p)) == len(eager.prompt_ids(PROMPTS[0]))][:2]
    rows = [eager.prompt_ids(p) for p in same_length]
    together = [r.state.new_ids for r in compiled.decode_beams(rows, GREEDY)]
    assert together == [r.state.new_ids for r in eager.decode_beams(rows, GREEDY)]
    assert compiled.compiled_step.graphs >= {(4, False)}


def test_the_answer_filter_reads_the_winners_measures(run: LoadedRun) -> None:
    generator = run.generator(beams=3)
    generator.measures = True
    for prompt in PROMPTS[:6]:
        ids = generator.prompt_ids(prompt)
        (row,) = generator.decode([ids], GREEDY)
        assert len(row.logprobs) == len(row.entropies) == len(row.state.new_ids)
        assert row.probabilities == pytest.approx([math.exp(v) for v in row.logprobs])
        if generator.answer_filter is not None:
            answer = generator.generate(prompt, GREEDY)
            expected = generator.answer_filter.confidence(row.finished_answer(prompt))
            assert answer.confidence == pytest.approx(expected, abs=1e-6)


def test_copy_rows_overwrites_only_the_target_rows() -> None:
    cache = KVCache(n_layer=2, batch=4, n_kv_head=1, max_len=8, head_dim=2)
    cache.keys.copy_(torch.arange(cache.keys.numel(), dtype=torch.float32).view_as(cache.keys))
    cache.values.copy_(-cache.keys)
    cache.length = 5
    before = cache.keys.clone()
    cache.copy_rows([0, 2], [2, 3])  # row 2 <- row 0, row 3 <- the *old* row 2
    assert torch.equal(cache.keys[:, 2, :, :5], before[:, 0, :, :5])
    assert torch.equal(cache.keys[:, 3, :, :5], before[:, 2, :, :5])
    assert torch.equal(cache.keys[:, :2], before[:, :2])
    assert torch.equal(cache.keys[:, 3, :, 5:], before[:, 3, :, 5:])  # positions not filled: untouched
    assert torch.equal(cache.values, -cache.keys)
    cache.copy_rows([1, 0], [3, 2])  # no row both read and written: copied row by row
    assert torch.equal(cache.keys[:, 3, :, :5], before[:, 1, :, :5])
    assert torch.equal(cache.keys[:, 2, :, :5], before[:, 0, :, :5])
    assert torch.equal(cache.keys[:, :2], before[:, :2])
    assert torch.equal(cache.values, -cache.keys)


@pytest.mark.parametrize("rows", [[0, 2, 3], [1, 3], [], [3, 3, 0, 1, 1], [2, 0]])
def test_keep_rows_keeps_those_rows_in_that_order(rows: list[int]) -> None:
    """In place (rows in increasing order: finished answers leave) or into a new buffer (reordered or
    repeated rows: beam search), the kept rows' filled positions are those of the old rows."""
    cache = KVCache(n_layer=2, batch=4, n_kv_head=2, max_len=8, head_dim=3)
    cache.keys.copy_(torch.arange(cache.keys.numel(), dtype=torch.float32).view_as(cache.keys))
    cache.values.copy_(-cache.keys)
    cache.length = 5
    before = cache.keys.clone()
    cache.keep_rows(rows)
    assert cache.keys.shape == (2, len(rows), 2, 8, 3)
    for i, row in enumerate(rows):
        assert torch.equal(cache.keys[:, i, :, :5], before[:, row, :, :5])
    assert torch.equal(cache.values[..., :5, :], -cache.keys[..., :5, :])
    if any(a >= b for a, b in itertools.pairwise(rows)):  # a new buffer: its unfilled slots are zeros, not
        # whatever the memory held (GPT.decode_step reads them, masked, and 0 x NaN would still be NaN)
        assert not cache.keys[..., 5:, :].any() and not cache.values[..., 5:, :].any()
    # each layer's view is of the new buffer
    views = zip([*cache.layer_keys, *cache.layer_values], [*cache.keys.unbind(0), *cache.values.unbind(0)], strict=True)
    assert all(a.data_ptr() == b.data_ptr() and a.shape == b.shape for a, b in views)


def test_the_recipe_key_and_the_options_refuse_bad_beam_counts(tiny_run: Path) -> None:
    from gptf.errors import RecipeError

    tiny = FIXTURES / "tiny.yaml"
    assert load_recipe(tiny).recipe.generation.beams == 1
    assert load_recipe(tiny, ["generation.beams=4"]).recipe.generation.beams == 4
    for bad in ("0", "33", "2.5", "many"):
        with pytest.raises(RecipeError, match=r"generation\.beams"):
            load_recipe(tiny, [f"generation.beams={bad}"])
    for command in (["generate", "--prompt", "你好"], ["eval"], ["chat"], ["serve"]):
        result = invoke([command[0], "--ckpt", str(tiny_run), *command[1:], "--beams", "0"])
        assert result.exit_code != 0 and "--beams" in result.output and "from 1 (greedy) to 32" in result.output
        assert "Traceback" not in result.output
    result = invoke(["generate", "--ckpt", str(tiny_run), "--prompt", "你好", "--beams", "3", "--stats"])
    assert result.exit_code == 0 and "beam search over 3 candidates" in result.stderr


def test_a_run_answers_its_demo_and_val_questions_by_beam_search(workdir: Path) -> None:
    """gptf run with generation.beams: says so before the demo answers and records it in eval.json."""
    output = io.StringIO()
    loaded = load_recipe(TINY_RECIPE, ["generation.beams=3", "training.max_steps=4", "output_dir=beam_run"])
    run_recipe(loaded, Console(file=output, width=200))
    text = output.getvalue()
    assert "greedy answers by beam search: the most likely of 3 candidate answers" in text
    assert "evaluation on val (held-out prompts, beam search, 3 beams)" in text
    assert json.loads((workdir / "beam_run" / "eval.json").read_text())["decoding"] == "beam search, 3 beams"


def test_chat_switches_beam_search_on_and_off(run: LoadedRun) -> None:
    from gptf.tools.chat import ChatSession, CommandError

    session = ChatSession(run.generator(), GREEDY)
    assert "beam search: 4 candidates" in (session.command("/beams 4") or "")
    assert session.generator.beams == 4 and not session.generator.drafts(GREEDY)
    session.ask("什么是注意力机制？")
    assert "(greedy)" in (session.command("/beams 1") or "")
    for bad in ("/beams 0", "/beams 99", "/beams x", "/beams"):
        with pytest.raises(CommandError, match="/beams"):
            session.command(bad)


def test_the_python_api_takes_beams_like_the_command_line(tiny_run: Path) -> None:
    import gptf.api as gptf
    from gptf.errors import GptfError

    assert gptf.open_run(tiny_run)._generator.beams == 1  # the tiny recipe's
    model = gptf.open_run(tiny_run, beams=3)
    assert model._generator.beams == 3
    assert model.ask_many(PROMPTS[:3]) == [model.ask(p) for p in PROMPTS[:3]]
    with pytest.raises(GptfError, match="--beams"):
        gptf.open_run(tiny_run, beams=0)


def test_the_web_page_is_told_the_beams(run: LoadedRun) -> None:
    from gptf.tools.serve import ChatService

    assert ChatService(run, []).info()["beams"] == 1
    service = ChatService(run, [], beams=3)
    assert service.info()["beams"] == 3 and service._generator(1.1).beams == 3
    page = (Path(__import__("gptf").__file__).parent / "tools" / "web" / "index.html").read_text(encoding="utf-8")
    assert "info.beams" in page


def test_ablation_readings_say_how_the_answers_were_chosen() -> None:
    from gptf.evaluate import decoding_name
    from gptf.tools.ablate_report import _answers

    rows = [{"variant": "positional=rope", "char_f1": 0.3, "readable": 1.0}]
    for beams, words in ((1, "(greedy)"), (4, "(beam search, 4 beams)")):
        summary = {"tune": None, "decoding": decoding_name(beams)}
        assert words in _answers(summary, rows)[0]
