"""The training-step benchmark: its step is train_stage's, its ratios come from its timings, its
command line runs end to end on tiny sizes, and the reference folder is optional and checked."""

from __future__ import annotations

import copy
import sys
import textwrap

import cli_runner
import pytest
import torch

from bnn import MODELS, StageConfig, build_model, iterate_batches, train_stage
from study.benchmark import reference
from study.benchmark.__main__ import main
from study.benchmark.report import ModelTimes, table
from study.benchmark.step import TrainStep
from study.benchmark.variants import (
    BINARY,
    COMPILED,
    DIAGNOSTICS,
    OUR_BINARY_CONV,
    REAL,
    SIZES,
    Size,
    Variant,
)

# What train_stage's epoch record takes from its validation pass, not from its training steps.
VALIDATION_KEYS = {"epoch", "lr", "val_loss", "val_acc", "saturation"}
TINY = ["--width", "8", "--batch-size", "4", "--image-size", "32", "--rounds", "2", "--steps", "8",
        "--threads", "1"]  # fmt: skip


def tiny_model(digits, name: str, binarizer: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=digits.num_classes, in_channels=digits.in_channels,
                       image_size=digits.image_size, width=8, weight_binarizer=binarizer)  # fmt: skip


def replica_epoch(model, digits, cfg: StageConfig, diagnostics: bool) -> dict:
    """The first epoch of ``train_stage(..., seed=0)``, stepped by the benchmark's replica."""
    step = TrainStep(model, cfg, "binary", diagnostics)
    shuffle = torch.Generator().manual_seed(0)
    for x, y in iterate_batches(digits.train, batch_size=cfg.batch_size, mean=digits.mean, std=digits.std,
                                shuffle=True, generator=shuffle):  # fmt: skip
        step(x, y)
    return step.epoch_record()


def first_epoch(model, digits, cfg: StageConfig, track_signs: bool) -> tuple[dict, dict]:
    """``train_stage``'s first epoch record and the weights at its end."""
    weights = []
    result = train_stage(model, digits, cfg, mode="binary", seed=0, track_signs=track_signs,
                         observers=[lambda _: weights.append(copy.deepcopy(model.state_dict()))])  # fmt: skip
    return result.history[0], weights[0]


def assert_same_weights(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize(("name", "binarizer"), [("mlp", "ste"), ("cnn", "recu")])
def test_the_replica_steps_as_train_stage_with_every_diagnostic(digits, name, binarizer):
    # Two epochs of the linear schedule: the first runs at half the lr, which the replica must set too.
    cfg = StageConfig(epochs=2, lr=1e-2, batch_size=128)
    record, weights = first_epoch(tiny_model(digits, name, binarizer), digits, cfg, track_signs=True)
    model = tiny_model(digits, name, binarizer)
    ours = replica_epoch(model, digits, cfg, diagnostics=True)
    assert_same_weights(model.state_dict(), weights)
    expected = {key: value for key, value in record.items() if key not in VALIDATION_KEYS}
    assert ours == pytest.approx(expected, rel=0, abs=0, nan_ok=True)  # the same keys: no tracker missed
    assert {"ff_ratio", "dead_small_grad", "saturation_train"} <= ours.keys() and ours["saturation_train"] > 0


def test_without_diagnostics_the_replica_trains_the_same_weights(digits):
    cfg = StageConfig(epochs=2, lr=1e-2, batch_size=128)
    record, weights = first_epoch(tiny_model(digits, "mlp", "ste"), digits, cfg, track_signs=False)
    model = tiny_model(digits, "mlp", "ste")
    ours = replica_epoch(model, digits, cfg, diagnostics=False)
    assert_same_weights(model.state_dict(), weights)
    assert (ours["train_loss"], ours["train_acc"]) == (record["train_loss"], record["train_acc"])
    assert ours["saturation_train"] == 0 and "ff_ratio" not in ours


def test_every_registered_model_has_a_benchmark_size():
    assert set(SIZES) == set(MODELS)


def test_the_ratios_are_per_round_ratios_of_the_timings():
    real, binary, diagnostics, theirs = [1.0, 2.0, 4.0], [1.2, 2.2, 4.8], [1.26, 2.2, 4.8], [1.0, 2.0, 3.0]
    seconds = {Variant("", REAL): real, Variant("ste", BINARY): binary,
               Variant("ste", DIAGNOSTICS): diagnostics, Variant("ste", "theirs"): theirs}  # fmt: skip
    times = ModelTimes("mlp", Size(8, 4, 8, 1, 8), seconds)
    assert times.ratios(Variant("", REAL)) == {}
    assert times.ratios(Variant("ste", BINARY))["binary / real"].median == pytest.approx(1.2)
    assert times.ratios(Variant("ste", DIAGNOSTICS))["diagnostics / none"].median == pytest.approx(1.0)
    assert times.ratios(Variant("ste", "theirs"))["ours / reference"].median == pytest.approx(1.2)
    rows = table([times]).set_index("variant")
    assert rows.loc[BINARY, "binary / real"] == "1.200 (1.150-1.200)"
    assert rows.loc[REAL, "median ms"] == "2000" and rows.loc[REAL, "IQR ms"] == "1500-3000"
    assert rows.loc[DIAGNOSTICS, "diagnostics / none"] == "1.000 (1.000-1.025)"
    assert rows.loc["theirs", "ours / reference"] == "1.200 (1.150-1.400)"


@pytest.mark.parametrize(("compiled", "pays"), [([0.6, 0.5, 0.5], "100"), ([1.2, 1.1, 1.3], "never")])
def test_compiling_is_priced_by_its_first_steps_and_repaid_by_the_steps_it_saves(compiled, pays):
    eager = [1.0, 1.0, 1.1]
    seconds = {Variant("", REAL): eager, Variant("ste", BINARY): eager, Variant("ste", DIAGNOSTICS): eager,
               Variant("ste", COMPILED): compiled}  # fmt: skip
    warmup = {variant: 2.0 for variant in seconds} | {Variant("ste", COMPILED): 52.0}
    rows = table([ModelTimes("cnn", Size(8, 4, 8, 1, 8), seconds, warmup)]).set_index("variant")
    assert rows.loc[COMPILED, "compile s"] == "50" and rows.loc[COMPILED, "pays after steps"] == pays
    assert rows.loc[BINARY, "compile s"] == ""  # only the compiled row carries the columns
    assert rows.loc[COMPILED, "diagnostics / none"] == rows.loc[COMPILED, "ours / reference"] == ""


def parse(rows: str) -> list[dict[str, str]]:
    """A markdown table's rows as dicts by column."""
    header, _, *lines = [
        [cell.strip() for cell in line.strip().strip("|").split("|")] for line in rows.splitlines()
    ]
    return [dict(zip(header, line, strict=True)) for line in lines]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m study.benchmark`` in this process: exit status, stdout, stderr."""
    return cli_runner.run_cli(main, argv, capsys)


def test_the_command_times_every_model_and_binarizer_and_fills_the_readme(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(reference.ENV, raising=False)
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- bench-step: generated -->\nold\n<!-- /bench-step -->\nafter\n")
    out = tmp_path / "step.md"
    status, stdout, err = run_cli([*TINY, "--out", str(out), "--readme", str(readme)], capsys)
    assert status == 0, err
    assert stdout.splitlines()[0] == reference.SKIPPED
    assert "--reference-dir DIR" in reference.SKIPPED and reference.ENV in reference.SKIPPED
    command, setup, rows = out.read_text().split("\n\n")[:3]
    assert command.startswith("`python -m study.benchmark --width 8") and "thread(s)" in setup
    table_rows = parse(rows)
    assert [(row["model"], row["binarizer"], row["variant"]) for row in table_rows] == [
        (model, *variant) for model in SIZES for variant in
        [("-", REAL), ("ste", BINARY), ("ste", DIAGNOSTICS), ("recu", BINARY), ("recu", DIAGNOSTICS)]
    ]  # fmt: skip
    for row in table_rows:
        ratios = {name for name in ("binary / real", "diagnostics / none") if row[name]}
        assert (
            ratios
            == {REAL: set(), BINARY: {"binary / real"}, DIAGNOSTICS: {"diagnostics / none"}}[row["variant"]]
        )
    text = readme.read_text()
    assert (
        "old" not in text and text.startswith("before\n") and text.endswith("<!-- /bench-step -->\nafter\n")
    )
    assert f"{command}: {setup}" in text and rows in text


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def fake_references(folder) -> None:
    """Stand-ins laid out as the two repositories, with their import habits: ReCU's model imports a
    sibling package (``modules``) that parses the command line when imported (``utils/options.py``)."""
    write(folder / "AdamBNN/step2/reactnet.py", """
        import torch.nn as nn

        def reactnet(num_classes=1000):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
    """)  # fmt: skip
    write(folder / "ReCU/cifar/utils/__init__.py", "")
    write(folder / "ReCU/cifar/utils/options.py", """
        import argparse
        args = argparse.ArgumentParser().parse_args()
    """)  # fmt: skip
    write(folder / "ReCU/cifar/modules/__init__.py", """
        import torch
        import torch.nn as nn
        from utils.options import args

        class BinarizeConv2d(nn.Conv2d):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.register_buffer("tau", torch.tensor(1.0))
    """)  # fmt: skip
    write(folder / "ReCU/cifar/models_cifar/resnet2.py", """
        import torch.nn as nn
        from modules import *

        def resnet18_1w1a(num_classes=10):
            head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)]
            return nn.Sequential(BinarizeConv2d(3, 4, 3), *head)
    """)  # fmt: skip


def test_the_references_are_imported_from_the_folder_and_timed_beside_ours(tmp_path, capsys):
    fake_references(tmp_path / "refs")
    builders = reference.load(tmp_path / "refs")
    recu = builders[reference.REFERENCES[1]](num_classes=10, tau=0.85)
    assert float(recu[0].tau) == pytest.approx(0.85)
    swapped = builders[reference.REFERENCES[1]](num_classes=10, tau=0.85, ours=True)
    sign, conv = swapped[0]  # their BinarizeConv2d(3, 4, 3) as our std-divided sign and recu conv
    assert sign.std_normalise and conv.weight_binarizer == "recu" and conv.binarize_weights
    assert conv.weight.shape == recu[0].weight.shape and swapped(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert "modules" not in sys.modules and "utils.options" not in sys.modules
    out = tmp_path / "step.md"
    argv = [*TINY, "--models", "resnet18", "reactnet_a", "--reference-dir", str(tmp_path / "refs"),
            "--out", str(out)]  # fmt: skip
    status, stdout, err = run_cli(argv, capsys)
    assert status == 0, err
    assert "skipped" not in stdout
    rows = {row["variant"]: row for row in parse(out.read_text().split("\n\n")[2])}
    for ref in reference.REFERENCES:
        row = rows[ref.label]
        assert (row["model"], row["binarizer"]) == (ref.model, ref.binarizer) and row["ours / reference"]
    assert rows[reference.REFERENCES[1].label + OUR_BINARY_CONV]["ours / reference"]
    assert "at unknown)" in out.read_text()  # not git checkouts


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, "does not exist"),
        ("AdamBNN", "ReCU/cifar/models_cifar/resnet2.py not found"),
        ("broken", "resnet2.py does not import: ModuleNotFoundError"),
    ],
)
def test_a_bad_reference_folder_is_one_line_and_exit_status_2(tmp_path, capsys, layout, message):
    folder = tmp_path / "refs"
    if layout is not None:
        fake_references(folder)
        if layout == "AdamBNN":
            (folder / "ReCU/cifar/models_cifar/resnet2.py").unlink()
        else:
            (folder / "ReCU/cifar/modules/__init__.py").write_text("import no_such_module\n")
    status, stdout, err = run_cli([*TINY, "--reference-dir", str(folder), "--out", str(tmp_path / "x.md")],
                                  capsys)  # fmt: skip
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "x.md").exists()


def test_steps_that_would_skew_the_saturation_probe_are_refused(tmp_path, capsys):
    status, _, err = run_cli([*TINY, "--steps", "4", "--out", str(tmp_path / "x.md")], capsys)
    assert status == 2 and "a multiple of 8" in err and len(err.splitlines()) == 1
