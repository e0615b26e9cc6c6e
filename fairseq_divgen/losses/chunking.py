"""How many rows of a (rows, vocabulary) computation run at once: the one place that decides.

Every loss of this package reduces its (N, V) logits a chunk of rows at a time
(``chunked.py``), so that only one chunk's temporaries exist at once. How big a chunk
should be depends on the device:

- on the CPU, 2^22 elements (16 MiB per fp32 temporary): the memory saved against full
  logits, at no cost in speed on the benchmark (docs/performance.md); inside a chunk, an
  objective with a dozen temporaries per row (LFD's product of experts) runs on blocks of
  about 2^18 elements (1 MiB), which stay in a core's caches (about twice as fast at
  V = 32k, ``python -m benchmarks.loss_stage``);
- on an accelerator, every elementwise pass over a chunk is a kernel launch (about twenty
  per chunk) and the projection a matmul that wants many rows, so chunks are 8 times
  larger (2^25 elements, 128 MiB per fp32 temporary) and there are no blocks.
"""

import torch

CHUNK_ELEMENTS = 1 << 22
ACCELERATOR_FACTOR = 8
CPU_BLOCK_ELEMENTS = 1 << 18


def _is_cpu(device) -> bool:
    return torch.device(device).type == "cpu"


def chunk_elements(device) -> int:
    """Elements of one (rows, V) temporary per chunk on ``device``."""
    return CHUNK_ELEMENTS if _is_cpu(device) else CHUNK_ELEMENTS * ACCELERATOR_FACTOR


def chunk_rows(device, vocab: int, multiple: int = 1) -> int:
    """Rows per chunk for a vocabulary of ``vocab`` on ``device``: about
    :func:`chunk_elements` elements, a positive multiple of ``multiple`` (whole sequences)."""
    return multiple * max(1, chunk_elements(device) // max(1, vocab * multiple))


def block_rows(device, vocab: int, rows: int) -> int:
    """Rows per elementwise block inside a chunk of ``rows`` rows: cache-sized on the
    CPU, the whole chunk elsewhere."""
    if not _is_cpu(device):
        return rows
    return max(1, min(rows, CPU_BLOCK_ELEMENTS // max(1, vocab)))
