"""Asking a trained model: ``gptf generate``, ``gptf eval``, ``gptf chat`` and ``gptf serve``;
``gptf export`` hands it to other tools (transformers) to ask there.

Importing this module registers them on :data:`gptf.cli.app.app` (see :mod:`gptf.cli`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gptf.cli.app import (
    DeviceOption,
    NoVerifyOption,
    TrustPluginsOption,
    app,
    console,
    err_console,
    friendly_errors,
)
from gptf.recipe.limits import THREADS_MAX

if TYPE_CHECKING:
    from gptf.generate import Generator, SamplingSettings
    from gptf.run import LoadedRun

CkptOption = Annotated[Path, typer.Option(help="Run directory, e.g. checkpoints/teacher_3m")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=THREADS_MAX,
        help="CPU threads (generating with a small model gains little from more, and a busy CPU slows them down)",
    ),
]
EvalThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=THREADS_MAX,
        help="CPU threads: on Linux this many groups of questions answered at a time (at most one per core), "
        "by worker processes of one thread each; elsewhere one group at a time with this many threads "
        "(default: one per core)",
    ),
]
NoDraftOption = Annotated[
    bool,
    typer.Option(
        "--no-draft",
        help="Greedy answers one token per model call, instead of draft and verify "
        "(guesses from the training answers, checked in one call: the same answers, faster)",
    ),
]
CompileOption = Annotated[
    bool | None,
    typer.Option(
        "--compile/--no-compile",
        help="Compile the decoding step with torch.compile at start-up: seconds once, then faster answers "
        "(default: the recipe's generation.compile)",
    ),
]
MemoryOption = Annotated[
    bool,
    typer.Option(
        help="Answer with the recipe's generation.memory of the taught answers, where it has one "
        "(--no-memory: the model alone)",
    ),
]
BeamsOption = Annotated[
    int | None,
    typer.Option(
        help="Greedy answers by beam search over this many candidate answers, 1 to 32 "
        "(1 = plain greedy; default: the recipe's generation.beams)",
    ),
]


def use_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def open_ckpt(ckpt: Path, quantized: bool, device: str, trust_plugins: bool, no_verify: bool) -> LoadedRun:
    """The run folder behind ``--ckpt``, opened with the options every asking command shares."""
    from gptf.run import load_run

    run = load_run(ckpt, quantized=quantized, device=device, trust_plugins=trust_plugins, verify=not no_verify)
    stale = run.stale_calibration()
    if stale:
        typer.secho(f"warning: {stale}", err=True, fg="yellow")
    return run


@app.command()
@friendly_errors
def generate(
    ckpt: Annotated[Path, typer.Option(help="Run directory, e.g. checkpoints/teacher_3m")],
    prompt: Annotated[list[str], typer.Option(help="Question (repeat for several)")],
    temperature: Annotated[float | None, typer.Option(help="0 = greedy, else 0.001 to 100")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off")] = None,
    top_p: Annotated[float | None, typer.Option(help="Above 0, at most 1 (1 = off)")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="Above 0 (1 = off)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="1 to the model's seq_len")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable): --stop 。")] = None,
    quantized: Annotated[bool, typer.Option(help="Use the int8 weights")] = False,
    show_label: Annotated[bool, typer.Option(help="Print 回答: before the answer")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the whole sequence each token")] = False,
    no_constraints: Annotated[
        bool,
        typer.Option(
            "--no-constraints",
            help="Ignore the recipe's generation.constraints and memory (plain decoding, as transformers' generate)",
        ),
    ] = False,
    stats: Annotated[
        bool, typer.Option(help="Print tokens/s, first-token latency, model calls and how many guesses were kept")
    ] = False,
    no_draft: NoDraftOption = False,
    beams: BeamsOption = None,
    memory: MemoryOption = True,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Answer prompts with a trained run."""
    use_threads(threads)
    from gptf.run import check_sampling_options, sampling_settings

    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens}
    check_sampling_options({**options, "repetition_penalty": repetition_penalty, "seed": seed, "beams": beams})
    loaded = open_ckpt(ckpt, quantized, device, trust_plugins, no_verify)
    settings = sampling_settings(
        loaded.recipe, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens
    )
    generator = loaded.generator(
        repetition_penalty=repetition_penalty,
        stops=stop,
        use_cache=not no_cache,
        recipe_constraints=not no_constraints,
        draft=False if no_draft else None,
        beams=beams,
        memory=memory,
    )
    for text in prompt:
        answer = generator.generate(text, settings, seed=seed)
        console.print(f"回答: {answer.text}" if show_label else answer.text, markup=False)
        if answer.declined:
            err_console.print(
                f"[dim](declined by the answer filter: confidence {answer.confidence:.3f} below "
                f"{generator.answer_filter.threshold:.3f}; the model's own answer: {answer.model_text})[/]",
                markup=True,
                highlight=False,
            )
        if stats:
            kept = f"{answer.accepted} of {answer.drafted} guessed tokens kept ({answer.acceptance:.0%})"
            drafted = f", draft and verify: {kept}" if answer.drafted else ""
            if generator.beams > 1 and settings.temperature == 0:
                drafted += f", beam search over {generator.beams} candidates"
            err_console.print(
                f"[dim]{len(answer.tokens)} tokens, {answer.tokens_per_s:,.0f} tokens/s, "
                f"first token {answer.first_token_s * 1000:.1f} ms, stop: {answer.stop_reason}, "
                f"{answer.model_calls} model calls{drafted}[/]"
            )
            if answer.recalled:
                err_console.print(
                    f"[dim]memory: the taught question most like it: {answer.recalled} "
                    f"(similarity {answer.recalled_similarity:.2f})[/]",
                    highlight=False,
                )


@app.command(name="eval")
@friendly_errors
def eval_command(
    ckpt: CkptOption,
    data: Annotated[
        list[Path] | None,
        typer.Option(help="JSONL file to score (repeatable); default: the run's train (recall), val and test"),
    ] = None,
    quantized: Annotated[bool, typer.Option(help="Use the int8 weights")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the scores here (default: CKPT/eval.json)")] = None,
    recall_samples: Annotated[
        int, typer.Option(min=0, help="Score a seeded sample of this many training prompts (0 = all)")
    ] = 200,
    max_new_tokens: Annotated[int | None, typer.Option(help="Default: the recipe's")] = None,
    worst: Annotated[int, typer.Option(min=0, help="Show this many worst held-out answers")] = 5,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="Choose the answer filter's threshold on the val questions (never test): "
            "writes CKPT/calibration.json and prints the curve"
        ),
    ] = False,
    max_declined: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="With --calibrate: decline at most this share of the val questions"),
    ] = 1.0,
    max_right_lost: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="With --calibrate: decline at most this share of the right answers on val"),
    ] = 0.1,
    max_wrong_shown: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --calibrate: where a threshold shows at most this share of wrong answers on val, one of those",
        ),
    ] = 0.08,
    apply: Annotated[
        bool, typer.Option(help="With --calibrate: write the chosen generation.answer_filter into CKPT/recipe.yaml")
    ] = False,
    answer_filter: Annotated[
        bool, typer.Option(help="Apply the run's generation.answer_filter (--no-answer-filter: score every answer)")
    ] = True,
    beams: BeamsOption = None,
    memory: MemoryOption = True,
    device: DeviceOption = "auto",
    threads: EvalThreadsOption = None,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Score a run: answer every prompt greedily, compare with the reference answers."""
    if threads is not None:  # else PyTorch's default, one per core: each answers groups with one thread
        use_threads(threads)
    from gptf.decoding.answer_workers import side_by_side_answers
    from gptf.evaluate import (
        concepts_for,
        default_eval_files,
        eval_files_for,
        evaluate_files,
        generator_decoding,
        print_report,
        report_json,
    )
    from gptf.run import check_sampling_options, sampling_settings
    from gptf.train.run_files import write_json

    check_sampling_options({"beams": beams})
    check_out_file(out)
    run = open_ckpt(ckpt, quantized, device, trust_plugins, no_verify)
    recipe = run.recipe
    settings = sampling_settings(recipe, max_new_tokens=max_new_tokens, temperature=0.0, top_k=0, top_p=1.0)
    if apply and not calibrate:
        from gptf.errors import GptfError

        raise GptfError("--apply writes what --calibrate chose: use them together")
    if apply and not memory and recipe.generation.memory is not None:
        from gptf.errors import GptfError

        raise GptfError(
            "--apply writes the threshold into the run's recipe, whose answers use its generation.memory; "
            "--no-memory calibrates other answers (the model alone)",
            hint="drop --no-memory to calibrate the run's own answers, or drop --apply to only see the curve",
        )
    if calibrate:
        if data:
            from gptf.errors import GptfError

            raise GptfError(
                "--calibrate chooses the threshold on the run's val file (data.val) only; drop --data",
                hint="the test file stays for the final report, never for choosing settings",
            )
        calibrate_run(
            run,
            settings.max_new_tokens,
            apply=apply,
            max_declined=max_declined,
            max_right_lost=max_right_lost,
            max_wrong_shown=max_wrong_shown,
            beams=beams,
            memory=memory,
        )
        return
    generator = run.generator(answer_filter=answer_filter, beams=beams, memory=memory)
    files = eval_files_for(data, recipe.data.train) if data else default_eval_files(recipe.data, recall_samples)
    concepts = concepts_for(recipe.data, generator, [str(p) for p in data or []])
    with side_by_side_answers():  # groups of questions side by side (gptf.decoding.answer_workers)
        reports = evaluate_files(generator, files, settings, console, train_path=recipe.data.train, concepts=concepts)
    if not reports:
        from gptf.data import closest_jsonl
        from gptf.errors import DataError

        missing = [Path(f.path) for f in files if not Path(f.path).exists()]
        close = [str(c) for path in missing if (c := closest_jsonl(path)) is not None]
        raise DataError(
            "nothing to evaluate: none of " + ", ".join(f.path for f in files) + " is a JSONL file here",
            hint=f"did you mean {', '.join(close)}?" if close else data_elsewhere_hint(run),
        )
    print_report(console, reports, worst)
    target = out or run.files.root / ("eval.int8.json" if quantized else "eval.json")
    write_json(
        target,
        report_json(
            reports,
            run=str(run.files.root),
            quantized=quantized,
            decoding=generator_decoding(generator),
            max_new_tokens=settings.max_new_tokens,
            constraints=[s.name for s in recipe.generation.constraints],
            answer_filter=_spec_text(recipe.generation.answer_filter) if answer_filter else "none",
            concept_references=len(concepts),
        ),
    )
    console.print(f"scores written to {target}")


def check_out_file(out: Path | None) -> None:
    """Refuse an ``--out`` that can never be written (a folder, or a path through a file) before any
    work: an evaluation takes minutes, and its scores would be lost at the end."""
    if out is None:
        return
    from gptf.errors import GptfError

    if out.is_dir():
        raise GptfError(f"--out {out}: is a folder; name a file to write, e.g. {out / 'eval.json'}")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise GptfError(f"--out {out}: {folder} is a file, not a folder")
    try:  # its folder made now: one that cannot be (e.g. under /proc) is refused before the evaluation
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from gptf.errors import os_error_text

        raise GptfError(f"--out {out}: cannot make its folder: {os_error_text(exc)}") from exc


def data_elsewhere_hint(run: LoadedRun) -> str:
    """Where to run ``gptf eval`` when the run's data files are not in this folder: the project folder
    in which the run found its training file (:meth:`gptf.run.LoadedRun.training_file`), if it did."""
    written = Path(run.recipe.data.train)
    found = run.training_file()
    if not written.is_absolute() and found.is_absolute():  # found above the run, not here
        project = found.parents[len(written.parts) - 1]
        return f"this run's data files are in {project}: run gptf eval there, or pass --data FILE.jsonl"
    return "run gptf eval from the folder you trained in, or pass --data FILE.jsonl"


def _spec_text(spec: object) -> object:
    from gptf.recipe.structure import converter

    return converter.unstructure(spec)


def calibrate_run(
    run: LoadedRun,
    max_new_tokens: int,
    *,
    apply: bool,
    max_declined: float = 1.0,
    max_right_lost: float = 0.1,
    max_wrong_shown: float = 0.08,
    beams: int | None = None,
    memory: bool = True,
) -> None:
    """``gptf eval --calibrate``: the answer filter's threshold, chosen on the val questions."""
    from gptf.evaluate import calibrate_on_val, calibration_tables
    from gptf.train.run_files import write_json, write_yaml

    with console.status(f"answering the val questions ({run.recipe.data.val})...", spinner="dots"):
        result = calibrate_on_val(
            run.generator(beams=beams, taught=True, memory=memory),  # every measure, the taught_question ones too
            run.recipe,
            max_new_tokens,
            max_declined=max_declined,
            max_right_lost=max_right_lost,
            max_wrong_shown=max_wrong_shown,
        )
    for table in calibration_tables(result):
        console.print(table)
    target = run.files.root / "calibration.json"
    write_json(target, result.to_json())
    chosen = result.filter_spec
    console.print(f"chosen: {result.describe()}", highlight=False)
    console.print(f"recipe: generation.answer_filter: {_flow(chosen)}", highlight=False, markup=False)
    console.print(f"calibration written to {target}", highlight=False)
    if apply:
        from gptf.recipe import read_recipe_file
        from gptf.train.fingerprints import refresh_fingerprint

        data = read_recipe_file(run.files.recipe)
        data.setdefault("generation", {})["answer_filter"] = chosen
        write_yaml(run.files.recipe, data)
        refresh_fingerprint(run.files, run.files.recipe)  # a change made on purpose, not corruption
        console.print(f"applied: {run.files.recipe} now has generation.answer_filter: {_flow(chosen)}")


def _flow(spec: object) -> str:
    """A component spec as one line of YAML: {name: confidence, threshold: -1.2}."""
    if isinstance(spec, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"
    return str(spec)


def check_compile_option(compile: bool | None, quantized: bool) -> None:
    """--compile with --quantized: refused by name (the int8 layers are not compiled: no faster answers)."""
    if compile and quantized:
        from gptf.errors import GptfError

        raise GptfError("--compile works with the fp32 weights only: drop --quantized or --compile")


def compile_before_the_first_question(
    generator: Generator, questions: Sequence[str], settings: SamplingSettings
) -> None:
    """With ``generation.compile: true``, compile the decode step now, by answering a question nobody
    asked, so the first student's answer does not wait for the compiler (seconds; more on a cold cache)."""
    if generator.compiled_step is None:
        return
    started = time.perf_counter()
    with (
        err_console.status("compiling the decode step (generation.compile: once per process)..."),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", RuntimeWarning)
        generator.generate(questions[0] if questions else "你好", settings)
    if generator.compiled_step.eager:  # the compiler could not build it: say so once, in one line
        reasons = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        err_console.print(reasons[0] if reasons else "decoding uncompiled", style="yellow", markup=False)
    else:
        err_console.print(f"[dim]decode step compiled in {time.perf_counter() - started:.1f} s[/]")


@app.command()
@friendly_errors
def chat(
    ckpt: CkptOption,
    temperature: Annotated[
        float | None, typer.Option(help="0 = greedy, else 0.001 to 100 (default: the recipe's)")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off")] = None,
    top_p: Annotated[float | None, typer.Option(help="Above 0, at most 1 (1 = off)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="1 to the model's seq_len")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling")] = None,
    quantized: Annotated[bool, typer.Option(help="Use the int8 weights")] = False,
    no_draft: NoDraftOption = False,
    beams: BeamsOption = None,
    memory: MemoryOption = True,
    compile: CompileOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Chat with a trained run in the terminal (/help lists the commands)."""
    use_threads(threads)
    from gptf.run import check_sampling_options, sampling_settings
    from gptf.tools.chat import ChatSession, chat_loop

    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens}
    check_sampling_options({**options, "seed": seed, "beams": beams})
    check_compile_option(compile, quantized)
    run = open_ckpt(ckpt, quantized, device, trust_plugins, no_verify)
    settings = sampling_settings(
        run.recipe, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens
    )
    console.print(f"gptf chat: {run.files.root} ({run.recipe.name}, {run.model.config.seq_len} tokens of context)")
    generator = run.generator(draft=False if no_draft else None, beams=beams, compile=compile, memory=memory)
    compile_before_the_first_question(generator, run.recipe.demo_prompts, settings)
    chat_loop(ChatSession(generator, settings, seed=seed), console)


@app.command()
@friendly_errors
def serve(
    ckpt: CkptOption,
    host: Annotated[
        str, typer.Option(help="127.0.0.1 = this computer only; 0.0.0.0 = the whole network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 = any free port")] = 7860,
    quantized: Annotated[bool, typer.Option(help="Use the int8 weights")] = False,
    no_draft: NoDraftOption = False,
    beams: BeamsOption = None,
    memory: MemoryOption = True,
    compile: CompileOption = None,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """A web page for the class: chat, sampling sliders, every token with its probability."""
    use_threads(threads)
    from gptf.run import check_sampling_options
    from gptf.tools.serve import ChatService, example_questions, is_loopback, make_server

    check_sampling_options({"beams": beams})
    check_compile_option(compile, quantized)
    run = open_ckpt(ckpt, quantized, device, trust_plugins, no_verify)
    service = ChatService(
        run, example_questions(run), draft=False if no_draft else None, beams=beams, compile=compile, memory=memory
    )
    compile_before_the_first_question(service.default_generator(), service.examples, service.defaults)
    server = make_server(service, host, port, console)
    bound_host, bound_port = server.server_address[:2]
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
    console.print(f"gptf serve: {run.files.root} at [bold]http://{shown}:{bound_port}/[/]  (Ctrl+C to stop)")
    if not is_loopback(host):
        console.print(
            f"[yellow]listening on {host}: anyone who can reach this computer on port {bound_port} can use the page[/]"
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()


@app.command()
@friendly_errors
def export(
    ckpt: CkptOption,
    out: Annotated[Path, typer.Option(help="Folder to write (refused if it exists and is not empty, unless --force)")],
    format: Annotated[str, typer.Option("--format", help="hf = Hugging Face transformers (Llama layout)")] = "hf",
    force: Annotated[bool, typer.Option(help="Replace an existing --out folder")] = False,
    threads: ThreadsOption = 1,
) -> None:
    """Export a trained run for other tools: a transformers folder (Llama) that from_pretrained() opens."""
    from gptf.tools.export import FORMATS, check_out, export_hf

    if format not in FORMATS:
        from gptf.errors import GptfError

        raise GptfError(f"--format {format}: unknown format; valid choices: {', '.join(FORMATS)}")
    check_out(out, force)  # before loading anything
    use_threads(threads)
    from gptf.run import load_run

    run = load_run(ckpt)
    report = export_hf(run, out, force=force, progress=lambda text: err_console.print(f"[dim]{text}...[/]"))
    console.print(f"exported {run.files.root} -> {report.out} ({', '.join(report.files)})")
    console.print(
        f"checked with transformers {report.transformers_version}: same prompt ids, logits within "
        f"{report.max_logit_diff:.1e} of gptf's on {len(report.prompts)} prompt(s)"
    )
    console.print(f"ask it: see {report.out / 'README.md'}")
