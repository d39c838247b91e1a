"""A faithful, deliberately naive re-implementation of the original release's training.

The first GPT_teacher-3.37M-cn release (the one the 3.37M figure comes from) trained like
this, and the benchmarks compare gptf against it *in the same process*, so the machine's
speed cancels out of the ratio. Written from its description, not copied; what it does:

* every row is right-padded to ``seq_len`` = 128 tokens, although rows average ~44-55;
* attention is written out: scores, a (T, T) lower-triangular float mask built in every
  forward, ``masked_fill(mask == 0, -inf)``, softmax, weighted sum;
* RoPE recomputes its angles (``pow``, ``cos``, ``sin``) in every layer of every forward;
* RMSNorm as ``x / (‖x‖·d^-½ + eps) · w``; SiLU MLP; biases; tied embedding and output;
* PyTorch's default initialisation (the embedding is N(0, 1), so training starts at loss ~14);
* the prompt prefix is encoded with special tokens on both sides (``<bos> … <eos>``), the
  targets are ``ids[1:] + [<eos>]``, the loss covers only the completion;
* fp32, AdamW(lr 3e-4, weight decay 0.01 on every tensor), 5 warm-up steps then cosine to 0,
  one optimizer step = 4 micro-batches of 4 from a shuffled loader, each micro-batch's
  *mean* loss back-propagated (so the step's gradient is the sum of 4 means), clip 1.0.

Only what the speed and time-to-quality benchmarks need is here; it is not a gptf plugin.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from gptf.data import IGNORE, Sample
from gptf.interfaces import Tokenizer

PREFIX_TEMPLATE = "用户:{prompt}\n助手:"


@attrs.frozen
class NaiveConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    seq_len: int = 128
    batch_size: int = 16
    micro_batch: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 5
    max_steps: int = 2000
    seed: int = 42


# ------------------------------------------------------------------------- model


class NaiveRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.norm(dim=-1, keepdim=True) * (x.shape[-1] ** -0.5)
        return x / (rms + self.eps) * self.weight


def naive_rope(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the two halves of q and k; the angles are recomputed on every call."""
    T, D = q.shape[-2], q.shape[-1]
    half = D // 2
    rates = torch.pow(10000, -2 * torch.arange(half) / D)  # (D/2,)
    theta = torch.arange(T).unsqueeze(1) * rates  # (T, D/2)
    cos, sin = torch.cos(theta), torch.sin(theta)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    return rotate(q), rotate(k)


class NaiveAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q, k = naive_rope(q, k)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, T, T)
        scores = scores.masked_fill(mask == 0, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NaiveBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = NaiveRMSNorm(n_embd), NaiveRMSNorm(n_embd)
        self.attn = NaiveAttention(n_embd, n_head)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.SiLU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class NaiveGPT(nn.Module):
    """Same shape and parameter count as gptf's teacher model (3,368,192 with V=824)."""

    def __init__(self, config: NaiveConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)  # default init: N(0, 1)
        self.blocks = nn.ModuleList(NaiveBlock(config.n_embd, config.n_head) for _ in range(config.n_layer))
        self.norm = NaiveRMSNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        mask = torch.tril(torch.ones(T, T)).unsqueeze(0).unsqueeze(0)  # rebuilt every call
        x = self.tok_emb(ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


# -------------------------------------------------------------------------- data


@attrs.frozen
class NaiveExample:
    ids: list[int]
    targets: list[int]  # as trained: ids[1:] + [<eos>], prompt masked
    answer_targets: list[int]  # the same without the extra final <eos> -> <eos> target


def encode_original(tokenizer: Tokenizer, sample: Sample, seq_len: int) -> NaiveExample:
    prefix = [tokenizer.bos_id, *tokenizer.encode(PREFIX_TEMPLATE.format(prompt=sample.prompt)), tokenizer.eos_id]
    ids = (prefix + tokenizer.encode(sample.completion) + [tokenizer.eos_id])[:seq_len]
    targets = [*ids[1:], tokenizer.eos_id]
    hidden = min(len(prefix) - 1, len(targets))
    targets[:hidden] = [IGNORE] * hidden
    answer_targets = [*targets[:-1], IGNORE]
    return NaiveExample(ids, targets, answer_targets)


def pad_to_seq_len(rows: Sequence[list[int]], seq_len: int, fill: int) -> torch.Tensor:
    return torch.tensor([row + [fill] * (seq_len - len(row)) for row in rows], dtype=torch.long)


def shuffled_micro_batches(n: int, micro_batch: int, seed: int) -> Iterator[list[int]]:
    """An endless loader: a fresh shuffle every epoch, the last micro-batch may be short."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, micro_batch):
            yield order[start : start + micro_batch]


# ---------------------------------------------------------------------- training


class NaiveTrainer:
    """The original loop: ``batch_size / micro_batch`` backward passes, clip, step."""

    def __init__(self, config: NaiveConfig, train: Sequence[NaiveExample], pad_id: int) -> None:
        torch.manual_seed(config.seed)
        self.config = config
        self.model = NaiveGPT(config)
        self.train_examples = list(train)
        self.pad_id = pad_id
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.loader = shuffled_micro_batches(len(self.train_examples), config.micro_batch, config.seed)
        self.step = 0
        self.real_tokens = 0  # non-padding tokens fed so far

    def lr_factor(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return step / max(1, c.warmup_steps)
        progress = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))

    def train_step(self) -> float:
        c = self.config
        self.model.train()
        loss = torch.zeros(())
        for _ in range(c.batch_size // c.micro_batch):
            chunk = [self.train_examples[i] for i in next(self.loader)]
            x = pad_to_seq_len([e.ids for e in chunk], c.seq_len, self.pad_id)
            y = pad_to_seq_len([e.targets for e in chunk], c.seq_len, IGNORE)
            logits = self.model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=IGNORE)
            loss.backward()
            self.real_tokens += sum(len(e.ids) for e in chunk)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def answer_loss(self, examples: Sequence[NaiveExample], batch_size: int = 32) -> float:
        """Mean cross-entropy per answer token (completion + its <eos>), as gptf measures it."""
        self.model.eval()
        total, count = 0.0, 0
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            x = pad_to_seq_len([e.ids for e in chunk], self.config.seq_len, self.pad_id)
            y = pad_to_seq_len([e.answer_targets for e in chunk], self.config.seq_len, IGNORE)
            logits = self.model(x)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
            count += int((y != IGNORE).sum())
        self.model.train()
        return total / max(count, 1)

    @torch.no_grad()
    def original_val_loss(self, examples: Sequence[NaiveExample]) -> float:
        """The original's own figure: the mean over micro-batches of each one's mean loss."""
        self.model.eval()
        losses = []
        mb = self.config.micro_batch
        for start in range(0, len(examples), mb):
            chunk = examples[start : start + mb]
            x = pad_to_seq_len([e.ids for e in chunk], self.config.seq_len, self.pad_id)
            y = pad_to_seq_len([e.targets for e in chunk], self.config.seq_len, IGNORE)
            logits = self.model(x)
            losses.append(float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)))
        self.model.train()
        return sum(losses) / max(1, len(losses))


def naive_generate(model: NaiveGPT, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    """Greedy decoding as the original did it: the whole sequence is recomputed for every token.

    Returns the new tokens and the seconds until the first one."""
    ids = list(prompt_ids)
    started = time.perf_counter()
    first_token_s = 0.0
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = model(torch.tensor([ids]))
            ids.append(int(torch.argmax(logits[0, -1])))
            first_token_s = first_token_s or time.perf_counter() - started
    return ids[len(prompt_ids) :], first_token_s
