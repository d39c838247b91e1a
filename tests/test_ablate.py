"""``gptf ablate`` on the tiny recipe (2 steps a run), and the loss plots every run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE, run_gptf
from rich.console import Console

from gptf.errors import GptfError, RecipeError
from gptf.plots import plots_available
from gptf.recipe import recipe_to_dict
from gptf.tools.ablate import Settings, check_swaps_given, grid, make_plan, mean_and_spread, parse_swap, run_ablation

HAS_MATPLOTLIB = plots_available()


def quiet() -> Console:
    return Console(record=True, width=200, force_terminal=False)


# ------------------------------------------------------------------ parsing the grid


def test_swap_values_may_contain_commas_inside_braces() -> None:
    swap = parse_swap("training.scheduler=constant,{name: warmup_cosine, warmup_ratio: 0.1}, linear_decay")
    assert swap.key == "training.scheduler"
    assert swap.values == ["constant", "{name: warmup_cosine, warmup_ratio: 0.1}", "linear_decay"]
    assert swap.short == "scheduler"
    assert parse_swap("tokenizer.type=byte_bpe,char").short == "tokenizer"


@pytest.mark.parametrize("bad", ["model.positional", "model.positional=", "=rope", "model.positional=rope,,none"])
def test_malformed_swaps_are_explained(bad: str) -> None:
    with pytest.raises(RecipeError, match="KEY=A,B,C"):
        parse_swap(bad)


def test_repeated_values_and_keys_are_refused() -> None:
    with pytest.raises(RecipeError, match="lists a value twice"):
        parse_swap("model.norm=rmsnorm,rmsnorm")
    with pytest.raises(GptfError, match="given twice"):
        check_swaps_given(["model.norm=rmsnorm", "model.norm=layernorm"])


def test_grid_is_the_cross_product_in_order() -> None:
    variants = grid([parse_swap("model.positional=rope,none"), parse_swap("model.norm=rmsnorm,layernorm")])
    assert [v.label for v in variants] == [
        "positional=rope norm=rmsnorm",
        "positional=rope norm=layernorm",
        "positional=none norm=rmsnorm",
        "positional=none norm=layernorm",
    ]
    assert variants[1].overrides == ["model.positional=rope", "model.norm=layernorm"]
    assert variants[1].slug == "positional-rope-norm-layernorm"
    assert [v.label for v in grid([])] == ["baseline"]


def test_mean_and_spread() -> None:
    assert mean_and_spread([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert mean_and_spread([2.0]) == (2.0, None)
    assert mean_and_spread([]) == (None, None)


def test_plan_matches_everything_but_the_swapped_key(workdir: Path) -> None:
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope,learned"]), steps=3, seeds=2)
    plan = make_plan(settings)
    assert len(plan.runs) == 4 and plan.out == Path("ablations/tiny")

    def comparable(run: object) -> dict:
        data = recipe_to_dict(run.loaded.recipe)
        for key in ("output_dir", "name"):
            data.pop(key)
        data["model"].pop("positional")
        return data

    rope, learned = [r for r in plan.runs if r.seed == 1]
    assert comparable(rope) == comparable(learned)
    assert rope.loaded.recipe.training.seed == 1 and rope.loaded.recipe.training.max_steps == 3
    assert rope.key != learned.key and len({r.key for r in plan.runs}) == 4


def test_a_bad_variant_is_reported_before_anything_trains(workdir: Path) -> None:
    result = run_gptf(["ablate", str(TINY_RECIPE), "--swap", "model.positional=rope,rotary", "--steps", "2"], workdir)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "positional=rotary" in result.stderr and "valid choices" in result.stderr
    assert not (workdir / "ablations").exists()


# ------------------------------------------------------------------ running a grid


def test_ablate_end_to_end_then_skips_finished_runs(workdir: Path) -> None:
    args = ["ablate", str(TINY_RECIPE), "training.log_interval=1", "--swap", "model.positional=rope,none"]
    args += ["--steps", "2", "--seeds", "2", "--out", "abl"]
    first = run_gptf(args, workdir)
    assert first.returncode == 0, first.stderr
    out = workdir / "abl"
    assert "[1/4] positional=rope seed 0" in first.stdout and "[4/4] positional=none seed 1" in first.stdout
    assert "positional=none" in first.stdout and "±" in first.stdout  # the printed table, with spread over seeds

    summary = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert [v["variant"] for v in summary["variants"]] == ["positional=rope", "positional=none"]
    assert sorted((r["variant"], r["seed"]) for r in summary["runs"]) == [
        ("positional=none", 0),
        ("positional=none", 1),
        ("positional=rope", 0),
        ("positional=rope", 1),
    ]
    for run in summary["runs"]:
        saved = yaml.safe_load((Path(run["run_dir"]) / "recipe.yaml").read_text(encoding="utf-8"))
        assert saved["training"]["seed"] == run["seed"] and saved["training"]["max_steps"] == 2
        assert run["status"] == "ok" and run["steps"] == 2 and run["parameters"] == 34_912
        assert run["val_curve"] and run["train_curve"] and run["tokens_per_s"] > 0
        assert run["demo"][0]["prompt"] == "什么是注意力机制？"
    row = summary["variants"][0]
    assert row["seeds_ok"] == 2 and row["final_val_loss_std"] is not None
    assert row["demo"][0]["answer"] is not None

    markdown = (out / "ablation.md").read_text(encoding="utf-8")
    assert "| variant | parameters | wall time (s) | tokens/s | final train loss | final val loss |" in markdown
    assert "| positional=none | 34,912 |" in markdown and "±" in markdown
    rows = list(csv.DictReader((out / "ablation.csv").open(encoding="utf-8")))
    assert [r["variant"] for r in rows] == ["positional=rope", "positional=none"]
    assert float(rows[1]["final_val_loss"]) == pytest.approx(summary["variants"][1]["final_val_loss"])
    assert (out / "val_loss.png").is_file() == HAS_MATPLOTLIB

    weights = sorted(out.glob("runs/*/model.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in weights]
    second = run_gptf(args, workdir)
    assert second.returncode == 0, second.stderr
    assert "4 run(s) already finished" in second.stdout and "[1/" not in second.stdout
    assert [p.stat().st_mtime_ns for p in weights] == stamps  # nothing was trained again
    assert json.loads((out / "ablation.json").read_text(encoding="utf-8"))["variants"] == summary["variants"]


def test_changed_budget_trains_again_and_tokenizer_swaps_get_their_own_files(workdir: Path) -> None:
    console = quiet()
    swaps = check_swaps_given(["tokenizer.type=byte_bpe,char"])
    summary = run_ablation(Settings(TINY_RECIPE, swaps, steps=1, out=Path("tok")), console)
    assert [v["variant"] for v in summary["variants"]] == ["tokenizer=byte_bpe", "tokenizer=char"]
    assert len(list((workdir / "tok" / "tokenizers").glob("*.json"))) == 2
    assert all(v["seeds_ok"] == 1 for v in summary["variants"])
    again = run_ablation(Settings(TINY_RECIPE, swaps, steps=2, out=Path("tok")), quiet())
    assert all(r["steps"] == 2 for r in again["runs"])  # a different recipe: not skipped


def test_without_matplotlib_everything_but_the_pictures(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptf.plots

    monkeypatch.setattr(gptf.plots, "plots_available", lambda: False)
    console = quiet()
    run_ablation(Settings(TINY_RECIPE, check_swaps_given(["model.norm=rmsnorm"]), steps=1), console)
    text = console.export_text()
    assert 'pip install "gptf[plots]"' in text
    out = workdir / "ablations" / "tiny"
    assert (out / "ablation.md").is_file() and not (out / "val_loss.png").exists()
    run_log = next(out.glob("runs/*/train.log")).read_text(encoding="utf-8")
    assert 'loss curve      (no picture: matplotlib is not installed; pip install "gptf[plots]")' in run_log
    assert not list(out.glob("runs/*/loss.png"))


# ------------------------------------------------------------------ every run's loss curve


def test_every_run_writes_its_loss_curve_beside_the_metrics(tiny_run: Path) -> None:
    if not HAS_MATPLOTLIB:
        pytest.skip("matplotlib is an optional extra")
    picture = tiny_run / "loss.png"
    assert picture.is_file() and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "metrics.jsonl").is_file()


def test_loss_curves_are_read_from_metrics(tmp_path: Path) -> None:
    from gptf.plots import read_loss_curves

    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 2, "loss": 5.0, "lr": 1e-3}, {"step": 2, "val_loss": 4.5}, {"step": 4, "loss": 4.0}]
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n{cut off", encoding="utf-8")
    curves = read_loss_curves(metrics)
    assert curves.train == [(2, 5.0), (4, 4.0)] and curves.val == [(2, 4.5)]
