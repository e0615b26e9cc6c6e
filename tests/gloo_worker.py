"""One rank of a CPU gloo run: ``python tests/gloo_worker.py <fairseq-train args>``.

fairseq-train as its console script would run it, and then, once training has
returned, ``torch.distributed.destroy_process_group()`` while the interpreter is
still alive. fairseq never destroys its process group; with gloo on the CPU a rank
that reaches interpreter shutdown with the group alive can abort there (SIGABRT,
"terminate called without an active exception") although its training finished,
when gloo's worker threads still hold tensors as Python tears down (the race that
pytorch/pytorch#179291 describes). This works around fairseq in the tests only; the
plugin does not touch fairseq or torch.distributed.
"""
import torch.distributed as dist
from fairseq_cli.train import cli_main

if __name__ == "__main__":
    cli_main()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
