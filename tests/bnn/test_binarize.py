"""Binarizers against the reference code's formulas (tests/bnn/reference_code.py)."""

import pytest
import torch
from reference_code import BinaryQuantize_a, recu_cpt_tau

from bnn.binarize import ApproxSign, RecuSign, SignSTE, hard_sign, recu_bound, recu_standardised, recu_tau


def test_sign_is_plus_one_at_zero():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert hard_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_clip_ste_gradient_is_one_inside_unit_interval():
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.2], requires_grad=True)
    SignSTE.apply(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_approx_sign_matches_recu_and_reactnet_activation_gradient():
    torch.manual_seed(0)
    x = (torch.randn(1000) * 0.8).requires_grad_()
    upstream = torch.randn(1000)
    ApproxSign.apply(x).backward(upstream)
    ours = x.grad.clone()
    x.grad = None
    BinaryQuantize_a.apply(x).backward(upstream)
    assert torch.allclose(ours, x.grad)


def test_recu_tau_is_recus_cpt_tau():
    for epoch in range(10):
        assert recu_tau(epoch / 10) == pytest.approx(recu_cpt_tau(epoch, 10), abs=1e-6)


def test_recu_clamp_uses_one_mean_abs_for_the_whole_layer():
    """ReCU's Q_tau comes from E|w| over the layer: channels of different spread share one bound."""
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    w[0] = torch.distributions.Laplace(0.0, 1.0).sample((3, 3, 3))  # heavy tails: some clamp
    w[0, 0, 0, 0] = 50.0  # a "dead" weight far out
    scaled, _ = recu_standardised(w)
    bound = recu_bound(scaled, tau=0.9)
    maxima = scaled.clamp(-bound, bound).abs().max(1).values
    assert maxima[0] == pytest.approx(float(maxima.max()))  # the clamped channel sits at the bound
    assert RecuSign.apply(w, 0.9)[0, 0, 0, 0] == 1.0
