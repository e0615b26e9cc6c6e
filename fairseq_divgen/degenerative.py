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
  halve it like the main model; under ``--amp`` both stay fp32 and autocast applies);
- every step, whether its outputs are finite is recorded on the device (no host
  sync) and read back without waiting (``losses/finite.py``: at once on the CPU, at a
  later step on a GPU); a non-finite output (weights fine in fp32 can
  overflow in half precision, and no loss scale can fix the forward of a frozen model)
  stops training with an error naming the checkpoint, instead of fairseq's later
  "Minimum loss scale reached".
"""

import hashlib
import logging
import os
from typing import Dict, Optional

import torch
from fairseq import checkpoint_utils, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import open_dict

from .losses import FrozenLogits, Projection
from .losses.finite import FiniteWatch
from .output_layer import output_projection, uncovered_reason

logger = logging.getLogger(__name__)

FLAG = "--degenerative-checkpoint"


STATE_KEY = "lfd_degenerative_checkpoint"  # its fingerprint in stage 2's task state


def _load_failure(error: Exception) -> str:
    """What went wrong reading a file as a checkpoint, without torch's advice to turn its
    safe loading off (never the remedy for a file that should be a fairseq checkpoint)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "weights_only" in str(error) or "Unsupported global" in str(error):
        return (
            "it is not a checkpoint written by fairseq-train, or it is damaged: torch's "
            "safe loader refused it"
        )
    return f"{type(error).__name__}: {first}"[:300]


class DegenerativeModelError(ValueError):
    """A problem with the degenerative checkpoint, reported before training starts."""


REMEDY = (
    "Train the degenerative model on data binarized with the same dictionaries "
    "(fairseq-preprocess --srcdict/--tgtdict, or the same data directory)."
)


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
        f"{len(degen_dict)} and {len(task_dict)}). {REMEDY}"
    )


def vocabulary_rows(model_state: Dict[str, torch.Tensor], side: str) -> Dict[str, int]:
    """Rows of the vocabulary-sized matrices of one side (``encoder``/``decoder``)."""
    keys = [f"{side}.embed_tokens.weight"]
    if side == "decoder":
        keys.append("decoder.output_projection.weight")
    return {k: model_state[k].shape[0] for k in keys if k in model_state}


class DegenerativeModel:
    """Owns the frozen degenerative model: check, lazy load, placement, no-grad forward."""

    def __init__(self, path: Optional[str], task, encoder_decoder: bool):
        self.path = path
        self.task = task
        self.encoder_decoder = encoder_decoder
        self.model = None
        self._state = None  # what check() read and loading needs (weights, config)
        self._finite = FiniteWatch()
        self._uncovered = None  # why the fused path cannot make its logits (set by load)
        self._fingerprint = None
        self._warned_unfused = False

    @property
    def loaded(self) -> bool:
        """Whether the model has been built (on first use)."""
        return self.model is not None

    def _error(self, message: str) -> DegenerativeModelError:
        return DegenerativeModelError(f"{FLAG} {self.path}: {message}")

    def check_save_dir(self, save_dir: Optional[str], restore_file: Optional[str]) -> None:
        """Refuse a ``--save-dir`` where fairseq would write over the degenerative
        checkpoint (or resume from stage 1's own ``checkpoint_last.pt``), and warn when
        a stage-2 run resumes with another degenerative model than it began with."""
        if not (self.path and save_dir):
            return
        here = os.path.realpath(self.path)
        name = os.path.basename(here)
        written = name.startswith("checkpoint") or name == "crash.pt"
        if written and os.path.dirname(here) == os.path.realpath(save_dir):
            raise self._error(
                f"is in --save-dir {save_dir}, where stage 2 writes its own checkpoints "
                f"(checkpoint_last.pt, checkpoint_best.pt, ...) and resumes from them: it "
                "would train the main model from stage 1's checkpoint and overwrite it. "
                "Give stage 2 a --save-dir of its own, e.g. checkpoints/lfd."
            )
        restore = restore_file or "checkpoint_last.pt"
        if restore == "checkpoint_last.pt":
            restore = os.path.join(save_dir, restore)
        if os.path.isfile(restore):
            self._compare_with_resumed(restore)

    def _compare_with_resumed(self, restore: str) -> None:
        """Warn if the checkpoint stage 2 resumes from was trained with another
        degenerative checkpoint (another path, or the same path with other contents)."""
        try:
            state = torch.load(restore, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # not ours to judge: fairseq reports an unreadable restore file
            return
        before = (state.get("task_state") or {}).get(STATE_KEY)
        if not before:
            return
        now = self.fingerprint()
        if before != now:
            logger.warning(
                f"{restore} was trained with {FLAG} {before['path']} (sha256 "
                f"{before['sha256'][:12]}), this run uses {now['path']} (sha256 "
                f"{now['sha256'][:12]}): the resumed main model continues with another "
                "degenerative model. Pass the original checkpoint to continue the same run."
            )

    def fingerprint(self) -> Dict[str, str]:
        """The degenerative checkpoint's real path and the sha256 of its bytes (kept in
        stage 2's checkpoints, so that a resumed run can tell whether it changed)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self._fingerprint = {"path": os.path.realpath(self.path), "sha256": digest.hexdigest()}
        return self._fingerprint

    def check(self) -> None:
        """Read the checkpoint and check it against the task; raise a clear error if unusable.

        Everything is checked from what the checkpoint itself holds (kind of model,
        vocabulary sizes of its embedding and output matrices, adaptive softmax,
        translation direction), and symbol by symbol against its own dictionaries
        when its stage-1 data directory is still there. Only the weights and the
        configuration are kept for loading (not the optimizer state).
        """
        if not self.path:
            raise DegenerativeModelError(
                f"{FLAG} is required with --criterion lfd_poe: pass the checkpoint "
                "of the degenerative model trained in stage 1 (--criterion truncated_ce)."
            )
        if os.path.isdir(self.path):
            found = sorted(f for f in os.listdir(self.path) if f.endswith(".pt"))
            hint = f" (it holds {', '.join(found[:4])})" if found else ""
            raise self._error(
                f"is a directory{hint}. Pass one checkpoint file from it, e.g. "
                f"{os.path.join(self.path, found[0] if found else 'checkpoint_best.pt')}."
            )
        if not os.path.isfile(self.path):
            raise self._error(
                "no such file. Pass the checkpoint_*.pt written by the stage-1 "
                "fairseq-train run (--criterion truncated_ce)."
            )
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(self.path)
        except Exception as e:  # any unreadable file: report it with the flag
            raise self._error(f"not a readable fairseq checkpoint ({_load_failure(e)})") from e
        if not isinstance(state, dict) or "model" not in state:
            raise self._error("not a fairseq checkpoint (no 'model' entry).")
        weights = state["model"]
        has_encoder = any(k.startswith("encoder.") for k in weights)
        if has_encoder != self.encoder_decoder:
            kind = "an encoder-decoder" if has_encoder else "a decoder-only"
            wanted = (
                "--task translation_lfd needs an encoder-decoder model"
                if self.encoder_decoder
                else "--task language_modeling_lfd needs a decoder-only language model"
            )
            raise self._error(f"holds {kind} model, but {wanted} trained on the same data.")
        if any(k.startswith("decoder.adaptive_softmax.") for k in weights):
            raise self._error(
                "the model has an adaptive softmax (--adaptive-softmax-cutoff); the product "
                "of experts needs full-vocabulary logits. Train the degenerative model "
                "without an adaptive softmax."
            )
        cfg = state.get("cfg")
        if cfg is None:
            cfg = convert_namespace_to_omegaconf(state["args"])
        self._check_sizes(weights)
        self._check_direction(cfg)
        own_task, own_data = self._setup_own_task(cfg)
        if own_data:
            _check_same_dictionary(
                "target", self.task.target_dictionary, own_task.target_dictionary, self.path
            )
            if self.encoder_decoder:
                _check_same_dictionary(
                    "source", self.task.source_dictionary, own_task.source_dictionary, self.path
                )
        # Only what loading needs: no optimizer state, no meters.
        self._state = ({"args": None, "cfg": cfg, "model": weights}, own_task)

    def _check_sizes(self, weights) -> None:
        sides = [("decoder", "target", self.task.target_dictionary)]
        if self.encoder_decoder:
            sides.append(("encoder", "source", self.task.source_dictionary))
        for side, what, dictionary in sides:
            for key, rows in vocabulary_rows(weights, side).items():
                if rows != len(dictionary):
                    raise self._error(
                        f"its {key} has {rows} rows, but the task's {what} dictionary "
                        f"has {len(dictionary)} symbols: the degenerative model was "
                        f"trained with another dictionary. {REMEDY}"
                    )

    def _check_direction(self, cfg) -> None:
        if not self.encoder_decoder:
            return
        saved = (cfg.task.get("source_lang"), cfg.task.get("target_lang"))
        ours = (self.task.cfg.source_lang, self.task.cfg.target_lang)
        if None not in saved and None not in ours and tuple(saved) != tuple(ours):
            raise self._error(
                f"it translates {saved[0]}->{saved[1]}, the task {ours[0]}->{ours[1]} "
                "(--source-lang/--target-lang). Train the degenerative model in the "
                "same direction."
            )

    def _setup_own_task(self, cfg):
        """The task the degenerative model was trained with, and whether its own data
        directory (with its own dictionaries) was found.

        A checkpoint copied from another machine names a data directory that is not
        here: then the main task's data directory stands in (a warning says so), and
        only sizes and direction could be checked, not the symbols themselves.
        """
        saved_data = str(cfg.task.get("data", "") or "")
        first_dir = saved_data.split(os.pathsep)[0]
        own_data = bool(first_dir) and os.path.isdir(first_dir)
        if not own_data:
            logger.warning(
                f"{FLAG} {self.path}: its stage-1 data directory {first_dir or '(none)'!r} "
                "is not here, so its dictionaries cannot be compared symbol by symbol "
                "with the task's; only the vocabulary sizes and the translation "
                "direction were checked. Make sure both were binarized with the same "
                "dictionaries."
            )
            with open_dict(cfg):
                cfg.task.data = self.task_data_dir()
        try:
            return tasks.setup_task(cfg.task, from_checkpoint=True), own_data
        except Exception as e:
            raise self._error(
                f"cannot rebuild its task {cfg.task.get('_name')!r} ({type(e).__name__}: {e})"
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
        self._uncovered = uncovered_reason(model)
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

    def rows(self, main_model, sample, prefix: int = 0) -> FrozenLogits:
        """The degenerative model's logits of ``sample``'s target rows (after ``prefix``
        ignored positions), made by the loss a chunk of rows at a time from its features
        (its full logits at once if its model has no plain output projection, after one
        warning). Pass the result to :meth:`watch` after the loss."""
        self._prepare(main_model)
        reason = self._uncovered
        with torch.no_grad():
            if reason is not None:
                if not self._warned_unfused:
                    self._warned_unfused = True
                    logger.warning(
                        f"{FLAG} {self.path}: its full (tokens, vocabulary) logits "
                        f"are computed at once ({type(self.model).__name__}: {reason})"
                    )
                logits = self.model(**sample["net_input"])[0][:, prefix:]
                return FrozenLogits(logits.reshape(-1, logits.size(-1)))
            h = self.model(**sample["net_input"], features_only=True)[0][:, prefix:]
        proj = output_projection(self.model)
        return FrozenLogits(Projection(h.reshape(-1, h.size(-1)), proj.weight, proj.bias))

    def watch(self, logits: FrozenLogits) -> None:
        """Check (now on the CPU, at a later step on a GPU) that every logit the loss
        made from :meth:`rows` was finite."""
        self._finite.record(logits.finite, logits.dtype)
        self._raise_if_not_finite()

    def _prepare(self, main_model) -> None:
        """Load on first use, place like the main model, and raise if an earlier step's
        outputs were not finite."""
        if self.model is None:
            self.load()
        self._place_like(main_model)
        self._raise_if_not_finite()

    def _raise_if_not_finite(self) -> None:
        dtype = self._finite.failed()
        if dtype is not None:
            raise self._error(
                f"its outputs are not finite in {dtype} (--fp16 / "
                "--memory-efficient-fp16 halve the degenerative model with the main model, "
                "and --amp runs it under autocast): its activations exceed the "
                "half-precision range. Train stage 2 in fp32, or use a degenerative model "
                "trained under --fp16."
            )
