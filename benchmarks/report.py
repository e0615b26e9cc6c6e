"""Turn the workers' timings and memory peaks into the benchmark's rows and table."""

from statistics import median

# Throughput on the GPU is wall-clock; on the CPU it is the worker's own CPU time (one
# thread), which other processes sharing the cores disturb far less than wall time.
CLOCKS = {"wall": "seconds", "cpu": "cpu_seconds"}


def round_throughputs(rounds, clock="wall") -> list:
    """Tokens per second of each round (tokens over the time of its steps)."""
    key = CLOCKS[clock]
    return [sum(r["tokens"]) / sum(r[key]) for r in rounds]


def _paired_ratio(rounds, base_rounds, clock):
    tps, base = round_throughputs(rounds, clock), round_throughputs(base_rounds, clock)
    return median(t / b for t, b in zip(tps, base))


def build_rows(timings: dict, summaries: dict, baseline: str, meta: dict, clock: str) -> list:
    """One dict per configuration: median tokens/s (``clock``: ``wall`` or ``cpu``), its
    ratio to ``baseline`` (median of the per-round ratios, each against the baseline's
    run in the same round), and peak memory with its ratio; ``train_memory_mb`` is the
    peak less what the process held before building task, model and data (imports)."""
    base = summaries[baseline]
    base_train = base["peak_mb"] - base["baseline_mb"]
    rows = []
    for name, rounds in timings.items():
        s = summaries[name]
        train = s["peak_mb"] - s["baseline_mb"]
        rows.append(
            {
                "name": name,
                **meta[name],
                "clock": clock,
                "tokens_per_s": median(round_throughputs(rounds, clock)),
                "throughput_ratio": _paired_ratio(rounds, timings[baseline], clock),
                "tokens_per_wall_s_rounds": round_throughputs(rounds, "wall"),
                "tokens_per_cpu_s_rounds": round_throughputs(rounds, "cpu"),
                "throughput_ratio_wall": _paired_ratio(rounds, timings[baseline], "wall"),
                "peak_memory_mb": s["peak_mb"],
                "memory_ratio": s["peak_mb"] / base["peak_mb"],
                "train_memory_mb": train,
                "train_memory_ratio": train / base_train if base_train > 0 else float("nan"),
                "params": s["params"],
                "degenerative_params": s["degenerative_params"],
                "skipped_updates": s["skipped_updates"],
                "torch_threads": s["torch_threads"],
                "fixed_malloc_threshold": s["fixed_malloc_threshold"],
            }
        )
    return rows


def markdown_table(rows, memory_label: str) -> str:
    """The rows as a markdown table."""
    clock = "tokens/s" if rows[0]["clock"] == "wall" else "tokens per CPU-s"
    lines = [
        f"| configuration | {clock} (median) | vs LS-CE | {memory_label} MiB | vs LS-CE "
        "| peak above imports MiB | vs LS-CE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['tokens_per_s']:.0f} | {r['throughput_ratio']:.3f}x "
            f"| {r['peak_memory_mb']:.0f} | {r['memory_ratio']:.3f}x "
            f"| {r['train_memory_mb']:.0f} | {r['train_memory_ratio']:.3f}x |"
        )
    return "\n".join(lines)
