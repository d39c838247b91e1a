"""generation.memory: the taught answers of similar questions vote for the next token
(gptf.decoding.taught_memory)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import attrs
import pytest
import torch
from conftest import FIXTURES, TINY_RECIPE, copy_tiny_data, invoke

from gptf.data import read_jsonl
from gptf.decoding.taught_memory import TaughtMemory
from gptf.decoding.taught_questions import TaughtQuestions
from gptf.generate import Generator, SamplingSettings, greedy_answers
from gptf.interfaces import DecodingState
from gptf.recipe import load_recipe
from gptf.recipe.schema import MemoryConfig
from gptf.run import LoadedRun, load_run
from gptf.tools.chat import ChatSession, CommandError
from gptf.tools.serve import ChatRequest, ChatService

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PRESSURE = "高压锅密封后气压升高，水的沸点升高，煮得快。"
SKY = "阳光里的蓝光被空气散射得最多，所以天空是蓝的。"
RIVER = "长江是中国最长的河流。"
TAUGHT = TaughtQuestions(
    [
        ("高压锅为什么煮东西快", PRESSURE),
        ("压力锅煮饭为啥快", PRESSURE),
        ("天空为什么是蓝色的", SKY),
        ("中国最长的河是哪条", RIVER),
    ]
)


@pytest.fixture(scope="module")
def run(tiny_run: Path) -> LoadedRun:
    return load_run(tiny_run)


def prompt_ids(run: LoadedRun, question: str) -> list[int]:
    return Generator(run.model, run.tokenizer).prompt_ids(question)


def test_closest_question_is_the_most_similar_taught_question_and_its_answer() -> None:
    question, answer, similarity = TAUGHT.closest_question("压力锅为啥煮得快")  # type: ignore[misc]
    assert question == "压力锅煮饭为啥快" and TAUGHT.answers[answer] == PRESSURE
    assert similarity == pytest.approx(TAUGHT.similarity("压力锅为啥煮得快", PRESSURE))
    assert TAUGHT.closest_question("！？") is None  # nothing in common
    assert TaughtQuestions([]).closest_question("天空") is None


def test_closest_answers_ranks_taught_answers_by_their_closest_question() -> None:
    rows, similarities = TAUGHT.closest_answers("压力锅为啥煮得快", 3)
    assert TAUGHT.answers[rows[0]] == PRESSURE  # its closest question is 压力锅煮饭为啥快
    assert similarities == sorted(similarities, reverse=True)
    assert similarities[0] == pytest.approx(TAUGHT.similarity("压力锅为啥煮得快", PRESSURE))
    assert len(TAUGHT.closest_answers("天空", 10)[0]) == 3  # never more than are taught
    assert TAUGHT.closest_answers("！？", 2)[1] == [0.0, 0.0]  # nothing in common with any question
    assert TaughtQuestions([]).closest_answers("天空", 5) == ([], [])


def test_the_memory_votes_for_the_first_token_of_the_closest_questions_answer(run: LoadedRun) -> None:
    memory = TaughtMemory(TAUGHT, run.tokenizer, weight=0.3, neighbours=3, temperature=0.05)
    ids = prompt_ids(run, "压力锅为啥煮得快")
    assert memory.question(ids) == "压力锅为啥煮得快"
    flat = torch.zeros(run.tokenizer.vocab_size)  # a model with no idea: every token alike
    mixed = memory.adjust_logits(flat, DecodingState(run.tokenizer, ids, []))
    probabilities = mixed.exp()
    assert float(probabilities.sum()) == pytest.approx(1.0, abs=1e-5)  # still a distribution
    first = run.tokenizer.encode(PRESSURE)[0]
    assert int(mixed.argmax()) == first
    # (1 - 0.3) of the model's 1/V, plus 0.3 times the closest answer's share of the vote
    weights = torch.softmax(torch.tensor(TAUGHT.closest_answers("压力锅为啥煮得快", 3)[1]) / 0.05, 0)
    assert float(probabilities[first]) == pytest.approx(0.7 / run.tokenizer.vocab_size + 0.3 * float(weights[0]))


def test_the_memory_follows_an_answer_and_falls_silent_once_it_leaves_every_recalled_one(run: LoadedRun) -> None:
    tokenizer = run.tokenizer
    memory = TaughtMemory(TAUGHT, tokenizer, weight=0.5, neighbours=3, temperature=0.05)
    ids = prompt_ids(run, "天空为啥是蓝的")
    sky = tokenizer.encode(SKY)
    logits = torch.randn(tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
    # midway through the sky's answer: the memory proposes its next token
    assert memory.proposals(DecodingState(tokenizer, ids, sky[:3])) == {sky[3]: pytest.approx(1.0)}
    # at its end: <eos>
    assert memory.proposals(DecodingState(tokenizer, ids, sky)) == {tokenizer.eos_id: pytest.approx(1.0)}
    # an answer that follows no recalled answer: the model's scores, untouched
    astray = [
        t for t in range(tokenizer.vocab_size) if t not in (sky[0], *(tokenizer.encode(a)[0] for a in TAUGHT.answers))
    ]
    state = DecodingState(tokenizer, ids, [astray[0]])
    assert memory.proposals(state) == {}
    assert memory.adjust_logits(logits, state) is logits


def test_a_heavy_memory_outvotes_a_sure_model_but_leaves_it_a_share(run: LoadedRun) -> None:
    tokenizer = run.tokenizer
    memory = TaughtMemory(TAUGHT, tokenizer, weight=0.9, neighbours=1)
    ids = prompt_ids(run, "中国最长的河")
    stubborn = torch.full((tokenizer.vocab_size,), -10.0)
    stubborn[5] = 10.0  # the model is sure of token 5
    river = tokenizer.encode(RIVER)
    mixed = memory.adjust_logits(stubborn, DecodingState(tokenizer, ids, river[:2]))
    assert int(mixed.argmax()) == river[2]
    assert float(mixed[river[2]].exp()) == pytest.approx(0.9, abs=1e-3)
    assert float(mixed[5].exp()) == pytest.approx(0.1, abs=1e-3)  # a constraint may still ban the proposal


def test_in_a_chat_the_memory_recalls_for_the_last_question(run: LoadedRun) -> None:
    memory = TaughtMemory(TAUGHT, run.tokenizer)
    first = prompt_ids(run, "天空为什么是蓝色的")
    second = run.tokenizer.encode("用户:中国最长的河是哪条\n助手:")
    context = [*first, *run.tokenizer.encode(SKY), run.tokenizer.eos_id, *second]
    assert memory.question(context) == "中国最长的河是哪条"
    (top, _), *_ = memory.recall(context)
    assert top == [*run.tokenizer.encode(RIVER), run.tokenizer.eos_id]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight": 0.0}, "weight must be above 0"),
        ({"weight": 1.0}, "weight must be above 0 and below 1"),
        ({"neighbours": 0}, "neighbours must be at least 1"),
        ({"temperature": 0.0}, "temperature must be above 0"),
    ],
)
def test_the_memory_refuses_settings_that_cannot_work(run: LoadedRun, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaughtMemory(TAUGHT, run.tokenizer, **options)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generation.memory={weight: 1}", "generation.memory.weight: must be above 0 and below 1"),
        ("generation.memory={weight: .nan}", "generation.memory.weight: must be above 0 and below 1"),
        ("generation.memory={neighbours: 0}", "generation.memory.neighbours: must be a whole number from 1 to 1000"),
        ("generation.memory={neighbours: 2.5}", "generation.memory.neighbours: expected int, got float 2.5"),
        ("generation.memory={temperature: 0}", "generation.memory.temperature: must be from 0.001 to 100"),
        ("generation.memory={wieght: 0.3}", "generation.memory.wieght: unknown key (did you mean 'weight'?)"),
        ("generation.memory=5", "generation.memory: expected a mapping with weight, neighbours, temperature"),
    ],
)
def test_a_bad_memory_setting_is_one_clear_recipe_error(override: str, message: str) -> None:
    from gptf.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        load_recipe(TINY_RECIPE, [override])
    assert message in str(caught.value)


def test_the_recipe_key_turns_the_memory_on_with_its_defaults() -> None:
    assert load_recipe(TINY_RECIPE).recipe.generation.memory is None  # (memory: null)
    on = load_recipe(TINY_RECIPE, ["generation.memory={weight: 0.5}"]).recipe.generation.memory
    assert on == MemoryConfig(weight=0.5, neighbours=10, temperature=0.05)
    teacher = load_recipe(Path(__file__).parents[1] / "recipes" / "teacher_3m.yaml").recipe.generation
    assert teacher.memory == MemoryConfig(weight=0.6, neighbours=10, temperature=0.05)
    assert MemoryConfig() == teacher.memory  # generation.memory: {} is the teacher's memory


def test_the_memory_has_the_same_defaults_in_the_recipe_and_in_the_decoder() -> None:
    """Written twice (the recipe layer may not import the decoding layer), so checked here."""
    parameters = inspect.signature(TaughtMemory.__init__).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert defaults == attrs.asdict(MemoryConfig())


def test_a_run_with_memory_recalls_its_taught_answers_and_no_memory_shows_the_model_alone(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny model, trained for seconds, gets some of its own training answers wrong; with a memory
    that holds nearly all of the probability every training question gets its taught answer back."""
    run = load_run(tiny_run)
    train = read_jsonl(FIXTURES / "tiny_train.jsonl")
    settings = SamplingSettings(max_new_tokens=64)
    monkeypatch.chdir(tiny_run.parent)  # where the run's data.train is
    run.recipe = attrs.evolve(
        run.recipe, generation=attrs.evolve(run.recipe.generation, memory=MemoryConfig(weight=0.99, neighbours=3))
    )
    with_memory = run.generator()
    assert with_memory.memory is not None and with_memory.constraints[0] is with_memory.memory
    # the questions whose taught answer fits the tiny model's 64 tokens of context
    fits = [s for s in train if len(with_memory.prompt_ids(s.prompt)) + len(run.tokenizer.encode(s.completion)) < 64]
    assert len(fits) >= len(train) // 2
    recalled = [with_memory.generate(s.prompt, settings).text for s in fits]
    assert recalled == [s.completion for s in fits]
    alone = [a.text for a in greedy_answers(run.generator(memory=False), [s.prompt for s in fits], 64)]
    assert alone != recalled  # the model alone does not: the memory made the difference
    # what it recalled is shown: gptf generate --stats, chat's note, the page (here: a training question itself)
    asked = with_memory.generate(fits[0].prompt, settings)
    assert (asked.recalled, asked.recalled_similarity) == (fits[0].prompt, pytest.approx(1.0))
    service = ChatService(run, [], memory=True)
    assert service.info()["memory"] is True  # the page shows its switch
    reply = service.answer(ChatRequest(fits[0].prompt, [], settings, 1.1, None))
    assert reply["recalled"] == fits[0].prompt and reply["recalled_similarity"] == pytest.approx(1.0)
    reply = service.answer(ChatRequest(fits[0].prompt, [], settings, 1.1, None, memory=False))  # switched off
    assert reply["recalled"] == "" and reply["answer"] == alone[0]
    assert ChatService(run, [], memory=False).info()["memory"] is False  # gptf serve --no-memory
    chat = ChatSession(with_memory, settings)
    _, note = chat.ask(fits[0].prompt)
    assert f"memory recalled {fits[0].prompt} (1.00)" in note
    # /memory off and on, in the chat: the model alone, then the memory again
    assert "memory of the taught answers off" in chat.command("/memory off")
    assert with_memory.memory is None and with_memory.constraints == with_memory.recipe_constraints
    chat.command("/reset")
    alone_answer, note = chat.ask(fits[0].prompt)
    assert alone_answer == alone[0] and "memory recalled" not in note  # the model's own answer
    assert "memory of the taught answers on" in chat.command("/memory ON")
    assert with_memory.constraints[0] is with_memory.given_memory
    with pytest.raises(CommandError, match="needs on or off"):
        chat.command("/memory maybe")
    with pytest.raises(CommandError, match="no memory of the taught answers"):
        ChatSession(run.generator(memory=False), settings).command("/memory on")
    assert run.generator(memory=False).generate(fits[0].prompt, settings).recalled == ""
    assert run.generator(memory=False).memory is None
    assert run.generator(recipe_constraints=False).memory is None  # --no-constraints: plain decoding, as transformers


def test_gptf_eval_says_how_it_answered_with_and_without_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_tiny_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = invoke(["run", str(TINY_RECIPE), "generation.memory={weight: 0.3}", f"output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    for flag, expected in (([], True), (["--no-memory"], False)):
        out = tmp_path / "eval.json"
        result = invoke(["eval", "--ckpt", str(tmp_path / "run"), "--data", "tiny_val.jsonl", "--out", str(out), *flag])
        assert result.exit_code == 0, result.output
        assert ("with a memory of the taught answers" in json.loads(out.read_text())["decoding"]) is expected
    # a threshold chosen for the model alone must not land in a recipe that answers with its memory
    result = invoke(["eval", "--ckpt", str(tmp_path / "run"), "--calibrate", "--apply", "--no-memory"])
    assert result.exit_code != 0
    assert "--no-memory calibrates other answers" in result.output
    assert "hint: drop --no-memory" in result.output
