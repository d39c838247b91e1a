"""Every way a student can get it wrong gives one clear message, an exit code, and no traceback.

Each case below is one distinct bad input: it prepares the working folder, runs a ``gptf``
command in-process (typer's CliRunner, fast), and checks the exit code and a specific
fragment of the message. A few run as real subprocesses at the end, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from conftest import SCALE_NORM, TINY_RECIPE, invoke, run_gptf

Setup = Callable[[Path, Path], list[str]]  # (workdir, finished tiny run) -> CLI arguments

ERROR = 2  # GptfError
STOPPED = 3  # TrainingStopped


@attrs.frozen
class Case:
    id: str
    setup: Setup
    exit_code: int
    fragments: tuple[str, ...]


def needs_proc(setup: Setup) -> Setup:
    """A case that writes under Linux's /proc, where no new folder can be made; skipped elsewhere."""
    return lambda work, run: setup(work, run) if Path("/proc/self").is_dir() else pytest.skip("needs Linux's /proc")


def run_args(*overrides: str) -> Setup:
    return lambda work, run: ["run", str(TINY_RECIPE), *overrides]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def recipe_file(text: str) -> Setup:
    def setup(work: Path, run: Path) -> list[str]:
        return ["run", str(write(work / "bad.yaml", text))]

    return setup


def student_recipe(extra: str, *plugin_files: tuple[str, str]) -> Setup:
    """A recipe extending the tiny one, plus plugin files written beside it."""

    def setup(work: Path, run: Path) -> list[str]:
        for name, code in plugin_files:
            write(work / name, code)
        recipe = write(work / "student.yaml", f"extends: {TINY_RECIPE}\nname: student\n")
        recipe.write_text(recipe.read_text() + textwrap.dedent(extra).lstrip(), encoding="utf-8")
        return ["run", str(recipe)]

    return setup


def data_file(content: str | bytes, *overrides: str, run_tokenizer: bool = False) -> Setup:
    """Train on ``bad.jsonl``; ``run_tokenizer``: with the finished run's tokenizer (made
    from the tiny data) and no val split, so that only the bad file matters."""

    def setup(work: Path, run: Path) -> list[str]:
        path = work / "bad.jsonl"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        extra = [f"tokenizer.path={run / 'tokenizer.json'}", "data.val=null"] if run_tokenizer else []
        return ["run", str(TINY_RECIPE), "data.train=bad.jsonl", *extra, *overrides]

    return setup


def broken_run(change: Callable[[Path], None], *args: str) -> Setup:
    """A copy of the finished tiny run with one thing broken, then ``gptf generate`` on it."""

    def setup(work: Path, run: Path) -> list[str]:
        copy = work / "run_copy"
        shutil.copytree(run, copy)
        change(copy)
        return ["generate", "--ckpt", str(copy), *(args or ("--prompt", "你好")), "--max-new-tokens", "2"]

    return setup


def truncate_file(name: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return change


def replace_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_text(text, encoding="utf-8")


def edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        data = json.loads((run / name).read_text(encoding="utf-8"))
        edit(data)
        (run / name).write_text(json.dumps(data), encoding="utf-8")

    return change


def foreign_weights(run: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"embed.weight": torch.zeros(999, 32)}, str(run / "model.safetensors"))


def other_tokenizer(run: Path) -> None:
    data = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Lowercase"}  # same size, different tokenizer
    (run / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")


def run_used_missing_entry_point_plugin(run: Path) -> None:
    """As if the run had been trained with an installed plugin that is uninstalled now."""
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8").replace("norm: rmsnorm", "norm: scalenorm")
    (run / "recipe.yaml").write_text(recipe, encoding="utf-8")
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["components"]["model.norm"] = "scalenorm"
    info["plugins"].append(
        {
            "name": "scalenorm",
            "origin": "entry point",
            "location": "gptf-scalenorm (gptf_scalenorm)",
            "version": "0.1.0",
        }
    )
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")


def run_used_missing_plugin_file(run: Path) -> None:
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8").replace("norm: rmsnorm", "norm: scalenorm")
    recipe = recipe.replace("plugins: []", "plugins:\n- /nonexistent/my_norm.py")
    (run / "recipe.yaml").write_text(recipe, encoding="utf-8")
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["components"]["model.norm"] = "my_norm"
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")


BOOM_NORM = """
from gptf import hookimpl

class Boom:
    def __init__(self, dim: int):
        raise RuntimeError("boom: this norm cannot be built")

@hookimpl
def register_norms():
    return {"boom": Boom}
"""

LONG = "很长的回答" * 40

CASES = [
    # --- recipe files -------------------------------------------------------
    Case("recipe-missing", lambda w, r: ["run", "nope.yaml"], ERROR, ("recipe not found:", "nope.yaml")),
    Case(
        "recipe-name-misspelt",  # the closest name in its folder, and what the folder holds
        lambda w, r: ["run", str(write(w / "my_recipe.yaml", "name: x\n").with_name("my_recipie.yaml"))],
        ERROR,
        ("recipe not found:", "my_recipie.yaml", "did you mean", "my_recipe.yaml?", "recipes in"),
    ),
    Case(
        "recipe-in-a-folder-below",  # recipes/ left out of the path
        lambda w, r: ["run", str(write(w / "mine" / "a.yaml", "name: x\n").parent.parent / "a.yaml")],
        ERROR,
        ("recipe not found:", "did you mean", f"mine{os.sep}a.yaml?"),
    ),
    Case(
        "recipe-is-a-folder",
        lambda w, r: ["run", str(write(w / "mine" / "a.yaml", "name: x\n").parent)],
        ERROR,
        ("mine is a folder, not a recipe file", "recipes in", "a.yaml"),
    ),
    Case("recipe-invalid-yaml", recipe_file("name: x\nmodel: [1\n"), ERROR, ("bad.yaml:3", "invalid YAML")),
    Case("recipe-duplicate-key", recipe_file("name: a\nname: b\n"), ERROR, ("duplicate key 'name'",)),
    Case("recipe-empty", recipe_file("# only a comment\n\n"), ERROR, ("bad.yaml", "the recipe is empty", "extends:")),
    Case("recipe-top-level-list", recipe_file("- 1\n- 2\n"), ERROR, ("the top level must be a mapping",)),
    Case(
        "recipe-not-utf8",
        lambda w, r: ["run", str(_bytes(w / "bad.yaml", b"name: \xff\xfe"))],
        ERROR,
        ("cannot read recipe",),
    ),
    Case(
        "unknown-top-key",
        student_recipe("trainig: {max_steps: 3}\n"),
        ERROR,
        ("trainig: unknown key (did you mean 'training'?)",),
    ),
    Case(
        "unknown-nested-key",
        run_args("model.nlayer=3"),
        ERROR,
        ("model.nlayer: unknown key (did you mean 'n_layer'?)",),
    ),
    Case("wrong-type-int", run_args("model.n_layer=four"), ERROR, ("model.n_layer: expected int",)),
    Case("bool-for-int", run_args("training.max_steps=true"), ERROR, ("training.max_steps: expected int, got bool",)),
    Case("wrong-literal", run_args("training.precision=fp16"), ERROR, ("training.precision",)),
    Case(
        "section-not-a-mapping",
        run_args("model=3"),
        ERROR,
        ("model: expected a mapping of keys (n_layer: ..., n_head: ...), got int 3",),
    ),
    Case(
        "string-for-a-list",  # not the three prompts 'a', 'b', 'c'
        run_args("demo_prompts=abc"),
        ERROR,
        ("demo_prompts: expected a list, e.g. [a, b], got str 'abc'",),
    ),
    Case(
        "mapping-for-a-list",
        student_recipe("plugins: {scalenorm: ./scalenorm.py}\n"),
        ERROR,
        ("plugins: expected a list, e.g. [a, b], got dict",),
    ),
    Case(
        "heads-do-not-divide",
        run_args("model.n_embd=51"),
        ERROR,
        ("model.n_embd: 51 is not divisible by model.n_head=2",),
    ),
    Case(
        "odd-head-size-rope",
        run_args("model.n_embd=66"),
        ERROR,
        ("head size 33", "RoPE rotates channel pairs, so the head size must be even; got 33", "builtin.rope"),
    ),
    Case(
        "micro-batch-not-dividing",
        run_args("training.micro_batch=3"),
        ERROR,
        ("training.micro_batch: 3 does not divide training.batch_size=8",),
    ),
    Case("micro-batch-too-big", run_args("training.micro_batch=16"), ERROR, ("is larger than training.batch_size=8",)),
    Case("zero-steps", run_args("training.max_steps=0"), ERROR, ("training.max_steps: must be > 0, got 0",)),
    Case(
        "negative-weight-decay",  # was trained with, pushing every weight away from zero
        run_args("training.weight_decay=-0.1"),
        ERROR,
        ("training.weight_decay: must be >= 0 (0 turns it off), got -0.1",),
    ),
    Case("negative-init-std", run_args("model.init_std=-1"), ERROR, ("model.init_std: must be >= 0, got -1",)),
    Case("data-train-empty-path", run_args("data.train="), ERROR, ("data.train: is empty; name the JSONL file",)),
    Case("nan-learning-rate", run_args("training.lr=.nan"), ERROR, ("training.lr: must be a finite number, got nan",)),
    Case("bad-recipe-name", run_args("name=my run"), ERROR, ("name: 'my run' may only use letters",)),
    Case(
        "all-problems-at-once",
        run_args("model.n_layer=four", "training.seed=x"),
        ERROR,
        ("2 problems", "model.n_layer: expected int", "training.seed: expected int"),
    ),
    Case(
        "model-too-big-for-memory",
        run_args("model.n_embd=65536", "model.n_head=4"),
        ERROR,
        ("parameters", "GiB to train", "but this machine has"),
    ),
    # --- components -----------------------------------------------------------
    Case(
        "unknown-component",
        run_args("model.norm=rmsnrm"),
        ERROR,
        ("model.norm: unknown norm 'rmsnrm' (did you mean 'rmsnorm'?)", "valid choices:"),
    ),
    Case(
        "unknown-component-parameter",
        run_args("model.norm.epsilon=1"),
        ERROR,
        ("model.norm.epsilon: norm 'rmsnorm' has no parameter 'epsilon' (did you mean 'eps'?)",),
    ),
    Case("component-parameter-type", run_args("model.norm.eps=big"), ERROR, ("model.norm.eps: expected float",)),
    Case("engine-set-parameter", run_args("model.norm.dim=3"), ERROR, ("model.norm.dim: is set by the engine",)),
    Case(
        "scheduler-refuses-parameter",
        run_args("training.scheduler.warmup_ratio=2"),
        ERROR,
        ("training.scheduler", "warmup_ratio must be in [0, 1), got 2"),
    ),
    Case(
        "optimizer-refuses-parameter",
        run_args("training.optimizer.betas=[0.9]"),
        ERROR,
        ("training.optimizer", "betas must be two numbers"),
    ),
    # --- extends and overrides --------------------------------------------------
    Case(
        "extends-cycle",
        lambda w, r: [
            "run",
            str(
                write(w / "a.yaml", "extends: b.yaml\nname: a\n")
                and write(w / "b.yaml", "extends: a.yaml\n")
                and w / "a.yaml"
            ),
        ],
        ERROR,
        ("extends: cycle",),
    ),
    Case("extends-missing", recipe_file("extends: nowhere.yaml\n"), ERROR, ("extends: file not found",)),
    Case("override-without-equals", run_args("training"), ERROR, ("override 'training' must look like KEY=VALUE",)),
    Case("override-bad-key", run_args("a..b=1"), ERROR, ("'a..b' is not a key path",)),
    Case(
        "override-into-a-value",
        run_args("training.max_steps.x=1"),
        ERROR,
        ("'training.max_steps' is a value, not a section",),
    ),
    Case("override-bad-yaml", run_args("model.n_layer=[1"), ERROR, ("override 'model.n_layer=[1'", "invalid YAML")),
    Case(
        "several-bad-overrides",
        run_args("oops", "x..y=2"),
        ERROR,
        ("2 problems", "override 'oops' must look like KEY=VALUE", "'x..y' is not a key path"),
    ),
    # --- data --------------------------------------------------------------------
    Case("data-missing", run_args("data.train=nope.jsonl"), ERROR, ("data.train: file not found: nope.jsonl",)),
    Case(
        "data-name-misspelt",  # the closest JSONL file nearby
        run_args("data.train=tiny_trian.jsonl"),
        ERROR,
        ("data.train: file not found: tiny_trian.jsonl (did you mean tiny_train.jsonl?",),
    ),
    Case("data-empty-file", data_file(""), ERROR, ("data.train: bad.jsonl is empty",)),
    Case("data-only-blank-lines", data_file("\n\n  \n"), ERROR, ("bad.jsonl: no samples",)),
    Case("data-is-a-folder", run_args("data.val=."), ERROR, ("data.val: . is a folder",)),
    Case(
        "eval-data-misspelt",  # skipped, with the closest JSONL file named
        lambda w, r: ["eval", "--ckpt", str(r), "--data", "tiny_vla.jsonl"],
        ERROR,
        ("none of tiny_vla.jsonl is a JSONL file here", "hint: did you mean tiny_val.jsonl?"),
    ),
    Case(
        "eval-data-is-a-folder",  # was "not found"
        lambda w, r: ["eval", "--ckpt", str(r), "--data", "."],
        ERROR,
        ("nothing to evaluate: none of . is a JSONL file here",),
    ),
    Case(
        "data-is-a-device",  # was called a folder
        needs_proc(
            lambda w, r: (
                ["run", str(TINY_RECIPE), f"data.val={os.devnull}"]
                if Path(os.devnull).exists() and not Path(os.devnull).is_file()
                else pytest.skip("no device file")
            )
        ),
        ERROR,
        (f"data.val: {os.devnull} is a device, pipe or socket, not a JSONL file",),
    ),
    Case(
        "jsonl-invalid-json",
        data_file('{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n'),
        ERROR,
        ("bad.jsonl:2: not valid JSON",),
    ),
    Case("jsonl-missing-field", data_file('{"prompt": "问"}\n'), ERROR, ("bad.jsonl:1: missing field 'completion'",)),
    Case(
        "jsonl-not-object",
        data_file('["问", "答"]\n'),
        ERROR,
        ("bad.jsonl:1: expected a JSON object, got an array",),
    ),
    Case(
        "jsonl-null-field",
        data_file('{"prompt": "问", "completion": null}\n'),
        ERROR,
        ("bad.jsonl:1: field 'completion' must be a string, got null",),
    ),
    Case("jsonl-nan", data_file('{"prompt": "问", "completion": "答", "score": NaN}\n'), ERROR, ("NaN is not JSON",)),
    Case(
        "jsonl-repeated-key",  # json.loads alone would keep the second prompt without a word
        data_file('{"prompt": "问", "completion": "答", "prompt": "另一个问题"}\n'),
        ERROR,
        ("bad.jsonl:1: not valid JSON (the key 'prompt' appears twice)",),
    ),
    Case(
        "jsonl-not-string",
        data_file('{"prompt": 3, "completion": "答"}\n'),
        ERROR,
        ("field 'prompt' must be a string, got a number (3)",),
    ),
    Case("jsonl-empty-field", data_file('{"prompt": " ", "completion": "答"}\n'), ERROR, ("field 'prompt' is empty",)),
    Case(
        "jsonl-lone-surrogate",
        data_file('{"prompt": "\\ud800", "completion": "答"}\n'),
        ERROR,
        ("bad.jsonl:1: field 'prompt' holds a broken character",),
    ),
    Case(
        "jsonl-not-utf8",
        data_file(b'{"prompt": "\xb0\xa1", "completion": "x"}\n'),
        ERROR,
        ("bad.jsonl: not UTF-8 text",),
    ),
    Case(
        "samples-too-long-refused",
        data_file(
            json.dumps({"prompt": "问", "completion": LONG}, ensure_ascii=False) + "\n",
            "data.truncate=false",
            run_tokenizer=True,
        ),
        ERROR,
        ("bad.jsonl: 1 sample(s) longer than model.seq_len=64 tokens", "bad.jsonl:1", "data.truncate"),
    ),
    Case(
        "prompt-fills-seq-len",
        data_file(json.dumps({"prompt": LONG, "completion": "答"}, ensure_ascii=False) + "\n", run_tokenizer=True),
        ERROR,
        ("bad.jsonl: no usable samples (every prompt fills model.seq_len=64)",),
    ),
    Case(
        "output-dir-inside-a-file",
        run_args("output_dir=tiny_train.jsonl/run"),
        ERROR,
        ("tiny_train.jsonl/run: not a folder (a part of this path is a file)",),
    ),
    Case(
        "output-dir-cannot-be-made",  # /proc takes no new folders (ENOENT): was a FileNotFoundError traceback
        lambda w, r: (["run", str(TINY_RECIPE), "output_dir=/proc/gptf-no-such-folder/run"]),
        ERROR,
        (
            "cannot make the run folder /proc/gptf-no-such-folder/run: /proc/gptf-no-such-folder: no such file",
            "output_dir=checkpoints/<name>",
        ),
    ),
    Case(
        "out-folder-cannot-be-made",  # any failed write that names its file: one line (was a traceback for ENOENT)
        needs_proc(
            lambda w, r: ["attention", "--ckpt", str(r), "--prompt", "你好", "--out", "/proc/gptf-no-such-folder"]
        ),
        ERROR,
        ("/proc/gptf-no-such-folder: no such file or directory",),
    ),
    Case(
        "out-folder-is-a-file",
        lambda w, r: ["attention", "--ckpt", str(r), "--prompt", "你好", "--out", "tiny_train.jsonl"],
        ERROR,
        ("tiny_train.jsonl: is a file where a folder is needed",),
    ),
    Case(
        "eval-out-is-a-folder",  # was a traceback (EBUSY) after the whole evaluation
        lambda w, r: ["eval", "--ckpt", str(r), "--out", "."],
        ERROR,
        ("--out .: is a folder; name a file to write",),
    ),
    Case(
        "eval-out-inside-a-file",
        lambda w, r: ["eval", "--ckpt", str(r), "--out", "tiny_train.jsonl/x/scores.json"],
        ERROR,
        ("tiny_train.jsonl is a file, not a folder",),
    ),
    Case(
        "eval-out-folder-cannot-be-made",  # refused before the evaluation, not after it
        needs_proc(lambda w, r: ["eval", "--ckpt", str(r), "--out", "/proc/gptf-no-such-folder/scores.json"]),
        ERROR,
        ("--out /proc/gptf-no-such-folder/scores.json: cannot make its folder",),
    ),
    # --- tokenizer -----------------------------------------------------------------
    Case(
        "tokenizer-corrupt",
        lambda w, r: ["run", str(TINY_RECIPE), f"tokenizer.path={_text(w / 'tok.json', '{not json')}"],
        ERROR,
        ("cannot load tokenizer", "tokenizer.rebuild=true"),
    ),
    Case("tokenizer-path-is-folder", run_args("tokenizer.path=."), ERROR, ("tokenizer.path: . is a folder",)),
    Case(
        "tokenizer-wrong-size",
        lambda w, r: ["run", str(TINY_RECIPE), f"tokenizer.path={r / 'tokenizer.json'}", "tokenizer.vocab_size=500"],
        ERROR,
        ("tokens but tokenizer.vocab_size is 500",),
    ),
    # --- plugins -------------------------------------------------------------------
    Case("plugin-file-missing", student_recipe("plugins: [./nope.py]\n"), ERROR, ("plugin file not found", "nope.py")),
    Case(
        "plugin-file-misspelt",
        student_recipe("plugins: [./scale_nrom.py]\n", ("scale_norm.py", "")),
        ERROR,
        ("plugin file not found", "scale_nrom.py", "did you mean", "scale_norm.py?"),
    ),
    Case(
        "plugin-syntax-error",
        student_recipe("plugins: [./broken.py]\n", ("broken.py", "def register_norms(:\n")),
        ERROR,
        ("broken.py failed to import: SyntaxError",),
    ),
    Case(
        "plugin-import-error",
        student_recipe("plugins: [./needs.py]\n", ("needs.py", "import not_a_real_module_xyz\n")),
        ERROR,
        ("needs.py failed to import: ModuleNotFoundError", "not_a_real_module_xyz"),
    ),
    Case(
        "plugin-module-missing",
        student_recipe("plugins: [not_a_module_xyz]\n"),
        ERROR,
        ("plugin module 'not_a_module_xyz' failed to import",),
    ),
    Case(
        "plugin-registers-nothing",
        student_recipe("plugins: [./empty.py]\n", ("empty.py", "X = 1\n")),
        ERROR,
        ("empty.py registers nothing",),
    ),
    Case(
        "plugin-misspelt-hook",
        student_recipe("plugins: [./typo.py]\n", ("typo.py", SCALE_NORM.replace("register_norms", "register_norm"))),
        ERROR,
        ("unknown hook 'register_norm'", "did you mean 'register_norms'"),
    ),
    Case(
        "plugin-hook-raises",
        student_recipe(
            "plugins: [./raises.py]\n",
            ("raises.py", "from gptf import hookimpl\n@hookimpl\ndef register_norms():\n    raise KeyError('x')\n"),
        ),
        ERROR,
        ("plugin 'raises' failed in register_norms(): KeyError",),
    ),
    Case(
        "plugin-hook-returns-list",
        student_recipe(
            "plugins: [./lists.py]\n",
            ("lists.py", "from gptf import hookimpl\n@hookimpl\ndef register_norms():\n    return ['x']\n"),
        ),
        ERROR,
        ("register_norms() must return a dict",),
    ),
    Case(
        "plugin-registers-a-name-no-recipe-can-write",  # was accepted: 3, '' or 'my norm!' as a norm's name
        student_recipe(
            "plugins: [./names.py]\n",
            ("names.py", "from gptf import hookimpl\n@hookimpl\ndef register_norms():\n    return {'my norm!': id}\n"),
        ),
        ERROR,
        ("register_norms() registers a norm named 'my norm!'", "letters, digits, '_', '-' and '.'"),
    ),
    Case(
        "component-raises-while-built",
        student_recipe("plugins: [./boom.py]\nmodel: {norm: boom}\n", ("boom.py", BOOM_NORM)),
        ERROR,
        ("norm 'boom' (from plugin 'boom') failed to build at model.norm", "RuntimeError: boom"),
    ),
    Case(
        "component-without-forward",  # was a NotImplementedError traceback at the first training step
        student_recipe(
            "plugins: [./half.py]\nmodel: {norm: half}\n",
            ("half.py", SCALE_NORM.replace("def forward", "def _forward").replace('"scalenorm"', '"half"')),
        ),
        ERROR,
        ("norm 'half' (from plugin 'half') at model.norm has no forward() method; the class",),
    ),
    Case(
        "duplicate-component-name",
        student_recipe("plugins: [./a.py, ./b.py]\n", ("a.py", SCALE_NORM), ("b.py", SCALE_NORM)),
        ERROR,
        ("two plugins register the norm 'scalenorm': 'a' (recipe: ",),
    ),
    # --- run directories (generate) ------------------------------------------------
    Case(
        "ckpt-missing",
        lambda w, r: ["generate", "--ckpt", "nowhere", "--prompt", "你好"],
        ERROR,
        ("run directory not found: nowhere",),
    ),
    Case(
        "ckpt-name-misspelt",  # the closest finished run nearby, its folder misspelt too
        lambda w, r: [
            "generate",
            "--ckpt",
            str(r.parent.with_name(r.parent.name + "s") / r.name[:-1]),
            "--prompt",
            "你",
        ],
        ERROR,
        ("run directory not found:", "hint: did you mean"),
    ),
    Case(
        "ckpt-is-the-weights-file",
        lambda w, r: ["generate", "--ckpt", str(r / "model.safetensors"), "--prompt", "你好"],
        ERROR,
        ("model.safetensors is a file, not a run directory", "name the run directory that holds it:"),
    ),
    Case(
        "ckpt-unfinished",
        broken_run(lambda run: (run / "model.safetensors").unlink()),
        ERROR,
        ("is not a finished gptf run: missing model.safetensors",),
    ),
    Case(
        "weights-truncated",
        broken_run(truncate_file("model.safetensors")),
        ERROR,
        ("model.safetensors: not a readable safetensors",),
    ),
    Case(
        "weights-foreign",
        broken_run(foreign_weights),
        ERROR,
        ("model.safetensors: the weights do not fit the model", "[999, 32]"),
    ),
    Case(
        "weights-not-safetensors",
        broken_run(replace_file("model.safetensors", "hello")),
        ERROR,
        ("not a readable safetensors",),
    ),
    Case(
        "int8-weights-truncated",
        broken_run(truncate_file("model.int8.safetensors"), "--prompt", "你好", "--quantized"),
        ERROR,
        ("model.int8.safetensors: not a readable safetensors file",),
    ),
    Case(
        "run-tokenizer-corrupt",
        broken_run(truncate_file("tokenizer.json")),
        ERROR,
        ("tokenizer.json: cannot load the tokenizer",),
    ),
    Case(
        "run-tokenizer-replaced",
        broken_run(other_tokenizer),
        ERROR,
        ("tokenizer.json is not the tokenizer this model was trained with", "recorded in"),
    ),
    Case(
        "run-recipe-corrupt",
        broken_run(replace_file("recipe.yaml", "model: [1\n")),
        ERROR,
        ("recipe.yaml:2", "invalid YAML"),
    ),
    Case(
        "run-recipe-foreign",
        broken_run(replace_file("recipe.yaml", "- a\n- b\n")),
        ERROR,
        ("recipe.yaml", "top level must be a mapping"),
    ),
    Case("run-json-corrupt", broken_run(truncate_file("run.json")), ERROR, ("run.json: unreadable run record",)),
    Case(
        "run-json-foreign", broken_run(replace_file("run.json", "[1, 2]")), ERROR, ("run.json: not a gptf run record",)
    ),
    Case(
        "run-plugin-file-gone",
        broken_run(run_used_missing_plugin_file),
        ERROR,
        ("the run used plugin file /nonexistent/my_norm.py for model.norm 'scalenorm'; that file is missing now",),
    ),
    Case(
        "run-entry-point-plugin-gone",
        broken_run(run_used_missing_entry_point_plugin),
        ERROR,
        ("model.norm: the run used norm 'scalenorm' from plugin gptf-scalenorm (gptf_scalenorm) 0.1.0", "unknown now"),
    ),
    # --- prompts ---------------------------------------------------------------------
    Case("prompt-empty", broken_run(lambda run: None, "--prompt", ""), ERROR, ("the prompt is empty",)),
    Case("prompt-only-spaces", broken_run(lambda run: None, "--prompt", " \u3000 "), ERROR, ("the prompt is empty",)),
    Case(
        "prompt-only-invisible",
        broken_run(lambda run: None, "--prompt", "\u200b\n\ufeff\t"),
        ERROR,
        ("the prompt is empty",),
    ),
    Case(
        "prompt-leaves-no-room",
        broken_run(lambda run: None, "--prompt", LONG),
        ERROR,
        ("leaves no room to answer (model.seq_len=64)",),
    ),
    # --- resume ------------------------------------------------------------------------
    Case(
        "resume-nothing-saved",
        run_args("--resume"),
        ERROR,
        ("cannot resume: run directory not found: checkpoints/tiny",),
    ),
    Case("force-without-resume", run_args("--force"), ERROR, ("--force only applies to --resume",)),
    Case(
        "resume-bad-argument",
        run_args("--resume", "training"),
        ERROR,
        ("'training' is neither a KEY=VALUE override nor a run directory",),
    ),
    Case(
        "resume-with-init-from",
        lambda w, r: ["run", str(TINY_RECIPE), "--resume", "--init-from", str(r)],
        ERROR,
        ("cannot be combined with --init-from",),
    ),
    Case(
        "resume-incomplete-save-only",
        lambda w, r: _incomplete_state(w),
        ERROR,
        ("has no complete checkpoint (only a save that was cut off",),
    ),
]


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _incomplete_state(work: Path) -> list[str]:
    partial = work / "checkpoints" / "tiny" / "state" / ".incomplete-step-000004-x"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"half")
    return ["run", str(TINY_RECIPE), "--resume"]


def test_there_are_at_least_40_distinct_bad_inputs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_a_clear_message(case: Case, workdir: Path, tiny_run: Path) -> None:
    args = case.setup(workdir, tiny_run)
    result = invoke(args)
    assert result.exit_code == case.exit_code, f"exit {result.exit_code}\n{result.output}"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    for fragment in case.fragments:
        assert " ".join(fragment.split()) in message, f"{fragment!r} not in:\n{result.stderr}"


def test_long_samples_are_truncated_counted_and_reported(workdir: Path) -> None:
    line = json.dumps({"prompt": "问", "completion": LONG}, ensure_ascii=False)
    (workdir / "long.jsonl").write_text(line + "\n" + (workdir / "tiny_train.jsonl").read_text(), encoding="utf-8")
    result = invoke(["run", str(TINY_RECIPE), "data.train=long.jsonl", "training.max_steps=1", "demo_prompts=[]"])
    assert result.exit_code == 0, result.output
    assert "1 truncated to seq_len" in result.stdout


def test_broken_entry_point_plugin_is_reported_skipped_and_listed(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    site = workdir / "site"
    (site / "gptf_broken").mkdir(parents=True)
    (site / "gptf_broken" / "__init__.py").write_text("raise ImportError('needs a library that is not installed')\n")
    dist = site / "gptf_broken-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gptf-broken\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[gptf]\nbroken = gptf_broken\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    assert any(ep.name == "broken" for ep in importlib.metadata.entry_points(group="gptf"))

    listed = invoke(["plugins"])
    assert listed.exit_code == 0, listed.output
    assert "FAILED: ImportError: needs a" in listed.stdout and "gptf-broken (gptf_broken) 0.1.0" in listed.stdout
    assert "1 plugin(s) failed to load and were skipped" in listed.stderr

    trained = invoke(["run", str(TINY_RECIPE), "training.max_steps=1", "demo_prompts=[]"])
    assert trained.exit_code == 0, trained.output
    assert "warning: plugin 'broken'" in trained.stdout and "skipped" in trained.stdout

    wanted = invoke(["run", str(TINY_RECIPE), "model.norm=brokennorm"])
    assert wanted.exit_code == ERROR
    assert "note: plugin 'broken' (entry point" in wanted.stderr  # the likely culprit is named


def test_bad_demo_prompts_are_refused_before_training_and_leave_the_run_folder_alone(
    workdir: Path, tiny_run: Path
) -> None:
    """demo_prompts are answered at the end of the run: one that cannot be answered is refused
    before any training, not after it with the run folder half rewritten."""
    run = copy_run(tiny_run, workdir)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    tokenizer = f"tokenizer.path={run / 'tokenizer.json'}"
    for prompts, fragment in [
        ('[" \u3000"]', "demo_prompts[0]: the prompt is empty"),
        (f'["好", "{LONG}"]', "demo_prompts[1]: the prompt is"),
        ('["\\ud800"]', "demo_prompts[0]: it holds bytes that are not UTF-8 text"),
    ]:
        result = invoke(["run", str(TINY_RECIPE), f"output_dir={run}", tokenizer, f"demo_prompts={prompts}"])
        one_clear_error(result, fragment)
        assert "step 2/8" not in result.stdout  # nothing trained
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert invoke(generate_args(run)).exit_code == 0


# --- a few as real processes, exactly as a student sees them --------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", str(TINY_RECIPE), "model.nlayer=3"], "did you mean 'n_layer'"),
        (["generate", "--ckpt", "nowhere", "--prompt", "你好"], "run directory not found"),
        (["run", str(TINY_RECIPE), "--resume"], "cannot resume"),
    ],
)
def test_real_process_prints_one_message_and_exits_2(args: list[str], fragment: str, workdir: Path) -> None:
    result = run_gptf(args, workdir)
    assert result.returncode == ERROR
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback(workdir: Path) -> None:
    result = run_gptf(["--debug", "run", str(TINY_RECIPE), "model.nlayer=3"], workdir)
    assert result.returncode != 0 and "Traceback" in result.stderr


# --- issue 13: nothing a student types, a shared folder holds or a full disk does may crash,
# hang or corrupt a run. One test per case.


def copy_run(run: Path, work: Path, name: str = "run_copy") -> Path:
    copy = work / name
    shutil.copytree(run, copy)
    return copy


def generate_args(folder: Path, *extra: str) -> list[str]:
    return ["generate", "--ckpt", str(folder), "--prompt", "你好", "--max-new-tokens", "2", *extra]


def one_clear_error(result: object, *fragments: str, exit_code: int = ERROR) -> str:
    """The command failed with ``exit_code``, one message holding every fragment, no traceback."""
    assert result.exit_code == exit_code, f"exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    message = " ".join(result.stderr.split())
    for fragment in fragments:
        assert " ".join(fragment.split()) in message, f"{fragment!r} not in:\n{result.stderr}"
    return message


HOLD_LOCK = """
import sys, time
from gptf.train.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def test_case1_a_run_folder_has_one_writer_and_a_dead_one_is_taken_over(workdir: Path, tiny_run: Path) -> None:
    import signal
    import subprocess
    import sys

    from gptf.train.lock import LOCK_FILE

    run = copy_run(tiny_run, workdir)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        second = invoke(["run", str(TINY_RECIPE), f"output_dir={run}", "training.max_steps=2"])
        one_clear_error(second, f"{run} is in use by another gptf run (pid {holder.pid}", "output_dir=")
        reading = invoke(generate_args(run))  # its files are being replaced right now
        one_clear_error(reading, f"{run} is being written by a gptf run right now (pid {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (run / LOCK_FILE).is_file()  # left behind by the killed process...
    taken = invoke(["run", str(TINY_RECIPE), f"output_dir={run}", "training.max_steps=2", "demo_prompts=[]"])
    assert taken.exit_code == 0, taken.output  # ...and taken over with a note
    note = " ".join(taken.stdout.split())
    assert f"was locked by pid {holder.pid}," in note and "which is no longer running" in note
    assert not (run / LOCK_FILE).exists()  # released at the end
    assert invoke(generate_args(run)).exit_code == 0


def test_case2_resume_into_a_moved_folder_records_that_folders_tokenizer(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import FIXTURES

    from gptf.train.run_files import file_sha256

    shutil.copy(FIXTURES / "trouble_plugin.py", workdir / "trouble_plugin.py")
    recipe = write(
        workdir / "r.yaml",
        f"extends: {TINY_RECIPE}\nplugins: [./trouble_plugin.py]\ntraining: {{callbacks: [signal_at]}}\n",
    )
    monkeypatch.setenv("GPTF_TEST_SIGNAL_AT", "4:SIGINT")
    assert invoke(["run", str(recipe), "output_dir=runs/a"]).exit_code == 130
    monkeypatch.delenv("GPTF_TEST_SIGNAL_AT")
    (workdir / "runs" / "a").rename(workdir / "runs" / "b")
    resumed = invoke(["run", str(recipe), "output_dir=runs/a", "--resume", "runs/b"])
    assert resumed.exit_code == 0, resumed.output
    moved = workdir / "runs" / "b"
    info = json.loads((moved / "run.json").read_text(encoding="utf-8"))
    assert info["tokenizer"]["sha256"] == file_sha256(moved / "tokenizer.json")
    assert (moved / "eval.json").is_file() and not (workdir / "runs" / "a").exists()
    answered = invoke(generate_args(moved, "--trust-plugins"))  # the recipe names a plugin file
    assert answered.exit_code == 0, answered.output


def bomb(indent: int = 2, depth: int = 9, width: int = 9) -> str:
    """A "billion laughs" YAML list: 9 levels of 9 aliases each (9^9 strings), in 0.5 KB."""
    pad = " " * indent
    lines = [f"{pad}- &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"{pad}- &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\n{pad}- *a{depth - 1}\n"


def test_case3_yaml_alias_bombs_are_refused_with_a_short_message(workdir: Path, tiny_run: Path) -> None:
    in_prompts = write(workdir / "prompts.yaml", f"extends: {TINY_RECIPE}\ndemo_prompts:\n{bomb()}")
    in_component = write(
        workdir / "component.yaml",
        f"extends: {TINY_RECIPE}\nmodel:\n  positional:\n    name: rope\n    base:\n{bomb(6)}",
    )
    itself = write(workdir / "itself.yaml", f"extends: {TINY_RECIPE}\nmodel: &m {{positional: *m}}\n")
    tampered = copy_run(tiny_run, workdir)
    (tampered / "recipe.yaml").write_text(
        (tampered / "recipe.yaml").read_text(encoding="utf-8") + f"bomb:\n{bomb()}", encoding="utf-8"
    )
    for args, fragment in [
        (["run", str(in_prompts)], "stand for more than 100,000 values"),
        (["inspect", str(in_component)], "stand for more than 100,000 values"),
        (["run", str(TINY_RECIPE), f"demo_prompts=[{', '.join(bomb(0).splitlines()).replace('- ', '')}]"], "100,000"),
        (["inspect", str(itself)], "an alias (*name) refers to a value that contains it"),
        (generate_args(tampered), "stand for more than 100,000 values"),
    ]:
        message = one_clear_error(invoke(args), fragment)
        assert len(message) < 2000, message


def test_compile_with_the_int8_weights_is_refused_by_name(tiny_run: Path) -> None:
    """--compile compiles the fp32 decode step; with --quantized it would silently do nothing."""
    for command in ("chat", "serve"):
        result = invoke([command, "--ckpt", str(tiny_run), "--quantized", "--compile"])
        one_clear_error(result, "--compile works with the fp32 weights only: drop --quantized or --compile")


def test_case4_extreme_temperatures_are_refused_everywhere_and_sampling_is_safe(tiny_run: Path) -> None:
    import torch

    from gptf.generate import SamplingSettings, pick_token
    from gptf.run import load_run
    from gptf.tools.chat import ChatSession, CommandError
    from gptf.tools.serve import BadRequest, parse_chat_request

    for value in ("inf", "1e-45", "nan", "-1"):
        result = invoke([*generate_args(tiny_run), "--temperature", value])
        one_clear_error(result, "--temperature: must be 0 (greedy) or between 0.001 and 100")
    for option, value in [("--top-k", "-1"), ("--top-p", "nan"), ("--max-new-tokens", "65"), ("--seed", "-3")]:
        one_clear_error(invoke(["generate", "--ckpt", str(tiny_run), "--prompt", "你好", option, value]), option)
    # chat: refused, and the conversation goes on with its history
    session = ChatSession(load_run(tiny_run).generator(), SamplingSettings(max_new_tokens=4))
    session.ask("你好")
    for command in ("/temp nan", "/temp inf", "/temp 1e-45", "/topp nan", "/topk " + "9" * 5000):
        with pytest.raises(CommandError):
            session.command(command)
    session.ask("什么是注意力机制？")
    assert len(session.history) == 2
    # serve: the same rules (gptf.recipe.limits)
    for body in ({"temperature": 1e-40}, {"temperature": float("inf")}, {"top_p": float("nan")}):
        with pytest.raises(BadRequest, match="must be"):
            parse_chat_request({"question": "好", **body}, SamplingSettings(), 64)
    # the recipe too
    one_clear_error(invoke(["run", str(TINY_RECIPE), "generation.temperature=1e-45"]), "generation.temperature")
    # and the decoding step itself never produces NaN probabilities, whatever the temperature
    scores = torch.randn(300) * 30
    for temperature in (1e-45, 1e-300, 1e-3, 100.0, 1e30):
        token, probability = pick_token(scores, SamplingSettings(temperature=temperature, top_k=5, top_p=0.9), None)
        assert 0 <= token < 300 and 0.0 <= probability <= 1.0


def test_case5_text_that_is_not_utf8_is_refused_not_crashed_on(tiny_run: Path) -> None:
    from rich.console import Console

    from gptf.generate import SamplingSettings
    from gptf.run import load_run
    from gptf.tools.chat import ChatSession, chat_loop

    broken = "\udcff"  # what Python makes of the byte 0xff in a command-line argument (surrogateescape)
    one_clear_error(invoke(["generate", "--ckpt", str(tiny_run), "--prompt", broken]), "not UTF-8 text")
    one_clear_error(invoke(["tokenize", broken, "--ckpt", str(tiny_run)]), "not UTF-8 text")
    session = ChatSession(load_run(tiny_run).generator(), SamplingSettings(max_new_tokens=4))
    lines = iter(["你好", None, broken, "你好", "/quit"])  # None: invalid UTF-8 typed in

    def read(prompt: str) -> str:
        line = next(lines)
        if line is None:  # what input() raises then
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return line

    output = Console(record=True, width=200)
    chat_loop(session, output, read=read)
    text = output.export_text()
    assert text.count("not UTF-8 text") == 2 and "could not be read" in text and "bye" in text
    assert len(session.history) == 2  # both good questions answered, the history kept


def test_case7_a_full_disk_never_loses_the_training(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    import safetensors.torch
    from safetensors import SafetensorError

    from gptf.train.checkpoint import latest_checkpoint

    rescue_root = workdir / "tmp"  # the system's temp folder, on another disk
    rescue_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_root))
    run_dir = workdir / "checkpoints" / "tiny"
    real_save_model = safetensors.torch.save_model
    saves = {"left": 0}

    def full_disk(model: object, filename: str, *args: object, **kwargs: object) -> None:
        """The run folder's disk is full (after ``saves["left"]`` more weights files)."""
        if Path(filename).is_relative_to(run_dir):
            if saves["left"] <= 0:
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            saves["left"] -= 1
        real_save_model(model, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", full_disk)

    # only a final save (save_interval=0): the training is kept in the rescue folder, not lost
    stopped = invoke(["run", str(TINY_RECIPE), "demo_prompts=[]"])
    message = one_clear_error(
        stopped,
        f"saving the finished run failed: {Path('checkpoints/tiny/model.safetensors')}: no space left on device",
        "the training is kept: a resumable checkpoint of step 8 is in",
        "--resume",
        exit_code=STOPPED,
    )
    (rescued,) = rescue_root.glob("gptf-rescue-*")
    assert latest_checkpoint(rescued).step == 8 and str(rescued) in message

    # a periodic save fails: the last good checkpoint stays, this step goes to the rescue folder
    shutil.rmtree(rescued)
    saves["left"] = 1  # the step-2 checkpoint fits, the step-4 one does not
    stopped = invoke(["run", str(TINY_RECIPE), "training.save_interval=2", "demo_prompts=[]"])
    one_clear_error(
        stopped,
        "training (step 4) failed:",
        "no space left on device",
        "a resumable checkpoint of step 4 is in",
        "the run folder still holds step 2",
        exit_code=STOPPED,
    )
    assert latest_checkpoint(run_dir).step == 2
    (rescued,) = rescue_root.glob("gptf-rescue-*")
    assert latest_checkpoint(rescued).step == 4

    # space again: the rescued checkpoint finishes the run, which then answers
    monkeypatch.setattr(safetensors.torch, "save_model", real_save_model)
    finished = invoke(
        ["run", str(TINY_RECIPE), "training.save_interval=2", "demo_prompts=[]", "--resume", str(rescued)]
    )
    assert finished.exit_code == 0, finished.output
    assert "at step 4 of 8" in finished.stdout
    assert invoke(generate_args(rescued)).exit_code == 0


EVIL = SCALE_NORM + '\nfrom pathlib import Path\nPath(__file__).with_name("evil_ran").write_text("this code ran")\n'


def test_case8_no_code_from_a_run_folder_runs_on_load_and_plugins_cannot_exit(workdir: Path, tiny_run: Path) -> None:
    from gptf.errors import PluginError
    from gptf.run import load_run

    evil = write(workdir / "evil.py", EVIL)
    run = copy_run(tiny_run, workdir)
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8").replace("plugins: []", f"plugins:\n- {evil}")
    (run / "recipe.yaml").write_text(recipe, encoding="utf-8")
    for args in (generate_args(run), ["eval", "--ckpt", str(run)], ["attention", "--ckpt", str(run), "--prompt", "好"]):
        one_clear_error(invoke(args), "names plugin code that would run", str(evil), "--trust-plugins")
    with pytest.raises(PluginError, match="names plugin code"):
        load_run(run)
    assert not (workdir / "evil_ran").exists()
    trusted = invoke(generate_args(run, "--trust-plugins", "--no-verify"))  # (the recipe was edited: --no-verify)
    assert trusted.exit_code == 0, trusted.output
    assert (workdir / "evil_ran").exists()
    # a plugin that calls sys.exit() while imported or registered stops nothing silently
    quits = student_recipe("plugins: [./quits.py]\n", ("quits.py", "import sys\nsys.exit(0)\n"))(workdir, run)
    one_clear_error(invoke(quits), "quits.py failed to import: it called sys.exit(0)")
    hook = "from gptf import hookimpl\n@hookimpl\ndef register_norms():\n    raise SystemExit(0)\n"
    exits = student_recipe("plugins: [./exits.py]\n", ("exits.py", hook))(workdir, run)
    one_clear_error(invoke(exits), "plugin 'exits' failed in register_norms(): SystemExit")


def test_case9_a_changed_or_corrupt_run_folder_is_refused(workdir: Path, tiny_run: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    def nan_block(run: Path) -> None:
        tensors = load_file(str(run / "model.safetensors"))
        name = next(iter(tensors))
        tensors[name].view(-1)[:64] = float("nan")
        save_file(tensors, str(run / "model.safetensors"))

    def flipped_bytes(run: Path) -> None:
        data = bytearray((run / "model.safetensors").read_bytes())
        for i in range(len(data) - 2000, len(data)):
            data[i] ^= 0xFF
        (run / "model.safetensors").write_bytes(bytes(data))

    def alibi(run: Path) -> None:
        text = (run / "recipe.yaml").read_text(encoding="utf-8")
        (run / "recipe.yaml").write_text(text.replace("positional: rope", "positional: alibi"), encoding="utf-8")

    for index, (change, fragment) in enumerate(
        [
            (nan_block, "model.safetensors: changed since the run saved it"),
            (flipped_bytes, "model.safetensors: changed since the run saved it"),
            (alibi, "recipe.yaml: changed since the run saved it"),
            (lambda run: (run / "run.json").unlink(), "has no run.json"),
        ]
    ):
        run = copy_run(tiny_run, workdir, f"copy{index}")
        change(run)
        one_clear_error(invoke(generate_args(run)), fragment, "--no-verify")
        if change is not nan_block:
            assert invoke(generate_args(run, "--no-verify")).exit_code == 0
    assert torch.isfinite(load_file(str(tiny_run / "model.safetensors"))["embed.weight"]).all()


def test_case10_unbounded_values_are_refused_before_any_work(workdir: Path, tiny_run: Path) -> None:
    import hashlib
    import time

    from gptf.plots import read_loss_curves

    started = time.monotonic()
    for args, fragment in [
        (["inspect", str(TINY_RECIPE), "model.n_layer=1000000000"], "model.n_layer: must be at most 1024"),
        (["inspect", str(TINY_RECIPE), "model.n_embd=4000000"], "GiB to hold the weights"),
        (["run", str(TINY_RECIPE), "tokenizer.vocab_size=100000000000"], "GiB to train"),
        (["run", str(TINY_RECIPE), "training.seed=99999999999999999999999"], "training.seed: must be from 0 to"),
        (["run", str(TINY_RECIPE), "training.threads=1000000"], "training.threads: must be from 1 to"),
        (["run", str(TINY_RECIPE), "name=.."], "name: '..' may only use"),
        (["run", str(TINY_RECIPE), "name=."], "name: '.' may only use"),
    ]:
        one_clear_error(invoke(args), fragment)
    assert time.monotonic() - started < 60  # refused by arithmetic, nothing allocated or built
    assert not (workdir / "run.json").exists()
    # run.json with a field of the wrong type
    run = copy_run(tiny_run, workdir)
    edit_json("run.json", lambda info: info.update(tokenizer="x"))(run)
    one_clear_error(invoke(generate_args(run)), "run.json: not a gptf run record: tokenizer: expected")
    # a resumable checkpoint whose trainer state says step -5 or 10^9
    shutil.copy(Path(__file__).parent / "fixtures" / "trouble_plugin.py", workdir / "trouble_plugin.py")
    recipe = write(
        workdir / "r.yaml",
        f"extends: {TINY_RECIPE}\nplugins: [./trouble_plugin.py]\ntraining: {{callbacks: [signal_at]}}\n",
    )
    import os

    os.environ["GPTF_TEST_SIGNAL_AT"] = "4:SIGINT"
    try:
        assert invoke(["run", str(recipe)]).exit_code == 130
    finally:
        del os.environ["GPTF_TEST_SIGNAL_AT"]
    state = workdir / "checkpoints" / "tiny" / "state" / "step-000004"
    original = (state / "trainer.json").read_text()
    for step, manifest_step, fragment in [
        (-5, 4, "step: expected a whole number >= 0, got -5"),
        (10**9, 10**9, "the checkpoint is at step 1000000000, past training.max_steps=8"),
    ]:
        trainer = json.loads(original)
        trainer["train_state"]["step"] = step
        (state / "trainer.json").write_text(json.dumps(trainer))
        manifest = json.loads((state / "manifest.json").read_text())
        manifest["step"] = manifest_step
        data = (state / "trainer.json").read_bytes()
        manifest["files"]["trainer.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (state / "manifest.json").write_text(json.dumps(manifest))
        one_clear_error(invoke(["run", str(recipe), "--resume"]), fragment)
    # metrics.jsonl with bytes that are not UTF-8: the loss picture skips those lines
    metrics = workdir / "metrics.jsonl"
    metrics.write_bytes(b'{"step": 1, "loss": 2.0}\n\xff\xfe{"step": 2\n{"step": 3, "loss": 1.5}\n[1]\n')
    assert read_loss_curves(metrics).train == [(1, 2.0), (3, 1.5)]
