"""`python -m benchmarks [--quick] [--only NAME ...] [--threads N] [--paper-full]`: run the benchmarks of SPEC §7.

Each benchmark prints its table as soon as it is done; a summary of every row follows at the end.
A benchmark that raises is reported and the others still run; the exit status is 1 then.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback

import torch

from . import (
    bench_antithetic,
    bench_closed_form,
    bench_eigenpairs,
    bench_exact_full,
    bench_floor,
    bench_hutchinson,
    bench_original,
    bench_paper_plan,
    bench_paper_scale,
    bench_scaling,
)
from ._timing import table

#: name (for --only) -> module with ``run(quick: bool) -> list[Row]``, in the order of SPEC §7.
BENCHMARKS = {
    "floor": bench_floor,
    "original": bench_original,
    "closed_form": bench_closed_form,
    "eigenpairs": bench_eigenpairs,
    "exact_full": bench_exact_full,
    "scaling": bench_scaling,
    "antithetic": bench_antithetic,
    "hutchinson": bench_hutchinson,
    "paper_scale": bench_paper_scale,
    "paper_plan": bench_paper_plan,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    parser.add_argument(
        "--paper-full",
        action="store_true",
        help="paper_scale: measure every stage at its full size instead of scaling from smaller ones",
    )
    parser.add_argument(
        "--paper-stages",
        nargs="+",
        choices=list(bench_paper_scale.STAGES),
        help="paper_scale: run only these stages",
    )
    parser.add_argument(
        "--paper-networks", nargs="+", choices=["mlp", "cnn"], help="paper_scale: only these"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads={args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"landscape benchmarks{' --quick' if args.quick else ''} on {platform.node()}: {device}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"load average {load}\nA/B is contender A over contender B (times unless a unit is "
        "given), medians of interleaved runs in this process; targets from SPEC §7.",
        flush=True,
    )
    rows, failed = [], []
    start_all = time.perf_counter()
    for name in args.only or BENCHMARKS:
        start = time.perf_counter()
        try:
            options = (
                dict(full=args.paper_full, stages=args.paper_stages, networks=args.paper_networks)
                if name == "paper_scale"
                else {}
            )
            new = BENCHMARKS[name].run(args.quick, **options)
        except Exception:
            failed.append(name)
            print(f"\n[{name}] FAILED after {time.perf_counter() - start:.0f}s:", flush=True)
            traceback.print_exc()
            continue
        rows.extend(new)
        print(f"\n[{name}] done in {time.perf_counter() - start:.0f}s", flush=True)
        print(table(new), flush=True)
    verdicts = [r.passed for r in rows if r.passed is not None]
    print(
        f"\nSummary ({time.perf_counter() - start_all:.0f}s; {verdicts.count(True)} PASS, "
        f"{verdicts.count(False)} MISS{f', failed: {failed}' if failed else ''})"
    )
    print(table(rows), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
