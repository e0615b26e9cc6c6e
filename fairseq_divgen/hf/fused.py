"""The fused output path for transformers models: the loss takes the features that
enter the model's ``lm_head`` and the head's weight (a ``losses.Projection``), so the
(tokens, vocabulary) logits, their softmax and their gradient never exist at once
(docs/fused_output.md; the same chunked code as fairseq's ``--fused-output``).

How the features are taken: for one forward, the head's ``forward`` is replaced by one
that keeps its input and returns an empty ``(..., 0)`` tensor. The model runs through
whatever wraps it (DDP included), so everything but the head runs as usual; the empty
output's autograd node takes the head's weight and bias as inputs, so DDP's search for
unused parameters (``find_unused_parameters``) still reaches them, as fairseq's fused
path ties its output layer into the features (``criterions/loss_inputs.py``).

Covered: a model whose output embeddings (``get_output_embeddings()``) are a plain
``torch.nn.Linear`` called once per forward, and whose logits are exactly that call's
output (GPT-2, Llama-style causal LMs, T5: whatever is done to the features before the
head is kept). A model whose logits are changed after the head (BART's
``final_logits_bias``, soft-capping, a logit scale) or whose head is something else is
not: it trains on its full logits, with one warning naming the model and the reason.
The check runs once per model, on one sequence of the first batch, with the random
number generators restored afterwards: the head's output is made a leaf of the autograd
graph, and the logits must be that leaf or dtype casts of it (mixed precision).
"""

import logging
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..losses import Projection
from ..losses.chunked import autocast_dtype

logger = logging.getLogger(__name__)


class _EmptyLogits(torch.autograd.Function):
    """An empty ``(..., 0)`` tensor whose node has the features and the head's weight and
    bias as inputs (and gives them no gradient of its own)."""

    @staticmethod
    def forward(ctx, h, weight, bias):
        return h.new_empty(h.shape[:-1] + (0,))

    @staticmethod
    def backward(ctx, grad):
        return None, None, None


def output_layer(model: nn.Module) -> Optional[nn.Module]:
    """The output embeddings (``lm_head``) of a transformers model, or None."""
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


class _Capture:
    """For one forward of ``model``: the head's inputs, and its outputs (``keep``) or an
    empty tensor in their place (``fuse``)."""

    def __init__(self, head: nn.Module, fuse: bool):
        self.head, self.fuse = head, fuse
        self.inputs, self.outputs = [], []
        self.autocast = None

    def forward(self, h):
        self.inputs.append(h)
        self.autocast = autocast_dtype(h.device.type)
        if self.fuse:
            return _EmptyLogits.apply(h, self.head.weight, self.head.bias)
        # a leaf: whatever the model does to the head's output is recorded from here on
        out = nn.Linear.forward(self.head, h).detach().requires_grad_()
        self.outputs.append(out)
        return out

    def __enter__(self):
        self._saved = self.head.__dict__.get("forward")
        self.head.forward = self.forward  # an instance attribute: nn.Module.__call__ finds it
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            del self.head.forward
        else:
            self.head.forward = self._saved


def _one_sequence(inputs: Dict[str, object], batch: int) -> Dict[str, object]:
    """The inputs of the first sequence: tensors whose first dimension is the batch."""
    return {
        k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 and v.size(0) == batch else v)
        for k, v in inputs.items()
    }


def uncovered_reason(model: nn.Module, inputs: Dict[str, object], batch: int) -> Optional[str]:
    """Why the fused path cannot run ``model`` exactly (None if it can), from its head
    and one no-grad forward of one sequence of ``inputs``."""
    head = output_layer(model)
    if head is None:
        return "it has no output embeddings (get_output_embeddings() is None)"
    if not isinstance(head, nn.Linear) or type(head).forward is not nn.Linear.forward:
        return f"its output embeddings are a {type(head).__name__}, not a plain torch.nn.Linear"
    devices = [inputs[k].device for k in inputs if torch.is_tensor(inputs[k])]
    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.enable_grad(), _Capture(head, False) as cap:
        outputs = model(**_one_sequence(inputs, batch))
    if len(cap.outputs) != 1:
        return f"its forward calls the lm_head {len(cap.outputs)} times, not once"
    if not _only_casts(outputs["logits"], cap.outputs[0]):
        return (
            "its logits are changed after the lm_head (e.g. BART's final_logits_bias, "
            "soft-capping or a logit scale)"
        )
    return None


def _only_casts(logits: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether ``logits`` is the head's output ``out`` (a leaf), or only dtype casts of it
    (accelerate's mixed precision returns fp32 outputs): no other operation in between."""
    if logits.shape != out.shape:
        return False
    if logits is out:
        return True
    node = logits.grad_fn
    while node is not None and type(node).__name__ == "ToCopyBackward0":
        parents = [n for n, _ in node.next_functions if n is not None]
        node = parents[0] if len(parents) == 1 else None
    return type(node).__name__ == "AccumulateGrad" and node.variable is out


class FusedOutput:
    """The fused path of one trainer: each model's verdict (checked once, warned once),
    and a batch's forward as ``(outputs, Projection)``."""

    def __init__(self):
        self._reasons: Dict[int, Optional[str]] = {}
        self._warned = set()

    def covers(self, model: nn.Module, inputs, batch: int, what: str = "the model") -> bool:
        """Whether ``model`` (unwrapped) runs fused; warns once per model if not."""
        key = id(model)
        if key not in self._reasons:
            self._reasons[key] = uncovered_reason(model, inputs, batch)
        reason = self._reasons[key]
        if reason is not None and key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "fused_output: %s (%s) trains on its full logits: %s",
                what,
                type(model).__name__,
                reason,
            )
        return reason is None

    @staticmethod
    def forward(model: nn.Module, head: nn.Module, inputs):
        """Run ``model`` (wrapped or not) with ``head`` (its unwrapped lm_head) replaced:
        ``(outputs, projection, dtype)``, the outputs (their logits empty), the features with
        the head's parameters, and the dtype autocast gave the head (None without autocast:
        accelerate's mixed precision wraps the model's forward only, and the loss should
        project in the dtype the head would have used)."""
        with _Capture(head, fuse=True) as cap:
            outputs = model(**inputs)
        if len(cap.inputs) != 1:
            raise RuntimeError(f"the lm_head ran {len(cap.inputs)} times in one forward")
        h = cap.inputs[0]
        projection = Projection(h.reshape(-1, h.size(-1)), head.weight, head.bias)
        return outputs, projection, cap.autocast


def projection_of(frozen: nn.Module, inputs) -> Projection:
    """The features and head of a frozen model (no gradient), for ``losses.FrozenLogits``."""
    head = output_layer(frozen)
    with torch.no_grad():
        _, projection, _ = FusedOutput.forward(frozen, head, inputs)
    return projection
