"""Generating an answer, one token at a time.

Each step: run the model on the newest token (the KV cache remembers the rest), let the
decoding constraints adjust the scores, then pick the next token:

* temperature 0  -> greedy: always the most likely token (deterministic);
* temperature T  -> sample from softmax(logits / T): higher T, more adventurous;
* top-k          -> only the k most likely tokens may be sampled;
* top-p          -> only the smallest set of tokens whose probabilities sum to p.

Greedy answers of one prompt go faster by *draft and verify* (:class:`DraftBank`,
:meth:`Generator.decode_drafted`): guess the next tokens from the answers the model was taught,
check all the guesses in one model call, keep the ones the model agrees with. Same tokens as one at
a time, fewer model calls.

When the answer is finished, the recipe's answer filter (``generation.answer_filter``) may
replace it with "这个问题我还没有学过。" if the model was unsure of it (:meth:`Generator.review`).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch

from gptf.build.devices import model_device
from gptf.build.speed import CompiledDecodeStep
from gptf.data import BROKEN_TEXT_HINT, format_prompt, has_broken_character, normalize_prompt
from gptf.decoding.answer_workers import ANSWER_WORKERS, side_by_side
from gptf.decoding.beam_search import Candidate, beam_decode
from gptf.errors import GptfError
from gptf.interfaces import DecodingState, FinishedAnswer

if TYPE_CHECKING:
    from gptf.decoding.taught_memory import TaughtMemory
    from gptf.decoding.taught_questions import TaughtQuestions
    from gptf.interfaces import AnswerFilter, DecodingConstraint, Tokenizer
    from gptf.model import GPT

_LEADING_JUNK = re.compile(r"^[\s,.;:!?，。；：！？、·…—\-\"'“”‘’()（）]+")


def clean_answer(text: str) -> str:
    """Trim leading punctuation/whitespace and trailing whitespace, as in the seed."""
    return _LEADING_JUNK.sub("", text).rstrip()


@attrs.frozen
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0


@attrs.frozen
class TokenChoice:
    token_id: int
    piece: str  # the token's text ("" for a partial character)
    probability: float


@attrs.frozen
class Generation:
    prompt: str
    text: str  # the cleaned answer
    raw_text: str
    tokens: list[TokenChoice]
    stop_reason: str  # "eos", "stop", "max_new_tokens", "seq_len"
    first_token_s: float
    total_s: float
    confidence: float | None = None  # the answer filter's measure (None: no filter)
    declined: bool = False  # True: ``text`` is the filter's reply, ``model_text`` what it replaced
    model_text: str = ""  # the model's own (cleaned) answer, before the filter
    model_calls: int = 0  # forward passes, the prompt's included (draft and verify: fewer than tokens)
    drafted: int = 0  # guessed tokens checked by the model (0: decoded one token at a time)
    accepted: int = 0  # guesses the model agreed with: tokens that cost no model call of their own
    # with generation.memory: the taught question most like the question, and how much (0 to 1)
    recalled: str = ""
    recalled_similarity: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.total_s if self.total_s > 0 else 0.0

    @property
    def acceptance(self) -> float:
        """The share of guessed tokens the model agreed with (0 when nothing was guessed)."""
        return self.accepted / self.drafted if self.drafted else 0.0


class Generator:
    """Answers prompts with a trained model (fp32 or quantized), one or many at a time."""

    def __init__(
        self,
        model: GPT | torch.nn.Module,
        tokenizer: Tokenizer,
        constraints: Sequence[DecodingConstraint] = (),
        *,
        use_cache: bool = True,
        answer_filter: AnswerFilter | None = None,
        measures: bool | None = None,
        compile_decode: bool = False,
        compiled_step: CompiledDecodeStep | None = None,
        draft: bool = True,
        draft_bank: DraftBank | None = None,
        answered: dict[tuple[tuple[int, ...], int], FinishedAnswer] | None = None,
        beams: int = 1,
        taught: TaughtQuestions | None = None,
        beam_choice: str = "likelihood",
        memory: TaughtMemory | None = None,
    ) -> None:
        if beams < 1:
            raise ValueError(f"beams must be 1 (greedy) or more, got {beams}")
        if beam_choice not in ("likelihood", "taught_question"):
            raise ValueError(f"beam_choice must be 'likelihood' or 'taught_question', got {beam_choice!r}")
        if beam_choice == "taught_question" and taught is None:
            raise ValueError("beam_choice 'taught_question' needs the training questions (taught=...)")
        self.model = model.eval()
        # greedy answers (temperature 0) by beam search over this many candidate answers
        # (gptf.decoding.beam_search); 1: plain greedy decoding, one token at a time
        self.beams = beams
        # greedy answers already computed (by greedy_answers) with the same model and constraints,
        # by prompt ids and max_new_tokens: share one dict between two generators that differ only
        # in their answer filter, and the second reviews the first one's answers instead of
        # answering again (gptf run: calibrating the filter on val, then scoring val with it)
        self.answered = answered
        # log-probabilities and entropies of each token, for an answer filter (or calibrating one):
        # a log_softmax and two reductions per token, skipped when nobody reads them
        self.measures = answer_filter is not None if measures is None else measures
        # the decode step under torch.compile (gptf.build.speed): faster per token, but the compile
        # costs seconds, so only where many tokens follow (see README, "speed"). ``compiled_step``:
        # one already made for this model (shared by a run's generators); ``compile_decode``: make one
        self.compiled_step: CompiledDecodeStep | None = None
        if (compiled_step is not None or compile_decode) and use_cache and hasattr(model, "decode_step"):
            self.compiled_step = compiled_step or CompiledDecodeStep(model)
        self.tokenizer = tokenizer
        # a memory of the taught answers (generation.memory, gptf.decoding.taught_memory) mixes its vote
        # into the scores first; the recipe's constraints then apply to the mixed scores
        self.given_memory = memory  # (gptf chat's /memory off and on switch it, set_memory)
        self.recipe_constraints = list(constraints)
        self.set_memory(True)
        self.answer_filter = answer_filter
        self.use_cache = use_cache
        self.config = model.config
        self.device = model_device(model)
        # draft and verify (decode_drafted) for greedy answers of one prompt: exact only where a chunk
        # of tokens is computed like one token at a time, which dynamically quantized layers break
        self.draft = draft and use_cache and not quantized_per_call(model)
        self.draft_bank = draft_bank if draft_bank is not None else DraftBank()  # empty: the context only
        # the questions each answer was taught for, for the answer filter's taught_question measures
        # (gptf.decoding.taught_questions); None: those measures are -inf
        self.taught = taught
        # beam search's pick among its finished candidates: the likeliest, or the likeliest of those whose
        # taught questions look most like the question (generation.beam_choice)
        self.beam_choice = beam_choice

    def set_memory(self, on: bool) -> None:
        """Answer with the memory this generator was given (``memory``), or without it: the model alone."""
        self.memory = self.given_memory if on else None
        # what decoding applies, in this order: the memory's vote first, then the recipe's constraints
        with_memory = [self.memory] if self.memory is not None else []
        self.constraints = [*with_memory, *self.recipe_constraints]

    def drafts(self, settings: SamplingSettings) -> bool:
        """Whether :meth:`generate` uses draft and verify for these settings: greedy only, where it
        gives exactly the tokens of the plain loop (sampling keeps the plain loop; beam search its own)."""
        return self.draft and settings.temperature == 0 and self.beams == 1

    def prompt_ids(self, prompt: str) -> list[int]:
        """``<bos>`` and the templated prompt, as token ids; a clear error if it cannot be answered."""
        if not normalize_prompt(prompt):  # nothing left but spaces and invisible characters
            raise GptfError('the prompt is empty: ask a question, e.g. --prompt "什么是注意力机制？"')
        if has_broken_character(prompt):
            raise GptfError(f"the prompt cannot be answered: {BROKEN_TEXT_HINT}")
        ids = [self.tokenizer.bos_id, *self.tokenizer.encode(format_prompt(prompt))]
        if len(ids) >= self.config.seq_len:
            raise GptfError(
                f"the prompt is {len(ids)} tokens long, which leaves no room to answer "
                f"(model.seq_len={self.config.seq_len}); ask a shorter question"
            )
        return ids

    def generate(
        self, prompt: str, settings: SamplingSettings, seed: int | None = None, *, context_ids: list[int] | None = None
    ) -> Generation:
        """Answer ``prompt``; ``context_ids`` replaces the templated prompt (e.g. a multi-turn chat)."""
        ids = self.prompt_ids(prompt) if context_ids is None else list(context_ids)
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        start = time.perf_counter()
        if self.drafts(settings):
            row = self.decode_drafted(ids, settings)
        else:
            (row,) = self.decode([ids], settings, rng, prompts=[prompt])
        total = time.perf_counter() - start
        pieces = zip(row.state.new_ids, row.probabilities, strict=True)
        tokens = [TokenChoice(t, self.tokenizer.decode([t]), p) for t, p in pieces]
        raw = row.state.text
        first_token_s = (row.first_token_at - start) if row.first_token_at else 0.0
        verdict = self.review(self.finished_answer(row, prompt))
        recalled = self.memory.recalled_question(ids) if self.memory is not None else None
        return Generation(
            prompt,
            verdict.text,
            raw,
            tokens,
            row.stop_reason,
            first_token_s,
            total,
            confidence=verdict.confidence,
            declined=verdict.declined,
            model_text=verdict.model_text,
            model_calls=row.model_calls,
            drafted=row.drafted,
            accepted=row.accepted,
            recalled=recalled[0] if recalled else "",
            recalled_similarity=recalled[1] if recalled else None,
        )

    def finished_answer(self, row: DecodedRow, prompt: str) -> FinishedAnswer:
        """A decoded row as the answer filter sees it, with how much ``prompt`` looks like the
        questions its answer was taught for (when the filter may ask and the generator knows them).
        The question as the model saw it (``normalize_prompt``: 什麼 is 什么 there too) is what is compared."""
        prompt = normalize_prompt(prompt)
        answer = row.finished_answer(prompt)
        if self.taught is None or not self.measures:
            return answer
        return attrs.evolve(answer, taught_similarity=self.taught.similarity(prompt, answer.text))

    def review(self, answer: FinishedAnswer) -> Verdict:
        """Apply the answer filter: keep the answer, or the filter's reply if the model was unsure."""
        if self.answer_filter is None:
            return Verdict(answer.text, None, False, answer.text)
        confidence = float(self.answer_filter.confidence(answer))
        if self.answer_filter.keep(confidence):
            return Verdict(answer.text, confidence, False, answer.text)
        return Verdict(self.answer_filter.reply, confidence, True, answer.text)

    @torch.inference_mode()
    def decode(
        self,
        rows: Sequence[list[int]],
        settings: SamplingSettings,
        rng: torch.Generator | None = None,
        *,
        prompts: Sequence[str] | None = None,
    ) -> list[DecodedRow]:
        """The decoding loop for prompts of equal length ``rows`` (token ids, ``<bos>`` first).

        Each step runs the model once for all rows (on the newest token only, thanks to the
        KV cache), lets every constraint adjust each row's scores, then picks each row's next
        token. Rows of the same length need no padding, so no attention mask and no position
        shifts: a batch answers exactly as each prompt would alone. A row that has finished leaves
        the batch (with the KV cache; not under a compiled step, whose batch size is fixed), so
        the rows still answering do not wait on it: they answer as before, in fewer operations.
        ``prompts``: the questions of ``rows``, for beam search choosing by taught questions.
        """
        if self.beams > 1 and settings.temperature == 0:
            return self.decode_beams(rows, settings, prompts)
        length = len(rows[0])
        if any(len(r) != length for r in rows):
            raise ValueError("decode() takes prompts of equal token length; see greedy_answers()")
        budget = min(settings.max_new_tokens, self.config.seq_len - length)
        reason = "max_new_tokens" if budget == settings.max_new_tokens else "seq_len"
        decoded = [DecodedRow(DecodingState(self.tokenizer, list(r), budget=budget), reason) for r in rows]
        cache = self.model.new_cache(len(rows)) if self.use_cache else None
        sequences = [list(r) for r in rows]  # everything fed so far, per row (for no-cache decoding)
        feed = torch.tensor(sequences, device=self.device)  # (B, T)
        compiled = self.compiled_step is not None and self.compiled_step.accepts(len(rows))
        active = list(range(len(rows)))  # the rows the model is fed, in the order of its batch
        for _ in range(budget):
            if compiled and cache is not None and cache.length > 0:
                # the prompt went through the model eagerly; each new token goes through the compiled step
                logits = self.compiled_step.after_cache(feed, cache)[:, -1].float().cpu()  # type: ignore[union-attr]
            else:
                logits = self.model(feed, cache)[:, -1].float().cpu()  # (B, V): next-token scores of every row
            for i in active:
                decoded[i].model_calls += 1
            chosen = [self._step(decoded[i], logits[b], settings, rng) for b, i in enumerate(active)]
            if all(decoded[i].finished for i in active):
                break
            still = [b for b, i in enumerate(active) if not decoded[i].finished]
            if cache is not None and not compiled and len(still) < len(active):
                cache.keep_rows(still)  # finished rows leave the batch
                active, chosen = [active[b] for b in still], [chosen[b] for b in still]
            for i, token in zip(active, chosen, strict=True):
                sequences[i].append(token)
            fed = [sequences[i] for i in active] if cache is None else [[t] for t in chosen]
            feed = torch.tensor(fed, device=self.device)
        return decoded

    def decode_beams(
        self, rows: Sequence[list[int]], settings: SamplingSettings, prompts: Sequence[str] | None = None
    ) -> list[DecodedRow]:
        """Answers at temperature 0 by beam search (:mod:`gptf.decoding.beam_search`): the most likely
        of ``self.beams`` candidate answers, as :meth:`decode` returns them (one row per prompt).
        With ``beam_choice`` "taught_question" and the ``prompts`` (the questions of ``rows``): the
        likeliest of the candidates whose taught questions look most like the question."""
        choose = None
        if self.beam_choice == "taught_question" and prompts is not None:
            choose = self._taught_choice(prompts)
        budget = min(settings.max_new_tokens, self.config.seq_len - len(rows[0]))
        reason = "max_new_tokens" if budget == settings.max_new_tokens else "seq_len"
        found = beam_decode(
            self.model,
            self.tokenizer,
            self.constraints,
            rows,
            budget,
            self.beams,
            use_cache=self.use_cache,
            device=self.device,
            choose=choose,
            compiled_step=self.compiled_step,
        )
        decoded = []
        for ids, answer in zip(rows, found, strict=True):
            winner = answer.winner
            state = DecodingState(self.tokenizer, list(ids), list(winner.new_ids), budget=budget)
            row = DecodedRow(state, reason if winner.stop_reason == "budget" else winner.stop_reason, finished=True)
            row.probabilities = [math.exp(v) for v in winner.logprobs]  # of the constraint-adjusted scores
            if self.measures:
                row.logprobs, row.entropies = list(winner.logprobs), list(winner.entropies)
            row.first_token_at, row.model_calls = answer.first_token_at, answer.model_calls
            decoded.append(row)
        return decoded

    def _taught_choice(self, prompts: Sequence[str]) -> Callable[[int, list[Candidate]], Candidate]:
        """Beam search's pick for ``beam_choice: taught_question``: among the candidates whose taught
        answer was taught for questions most like prompt ``p``, the one of highest mean log-probability."""
        taught, tokenizer = self.taught, self.tokenizer
        assert taught is not None  # checked in __init__
        prompts = [normalize_prompt(p) for p in prompts]  # as the model saw them (finished_answer)

        def choose(p: int, candidates: list[Candidate]) -> Candidate:
            alike = [taught.similarity(prompts[p], clean_answer(tokenizer.decode(c.new_ids))) for c in candidates]
            best = max(alike)
            return max((c for c, a in zip(candidates, alike, strict=True) if a == best), key=lambda c: c.mean)

        return choose

    @torch.inference_mode()
    def decode_drafted(self, ids: list[int], settings: SamplingSettings) -> DecodedRow:
        """Greedy decoding of one prompt, several tokens per model call: draft and verify.

        Each round, :class:`DraftBank` guesses the next few tokens; the model gets the newest token
        *and* the guesses in one call (the KV cache holds the rest; positions and the causal mask
        continue after it), which costs far less than a call per token. The positions' scores are then
        walked in order, exactly like the plain loop walks its steps (:meth:`_step`: every constraint
        sees the answer so far, as if the guesses before were accepted, then the pick): while the
        picked token equals the guess, the guess was right and the next position is valid too; the
        first wrong guess is replaced by the picked token, and the KV cache forgets the positions
        after it (:meth:`gptf.model.KVCache.truncate`). So the constraints see the same calls in the
        same order, and the answer, its stop reason and its per-token measures are the plain loop's;
        the scores differ only by float rounding (a chunk is computed with other matrix shapes).
        Only greedy decoding is exact this way; sampling keeps :meth:`decode`.
        """
        budget = min(settings.max_new_tokens, self.config.seq_len - len(ids))
        reason = "max_new_tokens" if budget == settings.max_new_tokens else "seq_len"
        row = DecodedRow(DecodingState(self.tokenizer, list(ids), budget=budget), reason)
        if budget <= 0:
            return row
        cache = self.model.new_cache(1)
        feed, guess = list(ids), []  # the first call reads the prompt; later ones [newest token, *guess]
        new_ids = row.state.new_ids
        while True:
            fed_before = cache.length
            tokens = torch.tensor([feed], device=self.device)
            compiled = self.compiled_step is not None and self.compiled_step.accepts(1)
            if compiled and fed_before > 0:  # the newest token and its guesses through the compiled step
                scores = self.compiled_step.after_cache(tokens, cache)[0].float().cpu()  # type: ignore[union-attr]
            else:  # scores of the newest token and of each guess (of the prompt: its last position only)
                scores = self.model(tokens, cache)[0, -1 - len(guess) :].float().cpu()  # (1 + guesses, V)
            row.model_calls += 1
            row.drafted += len(guess)
            for index, position_scores in enumerate(scores):
                token = self._step(row, position_scores, settings, None)
                if row.finished or len(new_ids) >= budget:
                    return row
                if index == len(guess) or token != guess[index]:
                    break  # a wrong guess (or none left): ``token`` is the model's own next token
                row.accepted += 1
            cache.truncate(fed_before + len(feed) - len(guess) + index)  # forget the fed tokens after it
            guess = self.draft_bank.propose([*ids, *new_ids], budget - len(new_ids) - 1, start=len(ids))
            feed = [token, *guess]

    def _step(
        self, row: DecodedRow, scores: torch.Tensor, settings: SamplingSettings, rng: torch.Generator | None
    ) -> int:
        """One row's next token: constraints, then pick. A finished row is fed ``<eos>`` (ignored)."""
        if row.finished:
            return self.tokenizer.eos_id
        state = row.state
        for constraint in self.constraints:
            scores = constraint.adjust_logits(scores, state)
        token, probability = pick_token(scores, settings, rng)
        if row.first_token_at == 0.0:
            row.first_token_at = time.perf_counter()
        if token == self.tokenizer.eos_id:
            row.finish("eos")
            return token
        state.new_ids.append(token)
        row.probabilities.append(probability)
        if self.measures:
            logprobs = torch.log_softmax(scores, dim=-1)  # the model's own view (temperature 1), for the filter
            row.logprobs.append(float(logprobs[token]))
            row.entropies.append(float(-(logprobs.exp() * logprobs).nansum()))  # 0·log 0 counts as 0
        if any(c.should_stop(state) for c in self.constraints):
            row.finish("stop")
        return token


@attrs.define
class DecodedRow:
    """One prompt's progress through :meth:`Generator.decode`."""

    state: DecodingState
    stop_reason: str  # until finished: what ends it if nothing else does
    finished: bool = False
    probabilities: list[float] = attrs.field(factory=list)  # of each chosen token, as it was picked
    logprobs: list[float] = attrs.field(factory=list)  # of each chosen token, temperature 1 (for the filter)
    entropies: list[float] = attrs.field(factory=list)  # of each step's distribution, temperature 1
    first_token_at: float = 0.0  # time.perf_counter() when the first token was picked
    model_calls: int = 0  # forward passes this row took part in
    drafted: int = 0  # guessed tokens fed to the model (draft and verify)
    accepted: int = 0  # guessed tokens the model agreed with

    def finish(self, reason: str) -> None:
        self.finished, self.stop_reason = True, reason

    def finished_answer(self, prompt: str) -> FinishedAnswer:
        """The answer as an answer filter sees it (:class:`gptf.interfaces.FinishedAnswer`)."""
        return FinishedAnswer(
            prompt,
            clean_answer(self.state.text),
            tuple(self.state.new_ids),
            tuple(self.logprobs),
            tuple(self.entropies),
            self.stop_reason,
        )


@attrs.frozen
class Verdict:
    """What the answer filter made of an answer."""

    text: str  # what to show: the answer, or the filter's reply
    confidence: float | None  # None: no filter
    declined: bool
    model_text: str  # the answer itself


def pick_token(scores: torch.Tensor, settings: SamplingSettings, rng: torch.Generator | None) -> tuple[int, float]:
    """Choose the next token from (V,) scores; return it and its probability.

    Numerically safe for any temperature above 0, however small: the scores are shifted so
    the best one is 0 *before* dividing, so ``score / temperature`` is never ``inf - inf``
    (a tiny temperature simply becomes greedy). NaN scores count as impossible tokens.
    """
    temperature = settings.temperature
    if not math.isfinite(temperature) or temperature < 0:
        raise GptfError(f"temperature must be 0 (greedy) or a positive number, got {temperature}")
    scores = scores.float()
    if temperature == 0:
        # the common case, in fewer operations (~10 us less per token): a finite best score means no
        # NaN (argmax would pick it) and no +inf, so the clean-up below would change nothing that counts
        token = int(torch.argmax(scores))
        if math.isfinite(float(scores[token])):
            return token, float(torch.softmax(scores, dim=-1)[token])
    scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(torch.float32).max)
    token = int(torch.argmax(scores))
    if not math.isfinite(float(scores[token])):
        raise GptfError("the model gave no usable score for any token (its weights hold NaN or inf)")
    if temperature == 0:
        return token, float(torch.softmax(scores, dim=-1)[token])
    # the best token scores 0, the others below (in float64, so even temperature 1e-300 is no 0/0)
    scores = ((scores.double() - float(scores[token])) / temperature).float()
    if settings.top_k > 0:
        kth = torch.topk(scores, min(settings.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        # drop a token once the tokens *before* it already reach top_p
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) >= settings.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # exp(0) = 1 for the best token: never all zero, never NaN
    token = int(torch.multinomial(probs, 1, generator=rng))
    return token, float(probs[token])


def quantized_per_call(model: torch.nn.Module) -> bool:
    """True if ``model`` has PyTorch quantized layers (``gptf generate --quantized``). Dynamic int8
    quantizes each call's activations with one scale for all its tokens, so a chunk of tokens rounds
    differently from one token at a time, and draft and verify would not be exact."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


# ------------------------------------------------------------------ drafting
# A model call on 8 tokens costs far less than 8 calls on 1: at this size much of a call's time goes to
# reading the weights (13.5 MB of fp32) and to ~100 small PyTorch calls, which do not grow with the
# tokens. So guess a few next tokens cheaply and let one call check them all (Generator.decode_drafted). The guesses
# come from text, not from a second model: "prompt lookup decoding" (transformers'
# prompt_lookup_num_tokens) and REST (He et al., 2023, retrieval-based speculative decoding).


class DraftBank:
    """Guesses of the next tokens, looked up in token sequences: the answers the model was taught.

    A small model mostly repeats its training answers, so once an answer has begun, the taught
    answers that contain what it said last say what comes next. :meth:`propose` finds the longest
    ending (up to ``max_ngram`` tokens) of the text so far that occurs in the bank, then takes the
    tokens that follow it there, one at a time, by majority over the places it occurs, while at least
    ``agreement`` of the places still in the running agree (so a guess stops where the taught answers
    part ways), at most ``max_draft`` tokens. A long guess is cheap: one call on 32 tokens cost 2.3x
    one call on 1 token here (5.0 vs 2.2 ms), so where the ending was found whole the guess runs to
    the end of the taught answers' agreement; where only part of it was found (the answer is saying
    something no taught answer says), at most ``2**matched - 1`` tokens. (Measured on 80 val answers:
    capping *every* guess that way took 8.8 model calls per answer, no cap 6.6 calls, 1.3x the
    tokens/s; shrinking the guess after a miss gained nothing beyond noise. Capping only the partly
    matched ones, on 60 val answers: the answers that repeat no taught answer went from slower than
    the plain loop, 434 vs 483 tokens/s, to faster, 586 vs 565, each pair measured side by side.)
    An answer's first tokens count
    from a :attr:`START` mark that begins every sequence, so they are looked up among the beginnings
    of the taught answers. Where the bank has never seen the last token, the text so far itself is
    searched (an answer may repeat a phrase of the question or of itself); an empty bank looks in the
    text so far only.

    A wrong guess costs time, never a different answer: the model checks every guess. Where the bank
    comes from: :func:`gptf.run.draft_bank` builds it when a run is opened, from the recipe's
    ``data.train`` answers (a few hundred distinct ones, tokenized in well under a second).
    """

    MEMO_SIZE = 20_000  # remembered lookups (the same endings recur in every answer; 230 answers: ~7,000)
    START = -1  # stands before every sequence (never a token id): "the answer begins here"

    def __init__(
        self,
        sequences: Iterable[Sequence[int]] = (),
        *,
        max_ngram: int = 4,
        agreement: float = 0.6,
        max_draft: int = 64,
    ) -> None:
        if max_ngram < 1 or max_draft < 0 or not 0.0 <= agreement <= 1.0:
            raise ValueError("max_ngram must be >= 1, max_draft >= 0 and agreement between 0 and 1")
        self.max_ngram, self.agreement, self.max_draft = max_ngram, agreement, max_draft
        self.sequences = [s for s in dict.fromkeys(tuple(s) for s in sequences) if s]  # distinct, in order
        self._marked = [(self.START, *s) for s in self.sequences]  # what the lookups read
        # token -> every (sequence, position right after it): where a continuation can start
        self._after: dict[int, list[tuple[int, int]]] = {}
        for number, sequence in enumerate(self._marked):
            for position, token in enumerate(sequence[:-1]):
                self._after.setdefault(token, []).append((number, position + 1))
        self._memo: dict[tuple[int, ...], tuple[int, ...] | None] = {}

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer: Tokenizer, **options: Any) -> DraftBank:
        """A bank of answers: each distinct text tokenized and ended with ``<eos>`` (so a guess can
        end the answer too, and the model stop in the same call)."""
        return cls(([*tokenizer.encode(t), tokenizer.eos_id] for t in dict.fromkeys(texts)), **options)

    def __len__(self) -> int:
        return len(self.sequences)

    def propose(self, context: Sequence[int], limit: int, start: int | None = None) -> list[int]:
        """Up to ``limit`` (and ``max_draft``) guessed tokens to follow ``context`` (token ids), whose
        answer begins at ``context[start]`` (None: somewhere before its last ``max_ngram`` tokens)."""
        limit = min(limit, self.max_draft)
        if limit <= 0 or not context:
            return []
        if start is not None and len(context) - start < self.max_ngram:
            ending = (self.START, *context[start:])  # the answer's first tokens
        else:
            ending = tuple(context[-self.max_ngram :])
        if ending in self._memo:  # depends only on the ending: worked out once
            guess = self._memo[ending]
        else:
            guess = self._lookup(ending)
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[ending] = guess
        if guess is None:  # the bank has never seen the last token
            guess = lookup_in_context(context, self.max_ngram, limit)
        return list(guess[:limit])

    def _lookup(self, ending: tuple[int, ...]) -> tuple[int, ...] | None:
        """The bank's guess after ``ending``: () where the taught answers disagree at once, None
        where the bank never has the last token."""
        places, marked = self._after.get(ending[-1]), self._marked
        if not places:
            return None
        matched = 1  # tokens of the ending matched at every place
        while places and matched < len(ending):  # a longer ending, where the bank has one
            before = ending[-matched - 1]
            longer = [(n, p) for n, p in places if p > matched and marked[n][p - matched - 1] == before]
            if not longer:
                break
            places, matched = longer, matched + 1
        # Only an ending found whole (the last max_ngram tokens, or the answer's first tokens) says the
        # answer is retelling a taught one; after a shorter match the guess is mostly wrong (measured on 60
        # val answers: 69 of 1,356 such guessed tokens kept, 2,021 of 2,388 after whole matches), so it stays short.
        longest = self.max_draft if matched == len(ending) else 2**matched - 1
        guess: list[int] = []
        while places and len(guess) < longest:
            votes = Counter(marked[n][p] for n, p in places if p < len(marked[n]))
            if not votes:
                break
            token, count = votes.most_common(1)[0]
            if count < self.agreement * sum(votes.values()):
                break  # the taught answers part ways here
            guess.append(token)
            places = [(n, p + 1) for n, p in places if p < len(marked[n]) and marked[n][p] == token]
        return tuple(guess)


def lookup_in_context(context: Sequence[int], max_ngram: int, limit: int) -> tuple[int, ...]:
    """What followed the latest earlier occurrence of the longest ending (2 to ``max_ngram``
    tokens) of ``context`` in ``context`` itself; () if it has none. (A single token recurs too
    often to say much: measured, guessing after one made decoding slower.)"""
    context = list(context)
    for n in range(min(max_ngram, len(context) - 1), 1, -1):
        ending = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start : start + n] == ending:
                return tuple(context[start + n : start + n + limit])
    return ()


# ------------------------------------------------------------------ many prompts at once
# Answering 200 questions one by one runs the model 200 x ~40 times on a single token, and a
# small model spends most of that time on per-call overhead, not arithmetic. Prompts of the
# same token length share one :meth:`Generator.decode` (the same decode step as a single
# answer), so the answers are those of one-by-one greedy decoding (a test checks this).
#
# And the groups of prompts are answered side by side, one per CPU core, by worker processes where
# that is safe (:mod:`gptf.decoding.answer_workers`).


@attrs.frozen
class BatchAnswer:
    text: str  # cleaned and filtered, as Generation.text
    tokens: int
    confidence: float | None = None  # as Generation.confidence
    declined: bool = False
    model_text: str = ""  # the model's own answer, before the filter
    answer: FinishedAnswer | None = None  # every measure of it (gptf eval --calibrate); None: no room to answer


def group_by_length(rows: Sequence[list[int] | None], batch_size: int) -> list[list[int]]:
    """Indices of ``rows`` grouped by length, at most ``batch_size`` per group (None rows skipped)."""
    by_length: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        if row is not None:
            by_length.setdefault(len(row), []).append(index)
    groups = []
    for _, indices in sorted(by_length.items()):
        groups += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return groups


def greedy_answers(
    generator: Generator,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    batch_size: int = 32,
    on_progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    processes: bool | None = None,
) -> list[BatchAnswer]:
    """Greedy answers in the order of ``prompts``. A prompt that leaves no room to answer gets "".

    Prompts of the same token length are answered together by the batched loop (:meth:`Generator.decode`),
    not by draft and verify, chosen by measurement: the 230 val questions took 4.9 s in batches of up to
    32, 9.2 s by draft and verify one at a time, 16.8 s by the plain loop one at a time (``python
    benchmarks/generation_speed.py --ckpt RUN --threads 1``, a teacher run). Drafting just the prompts
    alone in their group (4 of 230) saved nothing measurable (4.53 s vs 4.46 s), so every group is batched.
    ``batch_size`` counts rows of a model call: under beam search (``generator.beams``) each prompt
    takes ``beams`` rows, so fewer prompts share a batch (32 prompts x 4 beams took 280 MB more memory
    than 8 x 4, for 8% less time).

    ``workers``: groups answered at the same time (default: as many as
    :func:`~gptf.decoding.answer_workers.side_by_side_answers` set up; outside it, 1), each by a worker
    process of its own where that is safe, else by a thread (``processes``: True or False to choose;
    :mod:`gptf.decoding.answer_workers`). A group's answers do not depend on which worker answers it or
    when, so the answers are the same with any number of workers of either kind.
    """
    rows: list[list[int] | None] = []
    for prompt in prompts:
        try:
            rows.append(generator.prompt_ids(prompt))
        except GptfError:
            rows.append(None)
    answers = [BatchAnswer("", 0)] * len(prompts)
    memo = generator.answered

    def keep(index: int, finished: FinishedAnswer) -> None:
        v = generator.review(finished)
        answers[index] = BatchAnswer(v.text, len(finished.token_ids), v.confidence, v.declined, v.model_text, finished)

    if memo is not None:  # answered before (same model and constraints): only the filter is applied again
        for index, ids in enumerate(rows):
            earlier = memo.get((tuple(ids), max_new_tokens)) if ids is not None else None
            if earlier is not None and earlier.prompt == prompts[index]:
                keep(index, earlier)
                rows[index] = None
    done = sum(r is None for r in rows)
    settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)

    def answer(group: list[int]) -> list[FinishedAnswer]:
        decoded = generator.decode([rows[i] for i in group], settings, prompts=[prompts[i] for i in group])  # type: ignore[misc]
        return [generator.finished_answer(row, prompts[i]) for i, row in zip(group, decoded, strict=True)]

    groups = group_by_length(rows, max(1, batch_size // generator.beams))
    if workers is None:
        workers = ANSWER_WORKERS.get() if side_by_side_possible(generator) else 1
    if workers > 1:  # what the workers look up: built once here, before they start, not once in each
        memory_taught = generator.memory.taught if generator.memory is not None else None
        for taught in {generator.taught, memory_taught} - {None}:
            taught.prepare()  # type: ignore[union-attr]
    for group, finished_answers in side_by_side(groups, answer, workers, processes=processes):
        for index, finished in zip(group, finished_answers, strict=True):
            if memo is not None:
                memo[(tuple(rows[index]), max_new_tokens)] = finished  # type: ignore[arg-type]
            keep(index, finished)
        done += len(group)
        if on_progress is not None:
            on_progress(done)
    return answers


def side_by_side_possible(generator: Generator) -> bool:
    """Whether groups may be answered by several workers at once: on a CPU, without a compiled
    decode step (one graph, compiled on first use, is not something to race on), and with decoding
    constraints that say they may (:attr:`gptf.interfaces.DecodingConstraint.thread_safe`: a constraint
    that keeps a count, say, would count in a worker process's copy of itself, or race in a thread)."""
    return (
        generator.device.type == "cpu"
        and generator.compiled_step is None
        and all(getattr(c, "thread_safe", False) for c in generator.constraints)
    )
