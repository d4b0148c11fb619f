import math

import pytest
import torch

from bnn.binarize import ApproxSign, SignSTE, hard_sign, recu_quantize, recu_tau


def test_sign_is_plus_one_at_zero():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    assert hard_sign(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]


def test_clip_ste_gradient_is_one_inside_unit_interval():
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.2], requires_grad=True)
    SignSTE.apply(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_approx_sign_gradient_is_piecewise_polynomial():
    x = torch.tensor([-1.5, -0.75, -0.25, 0.0, 0.25, 0.75, 1.5], requires_grad=True)
    out = ApproxSign.apply(x)
    out.backward(torch.ones_like(out))
    assert out.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    # 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 elsewhere
    assert x.grad.tolist() == pytest.approx([0.0, 0.5, 1.5, 2.0, 1.5, 0.5, 0.0])


def test_recu_tau_grows_exponentially_between_bounds():
    taus = [recu_tau(p) for p in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert taus[0] == pytest.approx(0.85) and taus[-1] == pytest.approx(0.99)
    steps = [b - a for a, b in zip(taus, taus[1:], strict=False)]
    assert all(later > earlier for earlier, later in zip(steps, steps[1:], strict=False))


def test_recu_clamps_each_channel_to_its_quantile():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    w[0, 0, 0, 0] = 50.0  # a "dead" weight far out
    q = recu_quantize(w, tau=0.9)
    assert q.shape == w.shape
    per_channel_max = q.abs().flatten(1).max(1).values
    for c in range(4):
        centred = w[c] - w[c].mean()
        scaled = centred / (torch.sqrt(centred.var() + 1e-5) / (2 * math.sqrt(2)))
        b = scaled.abs().mean()
        assert per_channel_max[c] <= -b * math.log(2 - 2 * 0.9) + 1e-5
    assert torch.equal(torch.sign(q[0, 0, 0, 0]), torch.tensor(1.0))
