"""Problem, directions and Monte Carlo Δ_k against brute force (float64, tiny networks)."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape import delta, directions, prefix
from landscape.directions import Subspace
from landscape.problem import Problem, spans
from landscape.rows import FactoredRows
from landscape.seeding import generator

from conftest import tiny_data, tiny_net

# -- Problem ---------------------------------------------------------------------------------------


def test_per_sample_losses_match_the_model(tiny_problem):
    net = tiny_net()
    X, y = tiny_data()
    expected = F.cross_entropy(net(X), y, reduction="none")
    torch.testing.assert_close(tiny_problem.per_sample_losses(tiny_problem.center), expected)
    W = tiny_problem.center + 0.1 * torch.randn(5, tiny_problem.num_params, dtype=torch.float64)
    batch = tiny_problem.per_sample_losses(W)
    assert batch.shape == (5, 12)
    for b in range(5):
        torch.testing.assert_close(batch[b], tiny_problem.per_sample_losses(W[b]))


def test_problem_never_touches_the_callers_model():
    net = tiny_net(batch_norm=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    X, y = tiny_data()
    prob = Problem(net, X, y, dtype=torch.float32, device="cpu")
    prob.per_sample_losses(prob.center + 1.0)
    assert not net.training
    assert all(p.dtype == torch.float64 and p.requires_grad for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("layer", [nn.Dropout(0.5), nn.BatchNorm1d(5)])
def test_problem_refuses_a_model_in_training_mode(layer):
    net = nn.Sequential(nn.Linear(4, 5), layer, nn.Linear(5, 3)).double().train()
    X, y = tiny_data()
    with pytest.raises(ValueError, match=r"net\.eval\(\)"):
        Problem(net, X, y)


def test_chunking_and_vmap_give_the_same_losses(tiny_problem):
    X, y = tiny_data()
    W = tiny_problem.center + 0.3 * torch.randn(7, tiny_problem.num_params, dtype=torch.float64)
    reference = tiny_problem.per_sample_losses(W)
    for strategy in ("loop", "vmap"):
        small = Problem(
            tiny_net(), X, y, dtype=torch.float64, device="cpu", max_memory=200, strategy=strategy
        )
        assert small.batch_size(small.activation_bytes) < 12  # really chunked over samples
        torch.testing.assert_close(small.per_sample_losses(W), reference)


def test_a_layer_applied_twice_keeps_its_parameters():
    """torch 2.14's functional_call leaves a module registered under two names holding the tensors
    it was called with; the Problem puts its own back, so the loop strategy never writes draws
    into w* (found when BackPACK's fallback stopped hiding the failed deep copy of such a model)."""
    torch.manual_seed(0)
    shared = nn.Linear(5, 5)
    net = nn.Sequential(nn.Linear(4, 5), shared, nn.Tanh(), shared, nn.Linear(5, 3))
    X, y = tiny_data()
    prob = Problem(net.double().eval(), X, y, dtype=torch.float64, device="cpu", strategy="loop")
    center, at_center = prob.center.clone(), prob.per_sample_losses(prob.center)
    W = center + 0.1 * torch.randn(3, prob.num_params, generator=generator(0), dtype=torch.float64)
    prob.sample_losses(W[0], X, y)  # a functional call, as every route makes
    losses = prob.per_sample_losses(W)
    assert torch.equal(prob.center, center)
    torch.testing.assert_close(prob.per_sample_losses(prob.center), at_center)
    assert all(isinstance(p, nn.Parameter) for p in prob.model.parameters())
    torch.testing.assert_close(losses[1], prob.sample_losses(W[1], X, y))


def test_batches_cover_the_samples_once_in_order():
    X, y = tiny_data()
    small = Problem(tiny_net(), X, y, dtype=torch.float64, device="cpu", max_memory=200)
    size = small.batch_size(small.activation_bytes)
    assert 1 <= size < small.num_samples
    batches = list(small.batches(small.activation_bytes))
    assert [rows for rows, _, _ in batches] == list(spans(small.num_samples, size))
    assert torch.equal(torch.cat([bX for _, bX, _ in batches]), small.X)
    assert torch.equal(torch.cat([by for _, _, by in batches]), small.y)
    index = torch.tensor([5, 0, 7])
    picked = list(small.batches(small.max_memory, index))  # one sample per batch
    assert [rows for rows, _, _ in picked] == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert torch.equal(torch.cat([bX for _, bX, _ in picked]), small.X[index])
    assert small.batch_size(0) == small.num_samples  # nothing per sample: one batch


def test_auto_strategy_keeps_the_faster_and_says_what_it_measured():
    X, y = tiny_data()
    prob = Problem(tiny_net(), X, y, dtype=torch.float64, device="cpu")
    W = prob.center + 0.1 * torch.randn(
        8, prob.num_params, generator=generator(0), dtype=torch.float64
    )
    losses = prob.per_sample_losses(W)
    assert prob.strategy in ("loop", "vmap") and "loop (8 draws)" in prob.timings
    assert (prob.vmap_draws is None) == (prob.strategy == "loop")
    assert prob.timings[min(prob.timings, key=prob.timings.get)] > 0
    fixed = Problem(tiny_net(), X, y, dtype=torch.float64, device="cpu", strategy="loop")
    torch.testing.assert_close(losses, fixed.per_sample_losses(W))


def test_prefix_means_and_differences_by_chunks_equal_one_pass():
    x = torch.randn(11, 3, generator=generator(0), dtype=torch.float64)  # 11 samples, 3 values
    brute = torch.stack([x[:k].mean(0) for k in range(1, 12)])
    torch.testing.assert_close(prefix.means(x.T).T, brute, rtol=1e-14, atol=0)
    torch.testing.assert_close(prefix.differences(x.T).T, brute[1:] - brute[:-1])
    running = prefix.RunningDifferences()
    for chunk in x.split(4):
        diffs, k = running.differences(value=chunk)
        running.keep(k, first=diffs["value"][:, 0])
    np.testing.assert_allclose(running.result("first"), prefix.differences(x[:, 0]), rtol=1e-13)


@pytest.mark.parametrize("width", [3, prefix.ROW_LOOP_MIN])  # cumsum, and the loop over rows
def test_running_differences_of_long_rows_equal_brute_force(width):
    x = torch.randn(9, width, generator=generator(1), dtype=torch.float64)
    brute = torch.stack([x[:k].mean(0) for k in range(1, 10)])
    running, got = prefix.RunningDifferences(), []
    for chunk in x.split(4):
        diffs, k = running.differences(value=chunk)
        got.append(diffs["value"])
    torch.testing.assert_close(torch.cat(got)[1:], brute[1:] - brute[:-1], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(running.sums["value"], x.sum(0), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("width", [3, 1100])  # formed, and by the Gram route (4,403 ≥ ROW_LOOP_MIN)
def test_running_difference_norms_equal_brute_force(width):
    """‖(x_k − mean_{i<k} x_i)/k‖² from the chunks' Gram matrices, for dense and factored rows
    (x_i = vec(a_i b_iᵀ) with a plain part), equal the norms of the formed differences."""
    g = generator(2)
    a, b = (
        torch.randn(13, 4, generator=g, dtype=torch.float64),
        torch.randn(13, width, generator=g, dtype=torch.float64),
    )
    c = torch.randn(13, 3, generator=g, dtype=torch.float64) + 0.5
    x = torch.cat([(a[:, :, None] * b[:, None, :]).flatten(1), c], dim=1)
    brute = torch.stack([x[:k].mean(0) for k in range(1, 14)])
    want = torch.cat([brute[:1], brute[1:] - brute[:-1]]).square().sum(1)
    for factored in (False, True):
        running, got = prefix.RunningDifferences(), []
        for chunk in range(0, 13, 5):
            rows = slice(chunk, chunk + 5)
            value = x[rows]
            if factored:
                value = FactoredRows(["w", "c"], [torch.Size([4, width]), torch.Size([3])])
                value.outer("w", a[rows], b[rows])
                value.plain("c", c[rows])
            diffs, k = running.differences(norms=("value",), value=value)
            got.append(diffs["value"])
        torch.testing.assert_close(torch.cat(got), want, rtol=1e-12, atol=0)
        torch.testing.assert_close(running.sums["value"], x.sum(0), rtol=1e-12, atol=1e-13)


def test_problem_bad_inputs_name_the_parameter(tiny_problem):
    X, y = tiny_data()
    with pytest.raises(ValueError, match="W must have shape"):
        tiny_problem.per_sample_losses(torch.zeros(3))
    with pytest.raises(ValueError, match="same number of samples"):
        Problem(tiny_net(), X, y[:-1])
    with pytest.raises(ValueError, match="loss='hinge'"):
        Problem(tiny_net(), X, y, loss="hinge")
    with pytest.raises(ValueError, match="device='tpu'"):
        Problem(tiny_net(), X, y, device="tpu")


# -- directions -------------------------------------------------------------------------------------


def test_gaussian_directions_are_orthonormal_and_seeded(tiny_problem):
    sub = directions.random(tiny_problem, 4, seed=3)
    assert sub.basis.shape == (tiny_problem.num_params, 4) and sub.is_orthonormal()
    assert torch.equal(sub.basis, directions.random(tiny_problem, 4, seed=3).basis)
    assert not torch.equal(sub.basis, directions.random(tiny_problem, 4, seed=4).basis)


def test_filter_normalised_directions_have_the_filter_norms(bn_problem):
    sub = directions.random(bn_problem, 2, kind="filter", seed=0)
    center = bn_problem.unflatten(bn_problem.center)
    for column in sub.basis.T:
        for name, piece in bn_problem.unflatten(column).items():
            if piece.ndim == 1:  # biases and batch-norm parameters are zeroed
                assert torch.count_nonzero(piece) == 0, name
            else:  # each filter (row) has the norm of the matching filter of w*
                torch.testing.assert_close(piece.norm(dim=1), center[name].norm(dim=1))


def test_direction_bad_inputs(tiny_problem):
    with pytest.raises(ValueError, match="kind='pca'"):
        directions.random(tiny_problem, 2, kind="pca")
    with pytest.raises(ValueError, match="d=999"):
        directions.random(tiny_problem, 999)
    with pytest.raises(ValueError, match="basis"):
        Subspace(torch.zeros(5))
    with pytest.raises(ValueError, match="rows"):
        delta.monte_carlo(tiny_problem, 0.1, 4, subspace=Subspace(torch.eye(7, 2)))


# -- Monte Carlo ------------------------------------------------------------------------------------


def _brute_force_delta(prob, W):
    """Δ_k by recomputing every L_k from scratch for every draw."""
    K = prob.num_samples
    values = np.zeros((len(W), K - 1))
    for b, w in enumerate(W):
        for k in range(2, K + 1):
            L_k = prob.sample_losses(w, prob.X[:k], prob.y[:k]).mean()
            L_prev = prob.sample_losses(w, prob.X[: k - 1], prob.y[: k - 1]).mean()
            values[b, k - 2] = float((L_k - L_prev) ** 2)
    return values


def _draws(prob, sigma, draws, seed, basis=None):
    """The perturbations monte_carlo makes: one randn(d) per draw from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    d = prob.num_params if basis is None else basis.shape[1]
    Z = sigma * torch.stack(
        [torch.randn(d, generator=generator, dtype=torch.float64) for _ in range(draws)]
    )
    return prob.center + (Z if basis is None else Z @ basis.T)


def test_cumulative_sum_equals_recomputing_each_prefix(tiny_problem):
    curve = delta.monte_carlo(tiny_problem, 0.2, 6, seed=5, progress=False)
    brute = _brute_force_delta(tiny_problem, _draws(tiny_problem, 0.2, 6, 5))
    np.testing.assert_allclose(curve.value, brute.mean(0), rtol=1e-10)
    np.testing.assert_allclose(curve.stderr, brute.std(0, ddof=1) / np.sqrt(6), rtol=1e-8)
    np.testing.assert_array_equal(curve.k, np.arange(2, 13))
    np.testing.assert_allclose(curve.samples, brute, rtol=1e-6)


def test_subspace_moves_along_every_direction(tiny_problem):
    """The first basis vector is negligible (a zero one is refused): the loss must still move."""
    u, v = directions.random(tiny_problem, 2, seed=2).basis.T
    basis = torch.stack([1e-12 * u, v], dim=1)
    curve = delta.monte_carlo(
        tiny_problem, 0.5, 8, subspace=Subspace(basis), seed=1, progress=False
    )
    brute = _brute_force_delta(tiny_problem, _draws(tiny_problem, 0.5, 8, 1, basis))
    np.testing.assert_allclose(curve.value, brute.mean(0), rtol=1e-10)
    at_center = (
        prefix.differences(tiny_problem.per_sample_losses(tiny_problem.center)).square().numpy()
    )
    assert np.abs(curve.value - at_center).max() > 1e-3 * at_center.max()


def test_tiny_sigma_gives_the_squared_gap(tiny_problem):
    curve = delta.monte_carlo(tiny_problem, 1e-7, 4, progress=False)
    gap = prefix.differences(tiny_problem.per_sample_losses(tiny_problem.center))
    np.testing.assert_allclose(curve.value, gap.square().numpy(), rtol=1e-5)


def test_same_seed_same_curve(tiny_problem):
    a = delta.monte_carlo(tiny_problem, 0.1, 10, seed=7, progress=False)
    b = delta.monte_carlo(tiny_problem, 0.1, 10, seed=7, progress=False)
    c = delta.monte_carlo(tiny_problem, 0.1, 10, seed=8, progress=False)
    np.testing.assert_array_equal(a.value, b.value)
    assert not np.array_equal(a.value, c.value)


def test_antithetic_pairs_average_plus_and_minus(tiny_problem):
    curve = delta.monte_carlo(tiny_problem, 0.3, 4, seed=2, antithetic=True, progress=False)
    generator = torch.Generator().manual_seed(2)
    Z = 0.3 * torch.stack(
        [
            torch.randn(tiny_problem.num_params, generator=generator, dtype=torch.float64)
            for _ in range(2)
        ]
    )
    W = torch.cat([tiny_problem.center + Z, tiny_problem.center - Z])
    brute = _brute_force_delta(tiny_problem, W)
    pairs = 0.5 * (brute[:2] + brute[2:])
    np.testing.assert_allclose(curve.value, pairs.mean(0), rtol=1e-10)
    np.testing.assert_allclose(curve.stderr, pairs.std(0, ddof=1) / np.sqrt(2), rtol=1e-8)


def test_orders_average_permuted_prefixes(tiny_problem):
    curve = delta.monte_carlo(tiny_problem, 0.2, 6, seed=1, orders=3, order_seed=4, progress=False)
    single = delta.monte_carlo(tiny_problem, 0.2, 6, seed=1, progress=False)
    assert curve.per_order.shape == (3, 11)
    np.testing.assert_allclose(curve.per_order[0], single.value, rtol=1e-12)
    np.testing.assert_allclose(curve.value, curve.per_order.mean(0), rtol=1e-12)
    perm = delta.order_permutations(12, 3, 4)[2]
    permuted = Problem(tiny_net(), tiny_problem.X[perm], tiny_problem.y[perm], device="cpu")
    other = delta.monte_carlo(permuted, 0.2, 6, seed=1, progress=False)
    np.testing.assert_allclose(curve.per_order[2], other.value, rtol=1e-10)


def test_non_finite_losses_are_counted_per_k(tiny_problem, monkeypatch):
    original = tiny_problem.per_sample_losses

    def poisoned(W, **kwargs):
        losses = original(W, **kwargs).clone()
        losses[0, 5] = float("inf")  # the first draw blows up at sample 6
        return losses

    monkeypatch.setattr(tiny_problem, "per_sample_losses", poisoned)
    curve = delta.monte_carlo(tiny_problem, 0.1, 5, progress=False)
    assert np.isfinite(curve.value).all()
    np.testing.assert_array_equal(curve.nonfinite, (curve.k >= 6).astype(int))


def test_monte_carlo_bad_inputs_name_the_parameter(tiny_problem):
    for kwargs, name in [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"draws": 1}, "draws"),
        ({"draws": 2.5}, "draws"),
        ({"draws": 5, "antithetic": True}, "draws"),
        ({"orders": 0}, "orders"),
    ]:
        args = {"sigma": 0.1, "draws": 4, **kwargs}
        with pytest.raises(ValueError, match=name):
            delta.monte_carlo(tiny_problem, progress=False, **args)


def test_pointwise_curve_over_orders(tiny_problem):
    curve = delta.pointwise(tiny_problem, orders=5, seed=0)
    losses = tiny_problem.per_sample_losses(tiny_problem.center)
    perms = delta.order_permutations(12, 5, 0)
    for p, perm in enumerate(perms):
        ordered = losses[perm]
        brute = [abs(ordered[:k].mean() - ordered[: k - 1].mean()) for k in range(2, 13)]
        np.testing.assert_allclose(curve.samples[p], torch.stack(brute).numpy(), rtol=1e-10)
    assert (curve.lower <= curve.value).all() and (curve.value <= curve.upper).all()
    with pytest.raises(ValueError, match="level"):
        delta.pointwise(tiny_problem, level=1.5)


def test_filter_normalised_directions_on_a_cnn():
    torch.manual_seed(0)
    net = (
        nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)
        )
        .double()
        .eval()
    )
    X = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    prob = Problem(net, X, torch.tensor([0, 1, 0, 1, 1, 0]), device="cpu")
    sub = directions.random(prob, 2, kind="filter", seed=0)
    center = prob.unflatten(prob.center)
    piece = prob.unflatten(sub.basis[:, 1])["0.weight"]  # (3, 1, 3, 3): one norm per filter
    torch.testing.assert_close(
        piece.flatten(1).norm(dim=1), center["0.weight"].flatten(1).norm(dim=1)
    )


def test_across_orders_takes_errors_over_orders(tiny_problem):
    curve = delta.monte_carlo(tiny_problem, 0.2, 6, orders=5, progress=False)
    over = delta.across_orders(curve)
    np.testing.assert_array_equal(over.value, curve.value)
    np.testing.assert_allclose(over.stderr, curve.per_order.std(0, ddof=1) / np.sqrt(5))
    assert over.samples.shape == (5, 11)
    with pytest.raises(ValueError, match="orders"):
        delta.across_orders(delta.monte_carlo(tiny_problem, 0.2, 4, progress=False))


# -- subsets and paper 002's bound beyond w* ------------------------------------------------------


def test_subset_is_the_same_network_on_those_samples(tiny_problem):
    index = torch.tensor([7, 2, 11])
    part = tiny_problem.subset(index)
    full = tiny_problem.per_sample_losses(tiny_problem.center)
    assert torch.equal(part.center, tiny_problem.center)
    torch.testing.assert_close(part.per_sample_losses(part.center), full[index], rtol=0, atol=1e-15)
    assert part.subset(slice(1, 3)).num_samples == 2


def _losses_at(w: torch.Tensor) -> torch.Tensor:
    """Per-sample losses of tiny_net() with its parameters replaced by the flat vector w."""
    net, (X, y) = tiny_net(), tiny_data()
    torch.nn.utils.vector_to_parameters(w, net.parameters())
    return F.cross_entropy(net(X), y, reduction="none").detach()


def test_ball_ratios_against_hand_made_points(tiny_problem):
    M_l, M_H, radii, points, worst_n = 3.0, 5.0, [0.05, 0.5], 4, 2
    got = delta.ball_ratios(tiny_problem, M_l, M_H, radii, points=points, gradients=worst_n, seed=3)
    center = tiny_problem.center
    losses = _losses_at(center)
    units = [directions.random(tiny_problem, points, kind="gaussian", seed=3).basis.T]
    for i in torch.argsort(losses)[-worst_n:]:  # the worst-fitted samples' own loss gradients
        w = center.clone().requires_grad_(True)
        net, (X, y) = tiny_net(), tiny_data()
        params = dict(zip([n for n, _ in net.named_parameters()], _split(w, net)))
        out = torch.func.functional_call(net, params, (X[i : i + 1],))
        (g,) = torch.autograd.grad(F.cross_entropy(out, y[i : i + 1]), w)
        units.append((g / g.norm())[None])
    U = torch.cat(units)
    scale = float(center.norm())
    assert sorted(got) == [0.0, *radii]
    for R, ratios in got.items():
        expected = [
            float(
                _losses_at(center + R * scale * u).max() - _losses_at(center + R * scale * u).min()
            )
            / (2 * (M_l + M_H * (R * scale) ** 2))
            for u in U
        ]
        np.testing.assert_allclose(ratios, expected, rtol=1e-10)
    assert np.ptp(got[0.0]) == 0  # at R = 0 every point is w*


def _split(w: torch.Tensor, net: nn.Module) -> list[torch.Tensor]:
    sizes = [p.numel() for p in net.parameters()]
    return [part.view_as(p) for part, p in zip(torch.split(w, sizes), net.parameters())]


def test_ball_ratios_refuse_bad_arguments(tiny_problem):
    with pytest.raises(ValueError, match="radii"):
        delta.ball_ratios(tiny_problem, 1.0, 1.0, [0.0])
    with pytest.raises(ValueError, match="points"):
        delta.ball_ratios(tiny_problem, 1.0, 1.0, [0.1], points=10_000)
    with pytest.raises(ValueError, match="gradients"):
        delta.ball_ratios(tiny_problem, 1.0, 1.0, [0.1], points=2, gradients=13)


def test_default_chunk_budget_is_256_mib_on_a_cpu_and_an_eighth_of_free_gpu_memory(monkeypatch):
    from landscape.problem import CPU_MAX_MEMORY, default_max_memory

    assert Problem(tiny_net(), *tiny_data(), device="cpu").max_memory == CPU_MAX_MEMORY == 2**28
    assert Problem(tiny_net(), *tiny_data(), device="cpu", max_memory=123).max_memory == 123
    cuda = torch.device("cuda", 0)
    for free, expected in [(80 * 2**30, 10 * 2**30), (2**30, CPU_MAX_MEMORY), (2**40, 16 * 2**30)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert default_max_memory(cuda) == expected


_FAULTS_SCRIPT = """
import ctypes, resource, torch
from landscape.problem import Problem, keep_freed_memory

def faults():  # minor page faults of a chunk-like pattern: three 4 MiB arrays made, used, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        arrays = [torch.ones(2**20) for _ in range(3)]
        del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 2**17), libc.mallopt(-1, 2**17)  # glibc's initial thresholds, held fixed
untuned = faults()
Problem(torch.nn.Linear(3, 2), torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1]), device="cpu")
faults()  # the heap grows once
print(untuned, faults(), keep_freed_memory())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
def test_a_cpu_problem_keeps_freed_memory_instead_of_faulting_it_back_in():
    # In a fresh interpreter, under glibc's initial thresholds (128 KiB, which its dynamic rule
    # raises only after freeing blocks that large) each 4 MiB array is mapped afresh and faults its
    # 1,024 pages in, every round; after the first CPU Problem, none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    untuned, tuned, flag = out.stdout.split()
    assert flag == "True"
    assert int(untuned) > 20 * 1_000, out.stdout  # about a page per 4 KiB, every round
    assert int(tuned) < 100, out.stdout
    # a user's own thresholds in the environment are left alone
    env["MALLOC_TRIM_THRESHOLD_"] = str(2**17)
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[2] == "False"


@pytest.mark.parametrize("shape", [(7, 10), (5, 3, 4)])
def test_cross_entropy_written_out_equals_torchs_with_its_derivatives(shape):
    from torch.func import hessian, jacrev

    from landscape.problem import LOSSES

    torch.manual_seed(0)
    logits = torch.randn(*shape, dtype=torch.float64) * 4
    logits[0, 0] += 40  # a confident sample: loss ~1e-17, kept to its relative precision
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    target[0] = 0
    ours = LOSSES["cross_entropy"]

    def torchs(o):
        return F.cross_entropy(o, target, reduction="none")

    # reference: (max − z_y) + log1p(Σ_{j ≠ argmax} exp(z_j − max)), without rounding 1 + ε
    top = logits.amax(1, keepdim=True)
    rest = (logits - top).exp().scatter(1, logits.argmax(1, keepdim=True), 0).sum(1)
    reference = (top.squeeze(1) - logits.gather(1, target.unsqueeze(1)).squeeze(1)) + torch.log1p(
        rest
    )
    for loss in (ours(logits, target), torchs(logits)):  # both within a few ε of 1
        assert ((loss - reference).abs() <= 4e-16 * reference.clamp(min=1)).all()
    for derivative in (jacrev, hessian):
        torch.testing.assert_close(
            derivative(lambda o: ours(o, target).sum())(logits),
            derivative(lambda o: torchs(o).sum())(logits),
            rtol=1e-12,
            atol=1e-15,
        )
    # float32: as close to the float64 loss as torch's own float32 loss is
    error = (ours(logits.float(), target).double() - reference).abs()
    torchs_error = (F.cross_entropy(logits.float(), target, reduction="none") - reference).abs()
    assert error.max() <= 2 * torchs_error.max() and error.mean() <= 2 * torchs_error.mean()
