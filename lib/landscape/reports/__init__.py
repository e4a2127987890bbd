"""Plans, runs and reports: execute notebooks with papermill, render them, and summarise a plan.

A *plan* is a YAML file naming notebooks to run and the parameters to give them (§5 of the design).
:func:`run_plan` executes each run into ``<output_root>/<plan>/<run>/notebook.ipynb``, renders
``report.html`` beside it, keeps the notebook's ``results.json`` and a ``run.json`` describing the
run, skips runs whose notebook, parameters and library code are unchanged, and writes
``<output_root>/<plan>/index.html`` and ``claims.html``; notebooks call :func:`record` as their
last step (their numbers, and the ``claims``, ``headline`` and ``headline_figure`` that each report
and the index open with). This package only re-exports; the code lives in ``results`` (what
notebooks call), ``plans`` (schema and validation), ``records`` (fingerprints and run folders on
disk), ``execute`` (papermill in a child process), ``runner`` (lock, staging, Ctrl-C), ``cluster``
(the Dask client: a local cluster or ``--scheduler``; imported only when a run executes, since
``distributed`` takes a second to import), ``worker`` (one run as a Dask task, its files
returned as bytes), ``storing`` (those files written into the run folder), ``outputs``
(what a report shows of a notebook's outputs) and ``render`` (report.html, index.html and
claims.html from the templates in ``templates/``). Nothing here computes mathematics; figures live
in :mod:`landscape.plots`, the atomic write in :mod:`landscape.files`.
"""

from landscape.files import file_record, write_atomic
from landscape.reports.execute import KERNEL_NAME, describe_error, kernel_problem
from landscape.reports.outputs import clean_outputs
from landscape.reports.plans import (
    RESERVED_PARAMETER,
    Plan,
    Run,
    RunResult,
    Status,
    apply_overrides,
    load_plan,
    notebook_defaults,
    notebook_parameters,
    parse_overrides,
    plan_output_dir,
    read_notebook,
)
from landscape.reports.records import (
    FAILED_DIR,
    RUN_RECORD,
    describe_plan,
    fingerprint,
    incomplete_reason,
    library_fingerprint,
    read_run_record,
    report_files,
    run_state,
)
from landscape.reports.render import (
    CLAIMS_PAGE,
    flatten_results,
    format_number,
    render_report,
    summarize_results,
    write_index,
    write_static,
)
from landscape.reports.results import (
    NON_FINITE,
    OUTPUT_DIR_ENV,
    from_json,
    output_path,
    read_results,
    record,
    resolve_output_dir,
    to_json,
    to_python,
)
from landscape.reports.runner import (
    LOCK_FILE,
    STAGING_DIR,
    PlanInterrupted,
    PlanLockedError,
    execute_run,
    run_plan,
    summary_table,
)

#: ``{"size": bytes, "sha256": hex}`` of a file, as run.json records it (:func:`file_record`).
file_entry = file_record

__all__ = [
    "CLAIMS_PAGE",
    "FAILED_DIR",
    "KERNEL_NAME",
    "LOCK_FILE",
    "NON_FINITE",
    "OUTPUT_DIR_ENV",
    "RESERVED_PARAMETER",
    "RUN_RECORD",
    "STAGING_DIR",
    "Plan",
    "PlanInterrupted",
    "PlanLockedError",
    "Run",
    "RunResult",
    "Status",
    "apply_overrides",
    "clean_outputs",
    "describe_error",
    "describe_plan",
    "execute_run",
    "file_entry",
    "file_record",
    "fingerprint",
    "flatten_results",
    "format_number",
    "from_json",
    "incomplete_reason",
    "kernel_problem",
    "library_fingerprint",
    "load_plan",
    "notebook_defaults",
    "notebook_parameters",
    "output_path",
    "parse_overrides",
    "plan_output_dir",
    "read_notebook",
    "read_results",
    "read_run_record",
    "record",
    "render_report",
    "report_files",
    "resolve_output_dir",
    "run_plan",
    "run_state",
    "summarize_results",
    "summary_table",
    "to_json",
    "to_python",
    "write_atomic",
    "write_index",
    "write_static",
]
