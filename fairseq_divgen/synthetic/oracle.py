"""A fixed-seed oracle language model: a 1-layer LSTM with random weights.

The synthetic setting of TaiLr (Ji et al., ICLR 2023, Sec. 5.1), after Texygen
(Zhu et al., 2018): text is sampled from a randomly initialised LSTM, so the true
distribution is known and a trained model's samples can be scored by it
(PPL_oracle). Here the oracle is an ordinary fairseq ``lstm_lm`` checkpoint.
Embeddings and the output layer are N(0, 1) as in Texygen; the LSTM's weight
matrices are N(0, recurrent_scale^2 / fan_in) rather than N(0, 1), so that its
state is not saturated and a same-size model can learn it within minutes on a
CPU (with N(0, 1) a 600-update model stayed at 6x the oracle's perplexity). The
output layer is sharpened by a factor chosen so that the mean per-token entropy
hits a target, a Zipf prior on the output bias gives a head of likely words and a
long tail, and the eos bias sets the mean length. bos / pad / unk get a bias of
-1e4 (probability 0 in fp32), so fairseq-eval-lm scores exactly the distribution
that produced the data.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict

import torch

from . import lm


@dataclass
class OracleSpec:
    """Size and shape of the oracle."""

    vocab: int = 1000
    embed_dim: int = 32
    hidden: int = 32
    max_len: int = 50
    target_entropy: float = 3.5  # nats per token
    mean_length: float = 20.0
    zipf: float = 1.0
    recurrent_scale: float = 1.0  # LSTM weights ~ N(0, (scale^2) / fan_in)
    seed: int = 1


def write_dictionary(path: Path, vocab: int) -> None:
    """fairseq dict.txt with words w0..w{vocab-1} (counts only fix the order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"w{i} {vocab - i}\n" for i in range(vocab)))


def _randomize(model, dictionary, spec: OracleSpec) -> None:
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            param.copy_(torch.randn(param.shape, generator=gen))
            if ".layers." in name and name.endswith(("weight_ih", "weight_hh")):
                param.mul_(spec.recurrent_scale / math.sqrt(param.shape[1]))
        model.decoder.embed_tokens.weight[dictionary.pad()].zero_()
        bias = model.decoder.fc_out.bias
        ranks = torch.arange(len(dictionary), dtype=torch.float)
        bias.copy_(-spec.zipf * torch.log1p(ranks - dictionary.nspecial).clamp(min=0))
        bias[lm.banned_symbols(dictionary)] = -1e4


def _set_shape(model, dictionary, base_weight, sharpness: float, eos_bias: float) -> None:
    with torch.no_grad():
        model.decoder.fc_out.weight.copy_(base_weight * sharpness / math.sqrt(base_weight.shape[1]))
        model.decoder.fc_out.bias[dictionary.eos()] = eos_bias


@torch.no_grad()
def measure(model, dictionary, n: int, max_len: int, seed: int) -> Dict[str, float]:
    """Mean per-token entropy (nats), mean eos probability and mean length of ``n`` samples."""
    samples = lm.sample(model, dictionary, n, max_len, seed)
    eos = dictionary.eos()
    width = max(len(s) for s in samples) + 1
    tokens = torch.full((n, width), dictionary.pad(), dtype=torch.long)
    tokens[:, 0] = eos
    for i, s in enumerate(samples):
        tokens[i, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.long)
    out = model.decoder(tokens)
    lprobs = model.get_normalized_probs(out, log_probs=True).float()
    lengths = torch.tensor([len(s) + 1 for s in samples])  # positions that predict a token
    mask = torch.arange(width)[None, :] < lengths[:, None]
    entropy = -(lprobs.exp() * lprobs.clamp(min=-1e3)).sum(-1)
    p_eos = lprobs[..., eos].exp()
    return {
        "entropy": float(entropy[mask].mean()),
        "p_eos": float(p_eos[mask].mean()),
        "sample_mean_length": float(lengths.float().mean() - 1),
    }


def build_oracle(work: Path, spec: OracleSpec, calibration_samples: int = 400) -> Dict[str, float]:
    """Write ``work/dict.txt`` and ``work/oracle.pt``; returns the oracle's measured statistics."""
    if not 0 < spec.target_entropy < math.log(spec.vocab):
        raise ValueError(
            f"oracle target entropy {spec.target_entropy} nats must lie in (0, log(vocab) = "
            f"{math.log(spec.vocab):.2f}); raise the vocabulary or lower the target"
        )
    write_dictionary(work / "dict.txt", spec.vocab)
    args = lm.lstm_lm_args(spec.embed_dim, spec.hidden, spec.max_len + 2, dropout=0.0)
    torch.manual_seed(spec.seed)
    cfg, task, model = lm.build_model(work, args)
    model.eval()
    dictionary = task.target_dictionary
    _randomize(model, dictionary, spec)
    base = model.decoder.fc_out.weight.detach().clone()
    # Fixed-point search: sharpness (bisection in log space) for the entropy, eos bias
    # (a log-ratio step) for the length; both are deterministic given the seed.
    lo, hi = math.log(0.1), math.log(1000.0)
    eos_bias = 0.0
    target_p_eos = 1.0 / (spec.mean_length + 1.0)
    for _ in range(14):
        sharp = math.exp((lo + hi) / 2)
        _set_shape(model, dictionary, base, sharp, eos_bias)
        stats = measure(model, dictionary, calibration_samples, spec.max_len, spec.seed + 7)
        if stats["entropy"] > spec.target_entropy:
            lo = math.log(sharp)
        else:
            hi = math.log(sharp)
        eos_bias += math.log(target_p_eos / max(stats["p_eos"], 1e-6))
    sharp = math.exp((lo + hi) / 2)
    _set_shape(model, dictionary, base, sharp, eos_bias)
    stats = measure(model, dictionary, calibration_samples, spec.max_len, spec.seed + 8)
    lm.save_checkpoint(cfg, model, work / "oracle.pt")
    return {**asdict(spec), **stats, "sharpness": sharp, "eos_bias": eos_bias}
