"""Tests of landscape.models: shapes, parameter counts, optional layers, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape import models

SHAPES = [(1, 8, 8), (1, 40), (1, 28, 28), (3, 32, 32)]


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _has(net: nn.Module, kind: type[nn.Module]) -> bool:
    return any(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("depth", [2, 4, 6])
def test_cnn_output_shape_for_every_input_rank_and_depth(shape, depth):
    net = models.build("cnn", shape, 10, depth=depth, channels=4, batch_norm=True, dropout=0.1)
    assert net(torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))).shape == (3, 10)
    conv = nn.Conv1d if len(shape) == 2 else nn.Conv2d
    assert sum(isinstance(m, conv) for m in net) == depth


@pytest.mark.parametrize("shape", SHAPES)
def test_mlp_output_shape(shape):
    net = models.build("mlp", shape, 7, depth=2, width=16)
    assert net(torch.randn(5, *shape, generator=torch.Generator().manual_seed(0))).shape == (5, 7)


def test_defaults_are_the_papers_configurations():
    mlp = models.build("mlp", (1, 28, 28), 10)
    assert [m.out_features for m in mlp if isinstance(m, nn.Linear)] == [128] * 4 + [10]
    cnn = models.build("cnn", (3, 32, 32), 10)
    convs = [m for m in cnn if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 64 and c.kernel_size == (3, 3) for c in convs)


def test_mlp_parameter_count_by_hand():
    # 64 -> 16 -> 16 -> 10 with biases: (64*16 + 16) + (16*16 + 16) + (16*10 + 10)
    net = models.build("mlp", (1, 8, 8), 10, depth=2, width=16)
    assert _count(net) == 1040 + 272 + 170
    # batch-norm adds a scale and a shift per hidden unit
    assert _count(models.build("mlp", (1, 8, 8), 10, depth=2, width=16, batch_norm=True)) == (
        1482 + 2 * 2 * 16
    )


def test_bias_free_relu_mlp_of_paper_002():
    net = models.build("mlp", (1, 8, 8), 10, depth=3, width=16, bias=False)
    assert _count(net) == 64 * 16 + 16 * 16 * 2 + 16 * 10
    assert all(m.bias is None for m in net if isinstance(m, nn.Linear))
    assert all(isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)) for m in net)


def test_cnn_parameter_count_by_hand():
    # conv 1->4 (4*1*9 + 4), conv 4->4 (4*4*9 + 4), head 4->10 (40 + 10)
    net = models.build("cnn", (1, 8, 8), 10, depth=2, channels=4)
    assert _count(net) == 40 + 148 + 50
    net1d = models.build("cnn", (2, 40), 10, depth=2, channels=4, kernel_size=5)
    assert _count(net1d) == (4 * 2 * 5 + 4) + (4 * 4 * 5 + 4) + 50


def test_cnn_pools_while_the_spatial_size_allows():
    pools = [m for m in models.build("cnn", (1, 8, 8), 10, depth=6) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more pooling


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_batch_norm_and_dropout_present_only_when_asked(kind):
    plain = models.build(kind, (1, 8, 8), 10, depth=2)
    assert not _has(plain, nn.modules.batchnorm._BatchNorm) and not _has(plain, nn.Dropout)
    both = models.build(kind, (1, 8, 8), 10, depth=2, batch_norm=True, dropout=0.3)
    norm = nn.BatchNorm1d if kind == "mlp" else nn.BatchNorm2d
    assert sum(isinstance(m, norm) for m in both) == 2
    assert [m.p for m in both if isinstance(m, nn.Dropout)] == [0.3, 0.3]


def test_cnn_1d_uses_1d_layers():
    net = models.build("cnn", (1, 40), 10, depth=2, batch_norm=True)
    assert _has(net, nn.Conv1d) and _has(net, nn.BatchNorm1d) and _has(net, nn.MaxPool1d)
    assert not _has(net, nn.Conv2d)


@pytest.mark.parametrize(("name", "module"), list(models.ACTIVATIONS.items()))
def test_activations(name, module):
    net = models.build("mlp", (4,), 3, depth=2, activation=name)
    assert sum(isinstance(m, module) for m in net) == 2


def test_is_a_plain_sequential():
    assert type(models.build("cnn", (1, 8, 8), 10)) is nn.Sequential
    assert type(models.build("mlp", (1, 8, 8), 10)) is nn.Sequential


def test_seed_gives_identical_weights_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    a = models.build("cnn", (1, 8, 8), 10, depth=2, seed=1)
    b = models.build("cnn", (1, 8, 8), 10, depth=2, seed=1)
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = models.build("cnn", (1, 8, 8), 10, depth=2, seed=2)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


@pytest.mark.parametrize(
    ("kind", "shape", "cfg", "match"),
    [
        ("transformer", (1, 8, 8), {}, r"kind='transformer'.*'mlp', 'cnn'"),
        ("mlp", (1, 8, 8), {"widht": 3}, r"widht.*allowed keys: depth, width"),
        ("cnn", (1, 8, 8), {"width": 3}, r"width.*allowed keys: depth, channels, kernel_size"),
        ("mlp", (1, 8, 8), {"depth": -1}, r"depth=-1"),
        ("cnn", (1, 8, 8), {"depth": 0}, r"depth=0"),
        ("mlp", (1, 8, 8), {"width": 2.5}, r"width=2.5"),
        ("mlp", (1, 8, 8), {"dropout": 1.0}, r"dropout=1.0.*\[0, 1\)"),
        ("mlp", (1, 8, 8), {"batch_norm": "yes"}, r"batch_norm='yes'"),
        ("mlp", (1, 8, 8), {"activation": "swish"}, r"activation='swish'.*'relu'"),
        ("cnn", (1, 8, 8), {"kernel_size": 4}, r"kernel_size=4 must be odd"),
        ("cnn", (64,), {}, r"input_shape=\(64,\).*\(C, L\) or \(C, H, W\)"),
        ("mlp", (1, 0, 8), {}, r"input_shape"),
    ],
)
def test_bad_input_names_the_parameter(kind, shape, cfg, match):
    with pytest.raises(ValueError, match=match):
        models.build(kind, shape, 10, **cfg)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes=1"):
        models.build("mlp", (4,), 1)


def test_kinks_names_the_piecewise_linear_layers():
    relu_cnn = models.build("cnn", (1, 8, 8), 10, depth=1, channels=2)
    assert models.kinks(relu_cnn) == ["ReLU", "MaxPool2d"]
    assert models.kinks(models.build("mlp", (4,), 3, depth=2, width=5, activation="tanh")) == []
    assert models.kinks(nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(), nn.Linear(4, 2))) == [
        "LeakyReLU"
    ]
