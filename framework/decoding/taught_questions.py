"""Was the model taught to give this answer to a question like this one?

A small model that misreads a question still answers fluently, with a taught answer about another
concept, and it is about as sure of that answer as of a right one. What gives it away is the
question: the model was taught each answer for a few dozen questions, and a question it understood
usually looks like one of them. :class:`TaughtQuestions` keeps, for every taught answer, the questions
it was taught for, and :meth:`~TaughtQuestions.similarity` says how much a question looks like the
closest of them, for the taught answer closest to what the model said (both by char F1, punctuation
and spaces aside). Not the model's own doubt, but a check against what it was taught: the answer
filter's ``taught_question`` and ``min_logprob_taught`` measures (:mod:`gptf.interfaces`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from gptf.interfaces import content_chars, f1_from_overlap


class TaughtQuestions:
    """The questions each taught answer was taught for, from (question, answer) pairs."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        questions: dict[str, list[Counter[str]]] = {}
        for question, answer in pairs:
            questions.setdefault(answer.strip(), []).append(Counter(content_chars(question)))
        self.answers = list(questions)
        self._answer_chars = [Counter(content_chars(a)) for a in self.answers]
        self._questions = [questions[a] for a in self.answers]

    def __len__(self) -> int:
        return len(self.answers)

    def closest_answer(self, answer: str) -> int:
        """Index of the taught answer closest to ``answer`` by char F1 (-1: nothing taught, or no
        character in common)."""
        chars = Counter(content_chars(answer))
        size = sum(chars.values())
        best, best_f1 = -1, 0.0
        for index, taught in enumerate(self._answer_chars):
            f1 = f1_from_overlap(sum((chars & taught).values()), size, taught.total())
            if f1 > best_f1:
                best, best_f1 = index, f1
        return best

    def similarity(self, question: str, answer: str) -> float:
        """How much ``question`` looks like the closest question that the taught answer closest to
        ``answer`` was taught for: char F1, 0 (nothing alike, or nothing taught) to 1 (the same)."""
        index = self.closest_answer(answer)
        if index < 0:
            return 0.0
        asked = Counter(content_chars(question))
        size = sum(asked.values())
        return max(f1_from_overlap(sum((asked & q).values()), size, q.total()) for q in self._questions[index])
