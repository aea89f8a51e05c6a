"""The peer, Hugging Face PEFT prompt tuning, set up one way for every benchmark (the step
benchmark, the side-by-side runs, the whole-run and evaluation tables): the same model
wrapping, prompt init, losses, optimizer step and evaluation, so that their ratios measure the
same PEFT on the same day.

Two ways to run it:
  as users write it  `labels=` (decoder-only: the verbalizer appended, logits at every
                     position; RoBERTa: the MLM head at every position, one picked).
  at its best        the head only where the loss reads (decoder-only: `logits_to_keep` = the
                     rows' last positions; RoBERTa: the encoder through PEFT, the MLM head at
                     the mask only), plus what a PEFT user can switch on (`Speedups`):
                     `torch.compile` where it helps (the benchmarks measure both and keep the
                     faster), bf16 autocast where the CPU has bf16 matmuls, the model on the
                     GPU when there is one, and `torch.inference_mode` for evaluation.

Batches are the library's (right-padded numpy dicts); each is cut to its longest row (exact
dynamic padding, as PyTorch users pad) before PEFT sees it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

FAMILIES = ("causal", "t5", "mlm")


@dataclasses.dataclass(frozen=True)
class Speedups:
    """What a PEFT user can switch on. `detect()` gives what this machine supports."""

    compile: bool = False  # torch.compile of the model
    bf16_autocast: bool = False  # torch.autocast(dtype=bfloat16) around forward and loss
    device: str = "cpu"  # "cuda" moves the model (and batches) to the GPU

    @staticmethod
    def detect(compile: bool = False) -> Speedups:
        """The GPU if there is one; bf16 autocast where the device has bf16 matmuls (a CUDA
        GPU of compute capability 8 or more, a CPU with AVX512-BF16 or AMX)."""
        import torch

        if torch.cuda.is_available():
            return Speedups(compile, torch.cuda.is_bf16_supported(), "cuda")
        return Speedups(compile, cpu_has_bf16(), "cpu")

    def label(self) -> str:
        parts = [self.device] + (["torch.compile"] if self.compile else []) + (
            ["bf16 autocast"] if self.bf16_autocast else [])
        return ", ".join(parts)


def cpu_has_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16 flags)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def exact(batch: dict) -> dict:
    """The batch as wide as its longest row (PyTorch users' dynamic padding)."""
    width = int(np.asarray(batch["input_mask"]).sum(1).max())
    return {k: (v[:, :width] if k in ("inputs", "input_mask") else v) for k, v in batch.items()}


def wrap(base, family: str, prompt_length: int, init_prompt, *, best: bool,
         speedups: Speedups = Speedups()):
    """PEFT prompt tuning of `base` with `prompt_length` virtual tokens set to `init_prompt`
    ([P, H], e.g. the embedding module's output for some ids); the model on the speedups'
    device. For RoBERTa at its best only the encoder is wrapped (the head is applied at the
    mask by the loss). One prompt before the encoder's input (Lester et al.; PEFT's seq2seq
    default also prepends one to the decoder's).

    Returns:
      (the PEFT model, its trainable prompt weight).
    """
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")
    base.to(speedups.device)
    task = {"causal": TaskType.CAUSAL_LM, "t5": TaskType.SEQ_2_SEQ_LM,
            "mlm": TaskType.FEATURE_EXTRACTION}[family]
    wrapped = base.roberta if (family == "mlm" and best) else base
    model = get_peft_model(wrapped, PromptTuningConfig(
        task_type=task, num_virtual_tokens=prompt_length, num_transformer_submodules=1))
    weight = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(torch.as_tensor(init_prompt, dtype=weight.dtype).to(weight.device))
    return model, weight


def users_loss(model, batch: dict):
    """PEFT's causal-LM loss as users write it on one of our (unpacked) batches: each row's
    verbalizer token appended after its last real token, `labels=` on it alone."""
    import torch

    device = next(model.parameters()).device
    inputs = torch.tensor(batch["inputs"]).long()
    mask = torch.tensor(batch["input_mask"]).long()
    target = torch.tensor(batch["targets"][:, 0]).long()
    lengths, rows = mask.sum(1), torch.arange(len(inputs))
    seq = torch.cat([inputs, torch.zeros_like(inputs[:, :1])], 1)
    seq_mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
    seq[rows, lengths], seq_mask[rows, lengths] = target, 1
    labels = torch.full_like(seq, -100)
    labels[rows, lengths] = target
    return model(input_ids=seq.to(device), attention_mask=seq_mask.to(device),
                 labels=labels.to(device)).loss


def loss(model, base, batch: dict, family: str, prompt_length: int, *, best: bool):
    """The training loss of one batch (cut to its longest row first)."""
    import torch

    ce = torch.nn.functional.cross_entropy
    b = exact(batch)
    device = next(model.parameters()).device
    inputs = torch.tensor(b["inputs"]).long().to(device)
    mask = torch.tensor(b["input_mask"]).long().to(device)
    rows = torch.arange(len(inputs), device=device)
    if family == "t5":  # `labels=` computes only the target positions: as written is best
        return model(input_ids=inputs, attention_mask=mask,
                     labels=torch.tensor(b["targets"]).long().to(device)).loss
    target = torch.tensor(b["targets"][:, 0]).long().to(device)
    if family == "mlm":
        at = torch.tensor(b["target_position"]).long().to(device) + prompt_length
        if best:
            hidden = model(input_ids=inputs, attention_mask=mask).last_hidden_state
            logits = base.lm_head(hidden[rows, at])
        else:
            logits = model(input_ids=inputs, attention_mask=mask).logits[rows, at]
        return ce(logits.float(), target)
    if not best:
        return users_loss(model, b)
    last = prompt_length + mask.sum(1) - 1  # [B] position of each row's last real token
    keep, where = torch.unique(last, return_inverse=True)
    logits = model(input_ids=inputs, attention_mask=mask, logits_to_keep=keep).logits
    return ce(logits[rows, where].float(), target)


def _autocast(speedups: Speedups):
    import contextlib

    import torch

    if not speedups.bf16_autocast:
        return contextlib.nullcontext()
    return torch.autocast(speedups.device, dtype=torch.bfloat16)


def trainer(model, base, weight, family: str, prompt_length: int, *, best: bool, lr: float,
            weight_decay: float, speedups: Speedups = Speedups()):
    """`one(batch, lr=None) -> loss` (a detached tensor): one AdamW step of the prompt, with the
    speedups on. `lr` sets the step's rate (a schedule); None keeps it."""
    import torch

    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay)
    model.train()
    forward = model
    if speedups.compile:  # dynamic: exact padding gives every batch its own width
        forward = torch.compile(model, dynamic=True)

    def one(batch, lr=None):
        if lr is not None:
            optimizer.param_groups[0]["lr"] = lr
        with _autocast(speedups):
            value = loss(forward, base, batch, family, prompt_length, best=best)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        return value.detach()

    return one


def rank_predictions(model, batches, candidates: np.ndarray, prompt_length: int, *,
                     best: bool, speedups: Speedups = Speedups()):
    """Rank classification of a causal LM between single-token candidates ([C] ids), batched:
    yields (predictions, batch) per batch. At its best: `torch.inference_mode`, the batch cut
    to its longest row, and the head at each row's last position only; as users write it:
    `torch.no_grad` and the logits of every position.

    Raises:
      ValueError: a candidate of more than one token (not scored here).
    """
    import torch

    candidates = np.asarray(candidates)
    if candidates.ndim != 1:
        raise ValueError(f"single-token candidates only, got shape {candidates.shape}")
    device = next(model.parameters()).device
    cand = torch.tensor(candidates).long().to(device)
    model.eval()
    guard = torch.inference_mode() if best else torch.no_grad()
    with guard, _autocast(speedups if best else Speedups()):
        for batch in batches:
            b = exact(batch) if best else batch
            inputs = torch.tensor(b["inputs"]).long().to(device)
            mask = torch.tensor(b["input_mask"]).long().to(device)
            rows = torch.arange(len(inputs), device=device)
            last = prompt_length + mask.sum(1) - 1
            if best:
                keep, where = torch.unique(last, return_inverse=True)
                logits = model(input_ids=inputs, attention_mask=mask,
                               logits_to_keep=keep).logits[rows, where]
            else:
                logits = model(input_ids=inputs, attention_mask=mask).logits[rows, last]
            yield logits[:, cand].float().argmax(-1).cpu().numpy(), batch
