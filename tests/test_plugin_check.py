"""``gptf plugin check``: the example plugins pass, broken ones fail with a reason."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, TINY_RECIPE, run_gptf

from gptf.errors import PluginError
from gptf.plugins import BUILTIN_MODULES
from gptf.tools.plugin_check import check_target

EXAMPLES = ROOT / "examples" / "plugins"
PACKAGE = EXAMPLES / "gptf-relative-bias"


def failures(target: str | Path) -> dict[str, str]:
    """check name -> explanation, for every failed check."""
    return {f.check: f.detail for r in check_target(str(target)) for f in r.findings if f.status == "fail"}


def write_plugin(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the examples


def test_local_file_example_passes_on_the_command_line(tmp_path: Path) -> None:
    result = run_gptf(["plugin", "check", str(EXAMPLES / "scalenorm.py")], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "norm 'scalenorm'" in result.stdout and "all checks passed" in result.stdout
    for check in ("builds", "shapes", "causality", "save/load", "deterministic", "training step"):
        assert check in result.stdout


def test_package_example_passes_as_a_folder_and_as_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    reports = check_target(str(PACKAGE))  # reads the gptf entry point from pyproject.toml
    assert [r.components for r in reports] == [["positional 'relative_bias'"]]
    assert reports[0].ok, reports[0].findings
    assert {f.check for f in reports[0].findings} >= {"causality", "KV cache", "save/load", "training step"}
    monkeypatch.syspath_prepend(str(PACKAGE / "src"))
    assert check_target("gptf_relative_bias")[0].ok


def test_package_example_works_through_its_entry_point(workdir: Path) -> None:
    """As if pip-installed: the package and a dist-info with its entry point on PYTHONPATH."""
    site = workdir / "site"
    shutil.copytree(PACKAGE / "src" / "gptf_relative_bias", site / "gptf_relative_bias")
    dist = site / "gptf_relative_bias-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gptf-relative-bias\nVersion: 0.1.0\n")
    tomllib = pytest.importorskip("tomllib")
    shipped = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]["entry-points"]["gptf"]
    lines = "".join(f"{name} = {target}\n" for name, target in shipped.items())
    (dist / "entry_points.txt").write_text(f"[gptf]\n{lines}")  # what pip would write from pyproject.toml
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{site}{os.pathsep}{old}"
    try:
        listed = run_gptf(["plugins"], workdir)
        trained = run_gptf(["run", str(TINY_RECIPE), "model.positional=relative_bias", "training.max_steps=2"], workdir)
    finally:
        os.environ["PYTHONPATH"] = old
    assert "gptf-relative-bias" in listed.stdout and "positional: relative_bias" in listed.stdout
    assert trained.returncode == 0, trained.stderr
    assert "relative_bias" in trained.stdout


def test_scalenorm_example_recipe_builds() -> None:
    from gptf.build.components import build_model, count_parameters, registry_for
    from gptf.recipe import load_recipe

    loaded = load_recipe(EXAMPLES / "scalenorm.yaml")
    model = build_model(loaded.recipe, registry_for(loaded), 824)
    assert count_parameters(model) == 3_368_192 - 9 * 256 + 9  # 9 norms: one gain each instead of 256


def test_broken_example_fails_and_says_why(tmp_path: Path) -> None:
    result = run_gptf(["plugin", "check", str(EXAMPLES / "broken_peeking_attention.py")], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "causality" in result.stderr and "looks into the future" in result.stderr
    assert "causal mask" in result.stderr  # and how to fix it
    assert "check(s) failed" in result.stderr


# ------------------------------------------------------------------ every built-in meets its own contract


@pytest.mark.parametrize("module", BUILTIN_MODULES, ids=lambda m: m.rsplit(".", 1)[-1])
def test_every_builtin_component_passes(module: str) -> None:
    if module.endswith("sentencepiece_tokenizer"):
        pytest.importorskip("sentencepiece", reason="sentencepiece is an optional extra")
    reports = check_target(module)
    assert reports[0].components, module
    assert reports[0].ok, [f for f in reports[0].findings if f.status == "fail"]


# ------------------------------------------------------------------ each failure in plain words


def test_norm_over_time_breaks_causality(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "time_norm.py",
        """
        import torch
        from gptf import hookimpl

        class TimeNorm(torch.nn.Module):
            def __init__(self, dim: int):
                super().__init__()

            def forward(self, x):
                return x / x.norm(dim=1, keepdim=True)  # over the tokens: a mistake

        @hookimpl
        def register_norms():
            return {"time_norm": TimeNorm}
        """,
    )
    problems = failures(path)
    assert "never across tokens" in problems["causality"]


def test_unsaved_random_state_and_unseeded_randomness_are_explained(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "noisy.py",
        """
        import random
        import torch
        from gptf import hookimpl
        from gptf.interfaces import PositionalEncoding

        class Noisy(PositionalEncoding):
            def __init__(self, n_embd: int, n_head: int, head_dim: int, seq_len: int):
                super().__init__()
                values = [random.gauss(0, 0.02) for _ in range(seq_len * n_embd)]  # Python's random: unseeded
                self.register_buffer("table", torch.tensor(values).view(seq_len, n_embd), persistent=False)

            def embed(self, x, positions):
                return x + self.table[positions]

        @hookimpl
        def register_positional_encodings():
            return {"noisy": Noisy}
        """,
    )
    problems = failures(path)
    assert "not saved" in problems["save/load"]
    assert "answers differently" in problems["save/load"]
    assert "torch.manual_seed does not control" in problems["deterministic"]
    assert "causality" not in problems


def test_unused_parameter_and_bad_shape_are_explained(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "lazy_mlp.py",
        """
        import torch
        from gptf import hookimpl

        class LazyMLP(torch.nn.Module):
            def __init__(self, dim: int, hidden_dim: int, bias: bool):
                super().__init__()
                self.up = torch.nn.Linear(dim, hidden_dim)
                self.forgotten = torch.nn.Linear(dim, dim)

            def forward(self, x):
                return self.up(x)[..., : x.shape[-1]]

        class WideMLP(LazyMLP):
            def forward(self, x):
                return self.up(x)

        @hookimpl
        def register_mlps():
            return {"lazy": LazyMLP, "wide": WideMLP}
        """,
    )
    reports = check_target(str(path))
    by_component = {}
    for f in reports[0].findings:
        if f.status == "fail":
            by_component.setdefault(f.component, {})[f.check] = f.detail
    assert "gets no gradient" in by_component["mlp 'lazy'"]["training step"]
    assert "forgotten" in by_component["mlp 'lazy'"]["training step"]
    assert "expected (2, 6, 32)" in by_component["mlp 'wide'"]["shapes"]


def test_tokenizer_that_loses_text_is_explained(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "ascii_only.py",
        """
        from gptf import hookimpl
        from gptf.plugins.tokenization.char_level import CharTokenizer

        class AsciiOnly(CharTokenizer):
            def decode(self, ids):
                return super().decode(ids).encode("ascii", "ignore").decode()

        @hookimpl
        def register_tokenizers():
            return {"ascii_only": AsciiOnly}
        """,
    )
    assert "decode(encode(text)) changed the text" in failures(path)["encode/decode"]


def test_loading_problems_are_errors_not_crashes(tmp_path: Path) -> None:
    duplicate = write_plugin(
        tmp_path,
        "another_rope.py",
        """
        from gptf import hookimpl
        from gptf.plugins.positional.rope import RotaryPositions

        class MyRope(RotaryPositions):
            pass

        @hookimpl
        def register_positional_encodings():
            return {"rope": MyRope}
        """,
    )
    with pytest.raises(PluginError, match="two plugins register the positional 'rope'"):
        check_target(str(duplicate))
    with pytest.raises(PluginError, match="not found"):
        check_target(str(tmp_path / "missing.py"))
    with pytest.raises(PluginError, match=r"not found: .*another_rpoe\.py \(did you mean .*another_rope\.py\?\)"):
        check_target(str(tmp_path / "another_rpoe.py"))  # a typo: the closest .py file nearby
    result = run_gptf(["plugin", "check", str(duplicate)], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "rename one of them" in result.stderr


def test_a_component_with_required_parameters_is_skipped_not_failed(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "needs_param.py",
        """
        from gptf import hookimpl
        from gptf.plugins.norms.rmsnorm import RMSNorm

        def picky(dim: int, eps: float):
            return RMSNorm(dim, eps)

        @hookimpl
        def register_norms():
            return {"picky": picky}
        """,
    )
    report = check_target(str(path))[0]
    assert report.ok and [f.status for f in report.findings] == ["skip"]
    assert "eps" in report.findings[0].detail


# ------------------------------------------------------------------ block layouts


def test_builtin_blocks_get_the_model_part_checks() -> None:
    reports = check_target("gptf.plugins.blocks.parallel")
    assert reports[0].components == ["block 'parallel'"] and reports[0].ok
    checks = [f.check for f in reports[0].findings]
    assert checks == ["builds", "shapes", "causality", "KV cache", "save/load", "deterministic", "training step"]
    assert "64 parameters of its own" in reports[0].findings[0].detail  # one 32-wide RMSNorm in each of 2 layers


def test_a_block_that_mixes_tokens_outside_attention_fails_causality(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "mean_block.py",
        """
        from gptf import hookimpl
        from gptf.interfaces import Block

        class MeanBlock(Block):
            def __init__(self, make_norm, attention, mlp, config):
                super().__init__()
                self.norm = make_norm()
                self.attn, self.mlp = attention, mlp

            def forward(self, x, context):
                x = x + self.attn(self.norm(x), context) + x.mean(dim=1, keepdim=True)  # every token, the future too
                return x + self.mlp(self.norm(x))

        @hookimpl
        def register_blocks():
            return {"mean_block": MeanBlock}
        """,
    )
    failed = failures(path)
    assert "looks into the future" in failed["causality"] and "only through its attention" in failed["causality"]


def test_a_block_that_forgets_its_mlp_fails_the_training_step(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "no_mlp_block.py",
        """
        from gptf import hookimpl
        from gptf.interfaces import Block

        class AttentionOnly(Block):
            def __init__(self, make_norm, attention, mlp, config):
                super().__init__()
                self.norm = make_norm()
                self.attn, self.mlp = attention, mlp

            def forward(self, x, context):
                return x + self.attn(self.norm(x), context)

        @hookimpl
        def register_blocks():
            return {"attention_only": AttentionOnly}
        """,
    )
    failed = failures(path)
    assert set(failed) == {"training step"} and "mlp.up.weight gets no gradient" in failed["training step"]
