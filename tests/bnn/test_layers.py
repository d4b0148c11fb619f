import pytest
import torch

from bnn.layers import (
    BinaryConv2d,
    BinaryLinear,
    RSign,
    binary_weight_layers,
    init_binary_weights,
    set_mode,
)
from bnn.models import build_model


def test_binary_linear_uses_alpha_sign_of_latent_weights_in_stage_two():
    layer = BinaryLinear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.1, 0.0], [-0.3, -0.3, 0.6]]))
    set_mode(layer, "binary")
    alpha = torch.tensor([[0.2], [0.4]])
    expected = alpha * torch.tensor([[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])
    assert torch.allclose(layer.effective_weight(), expected)
    set_mode(layer, "binary_act")
    assert torch.equal(layer.effective_weight(), layer.weight)


def test_alpha_is_detached_and_gradient_passes_the_clip_ste():
    layer = BinaryConv2d(1, 1, 1)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    set_mode(layer, "binary")
    layer(torch.ones(1, 1, 2, 2)).sum().backward()
    # d/dw of alpha*sign(w) with alpha detached: alpha * 1 (|w| <= 1) times the input sum (4)
    assert layer.weight.grad.item() == pytest.approx(0.5 * 4)


def test_rsign_is_identity_plus_shift_in_real_mode():
    act = RSign(2)
    x = torch.tensor([[0.3, -0.2]])
    assert act(x).tolist() == [[1.0, -1.0]]
    set_mode(act, "real")
    assert act(x)[0].tolist() == pytest.approx([0.3, -0.2])


def test_modes_change_no_state_dict_keys_so_stage_two_loads_strictly():
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)
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
