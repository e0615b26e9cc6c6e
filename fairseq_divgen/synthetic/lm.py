"""Build, save, load and sample fairseq language models in-process (the oracle and the trained models)."""

import warnings
from pathlib import Path
from typing import List, Sequence, Tuple

import torch


def lstm_lm_args(embed_dim: int, hidden: int, tokens_per_sample: int, dropout: float) -> list:
    """fairseq-train flags of the 1-layer LSTM language model used throughout the experiment."""
    return [
        "--task",
        "language_modeling",
        "--arch",
        "lstm_lm",
        "--decoder-embed-dim",
        embed_dim,
        "--decoder-hidden-size",
        hidden,
        "--decoder-out-embed-dim",
        hidden,
        "--decoder-layers",
        1,
        "--dropout",
        dropout,
        "--sample-break-mode",
        "eos",
        "--tokens-per-sample",
        tokens_per_sample,
    ]


def build_model(data_dir: Path, model_args: Sequence) -> Tuple[object, object, object]:
    """(cfg, task, model) that fairseq-train would build from ``data_dir`` and these flags."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data_dir), *[str(a) for a in model_args]])
    with warnings.catch_warnings():  # hydra's deprecation notes about fairseq's config code
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return cfg, task, task.build_model(cfg.model)


def save_checkpoint(cfg, model, path: Path) -> None:
    """Write ``model`` as a fairseq checkpoint that fairseq-eval-lm / load_model_ensemble read."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "CrossEntropyCriterion",
                "optimizer_name": "none",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "last_optimizer_state": None,
        "extra_state": {"train_iterator": None},
    }
    checkpoint_utils.torch_persistent_save(state, str(path))


def load_model(path: Path, device: str = "cpu"):
    """(model in eval mode on ``device``, dictionary) from a fairseq language-model checkpoint."""
    from fairseq import checkpoint_utils

    from .. import register

    register()  # allowlists fairseq's checkpoint types for torch's safe loader
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)])
    model = models[0].eval().to(device)
    return model, task.target_dictionary


def banned_symbols(dictionary) -> List[int]:
    """Symbols no sample may contain: bos, pad, unk (eos ends a sample)."""
    return [dictionary.bos(), dictionary.pad(), dictionary.unk()]


@torch.no_grad()
def next_token_log_probs(model, prefix: torch.Tensor, state: dict) -> torch.Tensor:
    """log p(next token | prefix) for a batch, reusing fairseq's incremental decoding state."""
    out = model.decoder(prefix, incremental_state=state)
    return model.get_normalized_probs(out, log_probs=True)[:, -1, :].float()


@torch.no_grad()
def sample(
    model, dictionary, n: int, max_len: int, seed: int, batch_size: int = 500
) -> List[List[int]]:
    """``n`` ancestral samples (token ids without eos), started from eos as fairseq does.

    bos, pad and unk are never drawn and eos is not drawn as the first token (no empty
    lines); a sample that reaches ``max_len`` tokens without eos is cut there.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    banned = banned_symbols(dictionary)
    eos = dictionary.eos()
    out: List[List[int]] = []
    while len(out) < n:
        bsz = min(batch_size, n - len(out))
        tokens = torch.full((bsz, 1), eos, dtype=torch.long, device=device)
        done = torch.zeros(bsz, dtype=torch.bool, device=device)
        state: dict = {}
        for step in range(max_len):
            lprobs = next_token_log_probs(model, tokens, state)
            lprobs[:, banned] = float("-inf")
            if step == 0:
                lprobs[:, eos] = float("-inf")
            nxt = torch.multinomial(lprobs.exp(), 1, generator=gen).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done |= nxt.eq(eos)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if bool(done.all()):
                break
        for row in tokens[:, 1:].tolist():
            out.append(row[: row.index(eos)] if eos in row else row)
    return out


def to_text(dictionary, samples: Sequence[Sequence[int]]) -> List[str]:
    """Token ids to space-separated symbols."""
    return [" ".join(dictionary[i] for i in s) for s in samples]
