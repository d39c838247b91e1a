"""The GPU path in one command: prints JSON with CUDA vs CPU loss curves, the 26M recipe's speed
(fp32, bf16, torch.compile), training memory measured vs estimated, an end-to-end ``gptf run
--device cuda``, and DDP over NCCL when there are two GPUs.

    python benchmarks/gpu_check.py                  # about 3-5 minutes on one GPU
    python benchmarks/gpu_check.py --steps 20 --no-compile

Without a GPU it still runs (the CUDA parts say "skipped: no CUDA GPU"), so it can be tested
anywhere; on the CPU the 26M speed is measured over a few steps only.

* loss_curves: the teacher recipe, ``--steps`` steps from the same seed, once on the CPU and once
  on CUDA, fp32 (TF32 off: PyTorch's default for matrix products). The curves should agree to
  about 1e-3: kernels differ, so the sums are rounded differently.
* speed_26m: recipes/scale/gpt_26m.yaml on our data, tokens/s after ``--warmup`` untimed steps
  (where torch.compile compiles), for fp32, bf16 autocast and, with --compile, bf16 + compile.
* memory_26m: one training step on a full micro-batch (16 x 512 tokens) of the 26M model:
  torch.cuda.max_memory_allocated against gptf.build.costs.training_memory's estimate.
* end_to_end: ``gptf run recipes/teacher_3m.yaml --device cuda`` (50 steps), in a temporary folder.
* ddp_nccl: torchrun with 2 processes on 2 GPUs against 1 process, the tiny test recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_common import ROOT, emit, machine, our_data, recipe_tokenizer

from gptf.build.components import build_model, build_optimizer, build_scheduler, registry_for
from gptf.build.costs import training_memory
from gptf.data import IGNORE, augment_prompts, read_jsonl, tokenize_split
from gptf.recipe import load_recipe
from gptf.train.trainer import Trainer

TEACHER = ROOT / "recipes" / "teacher_3m.yaml"
GPT_26M = ROOT / "recipes" / "scale" / "gpt_26m.yaml"
NO_GPU = "skipped: no CUDA GPU"


def trainer_for(recipe_path: Path, device: str, overrides: list[str], tokenizer: Any = None) -> Trainer:
    """gptf's trainer for a recipe on our data, on ``device`` (what ``gptf run`` builds)."""
    loaded = load_recipe(recipe_path, overrides)
    recipe, registry = loaded.recipe, registry_for(loaded)
    train = read_jsonl(ROOT / recipe.data.train)
    if tokenizer is None:
        tokenizer = recipe_tokenizer(recipe, registry, train)
    if recipe.data.augment_copies:
        train = augment_prompts(train, recipe.data.augment_copies, recipe.training.seed)
    seq_len = recipe.model.seq_len
    train_split = tokenize_split(train, tokenizer, seq_len, truncate=True, source="train")
    val_split = tokenize_split(read_jsonl(ROOT / recipe.data.val), tokenizer, seq_len, truncate=True, source="val")
    torch.manual_seed(recipe.training.seed)
    model = build_model(recipe, registry, tokenizer.vocab_size).to(device)
    trainer = Trainer(
        config=recipe.training,
        model=model,
        train=train_split,
        val=val_split,
        pad_id=tokenizer.pad_id,
        optimizer=build_optimizer(recipe, registry, model),
        schedule=build_scheduler(recipe, registry),
    )
    trainer.tokenizer = tokenizer  # reused by the next variant (training a BPE takes a while)
    return trainer


def loss_curves(steps: int) -> dict[str, Any]:
    tokenizer = our_data().tokenizer
    curves = {}
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        trainer = trainer_for(TEACHER, device, [f"training.max_steps={steps}"], tokenizer)
        curves[device] = [round(trainer.train_step()["loss"], 6) for _ in range(steps)]
    result: dict[str, Any] = {"steps": steps, "cpu": curves["cpu"]}
    if "cuda" not in curves:
        return {**result, "cuda": NO_GPU}
    difference = max(abs(a - b) for a, b in zip(curves["cpu"], curves["cuda"], strict=True))
    return {**result, "cuda": curves["cuda"], "max_abs_difference": difference, "agree_1e-3": difference < 1e-3}


def speed(trainer: Trainer, warmup: int, steps: int) -> dict[str, Any]:
    started = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
    synchronize()
    warmup_s = time.perf_counter() - started
    tokens_before, started = trainer.state.tokens_seen, time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    synchronize()
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": round((trainer.state.tokens_seen - tokens_before) / seconds),
        "step_ms": round(seconds / steps * 1e3, 2),
        "warmup_s": round(warmup_s, 1),
        "loss": round(trainer.state.train_loss, 4),
        "precision": trainer.precision.as_record(),
    }


def speed_26m(warmup: int, steps: int, compile_too: bool) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    variants = {"fp32": ["training.precision=fp32"], "bf16": ["training.precision=bf16"]}
    if cuda and compile_too:
        variants["bf16_compile"] = ["training.precision=bf16", "training.compile=true"]
    if not cuda:
        variants = {"fp32": variants["fp32"]}
        warmup, steps = 1, 2
    out: dict[str, Any] = {"device": device, "steps_timed": steps}
    tokenizer = None
    for name, overrides in variants.items():
        trainer = trainer_for(GPT_26M, device, overrides, tokenizer)
        tokenizer = trainer.tokenizer
        out[name] = speed(trainer, warmup, steps)
    if not cuda:
        out["note"] = "CPU only: a few steps to exercise the code; " + NO_GPU
    return out


def memory_26m() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"note": NO_GPU}
    variants = {"fp32": (False, False), "bf16": (True, False), "bf16_activation_checkpointing": (True, True)}
    return {name: memory_step(GPT_26M, "cuda", 16, 512, bf16=b, checkpointing=c) for name, (b, c) in variants.items()}


def memory_step(recipe_path: Path, device: str, rows: int, tokens: int, *, bf16: bool, checkpointing: bool) -> dict:
    """Two training steps on one full micro-batch; the peak GPU memory against the estimate."""
    loaded = load_recipe(recipe_path)
    registry, vocab = registry_for(loaded), loaded.recipe.tokenizer.vocab_size
    on_gpu = device == "cuda"
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = build_model(loaded.recipe, registry, vocab).to(device)
    model.checkpoint_blocks = checkpointing
    optimizer = build_optimizer(loaded.recipe, registry, model)
    x = torch.randint(4, vocab, (rows, tokens), device=device)
    for _ in range(2):  # the second step holds AdamW's state too
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten(), ignore_index=IGNORE)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    estimate = training_memory(model, rows, tokens, bf16=bf16, checkpointing=checkpointing).total
    out: dict[str, Any] = {"estimate_MiB": round(estimate / 2**20), "loss": round(loss.item(), 4)}
    if on_gpu:
        measured = torch.cuda.max_memory_allocated()
        out.update(measured_MiB=round(measured / 2**20), estimate_over_measured=round(estimate / measured, 2))
    return out


def end_to_end(steps: int = 50, recipe: Path = TEACHER, cwd: Path = ROOT, device: str = "cuda") -> dict[str, Any]:
    """``gptf run RECIPE --device cuda`` as a user would, into a temporary folder."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"note": NO_GPU}
    with tempfile.TemporaryDirectory() as folder:
        overrides = [f"training.max_steps={steps}", f"output_dir={folder}/run", f"tokenizer.path={folder}/tok.json"]
        started = time.perf_counter()
        done = gptf(["run", str(recipe), *overrides, "--device", device], cwd)
        info = json.loads((Path(folder) / "run" / "run.json").read_text()) if done.returncode == 0 else {}
    return {
        "exit_code": done.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": info.get("final_train_loss"),
        "final_val_loss": info.get("final_val_loss"),
        "val_char_f1": (info.get("val_eval") or {}).get("char_f1"),
        "tail": "" if done.returncode == 0 else (done.stdout + done.stderr)[-2000:],
    }


def ddp_nccl() -> dict[str, Any]:
    if torch.cuda.device_count() < 2:
        return {"note": f"skipped: {torch.cuda.device_count()} CUDA GPU(s), DDP over NCCL needs 2"}
    from safetensors.torch import load_file

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in ("tiny_train.jsonl", "tiny_val.jsonl"):
            (Path(folder) / name).write_bytes((ROOT / "tests" / "fixtures" / name).read_bytes())
        recipe = str(ROOT / "tests" / "fixtures" / "tiny.yaml")
        for label, launcher in (("one", []), ("two", ["torch.distributed.run", "--standalone", "--nproc_per_node=2"])):
            args = [*launcher, "-m", "gptf"] if launcher else []
            done = gptf(["run", recipe, f"output_dir={label}", "--device", "cuda"], Path(folder), prefix=args)
            results[label] = done.returncode
            if done.returncode:
                return {"exit_codes": results, "tail": (done.stdout + done.stderr)[-2000:]}
        a, b = load_file(Path(folder) / "one/model.safetensors"), load_file(Path(folder) / "two/model.safetensors")
        difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    return {"exit_codes": results, "max_weight_difference": difference, "agree_1e-4": difference < 1e-4}


def gptf(args: list[str], cwd: Path, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *(prefix or ["gptf"]), *args]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of each loss curve and timed steps of the 26M")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--only", nargs="*", help="run only these parts (loss_curves speed_26m memory_26m ...)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {
        "machine": machine(),
        "cuda": torch.cuda.get_device_name() if cuda else NO_GPU,
        "bf16_supported": cuda and torch.cuda.is_bf16_supported(),
    }
    parts = {
        "loss_curves": lambda: loss_curves(args.steps),
        "speed_26m": lambda: speed_26m(args.warmup, args.steps, not args.no_compile),
        "memory_26m": memory_26m,
        "end_to_end": end_to_end,
        "ddp_nccl": ddp_nccl,
    }
    for name, part in parts.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        try:
            result[name] = part()
        except Exception as exc:  # report and go on: one broken part must not hide the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        result[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)  # kept even if a later part hangs
    emit(result)


if __name__ == "__main__":
    main()
