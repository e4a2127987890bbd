"""Timing and memory helpers shared by the benchmarks: interleaved medians and peak resident memory."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Row:
    """One line of a benchmark table: contender A against contender B and the target on A/B."""

    benchmark: str
    a: str
    time_a: float
    b: str
    time_b: float
    target: str
    passed: bool | None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.time_a / self.time_b if self.time_b else float("nan")


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each contender over ``repeats`` rounds, run one after the other per round
    (after one warm-up round), so that a busy machine slows all of them alike."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(fn: Callable[[], object], interval: float = 0.005) -> tuple[object, int]:
    """Run ``fn`` and return (its result, peak resident memory above the starting level in bytes),
    sampled every ``interval`` seconds by a watcher thread (torch's CPU allocations bypass
    tracemalloc, so the process's resident set is what is measured)."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    return result, max(peak, process.memory_info().rss) - baseline


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width table with the ratio A/B and PASS/MISS."""
    header = f"{'benchmark':<30} {'A':<34} {'time A':>9} {'B':<34} {'time B':>9} {'A/B':>8}  target      result"
    lines = [header, "-" * len(header)]
    for r in rows:
        verdict = {True: "PASS", False: "MISS", None: "-"}[r.passed]
        lines.append(
            f"{r.benchmark:<30} {r.a:<34} {r.time_a:>8.3f}s {r.b:<34} {r.time_b:>8.3f}s "
            f"{r.ratio:>8.3f}  {r.target:<11} {verdict}"
        )
        if r.note:
            lines.append(f"{'':<30} {r.note}")
    return "\n".join(lines)
