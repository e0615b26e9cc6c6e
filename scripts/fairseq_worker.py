"""Runs fairseq-train command lines one after another in one process: a single worker,
or one rank of a two-process CPU gloo group. Development tooling (the distributed
tests, scripts/precision_check.py): dozens of small runs pay fairseq's imports once per
process instead of once per run.

    python scripts/fairseq_worker.py RUNS.json [RANK WORLD PORT]

RUNS.json is a list of ``{"argv": [...], "log": path}``, each optionally with ``"tool"``:
``train`` (the default), ``generate`` or ``eval-lm``. Each run's log (what the tool logs
and prints; rank 0 only) goes to its file, ending in ``WORKER: ok`` or ``WORKER: failed``
and the traceback; a failed run does not stop the next one.

This works around fairseq in the tests only; the plugin changes nothing:
- fairseq passes CUDA device ids to torch's DistributedDataParallel
  (``--ddp-backend pytorch_ddp``), which a CPU module refuses: the DDP class fairseq
  uses is replaced by a subclass that drops them (everything else is torch's real DDP
  on gloo: buckets, gradient hooks, ``find_unused_parameters``);
- fairseq keeps the best validation loss in an attribute of its checkpoint function
  across calls: it is cleared before each run;
- fairseq never destroys its process group; with gloo on the CPU a rank that reaches
  interpreter shutdown with the group alive can abort there although its training
  finished (pytorch/pytorch#179291): it is destroyed at the end;
- without CUDA, fairseq's fp16 overflow branch calls ``.cuda()`` (see
  scripts/cpu_fp16_train.py): ``Tensor.cuda`` returns the tensor itself in this process.
"""

import contextlib
import json
import logging
import sys
import traceback

import fairseq.models.distributed_fairseq_model as distributed_fairseq_model
import torch
import torch.distributed as dist
from fairseq import checkpoint_utils, options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils
from fairseq_cli import eval_lm, generate, train
from torch.nn.parallel import DistributedDataParallel

FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


class CpuDistributedDataParallel(DistributedDataParallel):
    """torch's DDP without the CUDA device ids fairseq passes."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        super().__init__(module, **kwargs)


def gloo_flags(rank: int, world: int, port: int) -> list:
    """The flags that make a fairseq-train run rank ``rank`` of ``world`` CPU workers."""
    return [
        "--distributed-backend",
        "gloo",
        "--distributed-world-size",
        str(world),
        "--distributed-no-spawn",
        "--distributed-init-method",
        f"tcp://127.0.0.1:{port}",
        "--distributed-rank",
        str(rank),
    ]


TOOLS = {  # tool -> (its parser, its main)
    "train": (options.get_training_parser, train.main),
    "generate": (options.get_generation_parser, generate.main),
    "eval-lm": (options.get_eval_lm_parser, eval_lm.main),
}


def run(argv, log_path, tool="train") -> bool:
    """fairseq-``tool`` ``argv`` (as its console script runs it), its logging and printed
    output to ``log_path``."""
    make_parser, tool_main = TOOLS[tool]
    root = logging.getLogger()
    with open(log_path, "w") as log, contextlib.redirect_stdout(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        try:
            if hasattr(checkpoint_utils.save_checkpoint, "best"):
                del checkpoint_utils.save_checkpoint.best
            args = options.parse_args_and_arch(make_parser(), argv)
            cfg = convert_namespace_to_omegaconf(args)
            if tool == "train":
                distributed_utils.call_main(cfg, tool_main)
            else:
                tool_main(cfg)
            root.info("WORKER: ok")
            return True
        except BaseException:  # noqa: B036 (SystemExit from argparse too)
            root.error("WORKER: failed\n%s", traceback.format_exc())
            return False
        finally:
            root.removeHandler(handler)


def _stay_on_cpu(self, *args, **kwargs):
    """``Tensor.cuda`` without CUDA: the tensor itself (the CPU is the only device)."""
    return self


def main(argv) -> int:
    runs = json.loads(open(argv[0]).read())
    extra = gloo_flags(*map(int, argv[1:4])) if len(argv) > 1 else []
    distributed_fairseq_model.DistributedDataParallel = CpuDistributedDataParallel
    if not torch.cuda.is_available():
        torch.Tensor.cuda = _stay_on_cpu
    for spec in runs:
        tool = spec.get("tool", "train")
        run([*spec["argv"], *(extra if tool == "train" else [])], spec["log"], tool)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
