import pytest
import torch
from reference_code import adambnn_epoch_lrs

from bnn.layers import LearnableBias
from bnn.models import build_model
from bnn.optim import create_optimizer, create_schedule, decayed_parameters


def small_cnn():
    return build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8)


def test_weight_decay_reaches_conv_and_linear_kernels_but_not_classifier_bn_or_shifts():
    model = small_cnn()
    decayed = {id(p) for p in decayed_parameters(model)}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names and all(name.endswith("weight") for name in names)
    assert id(model.classifier.weight) not in decayed
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.PReLU | LearnableBias):
            assert not any(id(p) in decayed for p in module.parameters())


@pytest.mark.parametrize(
    "name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_factory_builds_two_groups(name, cls):
    model = small_cnn()
    opt = create_optimizer(model, name, lr=0.1, weight_decay=1e-4, momentum=0.8, nesterov=True)
    assert isinstance(opt, cls)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["nesterov"]


def test_adam_decay_is_coupled_and_adamw_decoupled():
    # With zero loss gradient, coupled L2 in Adam moves a weight by lr (normalised gradient wd*w),
    # decoupled AdamW by lr*wd*w: a tell-tale difference in size.
    def one_step(name):
        w = torch.nn.Parameter(torch.tensor([1.0]))
        opt = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        o = opt([w], lr=0.1, weight_decay=0.01)
        w.grad = torch.zeros(1)
        o.step()
        return 1.0 - w.item()

    assert one_step("adam") == pytest.approx(0.1, rel=1e-3)
    assert one_step("adamw") == pytest.approx(0.1 * 0.01, rel=1e-3)


def epoch_lrs(schedule: str, lr0: float, epochs: int) -> list[float]:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=lr0)
    sched = create_schedule(opt, schedule, epochs=epochs)
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


@pytest.mark.parametrize("epochs", [1, 4, 12])
def test_linear_schedule_is_adambnns_stepped_at_each_epoch_start(epochs):
    """AdamBNN steps LambdaLR(1 - e/E) before each epoch: epoch e runs at lr0 * (1 - (e+1)/E)."""
    assert epoch_lrs("linear", 1.25e-3, epochs) == pytest.approx(adambnn_epoch_lrs(1.25e-3, epochs))


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ("cosine", [1.0, 0.8535534, 0.5, 0.1464466]),
        ("constant", [1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_other_schedules_per_epoch(schedule, expected):
    assert epoch_lrs(schedule, 1.0, 4) == pytest.approx(expected)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        create_optimizer(small_cnn(), "lion", lr=1e-3, weight_decay=0)
    with pytest.raises(ValueError, match="schedule"):
        create_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), "step", 3)
