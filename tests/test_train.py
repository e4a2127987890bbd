"""Tests of landscape.train: learning, seeding, the checkpoint cache, validation."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from landscape import data, models, train


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits")


@pytest.fixture
def net(digits) -> nn.Module:
    return models.build("mlp", digits.input_shape, 10, depth=1, width=32, seed=0)


def _fit(net, ds, **kwargs) -> train.Trained:
    options = {"epochs": 2, "lr": 1e-3, "n_train": 400, "progress": False, "device": "cpu"}
    options.update(kwargs)
    return train.fit_with_history(net, ds, **options)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_reduces_the_loss(digits, net):
    before, _ = train.evaluate(net, *digits.test)
    trained = _fit(net, digits, epochs=3, n_train=None)
    history = trained.history
    assert len(history.train_loss) == len(history.test_accuracy) == 3
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_loss[-1] < before
    assert history.test_accuracy[-1] > 0.5
    assert history.from_cache is False


def test_returns_an_eval_mode_copy_and_leaves_the_callers_net_alone(digits):
    net = models.build("mlp", digits.input_shape, 10, depth=1, width=16, dropout=0.2, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trained = _fit(net, digits, epochs=1).net
    assert trained is not net
    assert not trained.training and not any(m.training for m in trained.modules())
    assert net.training  # the caller's mode is untouched too
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_fit_returns_the_same_network_as_fit_with_history_and_attaches_nothing(digits, net):
    options = {"epochs": 1, "lr": 1e-3, "n_train": 200, "progress": False, "device": "cpu"}
    plain = train.fit(net, digits, **options)
    trained = train.fit_with_history(net, digits, **options)
    assert isinstance(plain, nn.Module) and _same_weights(plain, trained.net)
    assert not hasattr(plain, "history") and not hasattr(trained.net, "history")
    assert len(trained.history.test_accuracy) == 1 and not trained.history.from_cache
    assert "1 epoch" in repr(trained.history) and "Sequential" in repr(trained)


def test_same_seed_same_weights_different_seed_different(digits):
    net = models.build("mlp", digits.input_shape, 10, depth=1, width=16, dropout=0.2, seed=0)
    a = _fit(net, digits, seed=0, epochs=1)
    b = _fit(net, digits, seed=0, epochs=1)
    c = _fit(net, digits, seed=1, epochs=1)
    assert _same_weights(a.net, b.net) and a.history == b.history
    assert not _same_weights(a.net, c.net)


def test_training_leaves_the_global_rng_alone(digits, net):
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    _fit(net, digits, epochs=1)
    assert torch.equal(torch.rand(1), expected)


def test_zero_epochs_returns_the_untrained_copy(digits, net):
    trained = _fit(net, digits, epochs=0)
    assert _same_weights(trained.net, net) and not trained.net.training
    assert trained.history == train.History()


def test_cache_hit_returns_identical_network_and_history(digits, net, tmp_path):
    first = _fit(net, digits, cache_dir=tmp_path)
    assert first.history.from_cache is False
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    start = time.perf_counter()
    second = _fit(net, digits, cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert second.history.from_cache is True
    assert _same_weights(first.net, second.net) and not second.net.training
    assert second.history.train_loss == first.history.train_loss
    assert second.history.test_accuracy == first.history.test_accuracy


def test_cache_key_changes_with_every_setting(digits, net, tmp_path):
    _fit(net, digits, cache_dir=tmp_path)
    other = models.build("mlp", digits.input_shape, 10, depth=1, width=32, seed=1)
    variants = [
        {"n_train": 100},
        {"seed": 1},
        {"lr": 2e-3},
        {"batch_size": 32},
        {"epochs": 1},
    ]
    for variant in variants:
        assert _fit(net, digits, cache_dir=tmp_path, **variant).history.from_cache is False
    assert _fit(other, digits, cache_dir=tmp_path).history.from_cache is False
    assert len(list(tmp_path.glob("*.pt"))) == len(variants) + 2


def test_corrupted_cache_entry_is_detected_and_retrained(digits, net, tmp_path):
    first = _fit(net, digits, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    entry.write_bytes(b"\x00garbage" * 10)
    with pytest.warns(RuntimeWarning, match="corrupted"):
        again = _fit(net, digits, cache_dir=tmp_path)
    assert again.history.from_cache is False and _same_weights(first.net, again.net)
    assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is True  # replaced


def test_tampered_weights_fail_the_checksum(digits, net, tmp_path):
    _fit(net, digits, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    payload = torch.load(entry, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] += 1.0
    torch.save(payload, entry)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is False


def test_truncated_cache_entry_is_retrained(digits, net, tmp_path):
    _fit(net, digits, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="corrupted"):
        assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is False


def test_n_train_uses_the_first_samples(digits, net):
    small = data.Dataset(
        "digits-head",
        (digits.train[0][:50], digits.train[1][:50]),
        digits.test,
        digits.input_shape,
        10,
    )
    a = _fit(net, digits, n_train=50, epochs=1)
    b = _fit(net, small, epochs=1, n_train=None)
    assert _same_weights(a.net, b.net)


def test_batch_norm_cnn_trains_with_a_single_sample_tail(digits):
    net = models.build("cnn", digits.input_shape, 10, depth=2, channels=4, batch_norm=True, seed=0)
    trained = _fit(net, digits, n_train=65, batch_size=64, epochs=1)
    assert len(trained.history.train_loss) == 1


def test_float64_network_trains(digits):
    net = models.build("mlp", digits.input_shape, 10, depth=1, width=8, seed=0).double()
    trained = _fit(net, digits, epochs=1, n_train=200)
    assert next(trained.net.parameters()).dtype == torch.float64


def test_evaluate_restores_the_mode_and_tracks_no_gradients(digits, net):
    net.train()
    loss, accuracy = train.evaluate(net, *digits.test, batch_size=100)
    assert net.training
    assert loss > 0 and 0 <= accuracy <= 1
    assert all(p.grad is None for p in net.parameters())
    full_loss, full_accuracy = train.evaluate(net, *digits.test)
    assert full_loss == pytest.approx(loss) and full_accuracy == accuracy


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": -1}, "epochs=-1"),
        ({"epochs": 1.5}, "epochs=1.5"),
        ({"lr": 0}, "lr=0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"n_train": 0}, "n_train=0"),
        ({"n_train": 10_000}, "n_train=10000 must be <= 1347"),
        ({"seed": -1}, "seed=-1"),
        ({"device": "tpu"}, "device='tpu'"),
    ],
)
def test_bad_arguments_name_the_parameter(digits, net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.fit(net, digits, **{"epochs": 1, "progress": False, **kwargs})


def test_bad_network_or_data_set_is_named(digits, net):
    with pytest.raises(ValueError, match="net must be a torch.nn.Module"):
        train.fit("mlp", digits, 1)
    with pytest.raises(ValueError, match="ds must be a landscape.data.Dataset"):
        train.fit(net, digits.train, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_is_reproducible_and_cached_on_the_device(digits, tmp_path):
    net = models.build("cnn", digits.input_shape, 10, depth=2, channels=8, batch_norm=True, seed=0)
    a = _fit(net, digits, device="cuda", cache_dir=tmp_path)
    b = _fit(net, digits, device="cuda")
    c = _fit(net, digits, device="cuda", cache_dir=tmp_path)
    assert next(a.net.parameters()).is_cuda and next(c.net.parameters()).is_cuda
    assert _same_weights(a.net, b.net) and _same_weights(a.net, c.net) and c.history.from_cache
    assert not torch.backends.cudnn.deterministic  # the global flag is restored


def test_cache_key_changes_with_the_training_code(digits, net, tmp_path, monkeypatch):
    assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is False
    assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is True
    monkeypatch.setattr(train, "TRAINING_CODE", "0" * 64)  # as if train.py had been edited
    assert _fit(net, digits, cache_dir=tmp_path).history.from_cache is False
