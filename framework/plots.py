"""Pictures: loss curves of a run, validation curves of an ablation, attention heatmaps.

matplotlib is an optional extra (``pip install "gptf[plots]"``). Without it every
function here returns ``None`` and the caller prints :data:`PLOTS_HINT` once; nothing
else depends on the pictures. We draw on a bare :class:`matplotlib.figure.Figure` (no
``pyplot``), so no window ever opens and no global state is touched.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console

PLOTS_HINT = 'pip install "gptf[plots]"'
LOSS_PLOT = "loss.png"  # written beside metrics.jsonl

#: Fonts that can draw Chinese, most common first (Linux, Windows, macOS).
CHINESE_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
    "STHeiti",
    "Arial Unicode MS",
)


@functools.cache
def plots_available() -> bool:
    """True when matplotlib can be imported (checked once)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@attrs.frozen
class LossCurves:
    """What ``metrics.jsonl`` says about the loss: (step, loss) pairs."""

    train: list[tuple[int, float]]
    val: list[tuple[int, float]]


def read_loss_curves(metrics: Path) -> LossCurves:
    """Train-loss lines have ``loss``; evaluation lines have ``val_loss``. A line that is not
    a metrics record (cut short by an interrupt, damaged bytes, edited) is skipped."""
    train: list[tuple[int, float]] = []
    val: list[tuple[int, float]] = []
    try:
        data = metrics.read_bytes() if metrics.is_file() else b""
    except OSError:
        data = b""
    for raw in data.splitlines():
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if not isinstance(record, dict) or not _is_step(record.get("step")):
            continue
        for key, curve in (("loss", train), ("val_loss", val)):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                curve.append((record["step"], float(value)))
    return LossCurves(train, val)


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _integer_steps(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)


def _save(figure: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    return out


def save_loss_plot(
    metrics: Path, out: Path | None = None, title: str = "", train_label: str = "train loss"
) -> Path | None:
    """Draw train and validation loss against the step; ``None`` without matplotlib."""
    if not plots_available():
        return None
    curves = read_loss_curves(metrics)
    figure = _figure(7, 4.2)
    axes = figure.add_subplot()
    if curves.train:
        steps, losses = zip(*curves.train, strict=True)
        marker = "." if len(steps) < 40 else None  # a few points: show each one
        axes.plot(steps, losses, label=train_label, marker=marker, linewidth=1.2, alpha=0.8)
    if curves.val:
        steps, losses = zip(*curves.val, strict=True)
        axes.plot(steps, losses, label="val loss", marker="o", markersize=3, linewidth=1.6)
    axes.set(xlabel="step", ylabel="cross-entropy per answer token", title=title or metrics.parent.name)
    _integer_steps(axes)
    if curves.train or curves.val:
        axes.legend()
    figure.tight_layout()
    return _save(figure, out or metrics.with_name(LOSS_PLOT))


def report_loss_plot(metrics: Path, console: Console, title: str = "", train_label: str = "train loss") -> Path | None:
    """Save the run's loss curve and say where it is, or say how to get pictures (or why not)."""
    try:
        path = save_loss_plot(metrics, title=title, train_label=train_label)
    except OSError as exc:  # the picture is a convenience: a full disk is reported, the run stands
        reason = (exc.strerror or str(exc)).lower()
        console.print(f"loss curve      (not written: {exc.filename or metrics.parent}: {reason})", markup=False)
        return None
    if path is None:
        console.print(
            f"loss curve      (no picture: matplotlib is not installed; {PLOTS_HINT})", highlight=False, markup=False
        )
    else:
        console.print(f"loss curve      {path}", highlight=False, markup=False)
    return path


@attrs.frozen
class Band:
    """One variant's validation curve: the mean over seeds and the lowest/highest seed."""

    label: str
    steps: Sequence[int]
    mean: Sequence[float]
    low: Sequence[float]
    high: Sequence[float]
    family: str = ""  # bands of one family share a colour (one variant at several values)
    dashed: bool = False


def save_val_curves(bands: Sequence[Band], out: Path, title: str) -> Path | None:
    """All variants on one chart; with several seeds a shaded band spans them. Bands of one
    ``family`` share a colour; ``dashed`` ones are drawn dashed (``gptf ablate --tune``: the recipe's value)."""
    if not plots_available():
        return None
    figure = _figure(8, 4.8)
    axes = figure.add_subplot()
    colours: dict[str, Any] = {}
    for band in bands:
        colour = colours.get(band.family) if band.family else None
        (line,) = axes.plot(
            band.steps, band.mean, marker="o", markersize=3, linewidth=1.6, label=band.label, color=colour,
            linestyle="--" if band.dashed else "-",
        )  # fmt: skip
        colours.setdefault(band.family, line.get_color())
        if any(lo != hi for lo, hi in zip(band.low, band.high, strict=True)):
            axes.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.15, linewidth=0)
    axes.set(xlabel="step", ylabel="validation loss", title=title)
    _integer_steps(axes)
    if bands:
        axes.legend()
    figure.tight_layout()
    return _save(figure, out)


def warm_up() -> None:
    """Import the drawing code now (about half a second), so it is not timed later."""
    if plots_available():
        _figure(1, 1)


def chinese_font() -> str | None:
    """The first installed font that can draw Chinese characters, if any."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CHINESE_FONTS if name in installed), None)


def save_attention_heatmaps(weights: Any, labels: Sequence[str], out: Path, title: str) -> Path | None:
    """One layer's attention, a heatmap per head: row = the token that looks, column =
    the token it looks at, colour = how much (each row sums to 1). ``weights``: (H, T, T)."""
    if not plots_available():
        return None
    n_head, size = weights.shape[0], weights.shape[-1]
    columns = min(n_head, 4)
    rows = -(-n_head // columns)
    cell = max(3.2, 0.22 * size)
    figure = _figure(cell * columns + 0.6, cell * rows + 0.6)
    font = {"family": chinese_font() or "DejaVu Sans", "size": 7 if size <= 40 else 5}
    for head in range(n_head):
        axes = figure.add_subplot(rows, columns, head + 1)
        axes.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=1.0)
        axes.set_title(f"head {head}", fontsize=9)
        axes.set_xticks(range(size), labels, rotation=90, fontdict=font)
        axes.set_yticks(range(size), labels, fontdict=font)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, out)
