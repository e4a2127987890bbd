"""`python -m benchmarks [--quick] [--only NAME ...]`: run the benchmarks and print their table."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from ._timing import table
from .cases import CASES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these")
    args = parser.parse_args(argv)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(
        f"landscape benchmarks on {platform.node()} ({device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}){' --quick' if args.quick else ''}",
        flush=True,
    )
    rows = []
    for name in args.only or CASES:
        start = time.perf_counter()
        new = CASES[name](args.quick)
        rows.extend(new)
        print(f"  {name}: done in {time.perf_counter() - start:.0f}s", flush=True)
        print(table(new), flush=True)
    print("\nSummary (A/B is time A over time B; targets from SPEC §7)")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
