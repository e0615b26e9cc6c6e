"""One benchmark configuration in its own process: fairseq's Trainer on fixed batches.

The parent starts one such process per configuration and asks them in turn to run
a few ``Trainer.train_step`` calls, so configurations are interleaved in time while
each process's peak memory belongs to one configuration only.
"""

import ctypes
import logging
import resource
import sys
import time
import traceback
import warnings


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def fix_malloc_threshold(nbytes: int = 1 << 20) -> bool:
    """Serve every allocation of ``nbytes`` or more by its own mmap (glibc only).

    glibc moves this threshold with the history of frees (up to 32 MiB), so whether a
    vocabulary-sized tensor reuses heap memory or pays fresh page faults depends on
    what ran before: a few per cent of step time at random, and peak RSS that
    wanders likewise. A fixed threshold makes both depend on the configuration only.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # M_MMAP_THRESHOLD; also stops its drift
    except (OSError, AttributeError):
        return False


def build_trainer(argv):
    """Task, model, criterion and ``fairseq.trainer.Trainer`` as fairseq-train builds
    them from the same command line."""
    import numpy as np
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    import fairseq_divgen

    fairseq_divgen.register()  # the criterions and tasks, whatever was imported first

    from . import naive_tailr  # noqa: F401  (registers the benchmark-only reference)

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    metrics.reset()
    np.random.seed(cfg.common.seed)
    utils.set_torch_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    # On a GPU the trainer resets torch's peak-memory counter after every update to
    # log gb_free; without the reset, max_memory_allocated covers every step.
    trainer.cuda_env = None
    return trainer, task, sum(p.numel() for p in model.parameters())


class Session:
    """A trainer and its fixed batches, stepped on request."""

    def __init__(self, spec):
        import torch

        from .data import fixed_batches

        self.torch = torch
        self.fixed_malloc = "--cpu" in spec["argv"] and fix_malloc_threshold()
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        self.cuda = "--cpu" not in spec["argv"] and torch.cuda.is_available()
        self.baseline_mb = self.memory_now_mb()  # imports only: no task, model or data yet
        self.trainer, self.task, self.params = build_trainer(spec["argv"])
        self.batches = fixed_batches(self.task.target_dictionary, **spec["batches"])
        self.cursor = 0
        self.steps_run = 0

    def memory_now_mb(self) -> float:
        """Memory held now: CUDA memory allocated on a GPU, else the peak RSS so far."""
        if self.cuda:
            return self.torch.cuda.memory_allocated() / 2**20
        return peak_rss_mb()

    def peak_mb(self) -> float:
        """Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, else peak RSS."""
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mb()

    def run(self, steps: int) -> dict:
        """Time ``steps`` train steps (the batches in a fixed cyclic order): wall-clock
        seconds and this process's CPU seconds."""
        seconds, cpu_seconds, tokens = [], [], []
        if self.cuda and self.steps_run > 0:
            self._step()  # untimed: refills the CUDA cache emptied after the last round
        for _ in range(steps):
            if self.cuda:
                self.torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            ntokens = self._step()
            if self.cuda:
                self.torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
            tokens.append(ntokens)
        if self.cuda:
            # Idle workers must not sit on cached blocks while another one runs (the
            # peak counter is unaffected).
            self.torch.cuda.empty_cache()
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": tokens}

    def _step(self) -> int:
        """One ``Trainer.train_step`` on the next fixed batch; returns its target tokens."""
        sample = self.batches[self.cursor % len(self.batches)]
        self.cursor += 1
        self.trainer.train_step([sample])
        self.steps_run += 1
        return int(sample["ntokens"])

    def summary(self) -> dict:
        """Peak memory, parameter counts and skipped (overflowed) updates."""
        degen = getattr(self.task, "degenerative", None)
        degen_params = None
        if degen is not None and degen.loaded:
            degen_params = sum(p.numel() for p in degen.model.parameters())
        return {
            "peak_mb": self.peak_mb(),
            "baseline_mb": self.baseline_mb,
            "params": self.params,
            "degenerative_params": degen_params,
            "skipped_updates": self.steps_run - self.trainer.get_num_updates(),
            "torch_threads": self.torch.get_num_threads(),
            "fixed_malloc_threshold": self.fixed_malloc,
        }


def _quiet() -> None:
    """Only warnings and errors from fairseq in this worker process (no per-step INFO)."""
    for name in ("fairseq", "fairseq_divgen"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="hydra")


def serve(conn, spec) -> None:
    """Process entry point: build the session, then answer ``run`` / ``stop`` requests."""
    _quiet()
    try:
        session = Session(spec)
        conn.send({"ready": True})
        while True:
            request = conn.recv()
            if request["op"] == "run":
                conn.send(session.run(request["steps"]))
            else:
                conn.send(session.summary())
                return
    except BaseException:  # report anything to the parent, which raises it
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def build_degenerative_checkpoint(conn, spec) -> None:
    """Process entry point: one ``truncated_ce`` update of a degenerative model, then
    a real fairseq checkpoint (``Trainer.save_checkpoint``) at ``spec['path']``."""
    _quiet()
    try:
        session = Session(spec)
        session.run(1)
        session.trainer.consolidate_optimizer()  # as fairseq's checkpoint_utils does first
        session.trainer.save_checkpoint(spec["path"], {})
        conn.send({"params": session.params})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()
