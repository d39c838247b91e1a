"""A memory of what the model was taught: the next token, as the answers of similar questions go on.

A 3.37M model trained for two minutes recalls its taught answers well once it has begun the right one
(every token after the first is guessed right 90-100% of the time), but on a question in new words it
often begins the wrong one: recognising *what* was asked is the hard part. A search over the taught
questions recognises it more often (the taught question closest to a val question, by characters
weighted by rarity, belongs to the right concept 76% of the time, the model's own first answer 42%).

So the answer is generated with a memory beside the model, the way kNN-LM (Khandelwal et al., 2020,
"Generalization through Memorization") lets a language model consult its training data:

1. **Recall**: the ``neighbours`` taught answers whose taught questions look most like this question
   (:meth:`gptf.decoding.taught_questions.TaughtQuestions.closest_answers`), each weighted by
   ``softmax(similarity / temperature)``: the closest question counts most.
2. **Follow**: at every step, the recalled answers that begin with the answer written so far propose
   their next token (``<eos>`` where they end), with their weights. An answer that has left every
   recalled one gets no proposal: the model alone goes on.
3. **Mix**: the next-token probability is ``(1 - weight) · model + weight · memory``.

The model still writes every token; it holds ``1 - weight`` of the probability. With the teacher
recipe's 0.6, where the recalled answers agree on the next token that token always wins (0.6 > 0.4):
the memory decides *which* taught answer, and the model decides where the recalled answers disagree,
writes what none of them covers, and its doubt is what the answer filter reads. (With 0.4 it could
overrule the memory outright: on val questions of taught topics, over three teacher runs, it turned the
memory's right lesson into a wrong answer 54 times and a wrong lesson into a right answer 11 times.)
Beam search, the other constraints and the answer filter work on the mixed scores as on the model's
own. ``generation.memory: null`` (or ``gptf eval --no-memory``) shows the model alone: that is the
number that says what the 3.37M parameters learned; the memory is what a small model plus a search
over its lessons can do (retrieval-augmented generation in miniature).
"""

from __future__ import annotations

import math

import torch

from gptf.data import PROMPT_TEMPLATE
from gptf.decoding.taught_questions import TaughtQuestions
from gptf.interfaces import DecodingConstraint, DecodingState, Tokenizer

_QUESTION_START, _, _QUESTION_END = PROMPT_TEMPLATE.partition("{prompt}")
#: Questions whose recalled answers are kept (``gptf serve`` may see many; a full cache starts again).
_CACHE_SIZE = 4096


class TaughtMemory(DecodingConstraint):
    """Mixes the model's next-token probabilities with the next tokens of the taught answers of the
    most similar taught questions (see the module's docstring). Goes first among the constraints, so
    that the others (bans, the repetition penalty) still apply to the mixed scores."""

    thread_safe = True  # (see DecodingConstraint: the cache stores each entry in one assignment)

    def __init__(
        self,
        taught: TaughtQuestions,
        tokenizer: Tokenizer,
        *,
        weight: float = 0.6,
        neighbours: int = 10,
        temperature: float = 0.05,
    ) -> None:
        if not 0 < weight < 1:  # the model always keeps a share: a constraint may ban every proposal
            raise ValueError(f"weight must be above 0 and below 1, got {weight}")
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours}")
        if not temperature > 0:
            raise ValueError(f"temperature must be above 0, got {temperature}")
        self.taught, self.tokenizer = taught, tokenizer
        self.weight, self.neighbours, self.temperature = weight, neighbours, temperature
        self._log_model_share = math.log1p(-weight)
        self._log_memory_share = math.log(weight)
        # each taught answer as the model was trained to write it: its tokens, then <eos>
        self.answer_ids = [[*tokenizer.encode(answer), tokenizer.eos_id] for answer in taught.answers]
        self._recalled: dict[tuple[int, ...], list[tuple[list[int], float]]] = {}

    def question(self, prompt_ids: list[int]) -> str:
        """The question of a templated prompt (``<bos>用户:{question}\\n助手:``; in a chat, the last one)."""
        text = self.tokenizer.decode(prompt_ids)
        start = text.rfind(_QUESTION_START)
        text = text[start + len(_QUESTION_START) :] if start >= 0 else text
        return text.removesuffix(_QUESTION_END)

    def recalled_question(self, prompt_ids: list[int]) -> tuple[str, float] | None:
        """The taught question most like this prompt's question, and how much (0 to 1): what the memory
        recalled first, for a person to see why the answer went as it did. None: nothing alike."""
        found = self.taught.closest_question(self.question(prompt_ids))
        return None if found is None else (found[0], found[2])

    def recall(self, prompt_ids: list[int]) -> list[tuple[list[int], float]]:
        """The recalled answers for this prompt, as (token ids with ``<eos>``, weight), weights summing to
        1; none where no taught question shares a character with it."""
        key = tuple(prompt_ids)
        recalled = self._recalled.get(key)
        if recalled is None:
            rows, similarities = self.taught.closest_answers(self.question(prompt_ids), self.neighbours)
            kept = [(row, s) for row, s in zip(rows, similarities, strict=True) if s > 0]
            recalled = []
            if kept:
                weights = torch.softmax(torch.tensor([s for _, s in kept]) / self.temperature, dim=0).tolist()
                recalled = [(self.answer_ids[row], w) for (row, _), w in zip(kept, weights, strict=True)]
            if len(self._recalled) >= _CACHE_SIZE:
                self._recalled = {}
            self._recalled[key] = recalled
        return recalled

    def proposals(self, state: DecodingState) -> dict[int, float]:
        """Next token -> share of the memory's vote, from the recalled answers that begin with the
        answer so far (empty: the answer has left all of them)."""
        written, position = state.new_ids, len(state.new_ids)
        votes: dict[int, float] = {}
        for ids, w in self.recall(state.prompt_ids):
            if position < len(ids) and ids[:position] == written:
                votes[ids[position]] = votes.get(ids[position], 0.0) + w
        total = sum(votes.values())
        return {token: w / total for token, w in votes.items()}

    def adjust_logits(self, logits: torch.Tensor, state: DecodingState) -> torch.Tensor:
        votes = self.proposals(state)
        if not votes:
            return logits
        # log((1 - weight) · p_model + weight · p_memory), in logs (no probability rounds to 0); only the
        # proposed tokens get the memory's share, every other token keeps (1 - weight) of its own
        mixed = torch.log_softmax(logits.float(), dim=-1) + self._log_model_share
        tokens = torch.tensor(list(votes))
        memory = torch.tensor(list(votes.values())).log() + self._log_memory_share
        mixed[tokens] = torch.logaddexp(mixed[tokens], memory)
        return mixed
