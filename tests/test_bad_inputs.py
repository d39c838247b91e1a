"""Every way a student can get it wrong gives one clear message, an exit code, and no traceback.

Each case below is one distinct bad input: it prepares the working folder, runs a ``gptf``
command in-process (typer's CliRunner, fast), and checks the exit code and a specific
fragment of the message. A few run as real subprocesses at the end, as a user would.
"""

from __future__ import annotations

import json
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


def run_args(*overrides: str) -> Setup:
    return lambda work, run: ["run", str(TINY_RECIPE), *overrides]


def write(path: Path, text: str) -> Path:
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
    Case("recipe-invalid-yaml", recipe_file("name: x\nmodel: [1\n"), ERROR, ("bad.yaml:3", "invalid YAML")),
    Case("recipe-duplicate-key", recipe_file("name: a\nname: b\n"), ERROR, ("duplicate key 'name'",)),
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
    Case("data-empty-file", data_file(""), ERROR, ("data.train: bad.jsonl is empty",)),
    Case("data-only-blank-lines", data_file("\n\n  \n"), ERROR, ("bad.jsonl: no samples",)),
    Case("data-is-a-folder", run_args("data.val=."), ERROR, ("data.val: . is a folder",)),
    Case(
        "jsonl-invalid-json",
        data_file('{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n'),
        ERROR,
        ("bad.jsonl:2: not valid JSON",),
    ),
    Case("jsonl-missing-field", data_file('{"prompt": "问"}\n'), ERROR, ("bad.jsonl:1: missing field 'completion'",)),
    Case("jsonl-not-object", data_file('["问", "答"]\n'), ERROR, ("bad.jsonl:1: expected a JSON object, got list",)),
    Case(
        "jsonl-not-string",
        data_file('{"prompt": 3, "completion": "答"}\n'),
        ERROR,
        ("field 'prompt' must be a string",),
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
        "component-raises-while-built",
        student_recipe("plugins: [./boom.py]\nmodel: {norm: boom}\n", ("boom.py", BOOM_NORM)),
        ERROR,
        ("norm 'boom' (from plugin 'boom') failed to build at model.norm", "RuntimeError: boom"),
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
