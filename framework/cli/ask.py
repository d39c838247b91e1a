"""Asking a trained model: ``gptf generate``, ``gptf eval``, ``gptf chat`` and ``gptf serve``.

Importing this module registers them on :data:`gptf.cli.app.app` (see :mod:`gptf.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

CkptOption = Annotated[Path, typer.Option(help="Run directory, e.g. checkpoints/teacher_3m")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=THREADS_MAX,
        help="CPU threads (generating with a small model gains little from more, and a busy CPU slows them down)",
    ),
]


def use_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


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
    no_cache: Annotated[bool, typer.Option(help="Recompute the whole sequence each token")] = False,
    stats: Annotated[bool, typer.Option(help="Print tokens/s and first-token latency")] = False,
    device: DeviceOption = "auto",
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Answer prompts with a trained run."""
    from gptf.run import check_sampling_options, load_run, sampling_settings

    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens}
    check_sampling_options({**options, "repetition_penalty": repetition_penalty, "seed": seed})
    loaded = load_run(ckpt, quantized=quantized, device=device, trust_plugins=trust_plugins, verify=not no_verify)
    settings = sampling_settings(
        loaded.recipe, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens
    )
    generator = loaded.generator(repetition_penalty=repetition_penalty, stops=stop, use_cache=not no_cache)
    for text in prompt:
        answer = generator.generate(text, settings, seed=seed)
        console.print(f"回答: {answer.text}" if show_label else answer.text, markup=False)
        if stats:
            err_console.print(
                f"[dim]{len(answer.tokens)} tokens, {answer.tokens_per_s:,.0f} tokens/s, "
                f"first token {answer.first_token_s * 1000:.1f} ms, stop: {answer.stop_reason}[/]"
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
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Score a run: answer every prompt greedily, compare with the reference answers."""
    use_threads(threads)
    from gptf.evaluate import default_eval_files, eval_files_for, evaluate_files, print_report, report_json
    from gptf.run import load_run, sampling_settings
    from gptf.train.run_files import write_json

    run = load_run(ckpt, quantized=quantized, device=device, trust_plugins=trust_plugins, verify=not no_verify)
    recipe = run.recipe
    settings = sampling_settings(recipe, max_new_tokens=max_new_tokens, temperature=0.0, top_k=0, top_p=1.0)
    files = eval_files_for(data, recipe.data.train) if data else default_eval_files(recipe.data, recall_samples)
    reports = evaluate_files(run.generator(), files, settings, console, train_path=recipe.data.train)
    if not reports:
        from gptf.errors import DataError

        raise DataError(
            "nothing to evaluate: none of " + ", ".join(f.path for f in files) + " exists here",
            hint="run gptf eval from the folder you trained in, or pass --data FILE.jsonl",
        )
    print_report(console, reports, worst)
    target = out or run.files.root / ("eval.int8.json" if quantized else "eval.json")
    write_json(
        target,
        report_json(
            reports,
            run=str(run.files.root),
            quantized=quantized,
            decoding="greedy",
            max_new_tokens=settings.max_new_tokens,
            constraints=[s.name for s in recipe.generation.constraints],
        ),
    )
    console.print(f"scores written to {target}")


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
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """Chat with a trained run in the terminal (/help lists the commands)."""
    use_threads(threads)
    from gptf.run import check_sampling_options, load_run, sampling_settings
    from gptf.tools.chat import ChatSession, chat_loop

    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "max_new_tokens": max_new_tokens}
    check_sampling_options({**options, "seed": seed})
    run = load_run(ckpt, quantized=quantized, device=device, trust_plugins=trust_plugins, verify=not no_verify)
    settings = sampling_settings(
        run.recipe, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens
    )
    console.print(f"gptf chat: {run.files.root} ({run.recipe.name}, {run.model.config.seq_len} tokens of context)")
    chat_loop(ChatSession(run.generator(), settings, seed=seed), console)


@app.command()
@friendly_errors
def serve(
    ckpt: CkptOption,
    host: Annotated[
        str, typer.Option(help="127.0.0.1 = this computer only; 0.0.0.0 = the whole network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 = any free port")] = 7860,
    quantized: Annotated[bool, typer.Option(help="Use the int8 weights")] = False,
    device: DeviceOption = "auto",
    threads: ThreadsOption = 1,
    trust_plugins: TrustPluginsOption = False,
    no_verify: NoVerifyOption = False,
) -> None:
    """A web page for the class: chat, sampling sliders, every token with its probability."""
    use_threads(threads)
    from gptf.run import load_run
    from gptf.tools.serve import ChatService, example_questions, is_loopback, make_server

    run = load_run(ckpt, quantized=quantized, device=device, trust_plugins=trust_plugins, verify=not no_verify)
    server = make_server(ChatService(run, example_questions(run)), host, port, console)
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
