"""Binary layers against the reference code (tests/bnn/reference_code.py): forward and gradients."""

import pytest
import torch
import torch.nn.functional as F
from reference_code import hard_binary_conv_weight, recu_clamp_blocks, recu_conv

from bnn.diagnostics import saturation_probe, weight_signs
from bnn.layers import (
    BinaryConv2d,
    BinaryLinear,
    RSign,
    SignActivation,
    binary_weight_layers,
    init_binary_weights,
    set_act_std_normalise,
    set_mode,
)
from bnn.models import build_model


def latent_weights(shape, seed=0):
    """Weights on both sides of the clip (|w| > 1 for some), none exactly 0 (sign(0) differs)."""
    torch.manual_seed(seed)
    w = torch.randn(shape) * 0.8
    return torch.where(w == 0, torch.full_like(w, 0.1), w)


def test_binary_conv_forward_and_latent_gradient_match_hardbinaryconv():
    """dL/dw = dL/dW_b * 1{|w| <= 1}, not multiplied by alpha (ReActNet/AdamBNN's detach trick)."""
    layer = set_mode(BinaryConv2d(3, 4, 3, padding=1), "binary")
    w = latent_weights(layer.weight.shape)
    with torch.no_grad():
        layer.weight.copy_(w)
    x = torch.randn(2, 3, 5, 5)
    upstream = torch.randn(2, 4, 5, 5)
    out = layer(x)
    out.backward(upstream)

    reference_w = w.clone().requires_grad_()
    reference = F.conv2d(x, hard_binary_conv_weight(reference_w), padding=1)
    reference.backward(upstream)
    assert torch.allclose(out, reference, atol=1e-6)
    assert torch.allclose(layer.weight.grad, reference_w.grad, atol=1e-6)
    assert (layer.weight.grad[w.abs() > 1] == 0).all() and (layer.weight.grad[w.abs() <= 1] != 0).any()


def test_binary_linear_matches_hardbinaryconv_as_a_one_by_one_conv():
    layer = set_mode(BinaryLinear(6, 3), "binary")
    w = latent_weights(layer.weight.shape, seed=1)
    with torch.no_grad():
        layer.weight.copy_(w)
    x = torch.randn(4, 6)
    layer(x).sum().backward()
    reference_w = w.view(3, 6, 1, 1).clone().requires_grad_()
    reference = F.conv2d(x.view(4, 6, 1, 1), hard_binary_conv_weight(reference_w)).view(4, 3)
    reference.sum().backward()
    assert torch.allclose(layer(x), reference, atol=1e-6)
    assert torch.allclose(layer.weight.grad, reference_w.grad.view(3, 6), atol=1e-6)


@pytest.mark.parametrize("tau", [0.85, 0.95, 0.99])
def test_recu_layer_matches_recu_binarizeconv2d(tau):
    """Forward, latent-weight gradient, scale gradient and activation gradient of ReCU's layer."""
    torch.manual_seed(0)
    act = set_act_std_normalise(SignActivation("approx_sign"), True)
    layer = set_mode(BinaryConv2d(3, 4, 3, padding=1, weight_binarizer="recu"), "binary")
    layer.tau = tau
    w = latent_weights(layer.weight.shape, seed=2) + 0.3  # an off-centre layer: signs of centred w
    with torch.no_grad():
        layer.weight.copy_(w)
    a = (torch.randn(2, 3, 5, 5) * 2).requires_grad_()
    upstream = torch.randn(2, 4, 5, 5)
    out = layer(act(a))
    out.backward(upstream)

    ref_w = w.clone().requires_grad_()
    ref_alpha = layer.scale.detach().view(4, 1, 1).clone().requires_grad_()
    ref_a = a.detach().clone().requires_grad_()
    reference = recu_conv(ref_a, ref_w, ref_alpha, tau, training=True)
    reference.backward(upstream)
    assert torch.allclose(out, reference, atol=1e-5)
    assert torch.allclose(layer.weight.grad, ref_w.grad, atol=1e-5)
    assert torch.allclose(layer.scale.grad, ref_alpha.grad.flatten(), atol=1e-4)
    assert torch.allclose(a.grad, ref_a.grad, atol=1e-5)


@pytest.mark.parametrize(("tau", "clamped"), [(0.85, 33), (0.95, 12), (0.99, 0)])
def test_recu_blocked_weights_are_those_recus_clamp_passes_no_gradient(tau, clamped):
    layer = set_mode(BinaryConv2d(3, 4, 3, weight_binarizer="recu"), "binary")
    layer.tau = tau
    w = latent_weights(layer.weight.shape, seed=3) * 3 + 0.5  # most |w| > 1, off-centre channels
    with torch.no_grad():
        layer.weight.copy_(w)
    reference = recu_clamp_blocks(w, tau)
    assert torch.equal(layer.blocked_weights(), reference)
    assert int(reference.sum()) == clamped  # of 108: the bound widens as tau grows


def test_a_recu_layer_that_clamps_nothing_blocks_nothing_whatever_its_scale():
    """Evenly spread weights lie within 1.73 std of their mean, inside ReCU's bound at tau 0.99
    (3.4 std): every weight gets a gradient, although two thirds have |w| > 1."""
    w = torch.linspace(-3, 3, 4 * 3 * 3 * 3).view(4, 3, 3, 3)
    recu = set_mode(BinaryConv2d(3, 4, 3, weight_binarizer="recu"), "binary")
    clip = set_mode(BinaryConv2d(3, 4, 3), "binary")
    recu.tau = 0.99
    with torch.no_grad():
        recu.weight.copy_(w)
        clip.weight.copy_(w)
    assert not recu.blocked_weights().any() and not recu_clamp_blocks(w, 0.99).any()
    assert torch.equal(clip.blocked_weights(), w.abs() > 1) and clip.blocked_weights().float().mean() > 0.6
    set_mode(clip, "binary_act")  # real weights: no binarizer, nothing blocked
    assert not clip.blocked_weights().any()


def test_recu_signs_tracked_are_the_forward_signs_of_the_centred_weights():
    layer = set_mode(BinaryLinear(4, 1, weight_binarizer="recu"), "binary")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.6]]))  # all positive, mean 0.3
    forward = layer.effective_weight() > 0
    assert forward.tolist() == [[False, False, True, True]]
    assert torch.equal(weight_signs(layer)[0], forward)


@pytest.mark.parametrize("binarizer", ["ste", "recu"])
def test_forward_signs_written_into_a_float_buffer_are_the_bool_signs(binarizer):
    layer = set_mode(BinaryLinear(4, 2, weight_binarizer=binarizer), "binary")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, -0.0, -0.5, 0.5], [-0.0, -0.0, -0.0, 0.0]]))
    out = torch.full((2, 4), 7.0)
    assert layer.forward_signs(out=out) is out
    assert torch.equal(out, layer.forward_signs().float())
    assert out.tolist()[1] == [1.0, 1.0, 1.0, 1.0]  # -0.0 is +1, as hard_sign has it


def test_std_normalisation_acts_in_training_only_and_saturation_counts_what_the_sign_sees():
    act = set_act_std_normalise(SignActivation("approx_sign"), True)
    x = torch.tensor([[4.0, -4.0, 4.0, -4.0]])  # std 4.62: normalised, nothing beyond 1
    with saturation_probe(act) as counts:
        act.train()(x)
    assert int(counts["saturated"]) == 0
    with saturation_probe(act) as counts:
        act.eval()(x)
    assert int(counts["saturated"]) == 4


def test_rsign_is_identity_plus_shift_in_real_mode():
    act = RSign(2)
    x = torch.tensor([[0.3, -0.2]])
    assert act(x).tolist() == [[1.0, -1.0]]
    set_mode(act, "real")
    assert act(x)[0].tolist() == pytest.approx([0.3, -0.2])


@pytest.mark.parametrize("binarizer", ["ste", "recu"])
def test_modes_change_no_state_dict_keys_so_stage_two_loads_strictly(binarizer):
    model = build_model(
        "cnn", num_classes=10, in_channels=1, image_size=8, width=8, weight_binarizer=binarizer
    )
    stage1_keys = list(model.state_dict())
    set_mode(model, "binary")
    assert list(model.state_dict()) == stage1_keys


def test_unknown_mode_and_init_are_rejected():
    model = BinaryLinear(2, 2)
    with pytest.raises(ValueError, match="mode"):
        set_mode(model, "ternary")
    with pytest.raises(ValueError, match="init"):
        init_binary_weights(model, "zeros")


def test_reactnet_init_starts_every_sign_positive_and_kaiming_is_symmetric():
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=64)
    init_binary_weights(model, "reactnet")
    assert all((layer.weight >= 0).all() for layer in binary_weight_layers(model))
    init_binary_weights(model, "kaiming")
    positive = (
        torch.cat([(layer.weight >= 0).flatten() for layer in binary_weight_layers(model)]).float().mean()
    )
    assert 0.45 < positive < 0.55


@pytest.mark.parametrize("tau", [0.85, 0.99])
def test_recu_layer_matches_recu_binarizeconv2d_at_a_resnet_layers_size(tau):
    """The fused weight path and std division (one autograd node each) against ReCU's formula on a
    64 -> 128 3x3 layer with off-centre weights and inputs: equal to float rounding."""
    torch.manual_seed(1)
    act = set_act_std_normalise(SignActivation("approx_sign"), True)
    layer = set_mode(BinaryConv2d(64, 128, 3, padding=1, weight_binarizer="recu"), "binary")
    layer.tau = tau
    w = latent_weights(layer.weight.shape, seed=4) * 3 + 0.01
    with torch.no_grad():
        layer.weight.copy_(w)
    a = (torch.randn(8, 64, 8, 8) * 2 + 0.5).requires_grad_()
    upstream = torch.randn(8, 128, 8, 8)
    out = layer(act(a))
    out.backward(upstream)

    ref_w = w.clone().requires_grad_()
    ref_alpha = layer.scale.detach().view(-1, 1, 1).clone().requires_grad_()
    ref_a = a.detach().clone().requires_grad_()
    reference = recu_conv(ref_a, ref_w, ref_alpha, tau, training=True)
    reference.backward(upstream)
    for ours, theirs in ((out, reference), (layer.weight.grad, ref_w.grad), (a.grad, ref_a.grad),
                         (layer.scale.grad, ref_alpha.grad.flatten())):  # fmt: skip
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.detach().abs().max()))
