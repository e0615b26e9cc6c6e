"""The benchmark's data: a joined dictionary of V symbols and fixed random batches."""

from pathlib import Path

import torch
from fairseq.data import Dictionary, LanguagePairDataset

SRC, TGT = "src", "tgt"


def write_dictionaries(data_dir: Path, vocab_size: int) -> None:
    """Write ``dict.src.txt`` = ``dict.tgt.txt`` with exactly ``vocab_size`` symbols
    (fairseq's 4 specials included), the files a translation task loads."""
    d = Dictionary()
    for i in range(vocab_size - d.nspecial):
        d.add_symbol(f"w{i}")
    data_dir.mkdir(parents=True, exist_ok=True)
    for lang in (SRC, TGT):
        d.save(str(data_dir / f"dict.{lang}.txt"))


def fixed_batches(
    dictionary: Dictionary, tokens_per_batch: int, seq_len: int, num_batches: int, seed: int
) -> list:
    """``num_batches`` samples collated by fairseq's LanguagePairDataset, each with
    ``tokens_per_batch // seq_len`` pairs of ``seq_len`` tokens (EOS included) on both
    sides, drawn uniformly from the non-special symbols with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    n_pairs = max(1, tokens_per_batch // seq_len)
    low, high = dictionary.nspecial, len(dictionary)

    def sentence():
        body = torch.randint(low, high, (seq_len - 1,), generator=g)
        return torch.cat([body, torch.tensor([dictionary.eos()])])

    src = [sentence() for _ in range(n_pairs * num_batches)]
    tgt = [sentence() for _ in range(n_pairs * num_batches)]
    sizes = [seq_len] * len(src)
    dataset = LanguagePairDataset(src, sizes, dictionary, tgt, sizes, dictionary)
    return [
        dataset.collater([dataset[i] for i in range(b * n_pairs, (b + 1) * n_pairs)])
        for b in range(num_batches)
    ]
