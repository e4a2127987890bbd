"""Projected first and second derivatives of a chain of layers, in one forward and one backward.

For a network that is a chain of modules (``nn.Sequential``, nested or not),
h_l = g_l(h_{l−1}; θ_l), with per-sample loss ℓ(h_L, t), and directions P = [p_1 … p_d] (N, d), this
module computes, for every sample i, the value, gradient G = ∇φ_i(0) (d,) and Hessian
B = ∇²φ_i(0) (d, d) of

    φ_i(z) = l_i(w* + Pz),

the quantities ``routes.projected_derivatives`` returns, by forward-over-reverse along the chain
contracted with the adjoint instead of ``jacfwd(jacfwd)`` over the whole network.

Every parametric layer supported here is *linear in its own parameters jointly* (Linear and ConvNd
in (weight, bias); BatchNorm in eval mode, LayerNorm and GroupNorm in (γ, β)), so its derivative
along a direction p is the layer evaluated with p as its parameters: u_l = g_l(h_{l−1}; p^l). With
J_l = ∂g_l/∂h at (h_{l−1}; θ_l*) and q_{l,b} = ∂_h g_l(h_{l−1}; p_b^l)ᵀ δ_l:

    forward   ḣ_{l,b} = J_l ḣ_{l−1,b} + u_{l,b},   ḣ_0 = 0
    backward  δ_L = ∇_f ℓ,   δ_{l−1} = J_lᵀ δ_l
    tangent   δ̇_{L,b} = ∇²_f ℓ ḟ_b,
              δ̇_{l−1,b} = J_lᵀ δ̇_{l,b} + ∂_t J_l(h_{l−1} + t ḣ_{l−1,b})ᵀ δ_l + q_{l,b}
    results   G_a = Σ_l ⟨δ_l, u_{l,a}⟩,   B_ab = Σ_l ⟨δ̇_{l,b}, u_{l,a}⟩ + ⟨q_{l,a}, ḣ_{l−1,b}⟩

(G_a = ⟨δ_L, ḟ_a⟩ expanded along the chain; B_ab is its derivative along b: δ_l moves with δ̇_l, and
u_{l,a} moves with its input h_{l−1} only, which is where q comes from. Check: with
u_l = ḣ_l − J_l ḣ_{l−1}, Σ_l ⟨δ̇_{l,b}, u_{l,a}⟩ telescopes to ⟨ḟ_a, ∇²_f ℓ ḟ_b⟩ + Σ_l ⟨δ_l,
∂²_h g_l[ḣ_{l−1,a}, ḣ_{l−1,b}]⟩ + ⟨q_{l,b}, ḣ_{l−1,a}⟩, which with the ⟨q_{l,a}, ḣ_{l−1,b}⟩ terms is
the second-order chain rule, symmetric in a and b.) The middle term of δ̇ is
zero for layers affine in their input (Linear, ConvNd, BatchNorm in eval, pooling by averages,
Flatten) and almost everywhere for piecewise-linear ones (ReLU, max-pooling); it is a jvp of a vjp
for smooth ones (Tanh, GELU, LayerNorm…). The cost is about 4d layer products and d² dot products of
feature vectors per sample, against about 3d² layer products for ``jacfwd(jacfwd)``.

Which layers are known, and how, is the ``_LAYERS`` table; ``support`` says whether a Problem's
network is such a chain and, if not, why. Everything here works on the Problem's private eval copy
of the network, per sample (eval mode makes every layer act on each sample separately).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.nn import functional as F

from .problem import Problem
from .rows import FactoredRows

# How a layer depends on its input: affine (its Jacobian does not depend on the input), piecewise
# linear (the Jacobian is locally constant, so its derivative is zero almost everywhere), smooth
# (the derivative of the Jacobian is needed: a jvp of a vjp).
_AFFINE, _PIECEWISE, _SMOOTH = "affine", "piecewise", "smooth"

#: Layers the chain route knows: how each depends on its input. Those with parameters are linear in
#: their parameters jointly (the layer's derivative along p is the layer with p as parameters).
_LAYERS: dict[type[nn.Module], str] = {
    # parametric, linear in their parameters
    nn.Linear: _AFFINE,
    nn.Conv1d: _AFFINE,
    nn.Conv2d: _AFFINE,
    nn.Conv3d: _AFFINE,
    nn.BatchNorm1d: _AFFINE,  # eval mode on running statistics (Problem refuses training mode)
    nn.BatchNorm2d: _AFFINE,
    nn.BatchNorm3d: _AFFINE,
    nn.LayerNorm: _SMOOTH,
    nn.GroupNorm: _SMOOTH,
    # parameter-free
    nn.Identity: _AFFINE,
    nn.Flatten: _AFFINE,
    nn.Unflatten: _AFFINE,
    nn.Dropout: _AFFINE,  # identity in eval mode
    nn.Dropout1d: _AFFINE,
    nn.Dropout2d: _AFFINE,
    nn.Dropout3d: _AFFINE,
    nn.AvgPool1d: _AFFINE,
    nn.AvgPool2d: _AFFINE,
    nn.AvgPool3d: _AFFINE,
    nn.AdaptiveAvgPool1d: _AFFINE,
    nn.AdaptiveAvgPool2d: _AFFINE,
    nn.AdaptiveAvgPool3d: _AFFINE,
    nn.ReLU: _PIECEWISE,
    nn.ReLU6: _PIECEWISE,
    nn.LeakyReLU: _PIECEWISE,
    nn.Hardtanh: _PIECEWISE,
    nn.MaxPool1d: _PIECEWISE,
    nn.MaxPool2d: _PIECEWISE,
    nn.MaxPool3d: _PIECEWISE,
    nn.AdaptiveMaxPool1d: _PIECEWISE,
    nn.AdaptiveMaxPool2d: _PIECEWISE,
    nn.AdaptiveMaxPool3d: _PIECEWISE,
    nn.Tanh: _SMOOTH,
    nn.Sigmoid: _SMOOTH,
    nn.GELU: _SMOOTH,
    nn.ELU: _SMOOTH,
    nn.SiLU: _SMOOTH,
    nn.Softplus: _SMOOTH,
    nn.Mish: _SMOOTH,
}


def support(prob: Problem) -> tuple[bool, str]:
    """Whether the Problem's network is a chain the chain route handles, and a line saying why.

    A chain is an ``nn.Sequential`` (nested ones are flattened) of layers in ``_LAYERS``, or one
    such layer. Anything else — a module with its own ``forward`` (a residual block, say), a
    parametric layer not known to be linear in its parameters, batch-norm on batch statistics — is
    refused with the reason, and the caller uses a generic route.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> support(Problem(net.eval(), torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])))
        (True, 'a chain of 3 layers (2 parametric)')
    """
    try:
        leaves = _leaves(prob.model)
    except _NotAChain as error:
        return False, str(error)
    parametric = sum(1 for _, m in leaves if any(True for _ in m.parameters()))
    return True, f"a chain of {len(leaves)} layers ({parametric} parametric)"


def sample_bytes(prob: Problem, dim: int) -> int:
    """Bytes one sample takes in ``chain_derivatives`` with d directions: 3d + 3 copies (values,
    tangents, direction outputs, adjoints and their tangents) of every layer's output from the
    first parametric layer on — the layers' own outputs, measured on one sample, not those of the
    containers or the input, which ``Problem.activation_bytes`` counts besides (an upper estimate
    4–8× above this on MLPs)."""
    if prob not in _FEATURES:
        layers = _layers(prob, prob.center[:, None])
        first = next((i for i, layer in enumerate(layers) if layer.dirs is not None), len(layers))
        h, features = prob.X[:1], 0
        with torch.no_grad():
            for i, layer in enumerate(layers):
                h = layer.value(h)
                features += h.numel() if i >= first else 0
        _FEATURES[prob] = features
    return (3 * dim + 3) * _FEATURES[prob] * prob.dtype.itemsize


#: Floats of the layers' outputs per sample from the first parametric layer on, per Problem.
_FEATURES: weakref.WeakKeyDictionary[Problem, int] = weakref.WeakKeyDictionary()


def chain_derivatives(
    prob: Problem,
    X: Tensor,
    y: Tensor,
    P: Tensor,
    *,
    symmetrise: bool = True,
    gradients: bool = False,
) -> tuple:
    """Losses (n,), projected gradients Pᵀg_i (n, d) and Hessians PᵀH_iP (n, d, d) of samples.

    Forward-over-reverse along the chain (see the module docstring), for the samples (X, y) and any
    basis P (N, d), orthonormal or not. The Hessians are symmetrised at the end (before that they
    are symmetric to rounding; ``symmetrise=False`` returns them as computed, to measure that).
    Raises ``ValueError`` where ``support(prob)`` says no. Memory: about (3d + 3) activations of
    the network per sample; the caller chunks samples.

    ``gradients=True`` adds a fourth result: the full per-sample gradients g_i as
    ``rows.FactoredRows`` (δ_i h_iᵀ of each Linear layer, the per-channel sums of BatchNorm),
    from the adjoints the backward pass forms anyway, or None where a parametric layer does not
    factor so (convolutions, layers on 3-D inputs, a layer applied twice).
    """
    ok, why = support(prob)
    if not ok:
        raise ValueError(f"the chain route does not handle this network: {why}")
    rows = FactoredRows(prob.names, prob.shapes) if gradients else None
    losses, G, B, rows = _derivatives(prob, X, y, P, rows)
    B = symmetric(B) if symmetrise else B
    return (losses, G, B, rows) if gradients else (losses, G, B)


def symmetric(B: Tensor) -> Tensor:
    """(B + Bᵀ)/2 for a batch of square matrices (n, d, d): two products give PᵀH_iP only to
    rounding, and every route returns it exactly symmetric."""
    return (B + B.transpose(1, 2)).mul_(0.5)


def _derivatives(
    prob: Problem, X: Tensor, y: Tensor, P: Tensor, rows: FactoredRows | None = None
) -> tuple[Tensor, Tensor, Tensor, FactoredRows | None]:
    """``chain_derivatives`` without the check and the final symmetrisation; ``rows`` (empty)
    collects the per-sample gradients' factors, or becomes None where a layer has none."""
    n, d = len(X), P.shape[1]
    layers = _prepared(prob, P)
    first = next((i for i, layer in enumerate(layers) if layer.dirs is not None), None)
    G, B = P.new_zeros((n, d)), P.new_zeros((n, d, d))
    # forward: values up to the first parametric layer, values and tangents (n, d, ...) after it
    h, hdot, saved = X, None, []
    for i, layer in enumerate(layers):
        if first is None or i < first:
            h = layer.value(h)
            continue
        state, h, hdot = layer.forward(h, hdot)
        saved.append((layer, state))
    losses, delta, ddelta = _loss_head(prob.loss_fn, h, hdot, y, prob.loss_name)
    # backward: the adjoint and its tangent, down to the first parametric layer
    for layer, state in reversed(saved):
        if rows is not None and not layer.gradient_factors(state, delta, rows):
            rows = None
        delta, ddelta = layer.backward(state, delta, ddelta, G, B)
    return losses, G, B, rows


def _loss_head(loss_fn: Callable, f: Tensor, fdot: Tensor | None, y: Tensor, loss_name: str = ""):
    """ℓ(f), δ_L = ∇_f ℓ and δ̇_L = ∇²_f ℓ ḟ per sample (the summed loss separates by sample).

    The Problem's two losses have their Hessians in closed form: diag(p) − ppᵀ with p = softmax(f)
    for cross-entropy on (n, C) logits, 2I for the squared error summed over outputs; any other
    loss (or shape) takes jvps of its gradient."""
    gradient = grad(lambda o: loss_fn(o, y).sum())
    losses = loss_fn(f, y)
    delta = gradient(f)
    if fdot is None:  # no parametric layer at all
        return losses, delta, None
    if loss_name == "mse":
        return losses, delta, 2 * fdot
    if loss_name == "cross_entropy" and f.ndim == 2:  # (diag(p) − ppᵀ) ḟ_b for every b
        p = torch.softmax(f, dim=1).unsqueeze(1)  # (n, 1, C)
        return losses, delta, fdot * p - (fdot * p).sum(2, keepdim=True) * p
    n, d, outputs = len(f), fdot.shape[1], f[0].numel()
    if outputs >= d:
        ddelta = vmap(lambda t: jvp(gradient, (f,), (t,))[1], in_dims=1, out_dims=1)(fdot)
        return losses, delta, ddelta
    # fewer outputs than directions (C logits, d = 128): each sample's C×C Hessian ∇²_f ℓ from C
    # jvps along the unit vectors (shared by every sample, as the loss separates), then d products
    units = torch.eye(outputs, dtype=f.dtype, device=f.device).view(outputs, 1, *f.shape[1:])
    hessian = vmap(lambda e: jvp(gradient, (f,), (e.expand_as(f),))[1], out_dims=1)(units)
    ddelta = torch.bmm(fdot.reshape(n, d, outputs), hessian.reshape(n, outputs, outputs))
    return losses, delta, ddelta.view_as(fdot)


# -- the layers ------------------------------------------------------------------------------------


class _NotAChain(ValueError):
    pass


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The chain's layers in order as (qualified name, module); raises _NotAChain with a reason."""
    if type(model) is nn.Sequential:
        out = []
        for name, child in model._modules.items():  # as forward runs them (repeats included)
            out += _leaves(child, f"{prefix}{name}.")
        return out
    name = prefix[:-1] or type(model).__name__
    kind = _LAYERS.get(type(model))
    has_params = any(True for _ in model.parameters())
    if kind is None:
        what = (
            "a parametric layer not known to be linear in its parameters"
            if has_params
            else "not a layer known to act on each sample alone (a module with its own forward, "
            "e.g. a residual block, is not a chain)"
        )
        raise _NotAChain(f"'{name}' ({type(model).__name__}) is {what}")
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and model.running_mean is None:
        raise _NotAChain(f"'{name}' ({type(model).__name__}) normalises with batch statistics")
    return [(name, model)]


@dataclass
class _Layer:
    """One layer of the chain: its module, how it depends on its input, θ* and the directions.

    ``theta`` maps the module's own parameter names to their values at w*; ``dirs`` to the d
    directions' pieces (d, *shape), or None for a parameter-free layer. Tangents, adjoint tangents
    and direction outputs are laid out (n, d, ...): samples first.
    """

    module: nn.Module
    kind: str
    theta: dict[str, Tensor]
    dirs: dict[str, Tensor] | None
    names: dict[str, str] = field(default_factory=dict)  # own parameter name -> the Problem's
    cache: dict[str, Tensor] = field(default_factory=dict)  # direction matrices, made once

    def gradient_factors(self, state, delta: Tensor, rows: FactoredRows) -> bool:
        """Add the factors of this layer's per-sample parameter gradients to ``rows`` (δ: the
        adjoint of its output); False where it has parameters but no factors (generic layers)."""
        return self.dirs is None

    def call(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return functional_call(self.module, params, (x,))

    def value(self, h: Tensor) -> Tensor:
        return self.call(h, self.theta)

    def forward(self, h: Tensor, hdot: Tensor | None):
        """(state for backward, y, ẏ) with ẏ_b = J ḣ_b + u_b."""

        def f(x: Tensor) -> Tensor:
            return self.call(x, self.theta)

        y, pullback = vjp(f, h)
        ydot = None
        if hdot is not None:
            ydot = vmap(lambda t: jvp(f, (h,), (t,))[1], in_dims=1, out_dims=1)(hdot)
        u = None
        if self.dirs is not None:
            u = vmap(lambda p: self.call(h, p), out_dims=1)(self.dirs)
            ydot = u if ydot is None else ydot + u
        return (h, hdot, u, pullback), y, ydot

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        """Add this layer's terms to G and B; return (δ, δ̇) of its input (None below the first
        parametric layer, where nothing needs them)."""
        h, hdot, u, pullback = state
        if u is not None:
            _accumulate(G, B, delta, ddelta, u)
        if hdot is None:
            return None, None
        delta_in = pullback(delta)[0]
        if self.kind == _SMOOTH:

            def transpose(x: Tensor, c: Tensor) -> Tensor:
                return vjp(lambda v: self.call(v, self.theta), x)[1](c)[0]

            ddelta_in = vmap(
                lambda t, c: jvp(transpose, (h, delta), (t, c))[1], in_dims=1, out_dims=1
            )(hdot, ddelta)
        else:
            ddelta_in = vmap(lambda c: pullback(c)[0], in_dims=1, out_dims=1)(ddelta)
        if self.dirs is not None:
            q = vmap(lambda p: vjp(lambda v: self.call(v, p), h)[1](delta)[0], out_dims=1)(
                self.dirs
            )
            _add_pairs(B, q, hdot)
            ddelta_in = ddelta_in + q
        return delta_in, ddelta_in


class _Linear(_Layer):
    """nn.Linear on (n, features) inputs with explicit products (no vmap); others are generic."""

    def forward(self, h: Tensor, hdot: Tensor | None):
        if h.ndim != 2:
            return super().forward(h, hdot)
        W, b = self.theta["weight"], self.theta.get("bias")
        y = F.linear(h, W, b)
        ydot = None if hdot is None else F.linear(hdot, W)
        u = None
        if self.dirs is not None:
            d, out, inp = self.dirs["weight"].shape
            if "rows" not in self.cache:  # (d·out, inp): the d weight directions stacked
                self.cache["rows"] = self.dirs["weight"].reshape(d * out, inp)
            u = (h @ self.cache["rows"].T).view(len(h), d, out)
            if "bias" in self.dirs:
                u = u + self.dirs["bias"]
            ydot = u if ydot is None else ydot + u
        return (h, hdot, u), y, ydot

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        if len(state) != 3:
            return super().backward(state, delta, ddelta, G, B)
        h, hdot, u = state
        _accumulate(G, B, delta, ddelta, u)
        if hdot is None:
            return None, None
        W, pW = self.theta["weight"], self.dirs["weight"]
        d, out, inp = pW.shape
        if "columns" not in self.cache:  # (out, d·inp): the weight directions side by side
            self.cache["columns"] = pW.transpose(0, 1).reshape(out, d * inp)
        q = (delta @ self.cache["columns"]).view(len(h), d, inp)
        _add_pairs(B, q, hdot)
        return delta @ W, torch.addmm(q.view(-1, inp), ddelta.reshape(-1, out), W).view_as(q)

    def gradient_factors(self, state, delta: Tensor, rows: FactoredRows) -> bool:
        if len(state) != 3:  # the generic path (inputs with more than one axis of features)
            return False
        return _factor(rows, self.names.get("weight"), delta, state[0]) and _factor(
            rows, self.names.get("bias"), delta
        )


class _Identity(_Layer):
    """nn.Identity and dropout in eval mode: values, tangents and adjoints pass unchanged."""

    def forward(self, h: Tensor, hdot: Tensor | None):
        return None, h, hdot

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        return delta, ddelta


class _ReLU(_Layer):
    """nn.ReLU as a 0/1 mask (the derivative torch itself uses: 0 at 0)."""

    def forward(self, h: Tensor, hdot: Tensor | None):
        mask = (h > 0).to(h.dtype)
        return mask, h * mask, None if hdot is None else hdot * mask.unsqueeze(1)

    def backward(self, mask: Tensor, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        return delta * mask, ddelta * mask.unsqueeze(1)


class _Conv(_Layer):
    """nn.ConvNd (zero padding, one group, numeric padding) with the d tangents folded into the
    batch, the d direction outputs as one convolution with d·C_out channels and the d transposed
    products q_b as one grouped transposed convolution; other convolutions are generic."""

    def _fast(self) -> bool:
        m = self.module
        return m.padding_mode == "zeros" and m.groups == 1 and not isinstance(m.padding, str)

    def forward(self, h: Tensor, hdot: Tensor | None):
        if not self._fast():
            return super().forward(h, hdot)
        conv, W = self.module._conv_forward, self.theta["weight"]
        y = conv(h, W, self.theta.get("bias"))
        pW = self.dirs["weight"]
        d, out = pW.shape[:2]
        pb = self.dirs.get("bias")
        u = conv(h, pW.flatten(0, 1), None if pb is None else pb.flatten()).unflatten(1, (d, out))
        ydot = u
        if hdot is not None:
            ydot = conv(hdot.flatten(0, 1), W, None).unflatten(0, (len(h), d)).add_(u)
        return (h, hdot, u), y, ydot

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        if len(state) != 3:
            return super().backward(state, delta, ddelta, G, B)
        h, hdot, u = state
        _accumulate(G, B, delta, ddelta, u)
        if hdot is None:
            return None, None
        n, d = hdot.shape[:2]
        W, pW = self.theta["weight"], self.dirs["weight"]
        delta_in = self._transposed(delta, W, h.shape)
        ddelta_in = self._transposed(ddelta.flatten(0, 1), W, hdot.flatten(0, 1).shape)
        # q_b = conv_transpose(δ, p_b) for every b at once: groups of (C_in, C_out) per direction
        spread = delta.unsqueeze(1).expand(n, d, *delta.shape[1:]).flatten(1, 2)
        q = self._transposed(spread, pW.flatten(0, 1), (n, d * h.shape[1], *h.shape[2:]), d)
        q = q.unflatten(1, (d, h.shape[1]))
        _add_pairs(B, q, hdot)
        return delta_in, ddelta_in.unflatten(0, (n, d)).add_(q)

    def _transposed(self, g: Tensor, weight: Tensor, shape, groups: int = 1) -> Tensor:
        """Jᵀg of x ↦ conv(x, weight) for inputs of ``shape`` (the input gradient alone)."""
        m = self.module
        return torch.ops.aten.convolution_backward(
            g,
            g.new_empty(1).expand(shape),
            weight,
            None,
            m.stride,
            m.padding,
            m.dilation,
            False,
            [0] * len(m.stride),
            groups,
            (True, False, False),
        )[0]


class _BatchNorm(_Layer):
    """BatchNorm in eval mode with an affine part: y = x̂γ + β, x̂ = (h − mean)/√(var + ε)."""

    def _shape(self, h: Tensor) -> tuple[int, ...]:
        return (-1,) + (1,) * (h.ndim - 2)  # broadcast over the channel dimension of (n, C, ...)

    def forward(self, h: Tensor, hdot: Tensor | None):
        m, shape = self.module, self._shape(h)
        scale = (m.running_var + m.eps).rsqrt().view(shape)
        normal = (h - m.running_mean.view(shape)) * scale
        gamma, beta = self.theta["weight"].view(shape), self.theta["bias"].view(shape)
        pg, pb = self.dirs["weight"], self.dirs["bias"]
        d = len(pg)
        u = normal.unsqueeze(1) * pg.view(1, d, *shape) + pb.view(1, d, *shape)
        ydot = u if hdot is None else torch.addcmul(u, hdot, gamma * scale)
        return (hdot, u, scale, normal), normal * gamma + beta, ydot

    def gradient_factors(self, state, delta: Tensor, rows: FactoredRows) -> bool:
        spatial = tuple(range(2, delta.ndim))  # per channel: summed over positions
        weight, bias = delta * state[3], delta
        if spatial:
            weight, bias = weight.sum(spatial), bias.sum(spatial)
        return _factor(rows, self.names["weight"], weight) and _factor(
            rows, self.names["bias"], bias
        )

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        hdot, u, scale, _ = state
        _accumulate(G, B, delta, ddelta, u)
        if hdot is None:
            return None, None
        shape = self._shape(delta)
        d = hdot.shape[1]
        slope = self.theta["weight"].view(shape) * scale
        q = (delta * scale).unsqueeze(1) * self.dirs["weight"].view(1, d, *shape)
        _add_pairs(B, q, hdot)
        return delta * slope, q.addcmul_(ddelta, slope)


class _MaxPool(_Layer):
    """nn.MaxPoolNd through its indices: tangents gathered, adjoints scattered back."""

    def forward(self, h: Tensor, hdot: Tensor | None):
        m = self.module
        dims, pool = _MAX_POOLS[type(m)]
        if h.ndim != dims + 2:  # unbatched-looking input: generic
            return super().forward(h, hdot)
        y, index = pool(
            h, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
        )
        index = index.flatten(2)  # into the flattened spatial dimensions of each channel
        if hdot is None:
            return (h.shape, None, index), y, None
        n, d = hdot.shape[:2]
        spread = index.unsqueeze(1).expand(n, d, *index.shape[1:])
        ydot = hdot.flatten(3).gather(3, spread).view(n, d, *y.shape[1:])
        return (h.shape, spread, index), y, ydot

    def backward(self, state, delta: Tensor, ddelta: Tensor, G: Tensor, B: Tensor):
        if len(state) != 3:
            return super().backward(state, delta, ddelta, G, B)
        shape, spread, index = state
        if spread is None:
            return None, None
        n, d = spread.shape[:2]
        delta_in = delta.new_zeros(n, shape[1], math.prod(shape[2:]))
        delta_in.scatter_add_(2, index, delta.flatten(2))
        ddelta_in = ddelta.new_zeros(n, d, shape[1], math.prod(shape[2:]))
        ddelta_in.scatter_add_(3, spread, ddelta.flatten(3))
        return delta_in.view(shape), ddelta_in.view(n, d, *shape[1:])


def _accumulate(G: Tensor, B: Tensor, delta: Tensor, ddelta: Tensor, u: Tensor) -> None:
    """G_a += ⟨δ, u_a⟩ and B_ab += ⟨δ̇_b, u_a⟩ per sample (u, δ̇: (n, d, ...), δ: (n, ...))."""
    n, d = u.shape[:2]
    u = u.reshape(n, d, -1)
    G.unsqueeze(2).baddbmm_(u, delta.reshape(n, -1, 1))
    _add_pairs(B, u, ddelta)


def _add_pairs(B: Tensor, a: Tensor, b: Tensor) -> None:
    """B[i, j, k] += ⟨a_ij, b_ik⟩ summed over the features of each sample (a, b: (n, d, ...))."""
    n, d = a.shape[:2]
    B.baddbmm_(a.reshape(n, d, -1), b.reshape(n, d, -1).transpose(1, 2))


def _factor(rows: FactoredRows, name: str | None, g: Tensor, h: Tensor | None = None) -> bool:
    """Add parameter ``name``'s factor (g_i, or g_i h_iᵀ); True if absent (no bias) or added,
    False if the parameter already has one (a layer applied twice)."""
    if name is None:
        return True
    if name in rows.factors:
        return False
    if h is None:
        rows.plain(name, g)
    else:
        rows.outer(name, g, h)
    return True


#: The layers of the last (Problem, P) pair, while P lives: the chunks of samples of one call, and
#: the calls for the batches of one estimate, share the directions' pieces and matrices.
_PREPARED: dict[str, tuple] = {}


def _prepared(prob: Problem, P: Tensor) -> list[_Layer]:
    """``_layers(prob, P)``, made once per P (and again if P changes in place)."""
    last = _PREPARED.get("last")
    if last is not None and last[0]() is P and last[1]() is prob and last[2] == P._version:
        return last[3]
    layers = _layers(prob, P)
    _PREPARED["last"] = (weakref.ref(P), weakref.ref(prob), P._version, layers)
    weakref.finalize(P, _forget)
    return layers


def _forget() -> None:
    """Drop the prepared layers once their P is gone (they hold copies of it)."""
    last = _PREPARED.get("last")
    if last is not None and last[0]() is None:
        del _PREPARED["last"]


def _layers(prob: Problem, P: Tensor) -> list[_Layer]:
    """The chain's layers with θ* and the directions' pieces, mapped by parameter identity."""
    names = {id(p): name for name, p in prob.model.named_parameters()}
    theta = prob.unflatten(prob.center)
    pieces = prob.unflatten(P.T.contiguous())  # name -> (d, *shape); free if P = Pᵀᵀ
    out = []
    for _, module in _leaves(prob.model):
        own = dict(module.named_parameters(recurse=False))
        if getattr(module, "inplace", False):  # never overwrite an input kept for the backward
            module = copy.copy(module)
            module.inplace = False
        layer_type = _FAST.get(type(module), _Layer)
        if not own and layer_type in (_Linear, _Conv, _BatchNorm):  # no parameters: generic
            layer_type = _Layer
        out.append(
            layer_type(
                module,
                _LAYERS[type(module)],
                {local: theta[names[id(p)]] for local, p in own.items()},
                {local: pieces[names[id(p)]] for local, p in own.items()} if own else None,
                {local: names[id(p)] for local, p in own.items()},
            )
        )
    return out


_MAX_POOLS = {
    nn.MaxPool1d: (1, F.max_pool1d),
    nn.MaxPool2d: (2, F.max_pool2d),
    nn.MaxPool3d: (3, F.max_pool3d),
}

#: Layers with explicit products instead of the generic torch.func ones.
_FAST: dict[type[nn.Module], type[_Layer]] = {
    nn.Linear: _Linear,
    nn.Conv1d: _Conv,
    nn.Conv2d: _Conv,
    nn.Conv3d: _Conv,
    nn.BatchNorm1d: _BatchNorm,
    nn.BatchNorm2d: _BatchNorm,
    nn.BatchNorm3d: _BatchNorm,
    nn.Identity: _Identity,
    nn.Dropout: _Identity,
    nn.Dropout1d: _Identity,
    nn.Dropout2d: _Identity,
    nn.Dropout3d: _Identity,
    nn.ReLU: _ReLU,
    nn.MaxPool1d: _MaxPool,
    nn.MaxPool2d: _MaxPool,
    nn.MaxPool3d: _MaxPool,
}
