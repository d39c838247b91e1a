"""The layout's promises (docs/ARCHITECTURE.md): one JSONL reader, residual init by contract,
a layer rule that stays complete, a short top level."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gptf.build.components import build_model, open_registry
from gptf.data import read_jsonl
from gptf.errors import DataError
from gptf.recipe import load_recipe
from gptf.tools.data_check import check_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK = ROOT / "framework"

GOOD = {"prompt": "什么是RoPE？", "completion": "旋转位置编码。"}


def _line(record: object) -> str:
    return json.dumps(record, ensure_ascii=False)


#: name -> file bytes. Each is either accepted by both readers or refused by both.
JSONL_CASES: dict[str, bytes] = {
    "plain": (_line(GOOD) + "\n").encode(),
    "bom": ("\ufeff" + _line(GOOD) + "\n").encode(),
    "crlf": (_line(GOOD) + "\r\n" + _line(GOOD) + "\r\n").encode(),
    "no final newline": _line(GOOD).encode(),
    "blank lines": ("\n\n" + _line(GOOD) + "\n   \n" + _line(GOOD) + "\n\n").encode(),
    "u2028 inside a string": (_line({"prompt": "上一行\u2028下一行", "completion": "答。"}) + "\n").encode(),
    "u0085 inside a string": (_line({"prompt": "a\u0085b", "completion": "答。"}) + "\n").encode(),
    "u2029 inside a string": (_line({"prompt": "a\u2029b", "completion": "答。"}) + "\n").encode(),
    "escaped u2028": ('{"prompt": "a\\u2028b", "completion": "答。"}\n').encode(),
    "lone surrogate": ('{"prompt": "bad \\ud800", "completion": "答。"}\n').encode(),
    "lone surrogate in answer": ('{"prompt": "问", "completion": "\\udfff"}\n').encode(),
    "not json": b'{"prompt": \n',
    "not an object": b"[1, 2]\n",
    "missing field": b'{"prompt": "x"}\n',
    "empty field": b'{"prompt": " ", "completion": "y"}\n',
    "number field": b'{"prompt": 3, "completion": "y"}\n',
    "empty file": b"",
    "only blank lines": b"\n  \n\r\n",
    "invalid utf-8": b'{"prompt": "\xff", "completion": "y"}\n',
    "deep nesting": b"[" * 20000 + b"\n",
    "extra fields": (_line({**GOOD, "concept": "rope", "n": 1}) + "\n").encode(),
}


@pytest.mark.parametrize("name", sorted(JSONL_CASES))
def test_run_and_data_check_accept_the_same_files(name: str, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(JSONL_CASES[name])
    try:
        samples = read_jsonl(path)  # what gptf run reads
        run_accepts = True
    except DataError:
        samples, run_accepts = [], False
    report = check_files([path])
    assert report.ok == run_accepts, (name, report.errors)
    if run_accepts:
        checked = report.files[0].samples
        assert [(s.prompt, s.completion) for s in checked] == [(s.prompt, s.completion) for s in samples]


def test_the_separators_stay_inside_their_strings(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(JSONL_CASES["u2028 inside a string"])
    (sample,) = read_jsonl(path)
    assert sample.prompt == "上一行\u2028下一行"
    assert sample.line == 1


# ---------------------------------------------------------------- residual init by contract


class Fc2MLP(nn.Module):
    """A student's MLP: the same maths as the built-in silu, other layer names, no marker."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.silu(self.fc1(x)))


def _weights(mlp: str) -> list[torch.Tensor]:
    loaded = load_recipe(ROOT / "tests" / "fixtures" / "tiny.yaml", [f"model.mlp={mlp}"])
    registry = open_registry()
    if mlp == "fc_mlp":
        from gptf.build.registry import ComponentInfo

        registry.components["mlp"]["fc_mlp"] = ComponentInfo("mlp", "fc_mlp", Fc2MLP, "student")
    torch.manual_seed(0)
    model = build_model(loaded.recipe, registry, 300)
    return [p.detach().clone() for p in model.parameters()]


def test_an_mlp_named_fc2_starts_like_the_built_in_one() -> None:
    built_in, student = _weights("silu"), _weights("fc_mlp")
    assert len(built_in) == len(student)
    for a, b in zip(built_in, student, strict=True):
        assert torch.equal(a, b)


def test_the_residual_outputs_are_the_smaller_ones() -> None:
    loaded = load_recipe(ROOT / "tests" / "fixtures" / "tiny.yaml", ["model.n_layer=8"])
    torch.manual_seed(0)
    model = build_model(loaded.recipe, open_registry(), 300)
    block = model.blocks[0]
    outputs = block.residual_outputs(model.config.n_embd)
    assert outputs == [block.attn.proj, block.mlp.down]
    assert block.mlp.down.weight.std() < 0.5 * block.mlp.up.weight.std()  # 0.02 / sqrt(16) vs 0.02


PARAMETER_NAMES = [  # the names in every run folder's model.safetensors: they must never change
    "embed.weight",
    "blocks.0.norm1.weight",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight",
    "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight",
    "blocks.0.mlp.up.weight",
    "blocks.0.mlp.up.bias",
    "blocks.0.mlp.down.weight",
    "blocks.0.mlp.down.bias",
    "norm.weight",
    "head.weight",
]


def test_the_default_block_keeps_the_parameter_names_of_old_runs() -> None:
    """model.block (default prenorm, a plugin since issue 11) builds what model.py's Block built."""
    loaded = load_recipe(ROOT / "tests" / "fixtures" / "tiny.yaml", ["model.n_layer=1"])
    assert loaded.recipe.model.block.name == "prenorm"
    model = build_model(loaded.recipe, open_registry(), 300)
    assert list(model.state_dict()) == PARAMETER_NAMES


@pytest.mark.parametrize(("block", "norms"), [("prenorm", 3), ("postnorm", 2), ("parallel", 2), ("nonorm", 1)])
def test_block_layouts_differ_only_in_their_norms(block: str, norms: int) -> None:
    loaded = load_recipe(ROOT / "tests" / "fixtures" / "tiny.yaml", ["model.n_layer=1", f"model.block={block}"])
    names = list(build_model(loaded.recipe, open_registry(), 300).state_dict())
    assert len([n for n in names if "norm" in n]) == norms
    assert [n for n in names if "norm" not in n] == [n for n in PARAMETER_NAMES if "norm" not in n]


# ---------------------------------------------------------------------------- the layout


def test_the_plugin_layer_rule_names_every_other_module() -> None:
    """Plugins may import gptf, interfaces, errors, hookspecs: every other module is forbidden
    to them in pyproject.toml, so a new module cannot slip past the rule."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["source_modules"] == ["plugins"])
    allowed = {"__init__", "__main__", "interfaces", "errors", "hookspecs"}
    modules = {p.stem for p in FRAMEWORK.glob("*.py")} | {p.name for p in FRAMEWORK.iterdir() if p.is_dir()}
    modules -= {"__pycache__"}
    assert {f"gptf.{m}" for m in modules - allowed} == set(contract["forbidden_modules"])


def test_the_top_level_stays_short() -> None:
    assert len(list(FRAMEWORK.glob("*.py"))) <= 12


def test_a_run_folder_from_before_block_layouts_still_loads(tiny_run: Path, tmp_path: Path) -> None:
    """Its recipe.yaml has no model.block and its run.json no model.block component: prenorm, as it was."""
    import shutil

    import yaml

    from gptf.run import load_run

    old = tmp_path / "old_run"
    shutil.copytree(tiny_run, old)
    recipe = yaml.safe_load((old / "recipe.yaml").read_text(encoding="utf-8"))
    del recipe["model"]["block"]
    (old / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    info = json.loads((old / "run.json").read_text(encoding="utf-8"))
    info["components"].pop("model.block")
    (old / "run.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    from gptf.train.fingerprints import refresh_fingerprint
    from gptf.train.run_files import RunFiles

    refresh_fingerprint(RunFiles(old), old / "recipe.yaml")  # as a run from before block layouts was saved
    run = load_run(old)
    assert run.recipe.model.block.name == "prenorm"
    assert list(run.model.state_dict()) == list(load_run(tiny_run).model.state_dict())
