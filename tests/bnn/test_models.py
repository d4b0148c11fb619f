"""Model zoo: shapes, real first/last layers, stage switching and the registry contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnn.layers import BINARY_WEIGHT_LAYERS, SignActivation, binary_weight_layers, set_mode
from bnn.models import MODELS, build_model, model_options, register_model

# (name, in_channels, image_size, width, options): tiny widths at each model's intended input size.
CASES = [
    ("mlp", 1, 28, 16, {}),
    ("mlp", 1, 8, 16, {"depth": 3}),
    ("cnn", 1, 28, 8, {}),
    ("cnn", 1, 8, 8, {}),
    ("cnn", 3, 32, 8, {"stages": [1, 1, 1, 1]}),
    ("resnet18", 3, 32, 4, {}),
    ("reactnet_a", 3, 224, 4, {}),
]
IDS = [f"{name}-{size}" + ("-opts" if opts else "") for name, _, size, _, opts in CASES]
NUM_CLASSES = 10


def make(case, **kwargs):
    name, in_channels, image_size, width, options = case
    torch.manual_seed(0)
    model = build_model(
        name,
        num_classes=NUM_CLASSES,
        in_channels=in_channels,
        image_size=image_size,
        width=width,
        **options,
        **kwargs,
    )
    return model, torch.randn(2, in_channels, image_size, image_size)


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    return request.param


def test_registry_lists_every_family():
    assert set(MODELS) >= {"mlp", "cnn", "resnet18", "reactnet_a"}


def test_output_shape_in_every_mode(case):
    model, x = make(case)
    for mode in ("binary_act", "binary", "real"):
        set_mode(model, mode)
        assert model(x).shape == (2, NUM_CLASSES)


def test_stem_and_classifier_are_real(case):
    model, _ = make(case)
    assert type(model.classifier) is nn.Linear
    assert model.classifier.out_features == NUM_CLASSES
    stem_layers = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert stem_layers
    assert not any(isinstance(m, BINARY_WEIGHT_LAYERS) for m in stem_layers)
    assert list(binary_weight_layers(model)), "a binary model needs binary layers"


def test_built_in_stage1_mode(case):
    model, _ = make(case)
    assert not any(layer.binarize_weights for layer in binary_weight_layers(model))
    signs = [m for m in model.modules() if isinstance(m, SignActivation)]
    assert signs and all(s.enabled for s in signs)


def test_every_binary_layer_sees_binary_input(case):
    """Every binary conv/linear is preceded by a sign, so in the binary modes it only sees ±1."""
    model, x = make(case)
    seen = []

    def check(_module, inputs):
        seen.append(bool(((inputs[0] == 1) | (inputs[0] == -1)).all()))

    handles = [layer.register_forward_pre_hook(check) for layer in binary_weight_layers(model)]
    model(x)
    for h in handles:
        h.remove()
    assert seen and all(seen)


def test_stage2_loads_stage1_state_dict_strictly(case):
    stage1, _ = make(case)
    keys = list(stage1.state_dict())
    stage2, x = make(case)
    set_mode(stage2, "binary")
    assert list(stage2.state_dict()) == keys
    stage2.load_state_dict(stage1.state_dict(), strict=True)
    set_mode(stage1, "binary")
    stage1.eval()
    stage2.eval()
    torch.testing.assert_close(stage2(x), stage1(x))


def test_binary_weights_are_plus_minus_alpha(case):
    model, _ = make(case)
    set_mode(model, "binary")
    for layer in binary_weight_layers(model):
        latent = layer.weight.detach().flatten(1)
        rows = layer.effective_weight().detach().flatten(1)
        alpha = latent.abs().mean(1, keepdim=True)
        torch.testing.assert_close(rows.abs(), alpha.expand_as(rows))
        assert all(len(row.unique()) <= 2 for row in rows)
        assert torch.equal(torch.sign(rows), torch.where(latent >= 0, 1.0, -1.0))
    set_mode(model, "binary_act")
    for layer in binary_weight_layers(model):
        assert layer.effective_weight() is layer.weight


def test_modes_change_the_output(case):
    model, x = make(case)
    model.eval()
    outputs = {}
    for mode in ("real", "binary_act", "binary"):
        set_mode(model, mode)
        outputs[mode] = model(x)
    assert not torch.allclose(outputs["real"], outputs["binary_act"])
    assert not torch.allclose(outputs["binary_act"], outputs["binary"])


def test_gradients_reach_latent_weights_in_binary_mode(case):
    model, x = make(case)
    set_mode(model, "binary")
    loss = nn.functional.cross_entropy(model(x), torch.arange(2))
    loss.backward()
    for layer in binary_weight_layers(model):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    for param in (*model.stem.parameters(), *model.classifier.parameters()):
        assert param.grad is not None


@pytest.mark.parametrize("act, weight", [("ste", "recu"), ("approx_sign", "ste")])
def test_binarizers_reach_every_layer(act, weight):
    model, x = make(CASES[2], act_binarizer=act, weight_binarizer=weight)
    assert {s.binarizer for s in model.modules() if isinstance(s, SignActivation)} == {act}
    assert {layer.weight_binarizer for layer in binary_weight_layers(model)} == {weight}
    set_mode(model, "binary")
    model(x).sum().backward()


def test_cnn_stages_option_sets_depth_and_downsampling():
    model, x = make(("cnn", 1, 28, 8, {"stages": (1, 3)}))
    assert len(model.blocks) == 4
    assert model.blocks(model.stem(x)).shape == (2, 16, 14, 14)


def test_reactnet_a_channel_plan():
    model, x = make(("reactnet_a", 3, 224, 32, {}))
    assert len(model.blocks) == 13
    assert model.classifier.in_features == 1024
    model.eval()
    with torch.no_grad():
        assert model.blocks(model.stem(x[:1])).shape == (1, 1024, 7, 7)


def test_model_options():
    assert model_options("mlp") == {"depth": 2}
    assert "stages" in model_options("cnn")
    assert model_options("reactnet_a") == {}


def test_unknown_model_lists_the_names():
    with pytest.raises(ValueError, match="cnn"):
        build_model("nope", num_classes=10, in_channels=1, image_size=28, width=8)
    with pytest.raises(ValueError, match="unknown model"):
        model_options("nope")


def test_unknown_or_bad_option_raises():
    with pytest.raises(ValueError, match="depht"):
        build_model("mlp", num_classes=10, in_channels=1, image_size=28, width=8, depht=3)
    with pytest.raises(ValueError, match="depth"):
        build_model("mlp", num_classes=10, in_channels=1, image_size=28, width=8, depth=0)
    with pytest.raises(ValueError, match="width"):
        build_model("cnn", num_classes=10, in_channels=1, image_size=28, width=0)


def test_register_model_rejects_duplicates_and_bad_builders():
    with pytest.raises(ValueError, match="already registered"):
        register_model(MODELS["mlp"])

    def no_default(*, num_classes, in_channels, image_size, width, act_binarizer, weight_binarizer, depth):
        raise AssertionError("never built")

    with pytest.raises(TypeError, match="default"):
        register_model(no_default)
    assert "no_default" not in MODELS
