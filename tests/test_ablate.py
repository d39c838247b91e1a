"""``gptf ablate`` on the tiny recipe (2 steps a run), and the loss plots every run writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import attrs
import pytest
import yaml
from conftest import TINY_RECIPE, run_gptf
from rich.console import Console

from gptf.errors import GptfError, RecipeError
from gptf.plots import plots_available
from gptf.recipe import recipe_to_dict
from gptf.tools.ablate import Settings, check_swaps_given, grid, make_plan, parse_swap, run_ablation
from gptf.tools.ablate_report import mean_and_spread

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


def test_about_three_validation_points_per_run_unless_asked(workdir: Path) -> None:
    """Each point is a pass over all of data.val (about 5 training steps of compute on the teacher)."""
    swaps = check_swaps_given(["model.positional=rope,none"])
    settings = Settings(TINY_RECIPE, swaps, ["training.eval_interval=200"], steps=300)
    plan = make_plan(settings)
    assert plan.eval_interval == 100 and {r.loaded.recipe.training.eval_interval for r in plan.runs} == {100}
    assert make_plan(attrs.evolve(settings, eval_interval=30)).eval_interval == 30
    recipe_more_often = attrs.evolve(settings, overrides=["training.eval_interval=40"])
    assert make_plan(recipe_more_often).eval_interval == 40  # never less often than the recipe asks


def test_precision_auto_is_decided_once_for_every_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variant trains in the same precision (one probe), unless precision itself is varied."""
    import gptf.tools.ablate as ablate
    from gptf.build.speed import PrecisionChoice

    probes: list[int] = []

    def probe(n_embd: int, seq_len: int, micro_batch: int) -> PrecisionChoice:
        probes.append(n_embd)
        return PrecisionChoice("bf16", "auto: test probe")

    monkeypatch.setattr(ablate, "_cached_precision", probe)
    swaps = check_swaps_given(["model.positional=rope,learned,none"])
    plan = make_plan(Settings(TINY_RECIPE, swaps, ["training.precision=auto"], steps=2, seeds=2))
    assert probes == [plan.base.recipe.model.n_embd]  # one probe for six runs
    assert {r.loaded.recipe.training.precision for r in plan.runs} == {"bf16"}
    assert plan.precision_note == "bf16 for every run (auto: test probe)"
    fixed = make_plan(Settings(TINY_RECIPE, swaps, ["training.precision=fp32"], steps=2))
    assert fixed.precision_note is None and {r.loaded.recipe.training.precision for r in fixed.runs} == {"fp32"}
    varied = make_plan(Settings(TINY_RECIPE, check_swaps_given(["training.precision=auto,fp32"]), steps=2))
    assert [r.loaded.recipe.training.precision for r in varied.runs] == ["auto", "fp32"]
    assert len(probes) == 1


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
    assert "| variant | parameters | steps | val loss | vs best | char F1 (val) | readable | stability |" in markdown
    assert "| positional=none | 34,912 | 2 |" in markdown and "±" in markdown
    assert "## Reading" in markdown and "over 2 seeds" in markdown
    assert 0 <= row["char_f1"] <= 1 and row["readable"] is not None  # the held-out answers, scored
    assert all(run["val_eval"]["evaluated"] > 0 and run["stability"]["stable"] for run in summary["runs"])
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
    assert "loss curve      not drawn for this run" in run_log  # an ablation run draws none (see below)
    assert not list(out.glob("runs/*/loss.png"))


def test_ablation_runs_skip_checkpoints_and_loss_pictures_but_train_as_gptf_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ablation run keeps no resumable checkpoints and draws no loss.png (nothing it reports reads them);
    the training and everything the table shows are those of a plain gptf run of the same recipe."""
    from gptf.recipe import load_recipe
    from gptf.run import run_recipe
    from gptf.train.session import TrainingSession

    saves: list[int] = []
    original_save = TrainingSession.save
    monkeypatch.setattr(
        TrainingSession, "save", lambda self: saves.append(self.trainer.state.step) or original_save(self)
    )
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope"]), ["training.save_interval=1"],
                        steps=3, out=Path("abl"), jobs=1)  # fmt: skip
    summary = run_ablation(settings, quiet())
    assert saves == []  # save_interval 1, yet no checkpoint
    (run,) = summary["runs"]
    run_dir = Path(run["run_dir"])
    assert not (run_dir / "loss.png").exists() and not (run_dir / "state").exists()
    assert {p.name for p in run_dir.iterdir()} >= {"model.safetensors", "run.json", "eval.json", "metrics.jsonl"}

    overrides = [o for o in make_plan(settings).runs[0].loaded.overrides if not o.startswith(("output_dir=", "name="))]
    result = run_recipe(load_recipe(TINY_RECIPE, [*overrides, "output_dir=plain"]), Console(quiet=True))  # gptf run
    assert saves == [1, 2, 3]  # a plain run keeps them
    assert (Path("plain") / "loss.png").is_file() == HAS_MATPLOTLIB
    assert (result.train_loss, result.val_loss) == (run["final_train_loss"], run["final_val_loss"])
    assert (Path("plain") / "model.safetensors").read_bytes() == (run_dir / "model.safetensors").read_bytes()
    assert result.stability == run["stability"]

    def answers(folder: Path) -> list:
        return json.loads((folder / "eval.json").read_text(encoding="utf-8"))["splits"][0]["answers"]

    assert answers(Path("plain")) == answers(run_dir)
    assert {k: v for k, v in result.val_eval.items() if k != "seconds"} == {
        k: v for k, v in run["val_eval"].items() if k != "seconds"
    }


def test_ablation_runs_score_their_own_answers_without_calibrating_a_filter(workdir: Path) -> None:
    """threshold: auto stays off in an ablation run: a variant's char F1 is that of its own answers."""
    auto = "generation.answer_filter={name: confidence, threshold: auto}"
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope"]), [auto], steps=2,
                        out=Path("abl"), jobs=1)  # fmt: skip
    (run,) = run_ablation(settings, quiet())["runs"]
    run_dir = Path(run["run_dir"])
    assert not (run_dir / "calibration.json").exists()
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["generation"]["answer_filter"]["threshold"] == "auto"
    answers = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["splits"][0]["answers"]
    assert not any(a["declined"] and a["model_answer"] != a["answer"] for a in answers)  # nothing hidden


def test_ablation_runs_score_the_model_alone_without_the_memory(workdir: Path) -> None:
    """generation.memory would lift every variant alike: an ablation run's val answers are its model's own."""
    memory = "generation.memory={weight: 0.3}"
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope"]), [memory], steps=2,
                        out=Path("abl"), jobs=1)  # fmt: skip
    (run,) = run_ablation(settings, quiet())["runs"]
    run_dir = Path(run["run_dir"])
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["generation"]["memory"]["weight"] == 0.3  # the recipe keeps it, for gptf generate --ckpt
    decoding = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["decoding"]
    assert decoding == "greedy"  # no ", with a memory of the taught answers"


def test_runs_in_one_process_tokenise_the_data_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptf.run
    import gptf.tools.ablate as ablate

    monkeypatch.setattr(ablate, "SPLITS", gptf.run.SplitCache())
    tokenised: list[str] = []
    original = gptf.run.tokenize_split

    def tokenize_split(*args: object, **kwargs: object) -> object:
        tokenised.append(str(kwargs["source"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(gptf.run, "tokenize_split", tokenize_split)
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope,none"]), ["demo_prompts=[]"],
                        steps=2, seeds=2, out=Path("abl"), jobs=1)  # fmt: skip
    first = run_ablation(settings, quiet())
    assert tokenised == ["tiny_train.jsonl", "tiny_val.jsonl"] and ablate.SPLITS.hits == 6  # 4 runs
    with open("tiny_val.jsonl", "a", encoding="utf-8") as val:  # a changed file is tokenised again
        val.write(
            json.dumps({"prompt": "什么是残差连接？", "completion": "把输入加回输出。"}, ensure_ascii=False) + "\n"
        )
    second = run_ablation(attrs.evolve(settings, out=Path("abl2")), quiet())
    assert tokenised[2:] == ["tiny_val.jsonl"]
    assert [r["final_train_loss"] for r in second["runs"]] == [r["final_train_loss"] for r in first["runs"]]
    assert [r["final_val_loss"] for r in second["runs"]] != [r["final_val_loss"] for r in first["runs"]]


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


# ------------------------------------------------------------------ labels and the recipe's own parameters

INVERSE_SQRT = """
from gptf import hookimpl


class InverseSqrt:
    def __init__(self, max_steps: int, warmup_steps: int = 4) -> None:
        self.warmup = warmup_steps

    def __call__(self, step: int) -> float:
        step += 1
        return step / self.warmup if step < self.warmup else (self.warmup / step) ** 0.5


@hookimpl
def register_schedulers():
    return {"inverse_sqrt": InverseSqrt}
"""


def test_a_swap_naming_the_recipes_component_keeps_its_parameters_and_labels_show_them(workdir: Path) -> None:
    """The case of issue 11: --swap training.scheduler=inverse_sqrt dropped the recipe's warmup_steps: 15."""
    (workdir / "inverse_sqrt.py").write_text(INVERSE_SQRT, encoding="utf-8")
    recipe = workdir / "student.yaml"
    recipe.write_text(
        f"extends: {TINY_RECIPE}\nname: student\nplugins: [./inverse_sqrt.py]\n"
        "training: {scheduler: {name: inverse_sqrt, warmup_steps: 15}}\n",
        encoding="utf-8",
    )
    swaps = check_swaps_given(["training.scheduler=inverse_sqrt,constant,{name: warmup_cosine, warmup_ratio: 0.1}"])
    plan = make_plan(Settings(recipe, swaps, steps=2))
    assert [v.label for v in plan.variants] == [
        "scheduler=inverse_sqrt(warmup_steps=15)",
        "scheduler=constant",
        "scheduler=warmup_cosine(warmup_ratio=0.1)",
    ]
    specs = [r.loaded.recipe.training.scheduler for r in plan.runs]
    assert (
        specs[0].params == {"warmup_steps": 15} and specs[1].params == {} and specs[2].params == {"warmup_ratio": 0.1}
    )
    assert plan.runs[0].run_dir.name == "scheduler-inverse_sqrt-seed0"  # folder names stay short


def test_swap_help_shows_the_form_with_parameters() -> None:
    import typer.main

    from gptf.cli import app

    command = typer.main.get_command(app).commands["ablate"]  # type: ignore[attr-defined]
    helps = {p.name: p.help for p in command.params}
    assert "--swap 'training.scheduler=constant,{name: warmup_cosine, warmup_ratio: 0.1}'" in helps["swap"]
    assert "keeps the recipe's parameters" in helps["swap"]
    assert {"tune", "budget", "jobs", "seeds"} <= set(helps)


# ------------------------------------------------------------------ tuning, seeds and the reading


def test_tune_values_are_sorted_and_include_the_recipes_own(workdir: Path) -> None:
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope,none"]), steps=2,
                        tune=parse_swap("training.lr=1e-2,1e-3", "--tune"))  # fmt: skip
    plan = make_plan(settings)
    assert plan.tune_values == ["0.001", "0.003", "0.01"] and plan.recipe_tune_value == "0.003"  # tiny: lr 3e-3
    assert len(plan.runs) == 6
    assert {r.loaded.recipe.training.lr for r in plan.runs} == {1e-3, 3e-3, 1e-2}
    assert plan.runs[0].run_dir.name == "positional-rope-lr0.001-seed0"
    with pytest.raises(GptfError, match="auto is not available"):
        make_plan(attrs.evolve(settings, tune=parse_swap("training.lr=auto", "--tune")))
    with pytest.raises(GptfError, match="both swapped and tuned"):
        make_plan(attrs.evolve(settings, tune=parse_swap("model.positional=rope", "--tune")))


def test_tuned_ablation_picks_the_best_lr_flags_the_unstable_one_and_reads_it(workdir: Path) -> None:
    """At lr 1.0 (constant) the tiny model blows up at step 2: flagged, and not chosen as best."""
    settings = Settings(
        TINY_RECIPE,
        check_swaps_given(["model.positional=rope,none"]),
        ["training.scheduler=constant", "demo_prompts=[]"],
        steps=6,
        seeds=2,
        out=Path("abl"),
        tune=parse_swap("training.lr=1.0", "--tune"),
        jobs=1,
    )
    summary = run_ablation(settings, quiet())
    assert summary["tune"] == {"key": "training.lr", "short": "lr", "values": ["0.003", "1"], "recipe_value": "0.003"}
    for row in summary["variants"]:
        assert row["best"]["value"] == "0.003" and row["at_recipe"] is row["best"]
        unstable = row["cells"][1]["unstable"]
        assert [u["kind"] for u in unstable] == ["divergence", "divergence"]  # both seeds
    reading = summary["reading"]
    assert any(r.startswith("positional=rope was unstable at lr 1: divergence at step 2 in 2 of 2 seed(s)")
               for r in reading), reading  # fmt: skip
    assert any("Held-out char F1" in r for r in reading)
    markdown = (workdir / "abl" / "ablation.md").read_text(encoding="utf-8")
    assert (
        "| variant | parameters | steps | best lr | val loss at best lr | vs best | val loss at lr=0.003 |" in markdown
    )
    assert "lr=1: divergence @ step 2 (2/2 seeds)" in markdown and "## Every value tried" in markdown
    assert "0.003 (best) (recipe)" in markdown
    for line in reading:
        assert f"- {line}" in markdown


def _row(name: str, per_seed: list[float], **extra: object) -> dict:
    mean, std = mean_and_spread(per_seed)
    cell = {"value": None, "final_val_loss": mean, "final_val_loss_std": std, "seeds_ok": len(per_seed),
            "seeds": len(per_seed), "unstable": [], "val_by_seed": {str(i): v for i, v in enumerate(per_seed)},
            **extra}  # fmt: skip
    return {"variant": name, "final_val_loss": mean, "final_val_loss_std": std, "best": cell, "at_recipe": cell,
            "cells": [cell], "char_f1": None}  # fmt: skip


def test_the_noise_rule_pairs_the_seeds() -> None:
    """The positional ablation of issue 11: rope 1.8295, 1.9940 and none 2.1978, 2.3448 (seed 1 of both hit a
    loss spike at step 13). Each spread over seeds is about 0.1, but seed by seed none trails by 0.368 and
    0.351: a paired t-test calls that clear, overlapping mean ± 2σ ranges would not."""
    from gptf.tools.ablate_report import compare, reading

    rope, none = _row("rope", [1.8295, 1.9940]), _row("none", [2.1978, 2.3448])
    mixed = _row("mixed", [2.1978, 1.9000])  # worse with seed 0, better with seed 1
    c = compare(none["best"], rope["best"])
    assert c["verdict"] == "clear" and c["per_seed"] == pytest.approx([0.3683, 0.3508])
    assert c["diff"] == pytest.approx(0.35955) and c["spread"] == pytest.approx(0.012374, rel=1e-3)
    assert compare(mixed["best"], rope["best"])["verdict"] == "within noise"
    one = compare(_row("a", [2.0])["best"], _row("b", [1.0])["best"])
    assert one["verdict"] == "1 seed: no error bars" and one["diff"] == 1.0
    summary = {"variants": [rope, none, mixed], "tune": None, "budget": "steps"}
    for row in summary["variants"]:
        row["vs_best"] = compare(row["best"], rope["best"]) if row is not rope else None
    lines = reading(summary)
    assert lines[0] == "rope has the lowest final val loss: 1.91 ± 0.12 (mean over 2 seeds)."
    assert lines[1].startswith("mixed trails rope by 0.14 ± 0.33 val loss over 2 seeds (per seed: 0.37, -0.094)")
    assert "within noise" in lines[1]  # ranked by mean val loss: mixed (2.05) before none (2.27)
    assert lines[2] == (
        "rope beats none by 0.36 ± 0.012 val loss over 2 seeds (per seed: 0.37, 0.35): clear (paired t-test over "
        "seeds, 5% level)."
    )


def test_the_reading_says_when_the_learning_rate_changes_the_conclusion() -> None:
    from gptf.tools.ablate_report import compare, reading

    def tuned(name: str, at_best: float, best_lr: str, at_recipe: float) -> dict:
        row = _row(name, [at_best - 0.01, at_best + 0.01])
        row["best"] = {**row["best"], "value": best_lr}
        own = _row(name, [at_recipe - 0.01, at_recipe + 0.01])["best"]
        row["at_recipe"] = row["best"] if best_lr == "0.002" else {**own, "value": "0.002"}
        row["at_recipe"]["unstable"] = [{"kind": "loss spike", "step": 16, "lr": 0.002}] if name == "learned" else []
        row["cells"] = [row["best"], row["at_recipe"]] if row["at_recipe"] is not row["best"] else [row["best"]]
        return row

    rope, none, learned = tuned("rope", 1.83, "0.002", 1.83), tuned("none", 2.20, "0.002", 2.20), tuned(
        "learned", 2.10, "0.0006", 3.88)  # fmt: skip
    summary = {"variants": [rope, none, learned], "budget": "steps",
               "tune": {"short": "lr", "values": ["0.0006", "0.002"], "recipe_value": "0.002"}}  # fmt: skip
    for row in summary["variants"]:
        row["vs_best"] = compare(row["best"], rope["best"]) if row is not rope else None
    text = "\n".join(reading(summary))
    assert "learned: at the recipe's lr 0.002 its val loss is 3.88 ± 0.014; at its best lr 0.0006 it is 2.10" in text
    assert "learned's best lr 0.0006 is the smallest value tried: a smaller one may be better still." in text
    assert "Ranked at the recipe's lr 0.002: rope, none, learned; ranked at each variant's best lr: rope, learned, " \
           "none. The lr changes the conclusion" in text  # fmt: skip
    assert "learned was unstable at lr 0.002: loss spike at step 16 in 1 of 2 seed(s); at its best lr 0.0006 it " \
           "was stable." in text  # fmt: skip


# ------------------------------------------------------------------ budgets and parallel runs


def test_equal_time_budget_gives_a_cheaper_variant_more_steps(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gptf.tools.ablate as ablate

    measured = iter([0.02, 0.01])  # rope twice as slow per step as none (made up, so the test is exact)
    monkeypatch.setattr(ablate, "seconds_per_step", lambda loaded: next(measured))
    settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope,none"]), ["demo_prompts=[]"], steps=3,
                        out=Path("abl"), budget="seconds", jobs=1)  # fmt: skip
    summary = run_ablation(settings, quiet())
    assert [(r["variant"], r["steps"]) for r in summary["variants"]] == [("positional=rope", 3), ("positional=none", 6)]
    assert [r["steps"] for r in summary["runs"]] == [3, 6]
    markdown = (workdir / "abl" / "ablation.md").read_text(encoding="utf-8")
    assert "Compared at equal training time per run" in markdown
    assert "Compared at equal training time, not equal steps: positional=rope 3 steps (0.020 s/step), " \
           "positional=none 6 steps (0.010 s/step)." in markdown  # fmt: skip


def test_parallel_runs_give_the_same_results_as_one_at_a_time(workdir: Path) -> None:
    def ablate(jobs: int) -> dict:
        settings = Settings(TINY_RECIPE, check_swaps_given(["model.positional=rope,none"]), ["demo_prompts=[]"],
                            steps=3, seeds=2, out=Path(f"jobs{jobs}"), jobs=jobs)  # fmt: skip
        return run_ablation(settings, quiet())

    one, two = ablate(1), ablate(2)
    assert two["jobs"] == 2 and one["jobs"] == 1
    for a, b in zip(one["runs"], two["runs"], strict=True):
        assert (a["variant"], a["seed"], a["final_val_loss"], a["final_train_loss"]) == (
            b["variant"], b["seed"], b["final_val_loss"], b["final_train_loss"])  # fmt: skip
        weights = [Path(r["run_dir"]) / "model.safetensors" for r in (a, b)]
        assert weights[0].read_bytes() == weights[1].read_bytes()


def test_a_spike_shared_by_variants_points_at_the_batch() -> None:
    from gptf.tools.ablate_report import reading

    rope, none, learned = _row("rope", [1.83, 1.99]), _row("none", [2.20, 2.34]), _row("learned", [3.46, 3.47])
    for row, step in ((rope, 13), (none, 13), (learned, 16)):
        row["best"]["unstable"] = [{"seed": 1, "kind": "loss spike", "step": step, "lr": 0.002}]
    summary = {"variants": [rope, none, learned], "tune": None, "budget": "steps"}
    for row in summary["variants"]:
        row["vs_best"] = None if row is rope else {"diff": 0.4, "spread": None, "per_seed": [0.4], "verdict": ""}
    lines = reading(summary)
    assert "Seed 1 was flagged at step 13 in rope, none alike: every variant reads the same batches" in "\n".join(lines)
    assert not any("step 16 in learned," in line for line in lines)
