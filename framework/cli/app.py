"""The typer app every ``gptf`` command registers on, and what they share: the consoles,
the friendly error handling and the common argument types."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from gptf.errors import GptfError, TrainingStopped, os_error_text, shown

app = typer.Typer(
    name="gptf",
    help="Build, train and question a small Chinese GPT, one swappable component at a time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Check training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
for _c in (console, err_console):
    if not _c.is_terminal:
        _c.width = max(_c.width, 120)  # logs and pipes: wide enough for tables
_options = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

#: Errors of writing files that a person can fix (space, quota, permissions, a file where a
#: folder belongs or the other way round): one clear line. So is any other OSError that names
#: its file (a folder that cannot be made, e.g. under /proc).
WRITE_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _options["debug"] = debug


def friendly_errors(command: F) -> F:
    """Expected errors: one clear message and a non-zero exit; ``--debug`` re-raises."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GptfError as exc:
            if _options["debug"]:
                raise
            label = "[bold yellow]stopped:[/]" if isinstance(exc, TrainingStopped) else "[bold red]error:[/]"
            if os.environ.get("RANK", "0") != "0":  # one of several torchrun processes: say which
                label = f"[dim]rank {os.environ['RANK']}:[/] {label}"
            # the message is plain text: a '[' in a path or a value is not rich markup
            err_console.print(Text.from_markup(label) + Text(f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _options["debug"]:
                raise
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:  # disk full, read-only folder, a folder that cannot be made...: say which file
            if _options["debug"] or (exc.errno not in WRITE_ERRNOS and exc.filename is None):
                raise  # no file named: not the user's files or disk, so the traceback is what helps
            message = Text.from_markup("[bold red]error:[/]") + Text(f" {os_error_text(exc)}")
            err_console.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(GptfError.exit_code) from None
        except SystemExit as exc:  # sys.exit() from code gptf called (a plugin?): never a silent success
            if _options["debug"]:
                raise
            message = Text.from_markup("[bold red]error:[/]") + Text(
                f" something gptf ran (a plugin?) called sys.exit({shown(exc.code)}) and stopped the command; "
                "run with --debug to see where"
            )
            err_console.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file, e.g. recipes/teacher_3m.yaml")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="Overrides KEY=VALUE, e.g. model.positional=learned")]
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU) | cpu | cuda | mps")]
TrustPluginsOption = Annotated[
    bool,
    typer.Option(
        "--trust-plugins",
        help="Run the plugin code files the run's recipe names (only for a run folder you trust)",
    ),
]
NoVerifyOption = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Skip the sha256 check of the run's files against run.json (and load a run that has no run.json)",
    ),
]
