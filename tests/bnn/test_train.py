import math

import pytest
import torch

from bnn import StageConfig, binary_weight_layers, build_model, evaluate, set_mode, train_stage, weight_signs
from bnn.train import NonFiniteLossError, stage_ff_ratio, stage_final


def mlp(data, seed=0):
    torch.manual_seed(seed)
    return build_model(
        "mlp",
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        image_size=data.image_size,
        width=64,
    )


def test_two_stages_learn_and_stage_two_starts_from_stage_one_weights(digits):
    model = mlp(digits)
    stage1 = train_stage(
        model, digits, StageConfig(epochs=3, lr=3e-3, weight_decay=5e-6), mode="binary_act", seed=0
    )
    stage1_state = {k: v.clone() for k, v in model.state_dict().items()}

    stage2_model = mlp(digits, seed=123)  # a different random init, to be overwritten
    stage2_model.load_state_dict(stage1_state, strict=True)
    set_mode(stage2_model, "binary")
    for name, tensor in stage2_model.state_dict().items():
        assert torch.equal(tensor, stage1_state[name]), name
    observed = []
    stage2 = train_stage(
        stage2_model,
        digits,
        StageConfig(epochs=2, lr=1e-3),
        mode="binary",
        seed=0,
        init_signs=stage1.init_signs,
        observers=[observed.append],
    )

    assert stage1.final["val_acc"] > 0.8 and stage2.final["val_acc"] > 0.8
    assert [r["epoch"] for r in observed] == [1, 2]
    # C2I references: the stage start is stage 1's final signs; init is stage 1's random init.
    assert stage2.init_signs is stage1.init_signs
    stage1_end = weight_signs(model)
    assert not all(torch.equal(a, b) for a, b in zip(stage1_end, stage1.init_signs, strict=True))
    for key in ("ff_ratio", "c2i_stage", "c2i_init", "changed_from_init", "saturation"):
        assert 0.0 <= stage2.final[key] <= 1.0
    assert stage2.final["changed_from_init"] == pytest.approx(1 - stage2.final["c2i_init"])


def test_same_seed_gives_identical_metrics_on_cpu(digits):
    cfg = StageConfig(epochs=2, lr=2e-3, weight_decay=1e-5)
    runs = [train_stage(mlp(digits), digits, cfg, mode="binary", seed=7).history for _ in range(2)]
    assert runs[0] == runs[1]
    other = train_stage(mlp(digits), digits, cfg, mode="binary", seed=8).history
    assert other != runs[0]


def test_nan_loss_stops_the_stage_with_a_clear_error(digits):
    model = mlp(digits)
    with torch.no_grad():
        model.classifier.weight.fill_(math.nan)
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        train_stage(model, digits, StageConfig(epochs=1, lr=1e-3), mode="binary", seed=0)


def test_an_observer_can_stop_training(digits):
    class Stop(Exception):
        pass

    def stop_after_first(record):
        raise Stop(record["epoch"])

    with pytest.raises(Stop):
        train_stage(
            mlp(digits),
            digits,
            StageConfig(epochs=5, lr=1e-3),
            mode="binary",
            seed=0,
            observers=[stop_after_first],
        )


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_other_optimizers_and_recu_train(digits, optimizer):
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=10, in_channels=1, image_size=8, width=8, weight_binarizer="recu")
    cfg = StageConfig(
        epochs=2, lr=0.05 if optimizer == "sgd" else 3e-3, optimizer=optimizer, schedule="cosine"
    )
    result = train_stage(model, digits, cfg, mode="binary", seed=0)
    assert result.final["val_acc"] > 0.3


def test_distillation_from_a_real_valued_teacher(digits):
    teacher = mlp(digits, seed=1)
    train_stage(teacher, digits, StageConfig(epochs=2, lr=3e-3), mode="real", seed=0, track_signs=False)
    teacher_acc = evaluate(teacher, digits.val, digits)["acc"]
    student = train_stage(
        mlp(digits), digits, StageConfig(epochs=2, lr=3e-3), mode="binary_act", seed=0, teacher=teacher
    )
    assert teacher_acc > 0.8 and student.final["val_acc"] > 0.6


def test_stage_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="lr"):
        StageConfig(epochs=1, lr=-1e-3)
    with pytest.raises(ValueError, match="optimizer"):
        StageConfig(epochs=1, lr=1e-3, optimizer="lion")


def test_records_training_saturation_and_dead_weights_each_epoch(digits):
    result = train_stage(mlp(digits), digits, StageConfig(epochs=2, lr=2e-3), mode="binary", seed=0)
    for record in result.history:
        for key in ("saturation", "saturation_train", "dead_beyond_clip", "dead_small_grad"):
            assert 0.0 <= record[key] <= 1.0, key
        assert "dead_relative_update" in record and "dead_zero_grad" not in record
        # train mode (batch statistics) and eval mode (running statistics) see different inputs
        assert record["saturation_train"] != record["saturation"]
    # Kaiming-uniform latent weights of a 64-wide MLP lie far inside the clip
    assert result.final["dead_beyond_clip"] == 0.0


def test_latent_weights_beyond_the_clip_get_no_gradient_and_count_as_dead(digits):
    model = mlp(digits)
    layer = next(iter(binary_weight_layers(model)))
    with torch.no_grad():
        layer.weight[:, :8] = 2.0  # beyond the clip: no gradient through the clip STE
    cfg = StageConfig(epochs=1, lr=1e-3, schedule="constant")
    result = train_stage(model, digits, cfg, mode="binary", seed=0)
    share = layer.weight[:, :8].numel() / sum(w.weight.numel() for w in binary_weight_layers(model))
    assert result.final["dead_beyond_clip"] == pytest.approx(share)
    assert result.final["dead_small_grad"] <= 1 - share  # no gradient at all is not a small one


def relative_update(digits, optimizer, lr):
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=8, width=64, weight_binarizer="recu")
    cfg = StageConfig(epochs=1, lr=lr, optimizer=optimizer, schedule="constant")
    return train_stage(model, digits, cfg, mode="binary", seed=0).final


def test_adam_moves_recus_clamped_small_gradient_weights_and_sgd_hardly(digits):
    """Beyond ReCU's clamp only the channel's mean and std reach a weight: a tiny gradient."""
    adam, sgd = relative_update(digits, "adam", 1e-3), relative_update(digits, "sgd", 0.05)
    for final in (adam, sgd):
        assert 0.01 < final["dead_small_grad"] < final["dead_beyond_clip"]
    assert sgd["dead_relative_update"] < 0.2 < 0.5 < adam["dead_relative_update"]


def test_stage_ff_leaves_out_epochs_at_learning_rate_zero(digits):
    result = train_stage(mlp(digits), digits, StageConfig(epochs=3, lr=2e-3), mode="binary", seed=0)
    assert [r["lr"] > 0 for r in result.history] == [True, True, False]  # linear: the last runs at 0
    assert result.history[-1]["ff_ratio"] == 0.0
    trained = [r["ff_ratio"] for r in result.history[:2]]
    assert result.final["ff_ratio"] == pytest.approx(sum(trained) / 2)
    assert result.final["dead_small_grad"] == result.history[1]["dead_small_grad"]  # the last that trained


def test_stage_ff_of_a_stage_that_never_trained_is_its_mean_over_all_epochs():
    assert stage_ff_ratio([{"lr": 0.5, "ff_ratio": 0.3}, {"lr": 0.0, "ff_ratio": 0.0}]) == 0.3
    assert stage_ff_ratio([{"lr": 0.0, "ff_ratio": 0.0}]) == 0.0


def test_final_dead_weights_come_from_the_last_epoch_that_moved_any_weight():
    """At lr 0 nothing moves: no update ratio (NaN). The last epoch's other values stay."""
    dead = {"dead_beyond_clip": 0.1, "dead_small_grad": 0.2}
    history = [
        {"epoch": 1, "lr": 0.5, "val_acc": 0.7, "ff_ratio": 0.3, **dead, "dead_relative_update": 0.9},
        {"epoch": 2, "lr": 0.0, "val_acc": 0.8, "ff_ratio": 0.0, **dead, "dead_relative_update": math.nan},
    ]
    history[1]["dead_small_grad"] = 0.25
    assert stage_final(history) == {
        "val_acc": 0.8,
        "ff_ratio": 0.3,
        "dead_beyond_clip": 0.1,
        "dead_small_grad": 0.2,
        "dead_relative_update": 0.9,
    }
    untracked = [{"epoch": 1, "lr": 0.0, "val_acc": 0.5}]
    assert stage_final(untracked) == {"val_acc": 0.5}
