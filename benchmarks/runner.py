"""Start one worker process per configuration and step them in interleaved rounds."""

import multiprocessing
import os

from . import worker

# Modules every CPU worker needs, imported once by the fork server (a fresh
# interpreter) instead of once per worker; each worker is still its own process with
# its own peak RSS.
PRELOAD = ["torch", "fairseq.trainer", "fairseq.options", "benchmarks.naive_tailr"]


def process_context(device: str = "cpu"):
    """Fork server on a CPU run; fresh interpreters (spawn) on a GPU run, since CUDA
    does not survive a fork of a process that may have touched it."""
    if device == "cpu" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


class WorkerError(RuntimeError):
    """A benchmark worker failed; the message carries its traceback."""


def _answer(name, conn, process):
    try:
        reply = conn.recv()
    except EOFError:
        process.join()
        raise WorkerError(f"{name}: worker exited with code {process.exitcode}") from None
    if "error" in reply:
        raise WorkerError(f"{name} failed:\n{reply['error']}")
    return reply


def run_in_process(name, target, spec, device="cpu"):
    """Run ``target(conn, spec)`` in a fresh process and return its one reply."""
    ctx = process_context(device)
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(child, spec), daemon=True)
    process.start()
    child.close()
    try:
        return _answer(name, parent, process)
    finally:
        process.join()


class Workers:
    """The worker processes of one benchmark run, addressed by configuration name."""

    def __init__(self, specs: dict, device: str = "cpu"):
        ctx = process_context(device)
        self.procs = {}
        for name, spec in specs.items():
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker.serve, args=(child, spec), daemon=True)
            process.start()
            child.close()
            self.procs[name] = (parent, process)
        for name in specs:  # they import and build their models concurrently
            self._reply(name)

    def _reply(self, name):
        conn, process = self.procs[name]
        return _answer(name, conn, process)

    def run(self, name, steps):
        """Ask one worker to time ``steps`` updates; returns its timings."""
        self.procs[name][0].send({"op": "run", "steps": steps})
        return self._reply(name)

    def finish(self) -> dict:
        """Stop every worker; returns each one's summary (peak memory, sizes)."""
        out = {}
        for conn, _ in self.procs.values():
            conn.send({"op": "stop"})
        for name in self.procs:
            out[name] = self._reply(name)
        self.close()
        return out

    def close(self) -> None:
        """Wait for (or end) the worker processes."""
        for conn, process in self.procs.values():
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
            conn.close()


def interleaved_rounds(workers: Workers, names, repeats, steps, warmup, on_round=None):
    """``repeats`` rounds over all configurations (order rotated every round, after an
    untimed warm-up round); returns ``{name: [round timings]}``."""
    names = list(names)
    for name in names:
        if warmup > 0:
            workers.run(name, warmup)
    results = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(workers.run(name, steps))
        if on_round is not None:
            on_round(r, os.getloadavg())
    return results
