"""FF, C2I and dead weights on hand-made weight sequences and gradients with known answers."""

import math

import pytest
import torch
from torch import nn

from bnn.diagnostics import (
    DeadWeightTracker,
    SignTracker,
    latent_histogram,
    saturation_probe,
    sign_agreement,
    weight_signs,
)
from bnn.layers import BinaryLinear, RSign, set_mode


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = BinaryLinear(2, 2)  # 4 weights
        self.b = BinaryLinear(2, 2)  # 4 weights: N = 8
        self.head = nn.Linear(2, 2)  # real: never counted

    def set(self, a, b):
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor(a))
            self.b.weight.copy_(torch.tensor(b))
            self.head.weight.mul_(-1)


def test_ff_is_the_mean_per_step_flip_fraction_and_c2i_compares_with_start_and_init():
    model = TwoLayers()
    model.set([[1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, -1.0]])
    init = [s.clone() for s in weight_signs(model)]
    tracker = SignTracker(model, init_signs=init)

    model.set([[-1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, 1.0]])  # step 1: 2 of 8 flip
    tracker.step()
    model.set([[-1.0, 1.0], [1.0, 1.0]], [[-1.0, -1.0], [-1.0, 1.0]])  # step 2: none
    tracker.step()
    model.set([[1.0, 1.0], [1.0, 0.0]], [[-1.0, -1.0], [-1.0, 1.0]])  # step 3: 1 flips back, 0.0 is +1
    tracker.step()
    summary = tracker.epoch_summary()
    assert summary["ff_ratio"] == pytest.approx((2 / 8 + 0 + 1 / 8) / 3)
    assert summary["c2i_stage"] == pytest.approx(7 / 8)
    assert summary["changed_from_init"] == pytest.approx(1 / 8)

    # a second epoch starts counting afresh; C2I keeps its references
    model.set([[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])  # 3 more flips
    tracker.step()
    summary = tracker.epoch_summary()
    assert summary["ff_ratio"] == pytest.approx(3 / 8)
    assert summary["c2i_stage"] == pytest.approx(4 / 8)


def test_c2i_against_first_init_differs_from_stage_start():
    model = TwoLayers()
    model.set([[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])
    first_init = weight_signs(model)
    model.set([[-1.0, -1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])  # stage 1 moved 2 signs
    tracker = SignTracker(model, init_signs=first_init)
    summary = tracker.epoch_summary()
    assert summary["ff_ratio"] == 0.0
    assert summary["c2i_stage"] == 1.0
    assert summary["c2i_init"] == pytest.approx(6 / 8)


def test_sign_agreement_rejects_other_architectures():
    with pytest.raises(ValueError):
        sign_agreement([torch.ones(2, dtype=torch.bool)], [torch.ones(3, dtype=torch.bool)])


def test_saturation_counts_sign_inputs_outside_unit_interval_only_while_probing():
    act = RSign(4)
    x = torch.tensor([[0.5, -1.5, 2.0, 1.0]])
    with saturation_probe(act) as counts:
        act(x)
    act(x)  # after the probe: not counted
    assert int(counts["saturated"]) == 2 and int(counts["total"]) == 4


def test_latent_histogram_counts_every_binary_weight():
    model = TwoLayers()
    model.set([[-1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [2.0, -3.0]])
    hist = latent_histogram(model, bins=3, limit=1.5)
    assert hist["counts"] == [2.0, 4.0, 2.0]  # outliers 2 and -3 clip to the end bins
    assert hist["edges"] == pytest.approx([-1.5, -0.5, 0.5, 1.5])


def run_steps(layer, optimizer, tracker, scales, steps=50):
    """Optimizer steps on hand-made gradients: fresh Gaussian noise times each weight's scale."""
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        layer.weight.grad = torch.randn(layer.weight.shape, generator=g) * scales
        tracker.before_step()
        optimizer.step()
        tracker.after_step()


def quarter_small_layer():
    """A binary layer of 40 x 100 weights: columns 0-24 get gradients 1000x smaller than the rest,
    column 25 none at all (blocked or saturated on every sample: not a small gradient)."""
    layer = set_mode(BinaryLinear(100, 40), "binary")
    scales = torch.ones(40, 100)
    scales[:, :25] = 1e-3
    scales[:, 25] = 0.0
    return layer, scales


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9),
}


@pytest.mark.parametrize(("name", "low", "high"), [("adam", 0.8, 1.25), ("sgd", 0.0, 0.01)])
def test_adam_moves_small_gradient_weights_as_far_as_the_rest_and_sgd_does_not(name, low, high):
    layer, scales = quarter_small_layer()
    tracker = DeadWeightTracker(layer)
    run_steps(layer, OPTIMIZERS[name]([layer.weight]), tracker, scales)
    summary = tracker.epoch_summary()
    assert summary["dead_small_grad"] == 0.25  # exactly the small columns: not the zero one
    assert low < summary["dead_relative_update"] < high
    assert summary["dead_beyond_clip"] == 0.0  # Kaiming-uniform weights lie inside the clip


def test_the_median_is_each_layers_own_and_an_epoch_starts_afresh():
    """A layer whose gradients are all 1000x smaller has no dead weights of its own; the next epoch
    without steps has none either, and no update ratio to report."""
    layer, scales = quarter_small_layer()
    quiet = set_mode(BinaryLinear(100, 40), "binary")
    model = nn.Sequential(layer, quiet)
    tracker = DeadWeightTracker(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        optimizer.zero_grad()
        layer.weight.grad = torch.randn(40, 100, generator=g) * scales
        quiet.weight.grad = torch.randn(40, 100, generator=g) * 1e-3
        tracker.before_step()
        optimizer.step()
        tracker.after_step()
    assert tracker.epoch_summary()["dead_small_grad"] == pytest.approx(0.25 / 2)
    summary = tracker.epoch_summary()
    assert summary["dead_small_grad"] == 0.0 and math.isnan(summary["dead_relative_update"])


def test_weights_beyond_the_clip_are_blocked_and_have_no_small_gradient():
    model = TwoLayers()
    set_mode(model, "binary")
    model.set([[0.5, 2.0], [-1.5, 0.3]], [[0.2, -0.4], [0.1, 0.9]])  # 2 of 8 beyond |w| = 1
    tracker = DeadWeightTracker(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model.head(model.b(model.a(torch.randn(4, 2)))).sum().backward()
        tracker.before_step()
        optimizer.step()
        tracker.after_step()
    assert model.a.weight.grad[0, 1] == 0 and model.a.weight.grad[1, 0] == 0
    small = tracker.small_gradient()[0]
    assert not small[0, 1] and not small[1, 0]  # a zero gradient is not a small one
    assert tracker.epoch_summary()["dead_beyond_clip"] == 2 / 8
