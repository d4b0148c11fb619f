"""FF and C2I on hand-made weight sequences with exact expected values."""

import pytest
import torch
from torch import nn

from bnn.diagnostics import SignTracker, latent_histogram, saturation_probe, sign_agreement, weight_signs
from bnn.layers import BinaryLinear, RSign


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
