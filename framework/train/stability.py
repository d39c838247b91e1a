"""Was training stable? Loss spikes, divergence and NaN, found from each step's metrics.

:class:`StabilityMonitor` watches every optimizer step's train loss, learning rate and
gradient norm (before clipping), a few float operations per step. It flags:

* **loss spike**: the train loss jumps more than ``SPIKE_LOSS_RISE`` (5%) above the median of
  the previous ``LOSS_WINDOW`` (10) steps *and*, in the same step, the gradient norm is more
  than ``SPIKE_GRAD_FACTOR`` (4) times the median of the previous ``GRAD_WINDOW`` (20). Either
  alone is common (an unusually hard batch; one large gradient that clipping tames); both
  together mean an update threw the model off course. Measured on the teacher recipe with
  learned positions at lr 2e-3: one such step (16: loss +6%, gradient 6.5x), after which the
  run trailed its lr-6e-4 twin for all 300 steps; the stable runs had none;
* **divergence**: the train loss is more than ``DIVERGE_RISE`` (25%) above the loss of the
  first step (an untrained model's, about ln(vocabulary)): the updates made it worse than
  random; or the mean train loss of the last ``LOSS_WINDOW`` steps is 25% *and*
  ``DIVERGE_MIN_RISE`` (0.1) above the lowest such mean so far, and stays there for another
  ``LOSS_WINDOW`` steps: it is going the wrong way. (Late in a run the loss is small and a batch of
  16 moves it a lot: the teacher run's 10-step mean once went from 0.31 to 0.39 for a few steps
  and fell again; neither the absolute rise nor the persistence lets that count.)
* **not finite**: the loss or the gradient norm is NaN or infinite (training then stops).

:meth:`StabilityMonitor.report` says, in plain words, which step, at what learning rate and
what to try. ``gptf run`` prints it in its summary and keeps it in ``run.json["stability"]``;
``gptf ablate`` shows it for every variant. A resumed run starts watching afresh.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import attrs

LOSS_WINDOW = 10  # steps: the recent level of the train loss
GRAD_WINDOW = 20  # steps: the usual size of the gradient norm
MIN_HISTORY = 5  # steps before anything is judged
SPIKE_LOSS_RISE = 0.05  # a spike: loss this far above its recent median ...
SPIKE_GRAD_FACTOR = 4.0  # ... and the gradient norm this many times its median
DIVERGE_RISE = 0.25  # divergence: the windowed loss this far above its lowest ...
DIVERGE_MIN_RISE = 0.1  # ... and at least this much (nats), for LOSS_WINDOW more steps
MAX_EVENTS = 20  # kept in run.json; the count is kept beyond that


@attrs.define
class Event:
    """One sign of trouble at one step."""

    kind: str  # "loss spike", "divergence", "not finite"
    step: int
    lr: float
    detail: str  # "loss 6.41, 7% above its recent median 5.97; gradient norm 9.4 = 6.5x its median"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class StabilityMonitor:
    """Feed it every step's metrics (``observe``); ask it at the end (``report``)."""

    def __init__(self, peak_lr: float) -> None:
        self.peak_lr = peak_lr
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.grads: deque[float] = deque(maxlen=GRAD_WINDOW)
        self.first_loss: float | None = None
        self.lowest_mean: float | None = None
        self.diverging = False  # flagged once per stretch of rising loss
        self.rising_since: int | None = None  # first step of the current stretch above the limit
        self.above_first = False
        self.events: list[Event] = []
        self.count = 0
        self.steps = 0

    def observe(self, metrics: dict[str, Any]) -> Event | None:
        """One optimizer step's ``step``, ``loss``, ``lr`` and ``grad_norm``; returns what it flagged."""
        step, loss, lr = int(metrics["step"]), float(metrics["loss"]), float(metrics["lr"])
        grad = float(metrics.get("grad_norm", 0.0))
        self.steps = step
        if not (math.isfinite(loss) and math.isfinite(grad)):
            return self._flag("not finite", step, lr, f"loss {loss}, gradient norm {grad}")
        if self.first_loss is None:
            self.first_loss = loss
        event = self._spike(step, loss, lr, grad) if len(self.losses) >= MIN_HISTORY else None
        self.losses.append(loss)
        self.grads.append(grad)
        return event or self._worse_than_at_first(step, loss, lr) or self._divergence(step, lr)

    def _worse_than_at_first(self, step: int, loss: float, lr: float) -> Event | None:
        if self.above_first or self.first_loss is None or loss <= self.first_loss * (1 + DIVERGE_RISE):
            return None
        self.above_first = True  # once per run
        detail = f"loss {loss:.2f}, above the {self.first_loss:.2f} of the untrained model at the first step"
        return self._flag("divergence", step, lr, detail)

    def _spike(self, step: int, loss: float, lr: float, grad: float) -> Event | None:
        loss_median, grad_median = statistics.median(self.losses), statistics.median(self.grads)
        rise = loss / loss_median - 1 if loss_median > 0 else 0.0
        factor = grad / grad_median if grad_median > 0 else 0.0
        if rise <= SPIKE_LOSS_RISE or factor <= SPIKE_GRAD_FACTOR:
            return None
        detail = (
            f"loss {loss:.2f}, {rise:.0%} above its median {loss_median:.2f} over the previous {len(self.losses)} "
            f"steps; gradient norm {grad:.2f} = {factor:.1f}x its median"
        )
        return self._flag("loss spike", step, lr, detail)

    def _divergence(self, step: int, lr: float) -> Event | None:
        if len(self.losses) < LOSS_WINDOW:
            return None
        mean = statistics.fmean(self.losses)
        if self.lowest_mean is None or mean < self.lowest_mean:
            self.lowest_mean, self.diverging, self.rising_since = mean, False, None
            return None
        limit = max(self.lowest_mean * (1 + DIVERGE_RISE), self.lowest_mean + DIVERGE_MIN_RISE)
        if mean <= limit:
            self.rising_since = None  # back under the limit: that was noise
            return None
        if self.rising_since is None:
            self.rising_since = step
        if self.diverging or step - self.rising_since < LOSS_WINDOW:
            return None
        self.diverging = True
        detail = (
            f"mean loss of the last {LOSS_WINDOW} steps {mean:.2f}, up from its lowest {self.lowest_mean:.2f} "
            f"(above {limit:.2f} since step {self.rising_since})"
        )
        return self._flag("divergence", step, lr, detail)

    def _flag(self, kind: str, step: int, lr: float, detail: str) -> Event:
        event = Event(kind, step, lr, detail)
        self.count += 1
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        return event

    @property
    def stable(self) -> bool:
        return self.count == 0

    def report(self) -> dict[str, Any]:
        """For ``run.json``: ``stable``, the events, one line (``summary``) and what to try (``hint``)."""
        return {
            "stable": self.stable,
            "steps_watched": self.steps,
            "events": [e.to_json() for e in self.events],
            "event_count": self.count,
            "summary": summary_line(self.events, self.count),
            "hint": hint(self.events, self.peak_lr),
        }


def _lr_words(lr: float, peak: float) -> str:
    if peak <= 0:
        return f"lr {lr:.2g}"
    share = lr / peak
    where = "the peak" if share > 0.98 else f"{share:.0%} of the peak {peak:.2g}"
    return f"lr {lr:.2g}, {where}"


def summary_line(events: list[Event], count: int) -> str:
    """``stable: no loss spike, divergence or NaN`` or what happened first, in one line."""
    if not events:
        return "stable: no loss spike, divergence or NaN"
    kinds = sorted({e.kind for e in events})
    first = events[0]
    more = f" (+{count - 1} more)" if count > 1 else ""
    return f"{' and '.join(kinds)}: first at step {first.step} ({first.detail}){more}"


def hint(events: list[Event], peak_lr: float) -> str:
    """What to try, in words, given what was flagged."""
    if not events:
        return ""
    first = events[0]
    lower = f"{peak_lr / 3:.1g}"
    where = _lr_words(first.lr, peak_lr)
    if first.kind == "not finite":
        return (
            f"the numbers overflowed at step {first.step} ({where}): lower training.lr (e.g. {lower}), keep "
            "training.grad_clip on, and check the data"
        )
    if first.kind == "divergence":
        return (
            f"the loss started rising around step {first.step} ({where}): lower training.lr (e.g. {lower}) "
            "or decay it sooner (training.scheduler)"
        )
    return (
        f"an update at step {first.step} ({where}) threw the model off course; one spike can set a run back "
        f"for hundreds of steps. Try a lower training.lr (e.g. {lower}) or a longer warm-up, or let gptf ablate "
        f"--tune training.lr=... compare learning rates"
    )
