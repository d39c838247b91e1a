"""Was the model taught to give this answer to a question like this one?

A small model that misreads a question still answers fluently, with a taught answer about another
concept, and it is about as sure of that answer as of a right one. What gives it away is the
question: the model was taught each answer for a few dozen questions, and a question it understood
usually looks like one of them. :class:`TaughtQuestions` keeps, for every taught answer, the questions
it was taught for, and :meth:`~TaughtQuestions.similarity` says how much a question looks like the
closest of them, for the taught answer closest to what the model said (both by char F1, punctuation
and spaces aside; the questions with each character weighted by how rare it is among the taught
questions, :func:`gptf.decoding.char_bags.rarity_weights`: sharing 是什么 says little, sharing 锅 a
lot; a number is one term, its value however it is written: 七 is 7, and a word in Latin letters one term in
any case, RoPE is rope: :func:`comparison_terms`).
Not the model's own doubt, but a check against what it was taught: the answer filter's
``taught_question`` and ``min_logprob_taught`` measures (:mod:`gptf.interfaces`).

Weighting by rarity, measured on the teacher run's val answers (no filter): AUROC of right vs wrong
0.874 -> 0.926; beam search choosing with it: val right concept 47.8% -> 49.1% (README). Numbers as
values, each counting twice what a character as rare counts (:data:`NUMBER_WEIGHT`): the taught question
closest to a val question on a taught topic is about that topic 165 -> 173 times in 200 (七的平方是多少
found 8的平方是多少 before, 7的平方等于多少 now).

An answer is only what it was taught if its facts are: a taught answer whose numbers came out
different (九乘以九等于二十五 for 九乘以九等于八十一) was taught for no question, so its similarity is 0
(:mod:`gptf.decoding.numbers`). Char F1 alone sees one or two changed characters in a long answer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import torch

from gptf.decoding.char_bags import CharBags, rarity_weights
from gptf.decoding.numbers import is_number_term, question_terms, same_numbers

#: A number in a question counts this many times what a character as rare counts: 5乘以9是多少 is about
#: 5 and 9 more than about 乘以 (val, the taught question closest to a question on a taught topic is
#: about that topic: 1 -> 169 of 200, 1.5 -> 172, **2 -> 173**, 3 -> 171, 5 -> 170).
NUMBER_WEIGHT = 2.0
#: How :meth:`TaughtQuestions.similarity` compares questions. Every calibration of a taught measure
#: records it (``calibration.json``): a threshold chosen while questions were compared otherwise (older
#: runs: plain char F1, or numbers as characters) does not mean the same now, and ``gptf`` says so when
#: it loads such a run.
QUESTION_SIMILARITY = (
    f"char F1, characters weighted by rarity, a number one term weighted {NUMBER_WEIGHT:g}x, "
    "a Latin word in any case one term and its letters"
)
#: Questions whose comparison with every taught question is kept (a full memo starts again).
_ASKED_KEPT = 1024

_LATIN_WORD = re.compile(r"[A-Za-z]+")


def comparison_terms(question: str) -> list[str]:
    """What a question is compared by: its characters, each number one term, its value
    (:func:`gptf.decoding.numbers.question_terms`), and each word in Latin letters, in lower case, as
    one term *and* as its letters. Students type rope, RoPE or ROPE: letter by letter, in the case the
    lesson used, ROPE shared nothing with RoPE's o and e. The word counts whole (GPT is not P, G, T
    anywhere), its letters still match a word written a little differently (GPT2, GPT-2). Measured on
    the val and test questions on taught topics that contain Latin letters (43): the closest taught
    question is of the right concept for 33 as written, 26 in lower case, 23 in upper case; with this,
    35 in every case (all val questions on taught topics: 173 -> 175 of 200, test 166 -> 166 of 189).

    >>> comparison_terms("什么是RoPE？"), comparison_terms("什么是rope")
    (['什', '么', '是', 'rope', 'r', 'o', 'p', 'e'], ['什', '么', '是', 'rope', 'r', 'o', 'p', 'e'])
    """
    terms: list[str] = []
    start = 0
    for match in _LATIN_WORD.finditer(question):
        word = match.group().lower()
        terms += [*question_terms(question[start : match.start()]), word, *word]
        start = match.end()
    return terms + question_terms(question[start:])


class TaughtQuestions:
    """The questions each taught answer was taught for, from (question, answer) pairs."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        questions: dict[str, list[str]] = {}
        for question, answer in pairs:
            questions.setdefault(answer.strip(), []).append(question)
        self.answers = list(questions)
        self._answers = CharBags(self.answers)
        self._questions = [questions[a] for a in self.answers]
        rarity = rarity_weights((q for questions in self._questions for q in questions), comparison_terms)
        # each term's weight, worked out once (20,000 questions hold ~230,000 terms, ~3,000 distinct)
        self._rarity = functools.cache(lambda term: rarity(term) * (NUMBER_WEIGHT if is_number_term(term) else 1.0))
        self._texts = [q for questions in self._questions for q in questions]  # every taught question, by answer
        self._all_questions: tuple[CharBags, torch.Tensor] | None = None  # every question, and its answer
        self._asked: dict[str, torch.Tensor] = {}  # question -> each answer's closest question (last few asked)

    def __len__(self) -> int:
        return len(self.answers)

    def closest_answer(self, answer: str) -> int:
        """Index of the taught answer closest to ``answer`` by char F1 (-1: nothing taught, or no
        character in common; ties: the first taught)."""
        rows, _ = self._answers.closest(answer)
        return rows[0] if rows else -1

    def similarity(self, question: str, answer: str) -> float:
        """How much ``question`` looks like the closest question that the taught answer closest to
        ``answer`` was taught for: char F1 weighted by rarity, 0 (nothing alike, or nothing taught) to 1
        (the same).
        0 also where ``answer`` has other numbers than that taught answer: it was not taught so."""
        index = self.closest_answer(answer)
        if index < 0 or not same_numbers(answer, self.answers[index]):
            return 0.0
        return float(self.by_answer(question)[index])

    def prepare(self) -> None:
        """Build the index of every taught question now (~1 s for the teacher's 20,000) instead of at
        the first question: before forking answer workers, so that they share it."""
        self._question_index()

    def _question_index(self) -> tuple[CharBags, torch.Tensor]:
        """Every taught question as a bag of weighted characters, and the index of its answer (built once)."""
        if self._all_questions is None:
            owners = [a for a, questions in enumerate(self._questions) for _ in questions]
            self._all_questions = (
                CharBags(self._texts, self._rarity, comparison_terms),
                torch.tensor(owners, dtype=torch.long),
            )
        return self._all_questions

    def by_answer(self, question: str) -> torch.Tensor:
        """For each taught answer, how much ``question`` looks like the closest question it was taught for
        (float64, one per answer): one weighted char F1 with every taught question, the best per answer.
        The last questions asked are remembered (beam search asks about one question for every candidate)."""
        found = self._asked.get(question)
        if found is None:
            bags, owners = self._question_index()
            found = torch.zeros(len(self.answers), dtype=torch.float64)
            found.scatter_reduce_(0, owners, bags.f1(question), reduce="amax")
            if len(self._asked) >= _ASKED_KEPT:
                self._asked = {}
            self._asked[question] = found
        return found

    def closest_question(self, question: str) -> tuple[str, int, float] | None:
        """The taught question most like ``question`` (weighted char F1), the index of its answer and that
        similarity; None where no taught question shares a character with it."""
        if not self.answers:
            return None
        bags, owners = self._question_index()
        scores = bags.f1(question)
        row = int(scores.argmax())
        if float(scores[row]) <= 0.0:
            return None
        return self._texts[row], int(owners[row]), float(scores[row])

    def closest_answers(self, question: str, k: int) -> tuple[list[int], list[float]]:
        """The ``k`` taught answers whose closest taught question looks most like ``question`` (the
        other direction of :meth:`similarity`: from a question to answers), best first, and those
        similarities (char F1 weighted by rarity, 0 to 1). Fewer when fewer are taught."""
        if not self.answers:
            return [], []
        best = self.by_answer(question).topk(min(k, len(self.answers)))
        return best.indices.tolist(), best.values.tolist()
