#!/usr/bin/env python3
"""fairseq-train under --fp16 on a CPU-only torch, surviving gradient overflows.

Development tooling for the fp16 tests and studies; never imported by the plugin.

fairseq's own fp16 training runs on the CPU with ``--fp16 --fp16-no-flatten-grads``
(or ``--memory-efficient-fp16``): half model, fp32 master weights, dynamic loss
scaling. Only one line needs CUDA: when a step overflows, ``Trainer.train_step``
(fairseq 0.12, its ``OverflowError`` branch) sets ``grad_norm = torch.tensor(0.0).cuda()``,
which raises "Torch not compiled with CUDA enabled" on a CPU-only torch, so an
unmodified CPU run dies at its first overflow. This script works around that in its
own process only: when CUDA is unavailable it replaces ``torch.Tensor.cuda`` by a
function that returns the tensor unchanged (fairseq's CPU code path calls ``.cuda()``
nowhere else), then runs fairseq-train's own entry point with the given arguments:

    python scripts/cpu_fp16_train.py DATA --cpu --fp16 --fp16-no-flatten-grads ...

Everything else is fairseq's: the overflow is detected, the step skipped and the loss
scale halved exactly as on a GPU. ``tests/test_fp16_cpu.py`` keeps a check that an
unmodified fairseq-train still stops at the first overflow.
"""

import sys

import torch


def _stay_on_cpu(self, *args, **kwargs):
    """``Tensor.cuda`` without CUDA: the tensor itself (the CPU is the only device)."""
    return self


def main() -> None:
    if not torch.cuda.is_available():
        torch.Tensor.cuda = _stay_on_cpu
    from fairseq_cli.train import cli_main

    sys.argv[0] = "fairseq-train"
    cli_main()


if __name__ == "__main__":
    main()
