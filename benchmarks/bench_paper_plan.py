"""10. The whole paper plan (``reports/plans/paper.yaml``), estimated: units of work × unit costs.

The plan's 11 runs take days on a CPU, so they are not timed; they are counted and priced.

1. **Count.** Each run's parameters (the notebook's defaults, then the plan's defaults it declares,
   then the run's own: what the runner injects) become stages, each a count of one unit of work on
   one network, following what the notebook calls (``COUNTERS``, one function per notebook). A
   network is trained once per checkpoint key (architecture, seed, data order, training samples,
   epochs, lr, batch size): one that an earlier run (or stage) trained is loaded from the cache —
   true when the runs share one cache and a network is finished before another run wants it
   (``--jobs 1``). Statistics, bootstraps, plots and reports are not counted. Where a count
   depends on the data (Lanczos iterations), it is a range, the assumption named in the row.
2. **Measure** on this CPU, on random tensors of the real shapes (cost does not depend on pixel
   values), every unit of every network the plan uses, through the library's own calls (``UNITS``;
   a forward is ``Problem.per_sample_losses``, so Monte Carlo's prefix sums over data orders are
   left out: bench_floor puts Monte Carlo at 0.92–1.24× of it): its wall time (after a warm-up,
   the median of 2–3 rounds; one with ``--quick``), its FLOPs (``torch.utils.flop_counter``:
   matmuls and convolutions only) and the operations it dispatches.
3. **CPU estimate** = units × measured seconds per unit: time ∝ units (exponent 1). bench_paper_scale
   measured Monte Carlo ∝ K^0.75–1.10 and the closed form ∝ K^1.00–1.04, so linear holds there; its
   Hessian-vector stages grew as K^0.43–0.88 (fixed costs at small K), so linear is an upper bound.
4. **GPU estimate** (nothing is measured on a GPU): each call costs the larger of a floor and its
   FLOPs at an assumed achieved rate, ``GPU_FP32`` × ``GPU_EFFICIENCY``. The floor is the host's
   work, which dominates small batches (a training step at batch 64): the call's dispatched
   operations (counted on the real shapes, Adam's multi-tensor update as on CUDA) × the host time
   per operation measured here on a 4-wide MLP's step × ``FLOOR_FACTOR`` (kernel launches, a
   slower host). Calls come from the library's chunking: one per optimiser step, one per
   ``Problem.max_memory`` (256 MiB) of activations, at least one per Hessian-vector product.
   Memory-bound elementwise work is not counted (the low end of the rate absorbs it). Both ends
   of the range are printed, and which of floor and FLOPs sets the slow end.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from landscape import curvature, data, directions, experiment, hessian, models, train
from landscape.hessian import hvp
from landscape.problem import Problem
from landscape.reports import load_plan
from landscape.reports.plans import notebook_defaults

from ._timing import Row, timed
from .bench_paper_scale import Network, Unit, _problem

PLAN = Path(__file__).resolve().parents[1] / "reports" / "plans" / "paper.yaml"

#: Input shape, training and test samples of each data set of the plan (fixed by the data sets).
DATASETS = {
    "mnist": ((1, 28, 28), 60_000, 10_000),
    "fashion-mnist": ((1, 28, 28), 60_000, 10_000),
    "cifar10": ((3, 32, 32), 50_000, 10_000),
}
CLASSES = 10

#: Assumptions of the GPU estimate (no GPU was measured): NVIDIA's nominal FP32 (non-tensor-core)
#: rate of one H200 SXM; the fraction of it that layers this small (widths 32–256, 64 channels)
#: are assumed to reach; the host time per operation on the GPU's host as a multiple of this
#: CPU's (at least the same dispatcher work, at most three times it with the kernel launch).
GPU_NAME = "one NVIDIA H200"
GPU_FP32 = 67e12
GPU_EFFICIENCY = (0.05, 0.30)
FLOOR_FACTOR = (1.0, 3.0)

#: Per-sample Lanczos steps of ``per_sample_spectral_norms`` at tol 1e-2 (plus one residual
#: product): assumed; the measured mean on random weights is printed beside it.
SAMPLE_LANCZOS_STEPS = (10, 40)

UNITS = {  # name -> (what one unit is, how the rows count it)
    "step": ("one Adam step on a mini-batch (forward, backward, update), as train.fit", "steps"),
    "forward": ("one sample's loss at one parameter vector (per_sample_losses)", "forwards"),
    "hvp": ("one sample's share of a full-data Hessian-vector product", "sample-HVPs"),
    "closed": ("one sample's projected gradient and Hessian in d directions", "sample-projections"),
    "sample_hvp": ("one step of one sample's Lanczos (vmapped per-sample HVP)", "per-sample HVPs"),
}

Span = tuple[float, float]


def _fixed(value: float) -> Span:
    return (float(value), float(value))


# -- what runs: networks, trainings, stages ------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """A network's shape: what its unit costs depend on (not its weights or data set)."""

    kind: str
    input_shape: tuple[int, ...]
    cfg: tuple[tuple[str, Any], ...]  # models.build's options with their defaults filled in

    @property
    def options(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfg if k != "seed"}

    @property
    def label(self) -> str:
        o = self.options
        size = (
            f"{o['depth']}×{o['width']}" if self.kind == "mlp" else f"{o['depth']}×{o['channels']}"
        )
        extras = [("bn", o["batch_norm"]), ("do", o["dropout"] > 0), ("no bias", not o["bias"])]
        tags = "+".join(name for name, on in extras if on)
        return f"{self.kind.upper()} {size}{' ' + tags if tags else ''}"

    def network(self) -> Network:
        """bench_paper_scale's Network of this shape (its sizes are not used here)."""
        return Network(self.kind, self.input_shape, self.options, 0, {})


def arch(kind: str, dataset: str, options: dict[str, Any]) -> Arch:
    defaults = models.KINDS[kind][0]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind} option(s) {sorted(unknown)}")
    return Arch(kind, DATASETS[dataset][0], tuple(sorted({**defaults, **options}.items())))


@dataclass(frozen=True)
class Training:
    """One trained network, as the checkpoint cache keys it (architecture, data, settings)."""

    arch: Arch
    dataset: str
    seed: int
    order_seed: int | None
    n_train: int
    epochs: int
    lr: float
    batch_size: int

    @property
    def steps(self) -> int:
        """Optimiser steps: a last mini-batch of one sample joins the one before (``train``)."""
        batches = math.ceil(self.n_train / self.batch_size)
        merged = batches > 1 and self.n_train % self.batch_size == 1
        return self.epochs * (batches - merged)

    @property
    def evaluations(self) -> int:
        """Forwards outside the steps: the test split after every epoch, the divergence check."""
        return self.epochs * DATASETS[self.dataset][2] + min(
            self.n_train, train.DIVERGENCE_CHECK_SAMPLES
        )


@dataclass(frozen=True)
class Stage:
    """``count`` units of ``unit`` on network ``arch``; at least ``calls`` GPU calls."""

    label: str
    arch: Arch
    unit: str
    count: Span
    d: int | None = None  # directions of a "closed" unit
    calls: Span = (0.0, 0.0)


@dataclass
class Counted:
    """What one run does: its stages and the networks it trains."""

    stages: list[Stage] = field(default_factory=list)
    trainings: list[Training] = field(default_factory=list)

    def add(self, label: str, net: Arch, unit: str, count: float | Span, **extra: Any) -> None:
        span = count if isinstance(count, tuple) else _fixed(count)
        self.stages.append(Stage(label, net, unit, span, **extra))


_PREPARE = {
    name: p.default
    for name, p in inspect.signature(experiment.prepare).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _training(
    p: dict,
    net: Arch,
    *,
    seed: int,
    order_seed: int | None,
    n_train: int | None = None,
    epochs: int | None = None,
) -> Training:
    """The network ``experiment.prepare`` trains for notebook parameters ``p``."""
    return Training(
        net,
        p["dataset"],
        seed,
        order_seed,
        n_train or DATASETS[p["dataset"]][1],
        p["epochs"] if epochs is None else epochs,
        p.get("lr", _PREPARE["lr"]),
        p.get("batch_size", _PREPARE["batch_size"]),
    )


def _samples(p: dict) -> int:
    """K, the Problem's samples: k_max, else the whole training split."""
    return p.get("k_max") or DATASETS[p["dataset"]][1]


def _eigen_hvps(d: int) -> Span:
    """HVPs of ``top_eigenpairs(d)``: one Lanczos basis of m = max(2d + 1, 20) vectors and a check
    at the least, three at the most (assumed; bench_paper_scale measured 87 = 2.6 × 34 for d = 16)."""
    m = max(2 * d + 1, 20)
    return (m + 1, 3 * (m + 1))


def _theorem(p: dict) -> Counted:  # 01_theorem
    out, K, net = Counted(), _samples(p), arch(p["model"], p["dataset"], p["model_cfg"])
    if p["subspace_dim"] is None:
        raise ValueError("subspace_dim=None (the full space) is not modelled")
    out.trainings.append(_training(p, net, seed=p["seed"], order_seed=p["order_seed"]))
    d = p["subspace_dim"]
    out.add(f"closed form, d = {d}", net, "closed", K, d=d)
    curves = 2 * len(p["sigmas"])
    out.add(
        f"Monte Carlo: {len(p['sigmas'])} σ × {p['draws']} draws, 1 and {p['orders']} orders",
        net,
        "forward",
        curves * p["draws"] * K,
    )
    out.add("losses at w* (gap |a_k|)", net, "forward", K)
    return out


def _landscapes(p: dict) -> Counted:  # 02_landscapes
    out, K = Counted(), _samples(p)
    for v in p["variants"]:
        options = {k: x for k, x in v.items() if k != "model"}
        net = arch(v["model"], p["dataset"], options)
        for s in p["seeds"]:
            out.trainings.append(_training(p, net, seed=s, order_seed=p["order_seed"]))
        widths = len(p["seeds"]) * p["width_directions"] * p["profile_points"]
        out.add(
            f"basin widths: {p['width_directions']} directions × {p['profile_points']} points × seeds",
            net,
            "forward",
            widths * K,
        )
        hvps = _eigen_hvps(2)
        out.add(
            f"top-2 eigenpairs, first seed ({hvps[0]:.0f}–{hvps[1]:.0f} HVPs assumed)",
            net,
            "hvp",
            (hvps[0] * K, hvps[1] * K),
            calls=hvps,
        )
        out.add(f"two {p['points']}² slices (first seed)", net, "forward", 2 * p["points"] ** 2 * K)
    return out


def _sampling(p: dict) -> Counted:  # 03_sampling
    out, K = Counted(), _samples(p)
    net = arch(p["model"], p["dataset"], p["model_cfg"])
    S = len(p["seeds"])
    for s in p["seeds"]:
        out.trainings.append(_training(p, net, seed=s, order_seed=p["order_seed"]))
    for d in sorted({*p["dims"], p["sigma_dim"]}):
        out.add("closed forms, each d of the sweeps × seeds", net, "closed", S * K, d=d)
    curves = {(s, p["sigma_dim"]) for s in p["sigmas"]} | {(p["dim_sigma"], d) for d in p["dims"]}
    out.add(
        f"Monte Carlo: {len(curves)} (σ, d) curves × {p['draws']} draws × seeds",
        net,
        "forward",
        S * len(curves) * p["draws"] * K,
    )
    out.add(
        f"original code's Monte Carlo: {len(p['dims'])} d × {p['draws']} draws × seeds",
        net,
        "forward",
        S * len(p["dims"]) * p["draws"] * K,
    )
    out.add("losses at w* (gap) × seeds", net, "forward", S * K)
    out.add(
        f"integrand grid {p['grid_points']}², ours and the original code's",
        net,
        "forward",
        2 * p["grid_points"] ** 2 * K,
    )
    return out


def _subspace(p: dict) -> Counted:  # 04_hessian_subspace
    out, K = Counted(), _samples(p)
    net = arch(p["model"], p["dataset"], p["model_cfg"])
    R, d = p["replicates"], p["d"]
    for r in range(R):
        out.trainings.append(_training(p, net, seed=p["seed"] + r, order_seed=p["order_seed"] + r))
    hvps = _eigen_hvps(d)
    out.add(
        f"top-{d} eigenpairs × replicates ({hvps[0]:.0f}–{hvps[1]:.0f} HVPs assumed)",
        net,
        "hvp",
        (R * hvps[0] * K, R * hvps[1] * K),
        calls=(R * hvps[0], R * hvps[1]),
    )
    columns = p["trace_probes"] + d
    out.add(
        f"uᵀHu: {p['trace_probes']} probes + {d} directions × replicates",
        net,
        "hvp",
        R * columns * K,
        calls=_fixed(R * columns),
    )
    curves = 3 * len(p["sigmas"])
    out.add(
        f"Monte Carlo: {len(p['sigmas'])} σ × 3 spaces × {p['draws']} draws × replicates",
        net,
        "forward",
        R * curves * p["draws"] * K,
    )
    out.add(f"closed forms, d = {d}, eigen and random × replicates", net, "closed", 2 * R * K, d=d)
    steps = p["density_probes"] * p["density_steps"]
    out.add(
        f"SLQ density: {steps} steps + 20–60 for its bounds (replicate 0)",
        net,
        "hvp",
        ((steps + 20) * K, (steps + 60) * K),
        calls=(steps + 20, steps + 60),
    )
    return out


def _pointwise(p: dict) -> Counted:  # 05_pointwise
    out, K = Counted(), _samples(p)
    L, h = p["depth"], p["width"]
    shapes = list(
        dict.fromkeys([(L, h)] + [(L, w) for w in p["widths"]] + [(d, h) for d in p["depths"]])
    )
    S = len(p["seeds"])
    n = K if p["norm_samples"] is None else min(p["norm_samples"], K)
    steps = tuple(n * (s + 1) for s in SAMPLE_LANCZOS_STEPS)
    for depth, width in shapes:
        net = arch("mlp", p["dataset"], {"depth": depth, "width": width, "bias": False})
        for s in p["seeds"]:
            out.trainings.append(_training(p, net, seed=s, order_seed=p["order_seed"]))
        out.add("losses at w* (pointwise curve, M_ℓ) × seeds", net, "forward", 2 * S * K)
        low, high = SAMPLE_LANCZOS_STEPS
        out.add(
            f"per-sample ‖H_i‖ of {n:,} samples × seeds ({low}–{high} steps each assumed)",
            net,
            "sample_hvp",
            (S * steps[0], S * steps[1]),
        )
    ref = arch("mlp", p["dataset"], {"depth": L, "width": h, "bias": False})
    radii, directions_ = 1 + len(p["radii"]), p["radius_points"] + p["radius_gradients"]
    points = radii * directions_ + 1  # and the losses at w*
    out.add(
        f"ball ratios: {radii} radii × {directions_} points × seeds",
        ref,
        "forward",
        S * points * K,
    )
    return out


def _architectures(p: dict) -> Counted:  # 06_architectures
    out, K = Counted(), _samples(p)
    S = len(p["seeds"])
    for v in p["variants"]:
        net = arch(v["model"], p["dataset"], {k: x for k, x in v.items() if k != "model"})
        for s in p["seeds"]:
            out.trainings.append(_training(p, net, seed=s, order_seed=p["order_seed"]))
        out.add(
            f"Monte Carlo: {p['draws']} draws × {p['orders']} orders × seeds",
            net,
            "forward",
            S * p["draws"] * K,
        )
        out.add("losses at w* (gap) × seeds", net, "forward", S * K)
    return out


def _sufficiency(p: dict) -> Counted:  # 07_sufficiency
    out, K = Counted(), _samples(p)
    net = arch(p["model"], p["dataset"], p["model_cfg"])
    S = len(p["seeds"])
    for s in p["seeds"]:
        out.trainings.append(_training(p, net, seed=s, order_seed=p["order_seed"] + s))
    out.add(
        f"Monte Carlo: {p['draws']} draws × {p['orders']} orders × seeds",
        net,
        "forward",
        S * p["draws"] * K,
    )
    out.add("losses at w*", net, "forward", K)
    first_order = p["order_seed"] + p["seeds"][0]
    for k in p["learning_ks"]:
        per_epoch = math.ceil(k / p.get("batch_size", _PREPARE["batch_size"]))
        epochs = max(p["epochs"], math.ceil(p["learning_min_steps"] / per_epoch))
        for s in p["learning_seeds"]:
            out.trainings.append(
                _training(p, net, seed=s, order_seed=first_order, n_train=k, epochs=epochs)
            )
    return out


#: Notebook (file name without ".ipynb") -> the function that counts a run of it.
COUNTERS: dict[str, Callable[[dict], Counted]] = {
    "01_theorem": _theorem,
    "02_landscapes": _landscapes,
    "03_sampling": _sampling,
    "04_hessian_subspace": _subspace,
    "05_pointwise": _pointwise,
    "06_architectures": _architectures,
    "07_sufficiency": _sufficiency,
}


def count_plan(path: Path | str = PLAN) -> dict[str, list[Stage]]:
    """Run name -> its stages, training included; a network trained by an earlier run or stage
    (same checkpoint key) is counted once, where it is first trained."""
    plan = load_plan(path)
    trained: set[Training] = set()
    runs: dict[str, list[Stage]] = {}
    for run in plan.runs:
        parameters = {**notebook_defaults(run.notebook), **run.parameters}
        counted = COUNTERS[run.notebook.stem](parameters)
        jobs = counted.trainings
        new = [t for t in dict.fromkeys(jobs) if t not in trained]
        trained.update(new)
        label = f"train {len(jobs)} networks ({len(jobs) - len(new)} from the cache)"
        stages = []
        for net in dict.fromkeys(t.arch for t in new or jobs[:1]):
            steps = sum(t.steps for t in new if t.arch == net)
            evaluations = sum(t.evaluations for t in new if t.arch == net)
            stages.append(Stage(label, net, "step", _fixed(steps), calls=_fixed(steps)))
            stages.append(
                Stage("  test split after each epoch", net, "forward", _fixed(evaluations))
            )
        runs[run.name] = stages + counted.stages
    return runs


# -- unit costs on this CPU ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """One unit on one network: measured here, and what a GPU call of it holds.

    Attributes:
        seconds: wall time per unit on this CPU.
        flops: FLOPs per unit (matmuls and convolutions, ``FlopCounterMode``).
        calls: GPU calls per unit (the library's chunking; a stage may set a minimum).
        floor: host time of one call: its dispatched operations × the host time per operation
            measured here (``host_per_op``).
    """

    seconds: float
    flops: float
    calls: float
    floor: float


class _Operations(TorchDispatchMode):
    """Counts the operations dispatched inside it (each one a kernel launch or more on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _count(fn: Callable[[], object]) -> tuple[float, int, object]:
    """(FLOPs of matmuls and convolutions, dispatched operations, result) of ``fn()``."""
    with FlopCounterMode(display=False) as flops, _Operations() as ops:
        result = fn()
    return float(flops.get_total_flops()), ops.count, result


def _random_dataset(net: Arch, n_train: int, n_test: int = 64) -> data.Dataset:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(n_train + n_test, *net.input_shape, generator=generator)
    y = torch.randint(0, CLASSES, (n_train + n_test,), generator=generator)
    train_split, test_split = (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])
    return data.Dataset("random", train_split, test_split, net.input_shape, CLASSES)


def _step_seconds(net: Arch, batch: int, steps: tuple[int, int], rounds: int) -> float:
    """Seconds per step of ``train.fit`` itself: the difference of two fits of ``steps`` steps on
    random data over the difference in steps (the copy, the checks and the evaluation cancel);
    the median of ``rounds`` after a warm-up fit."""
    model = models.build(net.kind, net.input_shape, CLASSES, seed=0, **net.options)
    sets = [_random_dataset(net, count * batch) for count in steps]

    def fit(ds: data.Dataset) -> float:
        start = time.perf_counter()
        train.fit(model, ds, 1, batch_size=batch, progress=False, device="cpu")
        return time.perf_counter() - start

    fit(sets[0])
    per_step = [(fit(sets[1]) - fit(sets[0])) / (steps[1] - steps[0]) for _ in range(rounds)]
    return max(statistics.median(per_step), 1e-7)


def _step_count(net: Arch, batch: int, foreach: bool | None) -> tuple[float, int]:
    """(FLOPs, dispatched operations) of one step as ``train._epoch`` takes it (the mini-batch
    picked from the training tensors, the running loss and accuracy included); ``foreach=True``
    is Adam's multi-tensor update, its default on CUDA (on a CPU it loops over the tensors)."""
    model = models.build(net.kind, net.input_shape, CLASSES, seed=0, **net.options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=_PREPARE["lr"], foreach=foreach)
    X, y = torch.randn(4 * batch, *net.input_shape), torch.randint(0, CLASSES, (4 * batch,))
    order = torch.randperm(len(X))
    total, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)

    def step() -> None:
        nonlocal total, correct
        idx = order[:batch]
        xb, yb = X[idx], y[idx]
        optimizer.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        correct += (logits.detach().argmax(dim=1) == yb).sum()

    step()  # Adam's state exists from the second step on
    flops, ops, _ = _count(step)
    return flops, ops


def host_per_op(rounds: int) -> float:
    """Host time per dispatched operation on this CPU: a training step of an MLP 4 units wide at
    batch 2 (its arithmetic is negligible) over the operations it dispatches."""
    net = arch("mlp", "mnist", {"depth": 4, "width": 4, "batch_norm": True, "dropout": 0.2})
    return _step_seconds(net, 2, (20, 120), rounds) / _step_count(net, 2, None)[1]


def _losses_seconds(prob: Problem, draws: int, rounds: int) -> float:
    """Seconds per sample and parameter vector of ``Problem.per_sample_losses`` (what Monte
    Carlo, ``surface.scan`` and the ball ratios call) on ``draws`` vectors near w*, after a warm-up
    call in which the Problem picks its strategy; the median of ``rounds``."""
    W = prob.center + 1e-3 * torch.randn(
        draws, prob.num_params, generator=torch.Generator().manual_seed(2)
    )
    prob.per_sample_losses(W[:4])
    times = [timed(lambda: prob.per_sample_losses(W))[1] for _ in range(rounds)]
    return statistics.median(times) / (draws * prob.num_samples)


def _closed_costs(net: Arch, K: int, per_call: float, per_op: float) -> dict[str, Cost]:
    """``difference_terms`` in d = 2 and d = 16 random directions, per sample; FLOPs from the
    difference between 32 and 64 samples (the route's proof cancels), operations of one call."""
    prob, out = _problem(net.network(), K), {}
    small = [_problem(net.network(), k) for k in (32, 64)]
    for d in (2, 16):
        terms = functools.partial(
            curvature.difference_terms, prob, directions.random(prob, d, seed=0), progress=False
        )
        terms()  # warm-up (the route's proof)
        seconds = timed(terms)[1] / K
        counts = [
            _count(
                lambda p=p, d=d: curvature.difference_terms(
                    p, directions.random(p, d, seed=0), progress=False
                )
            )
            for p in small
        ]
        flops = (counts[1][0] - counts[0][0]) / 32
        out[f"closed {d}"] = Cost(seconds, flops, per_call * (d + 1), counts[0][1] * per_op)
    return out


def _sample_hvp_cost(net: Arch, n: int, per_op: float) -> tuple[Cost, float]:
    """(one per-sample Lanczos step of ``per_sample_spectral_norms`` at tol 1e-2, the mean steps
    per sample on these random weights). FLOPs from the difference between 2 and 4 samples;
    operations of one batch's call over its steps."""
    prob = _problem(net.network(), n)
    hessian.per_sample_spectral_norms(prob.subset(slice(0, 2)), tol=1e-2)  # warm-up
    norms, seconds = timed(lambda: hessian.per_sample_spectral_norms(prob, tol=1e-2))
    counted = []
    for k in (2, 4):
        sub = prob.subset(slice(0, k))
        flops, ops, found = _count(lambda sub=sub: hessian.per_sample_spectral_norms(sub, tol=1e-2))
        counted.append((flops, ops, found.hvps + k, int(found.iterations.max()) + 1))
    flops = (counted[1][0] - counted[0][0]) / max(counted[1][2] - counted[0][2], 1)
    vectors = (32 + 8) * prob.num_params * prob.dtype.itemsize  # the Lanczos basis per sample
    calls = max(prob.activation_bytes, vectors) / prob.max_memory
    floor = counted[0][1] / counted[0][3] * per_op
    cost = Cost(seconds / (norms.hvps + n), flops, calls, floor)
    return cost, float(norms.iterations.mean())


def measure(
    net: Arch, units: set[str], quick: bool, per_op: float
) -> tuple[dict[str, Cost], float | None]:
    """The cost of every unit in ``units`` on ``net`` ("closed" at d = 2 and d = 16, keys
    "closed 2" and "closed 16"), and the mean per-sample Lanczos steps where "sample_hvp" is one.
    ``per_op``: the host time per dispatched operation (``host_per_op``)."""
    cnn = net.kind == "cnn"
    out: dict[str, Cost] = {}
    if "step" in units:
        batch = _PREPARE["batch_size"]
        steps = ((1, 3) if quick else (2, 6)) if cnn else ((5, 20) if quick else (10, 50))
        seconds = _step_seconds(net, batch, steps, 1 if quick else 3)
        flops, ops = _step_count(net, batch, foreach=True)
        out["step"] = Cost(seconds, flops, 1.0, ops * per_op)
    K = (64 if quick else 256) if cnn else (1_000 if quick else 4_000)
    prob, small = _problem(net.network(), K), _problem(net.network(), 8)
    per_call = prob.activation_bytes / prob.max_memory  # samples per call within max_memory
    if "forward" in units:
        flops, ops, _ = _count(Unit(small).bare)
        seconds = _losses_seconds(prob, (4 if quick else 8) if cnn else 32, 1 if quick else 2)
        out["forward"] = Cost(seconds, flops / 8, per_call, ops * per_op)
    if "hvp" in units:
        k = (16 if quick else 32) if cnn else K // 2
        flops, ops, _ = _count(lambda: hvp(small, Unit(small).v))
        seconds = Unit(_problem(net.network(), k)).hvp() / k
        out["hvp"] = Cost(seconds, flops / 8, per_call, ops * per_op)
    if "closed" in units:
        out.update(_closed_costs(net, K // 4, per_call, per_op))
    steps = None
    if "sample_hvp" in units:
        out["sample_hvp"], steps = _sample_hvp_cost(net, 4 if quick else 16, per_op)
    return out, steps


def _cost(costs: dict[str, Cost], stage: Stage) -> Cost:
    """The unit cost of a stage; "closed" linear in d between d = 2 and d = 16 (both measured,
    its time and FLOPs ∝ 4d layer products per sample plus a fixed part)."""
    if stage.unit != "closed":
        return costs[stage.unit]
    lo, hi = costs["closed 2"], costs["closed 16"]
    t = (stage.d - 2) / 14

    def between(a: float, b: float) -> float:
        return max(a + t * (b - a), 0.0)

    return Cost(
        between(lo.seconds, hi.seconds),
        between(lo.flops, hi.flops),
        between(lo.calls, hi.calls),
        between(lo.floor, hi.floor),
    )


# -- the estimate --------------------------------------------------------------------------------


def cpu_seconds(stage: Stage, cost: Cost) -> Span:
    return (stage.count[0] * cost.seconds, stage.count[1] * cost.seconds)


def gpu_seconds(stage: Stage, cost: Cost) -> tuple[Span, bool]:
    """(fastest and slowest GPU time, whether the slow end is bound by the calls' floor): each
    end takes the larger of calls × floor and FLOPs / rate."""

    def one(units: float, calls: float, factor: float, efficiency: float) -> tuple[float, bool]:
        calls = max(calls, units * cost.calls)
        floor = calls * cost.floor * factor
        work = units * cost.flops / (GPU_FP32 * efficiency)
        return max(floor, work), floor >= work

    fast, _ = one(stage.count[0], stage.calls[0], FLOOR_FACTOR[0], GPU_EFFICIENCY[1])
    slow, by_calls = one(stage.count[1], stage.calls[1], FLOOR_FACTOR[1], GPU_EFFICIENCY[0])
    return (fast, slow), by_calls


def duration(seconds: float) -> str:
    """A time as people say it: 40 s, 12 min, 3.4 h, 2.1 days."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def span_text(span: Span, fmt: Callable[[float], str] = duration) -> str:
    low, high = fmt(span[0]), fmt(span[1])
    return low if low == high else f"{low} – {high}"


def _count_text(count: Span) -> str:
    return span_text(count, lambda x: f"{x:,.3g}" if x >= 1e6 else f"{x:,.0f}")


def _add(a: Span, b: Span) -> Span:
    return (a[0] + b[0], a[1] + b[1])


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _measure_all(runs: dict[str, list[Stage]], quick: bool) -> dict[Arch, dict[str, Cost]]:
    """Every unit of every network the stages use, measured; prints the table of unit costs."""
    needed: dict[Arch, set[str]] = {}
    for stages in runs.values():
        for stage in stages:
            needed.setdefault(stage.arch, set()).add(stage.unit)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"  {len(runs)} runs of {PLAN.name} counted; measuring {len(needed)} networks on this CPU "
        f"({torch.get_num_threads()} threads, load average {load})",
        flush=True,
    )
    per_op = host_per_op(1 if quick else 3)
    print(f"  host time per dispatched operation: {per_op * 1e6:.1f} µs", flush=True)
    costs, steps, rows = {}, [], []
    for net, units in needed.items():
        start = time.perf_counter()
        costs[net], mean_steps = measure(net, units, quick, per_op)
        spent = time.perf_counter() - start
        print(f"  [{net.label}] {', '.join(sorted(units))}: {spent:.0f} s", flush=True)
        if mean_steps is not None:
            steps.append(f"{net.label} {mean_steps:.1f}")
        for name, c in costs[net].items():
            rows.append(
                [
                    net.label,
                    name,
                    f"{c.seconds * 1e6:,.1f} µs",
                    f"{c.flops / 1e6:,.3g} M",
                    f"{c.flops / c.seconds / 1e9:.1f}",
                    f"{c.floor * 1e3:.2f} ms",
                    f"{1 / c.calls:,.0f}",
                ]
            )
    header = ["network", "unit", "CPU time", "FLOPs", "GFLOP/s", "GPU floor/call", "units/call"]
    print("\nUnit costs measured on this CPU, per unit (FLOPs of matmuls and convolutions):")
    print(_table(header, rows))
    low, high = SAMPLE_LANCZOS_STEPS
    print(
        f"  per-sample Lanczos steps on random weights (counted as {low}–{high}): {'; '.join(steps)}"
    )
    return costs


def _run_table(stages: list[Stage], costs: dict[Arch, dict[str, Cost]]) -> tuple[str, Span, Span]:
    """One run's table (stages grouped by label and unit) and its CPU and GPU totals."""
    grouped: dict[tuple[str, str], list[Stage]] = {}
    for stage in stages:
        grouped.setdefault((stage.label, stage.unit), []).append(stage)
    lines, run_cpu, run_gpu = [], (0.0, 0.0), (0.0, 0.0)
    for (label, unit), members in grouped.items():
        cpu, gpu, count, by_calls = (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), False
        for stage in members:
            cost = _cost(costs[stage.arch], stage)
            on_gpu, floored = gpu_seconds(stage, cost)
            cpu, gpu, count = (
                _add(cpu, cpu_seconds(stage, cost)),
                _add(gpu, on_gpu),
                _add(count, stage.count),
            )
            by_calls |= floored
        nets = ", ".join(dict.fromkeys(s.arch.label for s in members))
        units = f"{_count_text(count)} {UNITS[unit][1]}"
        bound = "—" if count[1] == 0 else "calls" if by_calls else "FLOPs"
        lines.append(
            [
                label,
                nets if len(nets) < 40 else f"{len(members)} networks",
                units,
                span_text(cpu),
                span_text(gpu),
                bound,
            ]
        )
        run_cpu, run_gpu = _add(run_cpu, cpu), _add(run_gpu, gpu)
    lines.append(["total", "", "", span_text(run_cpu), span_text(run_gpu), ""])
    header = [
        "stage",
        "networks",
        "units",
        "CPU, this machine",
        f"GPU, {GPU_NAME}",
        "GPU slow end by",
    ]
    return _table(header, lines), run_cpu, run_gpu


def run(quick: bool) -> list[Row]:
    """Count the paper plan, measure every unit it uses on this CPU, print the estimate."""
    runs = count_plan()
    costs = _measure_all(runs, quick)
    rows: list[Row] = []
    total_cpu, total_gpu, summary = (0.0, 0.0), (0.0, 0.0), []
    for name, stages in runs.items():
        text, cpu, gpu = _run_table(stages, costs)
        print(f"\n{name}:\n{text}")
        total_cpu, total_gpu = _add(total_cpu, cpu), _add(total_gpu, gpu)
        summary.append([name, span_text(cpu), span_text(gpu)])
        rows.append(_row(name, cpu, gpu))
    summary.append(["whole plan", span_text(total_cpu), span_text(total_gpu)])
    print("\nWhole paper plan (one run after another, one model cache):")
    print(_table(["run", "CPU, this machine", f"GPU, {GPU_NAME}"], summary))
    print(
        "Measured here: each unit's time, FLOPs and dispatched operations; the host time per "
        f"operation. Assumed: time ∝ units; the GPU at {GPU_FP32 / 1e12:.0f} TFLOP/s nominal FP32 × "
        f"{GPU_EFFICIENCY[0]:.0%}–{GPU_EFFICIENCY[1]:.0%} achieved, each call at least its "
        f"operations × {FLOOR_FACTOR[0]:g}–{FLOOR_FACTOR[1]:g}× the host time per operation measured "
        "here; the eigensolvers' HVPs and per-sample Lanczos steps as the rows say; networks shared "
        "through the cache."
    )
    rows.append(_row("whole plan", total_cpu, total_gpu))
    return rows


def _row(name: str, cpu: Span, gpu: Span) -> Row:
    """A summary row: the CPU estimate (upper end, hours) against the GPU's slow end."""
    return Row(
        "10 paper plan",
        f"{name}: CPU est., hours",
        cpu[1] / 3600,
        "GPU est. (slow end), hours",
        gpu[1] / 3600,
        "—",
        None,
        unit="h",
        note=f"CPU {span_text(cpu)}; GPU {span_text(gpu)}",
    )
