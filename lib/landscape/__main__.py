"""The command line: run a plan of notebooks and list its runs.

    python -m landscape run PLAN [--only NAME ...] [--force] [--set KEY=VALUE ...]
                                 [--jobs N | --scheduler ADDRESS] [--output-root DIR]
    python -m landscape list PLAN [--set KEY=VALUE ...] [--output-root DIR]

Runs execute as tasks on Dask distributed: a local cluster of ``--jobs`` worker processes (1 by
default), or the cluster whose scheduler is at ``--scheduler tcp://host:8786``. ``--set`` gives
every selected run whose notebook declares KEY the value VALUE (read as YAML).

``run`` exits 0 when every run succeeded or was up to date, 1 when any run failed (or a file could
not be written, or no scheduler answered at ``--scheduler``), 2 for a bad plan or bad arguments or
when another ``landscape run`` holds the plan folder, and 130 on Ctrl-C (the running runs are
marked "interrupted"). Every error is one line on stderr. The work itself lives in
:mod:`landscape.reports`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from landscape import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Execute plans of parameterized notebooks and render their reports.",
    )
    parser.add_argument("--version", action="version", version=f"landscape {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="execute a plan's runs, render report.html for each and the plan's index.html"
    )
    run.add_argument("plan", help="the plan's YAML file, e.g. reports/plans/quick.yaml")
    run.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="execute only these runs (repeatable)",
    )
    run.add_argument("--force", action="store_true", help="execute runs that are up to date too")
    _add_set(run)
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes of the local Dask cluster: runs executed at once (default 1)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://host:8786",
    )
    run.add_argument(
        "--output-root",
        metavar="DIR",
        help="folder holding the plan's report folder (default: the reports/ folder of the plan)",
    )

    listing = commands.add_parser("list", help="show a plan's runs and whether they are up to date")
    listing.add_argument("plan", help="the plan's YAML file")
    _add_set(listing)
    listing.add_argument("--output-root", metavar="DIR", help="as for 'run'")
    return parser


def _add_set(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="give every selected run whose notebook declares KEY this value (YAML; repeatable)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except KeyboardInterrupt as exc:  # reports.PlanInterrupted says what it marked
        detail = f": {exc}" if str(exc) else ""
        print(f"landscape: interrupted (Ctrl-C){detail}", file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    from landscape import reports  # imported here so that --help stays fast
    from landscape.reports.plans import parse_overrides

    try:
        overrides = parse_overrides(args.overrides)
        if args.command == "list":
            print(reports.describe_plan(args.plan, args.output_root, overrides))
            return 0
        results = reports.run_plan(
            args.plan,
            only=args.only,
            force=args.force,
            jobs=args.jobs,
            output_root=args.output_root,
            scheduler=args.scheduler,
            overrides=overrides,
        )
        plan = reports.load_plan(args.plan)
        index = reports.plan_output_dir(plan, args.output_root) / "index.html"
    except (ValueError, reports.PlanLockedError) as exc:
        print(f"landscape: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be written; no scheduler at --scheduler
        print(f"landscape: error: {exc}", file=sys.stderr)
        return 1
    print(f"Report index: {index}")
    return 1 if any(result.status == "failed" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
