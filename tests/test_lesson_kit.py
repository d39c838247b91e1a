"""The lesson kit (docs/lesson/) must not rot:

* every ``gptf ...`` command written in docs/lesson/*.md parses with the real command line (the
  subcommand exists, every option exists and its value is valid), and the recipe overrides it
  passes (``KEY=VALUE``, ``--swap``, ``--tune``) name real recipe keys and components;
* the files the READMEs and the kit link to exist, and both READMEs link the same kit;
* the plan's steps are exactly the commands docs/lesson/rehearse.sh runs (its timings are the plan's).

Nothing here trains or loads a model: parsing the commands and reading recipes takes seconds.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from gptf.cli import app

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "docs" / "lesson"
PLANS = [LESSON / "plan.md", LESSON / "plan_en.md"]
READMES = [ROOT / "README.md", ROOT / "README_EN.md"]
#: What both READMEs must link: the Python API, the lesson kit (both languages) and the notebook.
KIT = {
    "docs/api.md",
    "docs/lesson/plan.md",
    "docs/lesson/plan_en.md",
    "docs/lesson/exercises.md",
    "docs/lesson/exercises_en.md",
    "docs/lesson/checklist.md",
    "docs/lesson/checklist_en.md",
    "notebooks/lesson.ipynb",
}
#: Recipes the exercises have the students write themselves (their commands are parsed, not loaded).
STUDENT_RECIPES = {"my_norm.yaml"}
#: rehearse.sh writes into "$out" (default lesson_rehearsal); the plan names that folder.
REHEARSAL_OUT = "lesson_rehearsal"
STEP = re.compile(r"\b(\d\d-[a-z]+(?:-[a-z]+)*)\b")


# ------------------------------------------------------------------ reading commands out of Markdown


def gptf_commands(text: str, inline: bool = False) -> list[str]:
    """Every ``gptf ...`` command in a Markdown text, in order: lines of shell code blocks (```bash,
    ```sh, ```console or unlabelled; a leading ``$ `` is dropped, a trailing ``\\`` continues the
    line) and ``$ gptf ...`` lines of any other code block (a transcript). With ``inline``, the
    inline `gptf ...` spans of the prose instead (they may name a command without its arguments)."""
    commands: list[str] = []
    spans: list[str] = []
    fence: str | None = None  # the language of the open code block, "" when unlabelled
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            pending = ""
            continue
        if fence is None:
            spans += [span.strip() for span in re.findall(r"`(gptf [^`]+)`", line)]
            continue
        shell = fence in ("", "bash", "sh", "shell", "console")
        if pending:
            pending += " " + stripped
        elif stripped.startswith("$ gptf ") or (shell and stripped.startswith("gptf ")):
            pending = stripped.removeprefix("$ ")
        if pending and not pending.endswith("\\"):
            commands.append(pending)
            pending = ""
        elif pending:
            pending = pending[:-1].rstrip()
    return spans if inline else commands


def check_command(line: str, complete: bool = True) -> dict[str, Any]:
    """Parse one ``gptf ...`` line exactly as the command line would (without running it) and
    return the parsed parameters with ``command`` (e.g. ``"plugin check"``); a bad subcommand,
    option or value raises. Not ``complete`` (a command named in the prose): only the subcommand
    and the names of the options it mentions are checked."""
    args = shlex.split(line, comments=True)
    assert args and args[0] == "gptf", line
    command, rest, path = typer.main.get_command(app), args[1:], []
    while hasattr(command, "commands"):  # a group: gptf, gptf plugin, gptf data
        if not rest or rest[0] not in command.commands:
            raise AssertionError(f"{line}: 'gptf {' '.join(path)}' has no subcommand {rest[:1]}")
        path.append(rest[0])
        command, rest = command.commands[rest[0]], rest[1:]
    if not complete or "--help" in rest:
        known = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        unknown = [w.split("=")[0] for w in rest if w.startswith("--") and w.split("=")[0] not in known | {"--help"}]
        assert not unknown, f"{line}: 'gptf {' '.join(path)}' has no option {unknown}"
        return {"command": " ".join(path)}
    context = command.make_context("gptf " + " ".join(path), rest)  # raises on unknown options, bad values
    return {"command": " ".join(path), **context.params}


def check_recipe_arguments(params: dict[str, Any]) -> None:
    """``run``, ``inspect`` and ``ablate``: the recipe loads with the overrides (real keys), and
    every component named (also in each ``--swap``/``--tune`` value) is registered."""
    from gptf.build.components import component_problems, registry_for
    from gptf.recipe import load_recipe

    if params["command"] not in ("run", "inspect", "ablate") or str(params["recipe"]) in STUDENT_RECIPES:
        return
    recipe = ROOT / params["recipe"]
    overrides = list(params.get("overrides") or [])
    variants = [overrides]
    for option in ("swap", "tune"):
        given = params.get(option) or []
        for swap in [given] if isinstance(given, str) else given:  # --swap repeats, --tune does not
            key, _, values = swap.partition("=")
            variants += [[*overrides, f"{key}={value}"] for value in values.split(",")]
    for variant in variants:
        loaded = load_recipe(recipe, variant)
        assert not component_problems(loaded.recipe, registry_for(loaded)), (recipe, variant)


def lesson_commands(inline: bool = False) -> list[tuple[str, str]]:
    return [
        (path.name, line)
        for path in sorted(LESSON.glob("*.md"))
        for line in gptf_commands(path.read_text("utf-8"), inline=inline)
    ]


def rehearsal_steps() -> list[tuple[str, list[str]]]:
    """(name, command) of every ``step NAME COMMAND...`` line of rehearse.sh, "$out" filled in."""
    steps = []
    for line in (LESSON / "rehearse.sh").read_text("utf-8").splitlines():
        if line.startswith("step "):
            _, name, *command = shlex.split(line)
            steps.append((name, [word.replace("$out", REHEARSAL_OUT) for word in command]))
    return steps


def plan_steps(text: str) -> list[tuple[str, list[str]]]:
    """(name, first gptf command) of every step section of a plan: a heading that names the step
    as rehearse.sh does (``### 3. Train (03-train, ...)``)."""
    sections = re.split(r"^(#{2,4} .*)$", text, flags=re.MULTILINE)
    steps = []
    for heading, body in zip(sections[1::2], sections[2::2], strict=True):
        name = STEP.search(heading)
        if name:
            commands = gptf_commands(body)
            steps.append((name.group(1), shlex.split(commands[0], comments=True) if commands else []))
    return steps


def markdown_links(path: Path) -> list[str]:
    """The local files a Markdown file links to (``[text](target)``, images too), as written."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text("utf-8"))
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


# ------------------------------------------------------------------ the checks themselves


def test_the_kit_is_there() -> None:
    for name in KIT:
        assert (ROOT / name).is_file(), name
    assert len(lesson_commands()) >= 20, "the lesson kit should be full of commands"


@pytest.mark.parametrize(("doc", "line"), lesson_commands())
def test_every_command_in_the_lesson_kit_parses(doc: str, line: str) -> None:
    params = check_command(line)
    check_recipe_arguments(params)


@pytest.mark.parametrize(("doc", "line"), lesson_commands(inline=True))
def test_every_command_named_in_the_prose_exists(doc: str, line: str) -> None:
    check_command(line, complete=False)


def test_a_wrong_command_is_caught() -> None:
    """The checks above can fail: a misspelt subcommand, option, value or recipe key is caught."""
    for bad in (
        "gptf generat --ckpt checkpoints/lesson_teacher --prompt 你好",
        "gptf generate --ckpt checkpoints/lesson_teacher --promt 你好",
        "gptf generate --ckpt checkpoints/lesson_teacher",  # --prompt is required
        "gptf eval --ckpt checkpoints/lesson_teacher --max-declined 2",
        "gptf plugin chek examples/plugins/scalenorm.py",
    ):
        with pytest.raises(Exception):  # noqa: B017  (click's UsageError, or our AssertionError)
            check_command(bad)
    for bad in ("gptf eval --calibrat", "gptf chek"):
        with pytest.raises(AssertionError):
            check_command(bad, complete=False)
    check_command("gptf eval --calibrate", complete=False)
    for bad in (
        "gptf run recipes/teacher_3m.yaml training.max_step=150",
        "gptf ablate recipes/teacher_3m.yaml --swap model.positional=rope,lerned --steps 150",
    ):
        with pytest.raises(Exception):  # noqa: B017  (a GptfError or our AssertionError)
            check_recipe_arguments(check_command(bad))
    text = "```bash\ngptf ablate recipes/teacher_3m.yaml \\\n    --steps 150   # comment\n```\nsay `gptf plugins` and\n"
    assert gptf_commands(text) == ["gptf ablate recipes/teacher_3m.yaml --steps 150   # comment"]
    assert gptf_commands(text, inline=True) == ["gptf plugins"]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_the_plan_runs_the_rehearsed_commands(plan: Path) -> None:
    """Step for step, the plan shows the command rehearse.sh timed, in the same order."""
    assert plan_steps(plan.read_text("utf-8")) == rehearsal_steps()


def test_rehearsal_steps_are_read() -> None:
    steps = rehearsal_steps()
    assert [name for name, _ in steps][:3] == ["01-inspect", "02-tokenize", "03-train"]
    assert steps[2][1] == ["gptf", "run", "recipes/teacher_3m.yaml", "name=lesson_teacher"]


@pytest.mark.parametrize("doc", [*READMES, *sorted(LESSON.glob("*.md"))], ids=lambda p: p.name)
def test_linked_files_exist(doc: Path) -> None:
    missing = [t for t in markdown_links(doc) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


def test_both_readmes_link_the_lesson_kit() -> None:
    linked = [{t for t in markdown_links(readme) if t in KIT} for readme in READMES]
    assert linked[0] == linked[1] == KIT, [KIT - links for links in linked]
