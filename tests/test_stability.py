"""Loss spikes, divergence and NaN, found from every step's metrics (gptf.train.stability)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_RECIPE, invoke

from gptf.train.stability import StabilityMonitor

# (step, train loss, lr, gradient norm): the first 45 steps of the teacher recipe (threads=1),
# measured for issue 11. Learned positions at lr 2e-3 end 300 steps at val loss 3.97, at 6e-4 near 3.45.
# fmt: off
LEARNED_2E3 = [
    (1, 6.7707, 0.000133, 3.808), (2, 6.6094, 0.000267, 3.42), (3, 6.5025, 0.0004, 2.134), (4, 6.4294, 0.000533,
    1.568), (5, 6.3955, 0.000667, 1.448), (6, 6.2813, 0.0008, 1.585), (7, 6.2506, 0.000933, 1.508), (8, 6.149,
    0.001067, 1.08), (9, 6.0847, 0.0012, 0.975), (10, 5.9651, 0.001333, 0.978), (11, 6.0708, 0.001467, 3.439), (12,
    5.9674, 0.0016, 0.928), (13, 5.9813, 0.001733, 0.904), (14, 5.9408, 0.001867, 1.0), (15, 5.8229, 0.002, 1.183),
    (16, 6.4127, 0.002, 9.413), (17, 5.9363, 0.002, 0.922), (18, 5.975, 0.002, 0.931), (19, 5.8359, 0.002, 0.912),
    (20, 5.9117, 0.001999, 1.125), (21, 5.8242, 0.001999, 0.954), (22, 5.8556, 0.001998, 1.169), (23, 5.8758,
    0.001997, 1.102), (24, 5.8087, 0.001997, 0.896), (25, 5.824, 0.001996, 0.783), (26, 5.9399, 0.001995, 0.817),
    (27, 5.8271, 0.001993, 2.014), (28, 5.7973, 0.001992, 1.033), (29, 5.8653, 0.001991, 0.862), (30, 5.8109,
    0.001989, 1.083), (31, 5.9033, 0.001988, 1.107), (32, 5.8282, 0.001986, 1.062), (33, 5.8235, 0.001984, 0.886),
    (34, 5.7356, 0.001982, 0.958), (35, 5.9275, 0.00198, 0.894), (36, 5.7074, 0.001978, 1.123), (37, 5.7636,
    0.001976, 1.048), (38, 5.7431, 0.001974, 1.105), (39, 5.777, 0.001971, 1.065), (40, 5.5784, 0.001969, 1.389),
    (41, 5.7051, 0.001966, 0.953), (42, 5.6752, 0.001963, 1.086), (43, 5.7116, 0.00196, 1.134), (44, 5.5692,
    0.001957, 1.178), (45, 5.6455, 0.001954, 1.037),
]
ROPE_2E3 = [
    (1, 6.7673, 0.000133, 4.562), (2, 6.6069, 0.000267, 4.091), (3, 6.4668, 0.0004, 2.34), (4, 6.4274, 0.000533,
    1.919), (5, 6.3494, 0.000667, 1.556), (6, 6.2288, 0.0008, 1.641), (7, 6.2189, 0.000933, 3.153), (8, 6.1341,
    0.001067, 1.166), (9, 6.0576, 0.0012, 0.986), (10, 5.9456, 0.001333, 1.042), (11, 5.9898, 0.001467, 3.486), (12,
    5.8969, 0.0016, 1.43), (13, 5.9104, 0.001733, 1.168), (14, 5.9005, 0.001867, 1.617), (15, 5.7538, 0.002, 1.393),
    (16, 5.9788, 0.002, 4.155), (17, 5.8445, 0.002, 1.423), (18, 5.803, 0.002, 1.376), (19, 5.609, 0.002, 2.916),
    (20, 5.701, 0.001999, 1.339), (21, 5.5946, 0.001999, 2.448), (22, 5.617, 0.001998, 1.675), (23, 5.5157,
    0.001997, 1.547), (24, 5.4582, 0.001997, 1.678), (25, 5.4413, 0.001996, 1.872), (26, 5.5488, 0.001995, 1.632),
    (27, 5.3993, 0.001993, 1.915), (28, 5.3071, 0.001992, 1.568), (29, 5.4042, 0.001991, 1.318), (30, 5.3826,
    0.001989, 2.525), (31, 5.3382, 0.001988, 1.531), (32, 5.3494, 0.001986, 1.506), (33, 5.3105, 0.001984, 1.46),
    (34, 5.2057, 0.001982, 1.721), (35, 5.3201, 0.00198, 1.554), (36, 5.001, 0.001978, 1.615), (37, 5.1483,
    0.001976, 1.441), (38, 5.1735, 0.001974, 1.448), (39, 5.1783, 0.001971, 1.674), (40, 4.9046, 0.001969, 1.612),
    (41, 5.0415, 0.001966, 1.396), (42, 4.981, 0.001963, 1.446), (43, 4.9443, 0.00196, 1.319), (44, 4.9189,
    0.001957, 1.705), (45, 4.9338, 0.001954, 1.546),
]
LEARNED_6E4 = [
    (1, 6.7707, 4e-05, 3.808), (2, 6.6969, 8e-05, 4.102), (3, 6.6012, 0.00012, 3.081), (4, 6.5219, 0.00016, 2.418),
    (5, 6.5021, 0.0002, 2.037), (6, 6.4042, 0.00024, 2.111), (7, 6.4137, 0.00028, 1.791), (8, 6.3558, 0.00032,
    1.622), (9, 6.325, 0.00036, 1.55), (10, 6.2294, 0.0004, 1.544), (11, 6.2721, 0.00044, 2.033), (12, 6.184,
    0.00048, 1.289), (13, 6.1908, 0.00052, 1.243), (14, 6.1239, 0.00056, 1.115), (15, 6.0306, 0.0006, 1.194), (16,
    6.0994, 0.0006, 1.033), (17, 6.0013, 0.0006, 0.979), (18, 5.988, 0.0006, 1.481), (19, 5.8837, 0.0006, 1.181),
    (20, 5.9304, 0.0006, 1.324), (21, 5.8345, 0.0006, 1.05), (22, 5.8638, 0.000599, 1.721), (23, 5.8573, 0.000599,
    1.103), (24, 5.7282, 0.000599, 1.494), (25, 5.8617, 0.000599, 12.266), (26, 5.8397, 0.000598, 1.421), (27,
    5.749, 0.000598, 1.315), (28, 5.6423, 0.000598, 1.429), (29, 5.7297, 0.000597, 2.486), (30, 5.6775, 0.000597,
    1.588), (31, 5.7358, 0.000596, 1.612), (32, 5.7053, 0.000596, 2.157), (33, 5.6891, 0.000595, 1.361), (34,
    5.5948, 0.000595, 1.761), (35, 5.7353, 0.000594, 1.619), (36, 5.5337, 0.000593, 1.693), (37, 5.5507, 0.000593,
    2.666), (38, 5.5767, 0.000592, 1.863), (39, 5.5771, 0.000591, 1.672), (40, 5.4367, 0.000591, 1.72), (41, 5.5706,
    0.00059, 1.684), (42, 5.4972, 0.000589, 1.482), (43, 5.4777, 0.000588, 1.431), (44, 5.4136, 0.000587, 1.942),
    (45, 5.4002, 0.000586, 1.676),
]
# fmt: on


def watch(rows: list[tuple[int, float, float, float]]) -> StabilityMonitor:
    monitor = StabilityMonitor(peak_lr=max(r[2] for r in rows))
    for step, loss, lr, grad in rows:
        monitor.observe({"step": step, "loss": loss, "lr": lr, "grad_norm": grad})
    return monitor


def test_the_measured_learned_positions_spike_is_flagged_with_its_step_and_lr() -> None:
    report = watch(LEARNED_2E3).report()
    assert not report["stable"] and report["event_count"] == 1
    event = report["events"][0]
    assert (event["kind"], event["step"], event["lr"]) == ("loss spike", 16, 0.002)
    assert "6.41" in event["detail"] and "x its median" in event["detail"]
    assert report["summary"].startswith("loss spike: first at step 16")
    assert "step 16 (lr 0.002, the peak)" in report["hint"] and "training.lr (e.g. 0.0007)" in report["hint"]


@pytest.mark.parametrize("rows", [ROPE_2E3, LEARNED_6E4], ids=["rope at 2e-3", "learned at 6e-4"])
def test_the_stable_runs_are_not_flagged(rows: list[tuple[int, float, float, float]]) -> None:
    """learned at 6e-4 has a gradient-norm spike (step 25, 8x its median) that did not move the
    loss: clipped and harmless, so not a loss spike."""
    report = watch(rows).report()
    assert report["stable"], report["events"]
    assert report["summary"] == "stable: no loss spike, divergence or NaN" and report["hint"] == ""


def test_a_loss_that_turns_back_up_is_divergence_flagged_once() -> None:
    falling = [(s, 6.0 - 0.05 * s, 1e-3, 1.0) for s in range(1, 31)]
    rising = [(s, 4.5 + 0.08 * (s - 30), 1e-3, 1.0) for s in range(31, 64)]  # stays below the first loss
    report = watch(falling + rising).report()
    assert [e["kind"] for e in report["events"]] == ["divergence"]
    assert "up from its lowest" in report["events"][0]["detail"] and "decay it sooner" in report["hint"]


def test_a_loss_worse_than_the_untrained_model_is_divergence() -> None:
    report = watch([(1, 5.7, 1.0, 30.0), (2, 17.5, 1.0, 36.0), (3, 25.0, 1.0, 10.0)]).report()
    assert [(e["kind"], e["step"]) for e in report["events"]] == [("divergence", 2)]
    assert "above the 5.70 of the untrained model" in report["events"][0]["detail"]


def test_not_finite_is_flagged() -> None:
    monitor = StabilityMonitor(peak_lr=1e-3)
    event = monitor.observe({"step": 3, "loss": math.nan, "lr": 1e-3, "grad_norm": 1.0})
    assert event is not None and event.kind == "not finite" and not monitor.stable
    assert "overflowed at step 3" in monitor.report()["hint"]


def test_every_run_records_its_stability(workdir: Path) -> None:
    result = invoke(["run", str(TINY_RECIPE), "training.max_steps=20", "demo_prompts=[]"])
    assert result.exit_code == 0, result.output
    assert "stability       stable: no loss spike, divergence or NaN" in result.stdout
    info = json.loads((workdir / "checkpoints" / "tiny" / "run.json").read_text(encoding="utf-8"))
    assert info["stability"]["stable"] and info["stability"]["steps_watched"] == 20


def test_a_blown_up_run_says_where_and_what_to_try(workdir: Path) -> None:
    args = ["run", str(TINY_RECIPE), "training.lr=1.0", "training.scheduler=constant", "training.max_steps=12"]
    result = invoke([*args, "demo_prompts=[]", "training.log_interval=4"])
    assert result.exit_code == 0, result.output
    assert "stability       divergence: first at step 2" in result.stdout
    assert "hint: the loss started rising around step 2 (lr 1, the peak): lower training.lr" in result.stdout
    metrics = (workdir / "checkpoints" / "tiny" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    flagged = [json.loads(line) for line in metrics if "stability" in line]
    assert [r["step"] for r in flagged] == [2]  # logged although log_interval is 4
    info = json.loads((workdir / "checkpoints" / "tiny" / "run.json").read_text(encoding="utf-8"))
    assert info["stability"]["events"][0]["kind"] == "divergence"


def test_a_short_rise_of_a_small_loss_is_noise_not_divergence() -> None:
    """Measured on the teacher run (800 steps, step ~500): the 10-step mean of a loss near 0.3 rose
    from 0.31 to 0.39 for a few steps and fell again. Late in a run a batch of 16 moves a small loss
    a lot; that is not divergence (it used to be flagged, with advice to lower the learning rate)."""
    falling = [(s, 6.0 * 0.95**s, 1e-3, 1.0) for s in range(1, 100)]  # down to ~0.04 ... then level
    level = [(s, 0.31, 1e-3, 1.0) for s in range(100, 130)]
    bump = [(s, 0.31 + (0.12 if s % 2 else 0.04), 1e-3, 1.0) for s in range(130, 138)]  # mean ~0.39 briefly
    after = [(s, 0.30, 1e-3, 1.0) for s in range(138, 170)]
    assert watch(falling[:60] + level + bump + after).report()["stable"]


def test_a_small_loss_that_keeps_rising_is_still_divergence() -> None:
    falling = [(s, 6.0 - 0.19 * s, 1e-3, 1.0) for s in range(1, 31)]  # down to 0.3
    rising = [(s, 0.3 + 0.03 * (s - 30), 1e-3, 1.0) for s in range(31, 71)]  # up to 1.5, for good
    report = watch(falling + rising).report()
    assert [e["kind"] for e in report["events"]] == ["divergence"]
