"""The frozen degenerative model of LFD, from checkpoint to log-probabilities.

LFD: Hong et al., "Learning to Diversify Neural Text Generation via Degenerative
Model" (arXiv 2309.12619). Stage 2 trains the main model as a product of experts
with a model trained in stage 1 (``--criterion truncated_ce``) and then frozen.

This object is the only place that knows how that model lives:

- it is checked (file, kind of model, dictionaries) when the criterion that needs
  it is built, which fairseq-train does before loading any data;
- it is loaded lazily, on the first training or validation step that needs it,
  never when the task or the main model is built (fairseq-generate and
  fairseq-validate rebuild the task from the saved config, where the file may be
  gone);
- it is held by the task, a plain Python object, so it sits outside every
  nn.Module the trainer sees: DDP does not wrap it, checkpoints do not contain it,
  ``criterion.train()`` does not reach it, and the optimizer never sees it;
- it runs in eval mode, with ``requires_grad_(False)``, under ``torch.no_grad()``,
  on the main model's device and dtype (``--fp16`` / ``--memory-efficient-fp16``
  halve it like the main model; under ``--amp`` both stay fp32 and autocast applies).
"""
import logging
import os
from typing import Optional

import torch
from fairseq import checkpoint_utils, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import open_dict

logger = logging.getLogger(__name__)

FLAG = "--degenerative-checkpoint"


class DegenerativeModelError(ValueError):
    """A problem with the degenerative checkpoint, reported before training starts."""


def first_difference(ours, theirs) -> Optional[int]:
    """Index of the first position where two symbol lists differ (None if equal)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return i
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def _check_same_dictionary(what, task_dict, degen_dict, path):
    i = first_difference(task_dict.symbols, degen_dict.symbols)
    if i is None:
        return
    ours = task_dict.symbols[i] if i < len(task_dict) else "<end of dictionary>"
    theirs = degen_dict.symbols[i] if i < len(degen_dict) else "<end of dictionary>"
    raise DegenerativeModelError(
        f"{FLAG} {path}: its {what} dictionary differs from the task's at symbol "
        f"#{i}: {theirs!r} in the checkpoint's, {ours!r} in the task's (sizes "
        f"{len(degen_dict)} and {len(task_dict)}). Train the degenerative model on "
        "data binarized with the same dictionaries (fairseq-preprocess --srcdict/"
        "--tgtdict, or the same data directory)."
    )


class DegenerativeModel:
    """Owns the frozen degenerative model: check, lazy load, placement, no-grad forward."""

    def __init__(self, path: Optional[str], task, encoder_decoder: bool):
        self.path = path
        self.task = task
        self.encoder_decoder = encoder_decoder
        self.model = None
        self._state = None  # the checkpoint read by check(), kept until load

    @property
    def loaded(self) -> bool:
        """Whether the model has been built (on first use)."""
        return self.model is not None

    def check(self) -> None:
        """Read the checkpoint and check it against the task; raise a clear error if unusable."""
        if not self.path:
            raise DegenerativeModelError(
                f"{FLAG} is required with --criterion lfd_poe: pass the checkpoint "
                "of the degenerative model trained in stage 1 (--criterion truncated_ce)."
            )
        if not os.path.isfile(self.path):
            raise DegenerativeModelError(
                f"{FLAG} {self.path}: no such file. Pass the checkpoint_*.pt written "
                "by the stage-1 fairseq-train run (--criterion truncated_ce)."
            )
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(self.path)
        except Exception as e:  # any unreadable file: report it with the flag
            raise DegenerativeModelError(
                f"{FLAG} {self.path}: not a readable fairseq checkpoint ({type(e).__name__}: {e})"
            ) from e
        if not isinstance(state, dict) or "model" not in state:
            raise DegenerativeModelError(
                f"{FLAG} {self.path}: not a fairseq checkpoint (no 'model' entry)."
            )
        has_encoder = any(k.startswith("encoder.") for k in state["model"])
        if has_encoder != self.encoder_decoder:
            kind = "an encoder-decoder" if has_encoder else "a decoder-only"
            wanted = (
                "--task translation_lfd needs an encoder-decoder model"
                if self.encoder_decoder
                else "--task language_modeling_lfd needs a decoder-only language model"
            )
            raise DegenerativeModelError(
                f"{FLAG} {self.path}: holds {kind} model, but {wanted} trained on "
                "the same data."
            )
        own_task = self._setup_own_task(state)
        _check_same_dictionary(
            "target", self.task.target_dictionary, own_task.target_dictionary, self.path
        )
        if self.encoder_decoder:
            _check_same_dictionary(
                "source", self.task.source_dictionary, own_task.source_dictionary, self.path
            )
        self._state = (state, own_task)

    def _setup_own_task(self, state):
        """The task the degenerative model was trained with, for its dictionaries.

        Its saved data directory is used when it still exists; otherwise (a
        checkpoint copied from another machine) the main task's data directory.
        """
        cfg = state.get("cfg")
        if cfg is None:
            cfg = convert_namespace_to_omegaconf(state["args"])
            state["cfg"] = cfg
        saved_data = str(cfg.task.get("data", "") or "")
        first_dir = saved_data.split(os.pathsep)[0]
        if not first_dir or not os.path.isdir(first_dir):
            with open_dict(cfg):
                cfg.task.data = self.task_data_dir()
        try:
            return tasks.setup_task(cfg.task, from_checkpoint=True)
        except Exception as e:
            raise DegenerativeModelError(
                f"{FLAG} {self.path}: cannot rebuild its task {cfg.task.get('_name')!r} "
                f"({type(e).__name__}: {e})"
            ) from e

    def task_data_dir(self) -> str:
        """The main task's data directory."""
        cfg = getattr(self.task, "cfg", None) or getattr(self.task, "args", None)
        return str(cfg.data)

    def load(self) -> None:
        """Build the frozen model from the checked checkpoint (on the CPU, fp32)."""
        if self._state is None:
            self.check()
        state, own_task = self._state
        models, _cfg, _task = checkpoint_utils.load_model_ensemble_and_task(
            [self.path], task=own_task, state=state
        )
        self._state = None
        model = models[0]
        model.requires_grad_(False)
        model.eval()
        self.model = model
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(
            f"loaded degenerative model from {self.path} "
            f"({model.__class__.__name__}, {n_params:,} parameters, frozen)"
        )

    def _place_like(self, main_model) -> None:
        ref = next(main_model.parameters())
        mine = next(self.model.parameters())
        if mine.device != ref.device or mine.dtype != ref.dtype:
            self.model.to(device=ref.device, dtype=ref.dtype)

    def logits(self, main_model, sample) -> torch.Tensor:
        """(B, T, V) output scores of the degenerative model on ``sample``, in the
        main model's dtype; a product of experts needs nothing else (its log-softmax
        differs by a per-token constant)."""
        if self.model is None:
            self.load()
        self._place_like(main_model)
        with torch.no_grad():
            return self.model(**sample["net_input"])[0]
