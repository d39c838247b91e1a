"""The first answer tokens can count more in the loss (training.answer_start_tokens / _weight)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_performance_equivalence import make_trainer, small_recipe, tokenizer  # noqa: F401 (fixture)

from gptf.data import IGNORE, micro_batches, step_samples
from gptf.errors import RecipeError
from gptf.plugins.tokenization.byte_bpe import ByteLevelBPE
from gptf.train.answer_weights import answer_token_weights, loss_weighting

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # (conftest.py)


def test_weights_follow_each_rows_own_answer_start() -> None:
    y = torch.tensor(
        [
            [IGNORE, IGNORE, 5, 6, 7, 8],  # answer from position 2
            [IGNORE, 9, 10, IGNORE, IGNORE, IGNORE],  # answer from position 1, then padding
        ]
    )
    weights = answer_token_weights(y, start_tokens=3, start_weight=2.5)
    assert weights.tolist() == [[0, 0, 2.5, 2.5, 2.5, 1], [0, 2.5, 2.5, 0, 0, 0]]


def test_no_start_tokens_weighs_every_answer_token_once() -> None:
    y = torch.tensor([[IGNORE, 3, 4, 5, IGNORE]])
    assert answer_token_weights(y, 0, 9.0).tolist() == (y != IGNORE).float().tolist()


def test_weighted_step_is_the_weighted_mean_of_the_answer_losses(tokenizer: ByteLevelBPE) -> None:  # noqa: F811
    """One step's loss equals sum(weight * cross-entropy) / sum(weight) over the whole batch,
    computed by hand from the same model before the step."""
    trainer = make_trainer(tokenizer, batch_size=8, micro_batch=4, answer_start_tokens=2, answer_start_weight=4.0)
    model, split = trainer.model, trainer.train_split
    # the step takes the seeded stream's first 8 samples: recompute the loss on exactly those
    indices = step_samples(trainer.lengths, trainer.config.seed, 0, 8, 1)
    batches = micro_batches(split, indices, 4, trainer.pad_id)
    total, weight_sum = 0.0, 0.0
    with torch.no_grad():
        for x, y in batches:
            losses = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none")
            weights = answer_token_weights(y, 2, 4.0).flatten()
            total += float((losses * weights).sum())
            weight_sum += float(weights.sum())
    step = trainer.train_step()
    assert step["loss"] == pytest.approx(total / weight_sum, rel=1e-5)
    unweighted = make_trainer(tokenizer, batch_size=8, micro_batch=4).train_step()["loss"]
    assert unweighted != pytest.approx(step["loss"], rel=1e-4)  # the weights changed what was averaged


def test_weight_one_is_the_plain_loss(tokenizer: ByteLevelBPE) -> None:  # noqa: F811
    """The weighted sum with every weight 1 is the plain sum, and the trainer then skips the
    weights altogether (the default recipe trains exactly as before)."""
    trainer = make_trainer(tokenizer, batch_size=8, micro_batch=4, answer_start_tokens=3)
    x, y = micro_batches(trainer.train_split, list(range(4)), 4, trainer.pad_id)[0]
    with torch.no_grad():
        plain = trainer.loss_sum(x, y)
        weighted = trainer.loss_sum(x, y, weights=answer_token_weights(y, 3, 1.0))
        heavier = trainer.loss_sum(x, y, weights=answer_token_weights(y, 3, 2.0))
    assert float(weighted) == pytest.approx(float(plain), rel=1e-6)
    assert float(heavier) > float(plain)
    assert trainer.loss_weights(y) is None


def test_val_loss_stays_the_plain_mean(tokenizer: ByteLevelBPE) -> None:  # noqa: F811
    plain = make_trainer(tokenizer, batch_size=8, micro_batch=4)
    weighted = make_trainer(tokenizer, batch_size=8, micro_batch=4, answer_start_tokens=2, answer_start_weight=5.0)
    split = plain.train_split
    assert weighted.evaluate(split) == pytest.approx(plain.evaluate(split), rel=1e-6)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("answer_start_tokens", -1, "training.answer_start_tokens: must be >= 0"),
        ("answer_start_weight", 0.0, "training.answer_start_weight: must be above 0 and at most 1000"),
        ("answer_start_weight", -2.0, "training.answer_start_weight: must be above 0 and at most 1000"),
        ("answer_start_weight", 1e300, "training.answer_start_weight: must be above 0 and at most 1000"),
        ("answer_start_weight", float("nan"), "training.answer_start_weight: must be a finite number"),
    ],
)
def test_bad_weights_are_refused_by_name(key: str, value: float, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        small_recipe(**{key: value})


def test_the_run_says_how_the_loss_is_weighted() -> None:
    assert loss_weighting(small_recipe(answer_start_tokens=3, answer_start_weight=3.0).training) == (
        "first 3 answer tokens x3"
    )
    assert loss_weighting(small_recipe(answer_start_tokens=3).training) is None  # weight 1: nothing to say
    assert loss_weighting(small_recipe(answer_start_weight=2.5).training) is None  # no tokens: nothing to say
