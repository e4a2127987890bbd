"""Timing and memory helpers shared by the benchmarks: interleaved medians, peak memory, the table.

Absolute times are noise on a shared machine; what a benchmark reports is the ratio of two
contenders timed in the same process, one after the other, round after round (``interleaved``),
so that a busy machine slows both alike. Peak memory is the process's resident set (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA): torch's CPU tensors bypass ``tracemalloc``, so the
kernel's high-water mark is the honest number.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    """One line of a benchmark table: contender A against contender B, and the target on A/B.

    Attributes:
        benchmark: which benchmark (numbered as in SPEC §7).
        a, b: the contenders' names.
        value_a, value_b: their medians (seconds, or another ``unit``).
        target: the target on A/B, as text.
        passed: True/False against the target; None where there is none (a measurement).
        unit: "s", "MiB", "HVPs" or "" (a plain number).
        note: one line of context printed under the row.
        ratio_override: A/B when it is not value_a / value_b (e.g. a median of per-k ratios).
    """

    benchmark: str
    a: str
    value_a: float
    b: str
    value_b: float
    target: str
    passed: bool | None
    unit: str = "s"
    note: str = ""
    ratio_override: float | None = None

    @property
    def ratio(self) -> float:
        if self.ratio_override is not None:
            return self.ratio_override
        return self.value_a / self.value_b if self.value_b else math.nan


@dataclass(frozen=True)
class Timing:
    """Wall times of one contender over the rounds of ``interleaved``."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def spread(self) -> str:
        """min–max of the rounds, for the notes."""
        return f"{min(self.times):.3g}–{max(self.times):.3g}s"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, Timing]:
    """Wall times of each contender over ``repeats`` rounds, the contenders run one after the other
    in every round (in reversed order every second round), after one untimed warm-up round.

    Returns a ``Timing`` per contender; report ``.median``.
    """
    names = list(contenders)
    if warmup:
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            _sync()
            start = time.perf_counter()
            contenders[name]()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in times.items()}


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """(fn(), its wall time in seconds)."""
    _sync()
    start = time.perf_counter()
    result = fn()
    _sync()
    return result, time.perf_counter() - start


# -- peak memory ------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0: write 5 to /proc/self/clear_refs)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back first: a clean baseline
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[object, int, str]:
    """Run ``fn``; return (its result, peak memory above the starting level in bytes, how measured).

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU on Linux: the kernel's resident-set
    high-water mark (VmHWM), reset before the call. Elsewhere: RSS sampled every 5 ms by a thread
    (psutil), which can miss short spikes.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - baseline, "cuda max allocated"
    if _reset_high_water_mark():
        baseline = _status_kib("VmRSS")
        result = fn()
        return result, (_status_kib("VmHWM") - baseline) * 1024, "peak RSS (VmHWM)"
    return _sampled_peak(fn)


def _sampled_peak(fn: Callable[[], object]) -> tuple[object, int, str]:
    import psutil

    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    return result, max(peak, process.memory_info().rss) - baseline, "RSS sampled every 5 ms"


# -- the table --------------------------------------------------------------------------------------


def _value(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "HVPs":
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width table: A, B, their values, A/B, the target and PASS/MISS."""
    header = (
        f"{'benchmark':<26} {'A':<36} {'A':>11}  {'B':<36} {'B':>11} {'A/B':>8}  "
        f"{'target':<13} result"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        verdict = {True: "PASS", False: "MISS", None: "-"}[r.passed]
        lines.append(
            f"{r.benchmark:<26} {r.a:<36} {_value(r.value_a, r.unit):>11}  {r.b:<36} "
            f"{_value(r.value_b, r.unit):>11} {r.ratio:>8.3g}  {r.target:<13} {verdict}"
        )
        if r.note:
            lines.extend(f"{'':<27}{part.strip()}" for part in r.note.split("\n"))
    return "\n".join(lines)
