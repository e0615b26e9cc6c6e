"""Which logits predict which label: the targets of a transformers batch, row-aligned
with the model's ``(B, T, V)`` logits.

A causal LM's logits at position t predict the token at t + 1; transformers shifts the
labels inside its loss (``ForCausalLMLoss``: pad with -100 on the right, drop the first
column). Here the same: the targets are ``labels[:, 1:]`` followed by one -100 column,
so that every row of the logits has a target (the last one ignored) and the logits are
used as they are, without a sliced copy of the (N, V) tensor. An encoder-decoder model's
logits predict the labels at the same position (its decoder input is the labels shifted
right), so its targets are the labels. The objectives see ``(B, T)`` targets: unlikelihood
takes its candidates and loss truncation its sequence losses from each row's own sequence.
"""

from typing import Optional

import torch
from torch import Tensor

IGNORE_INDEX = -100  # transformers' label for "no target here"


def causal_from_outputs(outputs) -> Optional[bool]:
    """True for a causal LM's outputs, False for an encoder-decoder's, None if unknown."""
    name = type(outputs).__name__
    if "Seq2SeqLM" in name:
        return False
    if "CausalLM" in name:
        return True
    return None


def aligned_targets(labels: Tensor, causal: bool, ignore_prefix_size: int = 0) -> Tensor:
    """``(B, T)`` targets for the ``(B, T, V)`` logits: shifted left for a causal LM;
    the first ``ignore_prefix_size`` targets of each row set to -100."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be (batch, length), got shape {tuple(labels.shape)}")
    if causal:
        pad = labels.new_full((labels.size(0), 1), IGNORE_INDEX)
        target = torch.cat([labels[:, 1:], pad], dim=1)
    else:
        target = labels
    if ignore_prefix_size > 0:
        target = target.clone()
        target[:, :ignore_prefix_size] = IGNORE_INDEX
    return target


def check_aligned(logits_shape, target: Tensor) -> None:
    """Raise a ValueError unless the logits ``(B, T, V)`` have one row per target."""
    if tuple(logits_shape[:-1]) != tuple(target.shape):
        raise ValueError(
            f"the logits {tuple(logits_shape)} do not match the labels {tuple(target.shape)}: "
            "an encoder-decoder model needs decoder_input_ids made from the labels (use "
            "DataCollatorForSeq2Seq(tokenizer, model=model), or DivgenTrainer, which makes "
            "them as the model would)"
        )


def target_count(target: Tensor) -> Tensor:
    """Non-ignored targets (0-dim, on the targets' device)."""
    return target.ne(IGNORE_INDEX).sum()
