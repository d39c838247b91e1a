"""Training in several processes at once: DistributedDataParallel (DDP), started by torchrun.

    torchrun --standalone --nproc_per_node=2 -m gptf run recipes/teacher_3m.yaml

``torchrun`` starts N copies of ``gptf run``, the *ranks* 0 .. N-1, and tells each one who it
is in environment variables: ``RANK`` (which of all), ``WORLD_SIZE`` (how many),
``LOCAL_RANK`` (which on this machine: the GPU it takes), ``LOCAL_WORLD_SIZE`` and
``MASTER_ADDR``/``MASTER_PORT`` (where they meet). Without them gptf is one process, exactly as
before: no process group is started and not one number changes (:class:`World` with size 1
turns every method below into "do nothing").

How one optimizer step of ``batch_size`` samples is shared by N ranks:

1. Every rank computes the same list of the step's samples (:func:`gptf.data.step_samples`
   is a pure function of the seed and the step), sorts it by length and takes every N-th
   sample from its own rank on (:meth:`World.share`): ``batch_size / N`` samples each, of
   about the same total length, so no rank waits long for a slower one.
2. The batch's loss is ``sum of token losses / answer tokens in the whole batch``, so every
   rank needs the *global* answer-token count: an all-reduce of two numbers
   (:meth:`World.sum_counts`). Each rank divides its own token losses by it.
3. Each rank runs its micro-batches forward and backward. DDP exchanges gradients (an
   all-reduce, overlapped with the backward pass) only in the *last* micro-batch's
   backward: the earlier ones run inside ``model.no_sync()`` (:meth:`World.no_sync`), so
   gradients cross between processes once per optimizer step, not once per micro-batch.
4. Now every rank holds the gradient of the whole batch. Each clips it and takes the same
   AdamW step, so the weights stay identical without ever being sent again.

DDP normally *averages* the ranks' gradients (each rank's loss is usually its own mean).
Ours are already divided by the global token count, so they must be *added*:
:func:`add_gradients` is the communication hook that does that. N ranks then compute the
same sums as one process, in a different order: the weights agree to float rounding, not
bit for bit (measured: 8e-7 after 12 steps of the tiny test recipe; 1.5e-4 after 100 steps of
the teacher, where one process cutting the same batches into other micro-batches differs from
itself by 8e-5: rounding noise that AdamW's steps make grow).

Only rank 0 talks and writes: it prints, logs ``metrics.jsonl``, evaluates on val, saves
checkpoints and the run folder. A stop (Ctrl+C, SIGTERM, a NaN loss) is agreed on by all
ranks (:meth:`World.any`): a signal may reach one rank a step before another, and a rank
that stopped alone would leave the others waiting for it forever.

Backends: ``gloo`` for the CPU, ``nccl`` for CUDA GPUs (one GPU per rank, ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch import nn

from gptf.build.devices import resolve_device
from gptf.build.speed import usable_cores
from gptf.errors import GptfError, SaveFailed, TrainingStopped

#: How long a rank waits for the others in one collective before giving up (a dead peer).
TIMEOUT = datetime.timedelta(minutes=30)

DDP = nn.parallel.DistributedDataParallel
#: Our buffers (RoPE's tables) are computed alike in every process, so DDP need not send them
#: again before every forward pass. (PyTorch 2.13 renamed the keyword that says so.)
NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
    else {"broadcast_buffers": False}
)


@attrs.frozen
class World:
    """This process's place among the processes of one training run."""

    rank: int = 0  # which process of all (0 .. size-1); rank 0 prints and writes
    size: int = 1  # how many processes train together
    local_rank: int = 0  # which process on this machine: the GPU it uses
    local_size: int = 1  # processes on this machine (they share its cores)
    backend: str | None = None  # "gloo" (CPU) or "nccl" (CUDA) once started; None: one process

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, evaluates and writes files."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where this rank's collectives run: nccl needs GPU tensors, gloo CPU tensors."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: on CUDA, each rank its own GPU."""
        return torch.device("cuda", self.local_rank) if self.distributed and device.type == "cuda" else device

    # -- splitting the work ------------------------------------------------------------------
    def share(self, indices: Sequence[int], lengths: Sequence[int]) -> list[int]:
        """This rank's part of one step's samples: every ``size``-th of them sorted by length.

        Dealing the sorted samples out like cards gives each rank the same number of samples
        and about the same number of tokens. In one process: all of them, order unchanged."""
        if not self.distributed:
            return list(indices)
        ordered = sorted(indices, key=lambda i: lengths[i])  # stable: the same on every rank
        return ordered[self.rank :: self.size]

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise GptfError(
                f"training.batch_size={batch_size} cannot be shared equally by {self.size} processes",
                hint=f"use a batch size divisible by {self.size}, or another --nproc_per_node",
            )

    # -- talking to the other ranks ------------------------------------------------------------
    def sum_counts(self, *counts: int) -> list[int]:
        """Whole numbers added up over all ranks (one all-reduce); one process: unchanged."""
        if not self.distributed:
            return list(counts)
        return [int(v) for v in self._all_reduce(counts, torch.int64, dist.ReduceOp.SUM)]

    def sum(self, value: float) -> float:
        """A number added up over all ranks (e.g. each rank's part of the batch loss)."""
        if not self.distributed:
            return value
        return float(self._all_reduce([value], torch.float64, dist.ReduceOp.SUM)[0])

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank: how ranks agree to stop together."""
        if not self.distributed:
            return flag
        return bool(self._all_reduce([int(flag)], torch.int64, dist.ReduceOp.MAX)[0])

    def barrier(self) -> None:
        """Wait until every rank has got here."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        elif self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. trains and writes the tokenizer), then the others
        (which then find the file and load it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def _all_reduce(self, values: Sequence[float], dtype: torch.dtype, op: Any) -> list[Any]:
        tensor = torch.tensor(list(values), dtype=dtype, device=self.device)
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()

    # -- the model ----------------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training loop calls it: wrapped in DDP when there are several ranks.

        DDP copies rank 0's weights to every rank once, here, and from then on adds up the
        gradients during each synchronised backward pass."""
        if not self.distributed:
            return model
        on_gpu = self.backend == "nccl"
        wrapped = DDP(model, device_ids=[self.local_rank] if on_gpu else None, **NO_BUFFER_SYNC)
        wrapped.register_comm_hook(state=None, hook=add_gradients)
        return wrapped

    def no_sync(self, wrapped: nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
        """Around a micro-batch's forward and backward: exchange gradients only on the ``last``."""
        if self.distributed and not last:
            return wrapped.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()


def add_gradients(state, bucket):  # type: ignore[no-untyped-def]  (DDP checks the hook's annotations)
    """DDP communication hook: *add* the ranks' gradients (DDP's default averages them).

    DDP hands over gradients in buckets (a few MB of them in one flat tensor, a
    ``dist.GradBucket``) as soon as the backward pass has produced them, so sending overlaps
    with computing the rest. Returns a future of the summed bucket."""
    future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


# ---------------------------------------------------------------------------- starting


def world_from_environment(env: Mapping[str, str] = os.environ) -> World:
    """Read what torchrun told this process; one process (no torchrun, or N=1): ``World()``."""
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    try:
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as exc:
        raise GptfError(f"WORLD_SIZE={size} but RANK/LOCAL_RANK are missing or not numbers ({exc})") from exc
    return World(rank, size, local_rank, int(env.get("LOCAL_WORLD_SIZE", str(size))))


@contextlib.contextmanager
def launched_world(device: str = "auto") -> Iterator[World]:
    """The :class:`World` torchrun started this process in, with its process group running.

    ``device`` (``--device``) picks the backend: nccl for CUDA, gloo for the CPU. On the way
    out the process group is closed. A stop every rank agreed on (:class:`TrainingStopped`:
    Ctrl+C, NaN) is reported by rank 0 alone: the other ranks end quietly with exit code 0,
    so torchrun waits for rank 0 and ends with *its* exit code and message."""
    world = world_from_environment()
    if not world.distributed:
        yield world
        return
    backend = _backend_for(resolve_device(device), world)
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield attrs.evolve(world, backend=backend)
    except TrainingStopped as stop:
        if not isinstance(stop, SaveFailed):  # (a failed write is rank 0's alone: nobody to wait for)
            # every rank stopped at the same step (Ctrl+C, NaN): wait for each other before closing
            # the group, so no rank tears its connections down while another still has collective
            # work in flight (that rank would abort at exit: "terminate called without an active exception")
            dist.barrier()
        if world.is_main:
            raise
    else:
        # the same on a normal end: the other ranks finish while rank 0 still evaluates and saves;
        # a rank that closed its connections first was seen to abort at exit, now and then (so
        # torchrun called a finished run FAILED). If rank 0 failed meanwhile, its group is gone and
        # the barrier fails at once: nothing left to wait for.
        with contextlib.suppress(RuntimeError):  # (DistBackendError is a RuntimeError)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _backend_for(device: torch.device, world: World) -> str:
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise GptfError(
                f"rank {world.rank} wants GPU cuda:{world.local_rank}, but this machine has "
                f"{torch.cuda.device_count()}",
                hint="start at most one process per GPU: --nproc_per_node=<number of GPUs>",
            )
        return "nccl"
    if device.type != "cpu":
        raise GptfError(f"training in several processes works on CPUs and CUDA GPUs, not on {device.type}")
    return "gloo"


def oversubscription_note(world: World, threads: int) -> str | None:
    """A warning when this machine's processes (or this one process) use more threads than it has cores."""
    cores = usable_cores()
    if world.local_size * threads <= cores:
        return None
    total = f"{world.local_size} processes x {threads} threads = {world.local_size * threads}"
    return (
        f"{total if world.local_size > 1 else threads} threads on {cores} core{'s' if cores > 1 else ''}: "
        "they will slow each other down "
        f"(set training.threads={max(cores // world.local_size, 1)})"
    )
