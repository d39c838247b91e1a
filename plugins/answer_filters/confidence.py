"""Knowing when it doesn't know: reply "这个问题我还没有学过。" instead of an unsure answer.

A model this small answers *every* question, also the ones it never learned, and a wrong
answer reads as confidently as a right one. But it is less sure along the way: the tokens of
an answer it made up are, on average, less likely. ``confidence`` measures that for a finished
answer and replaces it with ``reply`` when the measure is below ``threshold``:

* ``mean_logprob`` (default): the mean log-probability of the chosen tokens. exp() of it is
  their geometric-mean probability: -0.1 = 90% per token, -0.7 = 50%;
* ``min_logprob``: the log-probability of the least likely token (one shaky step);
* ``entropy``: minus the mean entropy of the next-token distributions (how spread out they were);
* ``question_overlap``: the share of the question's characters the answer uses too. Not the
  model's own doubt but a sign of it: a right answer usually names what was asked, a confident
  answer about another concept usually does not;
* ``min_logprob_overlap``: both: ``min_logprob`` + 4 x ``question_overlap``. On the teacher run
  answered by beam search it separated right from wrong val answers best (AUROC 0.81, against
  0.68 for ``min_logprob`` alone: beam search picks the answer the model is surest of, so a wrong
  answer is often a confident taught sentence about another concept).

* ``taught_question``: how much the question looks like the questions the answer was *taught* for
  (the run's training file; :mod:`gptf.decoding.taught_questions`): a misread question gets a taught
  answer about another concept, given to questions that look nothing like this one; a taught answer
  whose numbers came out different was taught for no question (0);
* ``min_logprob_taught``: ``min_logprob`` + 2 x ``taught_question`` (:data:`gptf.interfaces.TAUGHT_WEIGHT`).
  On the teacher runs' val answers it separates right from wrong best of all (mean AUROC 0.86 over
  three runs with the memory, against 0.83 for ``min_logprob`` alone).

``gptf eval --ckpt RUN --calibrate`` compares the measures on the val questions and picks the
threshold there (never on test); ``--apply`` writes it into the run's recipe.

``threshold: auto`` leaves the choice to the run: at the end of ``gptf run`` the threshold is
calibrated on the val questions in the same way and the number is written into the run's
recipe (``checkpoints/<name>/recipe.yaml``), or the filter is switched off there if no threshold
makes val more trustworthy. A model that was never calibrated (no val file) shows every answer.
"""

from __future__ import annotations

import math
from typing import Literal

from gptf import hookimpl
from gptf.interfaces import CONFIDENCE_MEASURES, DECLINE_TEXT, AnswerFilter, FinishedAnswer, Tokenizer

# the names of gptf.interfaces.CONFIDENCE_MEASURES, as the type the recipe checker reads the choices from
Measure = Literal[CONFIDENCE_MEASURES]  # type: ignore[valid-type]


class ConfidenceFilter(AnswerFilter):
    def __init__(
        self,
        tokenizer: Tokenizer,
        threshold: float | Literal["auto"] = -1.0,
        measure: Measure = "mean_logprob",
        reply: str = DECLINE_TEXT,
    ) -> None:
        if measure not in CONFIDENCE_MEASURES:
            raise ValueError(f"measure must be one of {', '.join(CONFIDENCE_MEASURES)}, got {measure!r}")
        if threshold == "auto":  # chosen on val at the end of gptf run; until then, show everything
            threshold = -math.inf
        elif isinstance(threshold, str) or math.isnan(threshold):
            raise ValueError(f"threshold must be a number or 'auto', got {threshold!r}")
        if not reply.strip():
            raise ValueError("reply must not be empty: it is what the model says instead")
        self.threshold, self.measure, self.reply = float(threshold), measure, reply

    def confidence(self, answer: FinishedAnswer) -> float:
        return answer.measure(self.measure)


def no_filter(tokenizer: Tokenizer) -> None:
    """Show every answer, however unsure."""
    return None


@hookimpl
def register_answer_filters() -> dict[str, object]:
    return {"confidence": ConfidenceFilter, "none": no_filter}
