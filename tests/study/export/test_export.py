"""study.export: the 1-bit export reproduces the trained network, from its file alone.

A tiny binary MLP trained for two epochs per stage on the digits goes through the command line
(stage checkpoint, search-trial checkpoint, MLflow run id, ONNX); ResNet-18 and ReActNet-A with
random weights and random BatchNorm statistics go through the functions; expected values of the sign
bits and the folded BatchNorms are written from their definitions, not from the code under test.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cli_runner
import numpy as np
import pytest
import torch
from ruamel.yaml import YAML
from torch import nn

from bnn import BinaryLinear, ImageData, PreparedData, build_model, save_checkpoint, set_mode
from bnn.batches import normalize
from bnn.binarize import hard_sign
from bnn.layers import BINARY_WEIGHT_LAYERS, LearnableBias, RSign, init_binary_weights
from bnn.models.registry import MODELS, register_model
from study.config import DEFAULT_PARAMS, load_params
from study.export import __main__ as export_main
from study.export.__main__ import main
from study.export.exporter import architecture, trained_network
from study.export.format import (
    FORMAT_VERSION,
    ExportError,
    pack_signs,
    read_export,
    save_export,
    unpack_signs,
)
from study.export.inference import ChannelAffine, SignConv2d, SignLinear, load_exported
from study.export.onnx import compare_onnx, export_onnx
from study.export.payload import export_payload
from study.export.verify import MAX_BINARY_LAYERS_SIZE_RATIO, RTOL, size_report, verify
from study.runner import prepare, run_stage1, run_stage2

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A project folder with params.yaml (a 32-wide MLP on the digits, 2 + 2 epochs, a private MLflow
    store), its prepared data, and stage-1 and stage-2 checkpoints in the pipeline's layout."""
    root = tmp_path_factory.mktemp("export")
    params = load_params(DEFAULT_PARAMS).with_overrides(
        {
            "seed": 3,
            "data.name": "digits",
            "model.width": 32,
            "stage1.epochs": 2,
            "stage2.epochs": 2,
            "tracking.uri": f"sqlite:///{root / 'mlflow.db'}",
        }
    )
    with (root / "params.yaml").open("w") as f:
        YAML().dump(params.model_dump(mode="json"), f)
    data = prepare(params)
    data.save(root / "data.pt")
    stage1 = run_stage1(params, data)
    save_checkpoint(root / "runs" / "stage1" / "model.pt", stage1.model, stage1.result.init_signs, {})
    stage2 = run_stage2(params, data, stage1.model.state_dict(), stage1.result.init_signs)
    save_checkpoint(root / "runs" / "stage2" / "model.pt", stage2.model, stage2.result.init_signs, {})
    torch.save(stage2.model.state_dict(), root / "trial-0.pt")  # as a search trial saves its network
    return root


def cli(tiny: Path, source: str | Path, *extra: str) -> list[str]:
    return [str(source), "--params", str(tiny / "params.yaml"), "--data", str(tiny / "data.pt"), *extra]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m study.export`` in this process: exit status, stdout, stderr."""
    return cli_runner.run_cli(main, argv, capsys)


def test_without_out_a_hand_run_export_goes_to_exports_never_over_the_dvc_stages_file(
    tiny, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(export_main, "EXPORTS", tmp_path / "exports")
    status, stdout, err = run_cli(cli(tiny, tiny / "trial-0.pt"), capsys)
    assert status == 0, err
    written = list((tmp_path / "exports").glob("*.bnn"))
    assert [p.name for p in written] == ["trial-0.bnn"] and f"wrote {written[0]}" in stdout
    assert export_main.default_out("0123abcd") == tmp_path / "exports" / "mlflow-0123abcd.bnn"
    inside = export_main.default_out(str(export_main.PROJECT_ROOT / "runs" / "stage2" / "model.pt"))
    assert inside == tmp_path / "exports" / "runs-stage2-model.bnn"


def one_error_line(err: str, *named: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in named:
        assert text in lines[0], lines[0]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random latent weights, real parameters and BatchNorm statistics: folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    init_binary_weights(model, "kaiming")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
                module.weight.copy_(torch.randn(c, generator=gen) * 0.5 + 1)
                module.bias.copy_(torch.randn(c, generator=gen) * 0.3)
            elif isinstance(module, LearnableBias):
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return set_mode(model, "binary").eval()


def arch(name: str, classes: int, channels: int, size: int, width: int, **options) -> dict:
    return {"model": name, "num_classes": classes, "in_channels": channels, "image_size": size,
            "width": width, "act_binarizer": "approx_sign", "weight_binarizer": "ste",
            "options": options}  # fmt: skip


def export_and_load(
    model: nn.Module, architecture: dict, path: Path, mean: float = 0.0, std: float = 1.0
) -> tuple[dict, nn.Module]:
    """The export file of ``model`` at ``path``: its payload as read back, and the rebuilt network."""
    c = architecture["in_channels"]
    stats = torch.full((c,), mean), torch.full((c,), std)
    save_export(export_payload(model, architecture, *stats, "test"), path)
    return read_export(path), load_exported(path)


def compare(model: nn.Module, exported: nn.Module, x: torch.Tensor) -> tuple[int, float, float]:
    with torch.no_grad():
        a, b = model(x), exported(x)
    return int((a.argmax(1) != b.argmax(1)).sum()), float((a - b).abs().max()), float(a.abs().max())


# --- the command line on the tiny trained network -------------------------------------------------


def test_stage2_checkpoint_round_trip_with_onnx(tiny, tmp_path, capsys):
    out, onnx, metrics = tmp_path / "model.bnn", tmp_path / "model.onnx", tmp_path / "export.json"
    argv = cli(tiny, tiny / "runs" / "stage2" / "model.pt", "--out", str(out), "--onnx", str(onnx))
    status, stdout, err = run_cli([*argv, "--metrics", str(metrics)], capsys)
    assert status == 0, err
    result = json.loads(metrics.read_text())
    assert result["prediction_mismatches"] == 0 and result["onnx_prediction_mismatches"] == 0
    assert result["max_abs_logit_diff"] <= result["logit_tolerance"] / 10  # rounding only
    assert result["onnx_max_abs_logit_diff"] <= result["logit_tolerance"]
    assert result["trained_acc"] == result["export_acc"] == result["onnx_acc"] > 0.15  # chance: 0.1
    assert result["binary_layers_size_ratio"] <= MAX_BINARY_LAYERS_SIZE_RATIO
    assert result["export_file_bytes"] == out.stat().st_size
    assert result["file_size_ratio"] == result["export_file_bytes"] / result["float32_inference_bytes"]
    assert 1 / 32 < result["file_size_ratio"] < 1  # the real stem and classifier stay float32
    assert "differing predictions 0" in stdout and "(1/32.0); file: " in stdout
    # The file alone rebuilds a network of +-1 kernels and folded BatchNorms, without latent weights.
    exported = load_exported(out)
    assert not any(isinstance(m, BINARY_WEIGHT_LAYERS) for m in exported.modules())
    kernels = [m.weight for m in exported.modules() if isinstance(m, SignLinear)]
    assert len(kernels) == 2 and all(set(k.unique().tolist()) <= {-1.0, 1.0} for k in kernels)
    assert sum(isinstance(m, ChannelAffine) for m in exported.modules()) == 2


def test_the_onnx_file_takes_pixels_and_says_so(tiny, tmp_path, capsys):
    """As a user would run it, with onnxruntime alone: uint8 test images / 255, NCHW float32, give the
    trained network's predictions; the metadata says what to feed and what comes out."""
    import onnxruntime as ort

    checkpoint = tiny / "runs" / "stage2" / "model.pt"
    out, onnx = tmp_path / "model.bnn", tmp_path / "model.onnx"
    status, _, err = run_cli(cli(tiny, checkpoint, "--out", str(out), "--onnx", str(onnx)), capsys)
    assert status == 0, err
    data, params = PreparedData.load(tiny / "data.pt"), load_params(tiny / "params.yaml")
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    trained = trained_network(architecture(params.model, data), state, "test")
    with torch.no_grad():
        expected = trained(normalize(data.test.images, data.mean, data.std)).argmax(1).numpy()

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    pixels = data.test.images.numpy().astype(np.float32) / 255
    (logits,) = session.run(None, {"pixels": pixels})
    assert np.array_equal(logits.argmax(1), expected)
    assert (expected == data.test.labels.numpy()).mean() > 0.15  # a trained network, not chance (0.1)
    assert session.get_inputs()[0].shape == ["batch", 1, 8, 8]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mean"]) == data.mean.tolist() and json.loads(meta["std"]) == data.std.tolist()
    assert json.loads(meta["class_names"]) == data.classes and meta["num_classes"] == str(data.num_classes)
    assert (meta["input_name"], meta["input_layout"], meta["input_dtype"]) == ("pixels", "NCHW", "float32")
    assert meta["input_range"].startswith("[0, 1]") and meta["dataset"] == "digits"
    assert meta["source"] == str(checkpoint)  # outside the project: as given
    assert meta["bnn_content_sha256"] == read_export(out)["content_sha256"]
    assert meta["bnn_study_version"] != "unknown"


def test_file_size_ratio_counts_every_inference_tensor_at_float32(tmp_path):
    """784 -> 256 real stem with BatchNorm, two blocks (shift, 256 x 256 binary, BatchNorm, shift, PReLU,
    shift), 256 -> 10 classifier; the BatchNorms' num_batches_tracked counters are not counted."""
    model = randomize(build_model("mlp", num_classes=10, in_channels=1, image_size=28, width=256))
    payload, _ = export_and_load(model, arch("mlp", 10, 1, 28, 256), tmp_path / "m.bnn")
    block = 256 + 256 * 256 + 4 * 256 + 3 * 256
    float32_bytes = 4 * (784 * 256 + 4 * 256 + 2 * block + 256 * 10 + 10)
    file_bytes = (tmp_path / "m.bnn").stat().st_size
    sizes = size_report(payload, file_bytes)
    assert sizes["float32_inference_bytes"] == float32_bytes == 1_357_864
    assert sizes["file_size_ratio"] == file_bytes / float32_bytes
    assert sizes["binary_layers_size_ratio"] == (2 * 256 * 256 / 8) / (4 * 2 * 256 * 256) == 1 / 32
    # The stem stays float32 (784 x 256 x 4 bytes): the file is well over half the float32 network.
    assert 0.55 < sizes["file_size_ratio"] < 0.7


def test_search_trial_checkpoint_exports_with_the_params_model(tiny, tmp_path, capsys):
    status, stdout, err = run_cli(cli(tiny, tiny / "trial-0.pt", "--out", str(tmp_path / "t.bnn")), capsys)
    assert status == 0, err
    assert "search trial checkpoint" in stdout and "differing predictions 0" in stdout


def test_mlflow_run_ids_of_stage_runs(tiny, tmp_path, capsys):
    from study.tracking import CHECKPOINT_ARTIFACTS, Tracker

    params = load_params(tiny / "params.yaml")
    tracker = Tracker.from_params(params)
    ids = {}
    for stage in ("1", "2"):
        logged = params.model_dump(include={"seed", "model"})
        with tracker.child(None, f"stage{stage}", params=logged, tags={"stage": stage}) as run:
            run.log_artifacts([tiny / "runs" / f"stage{stage}" / "model.pt"], CHECKPOINT_ARTIFACTS)
            ids[stage] = run.run_id
    status, stdout, err = run_cli(cli(tiny, ids["2"], "--out", str(tmp_path / "r.bnn")), capsys)
    assert status == 0, err
    assert "logged model params" in stdout and "differing predictions 0" in stdout
    status, _, err = run_cli(cli(tiny, ids["1"], "--out", str(tmp_path / "r1.bnn")), capsys)
    assert status == 2
    one_error_line(err, ids["1"], "stage-1")
    status, _, err = run_cli(cli(tiny, "0" * 32, "--out", str(tmp_path / "r0.bnn")), capsys)
    assert status == 2
    one_error_line(err, "0" * 32)


@pytest.mark.parametrize("case", ["stage1", "truncated", "missing", "elsewhere"])
def test_bad_sources_exit_2_with_one_line(tiny, tmp_path, capsys, case):
    checkpoint = tiny / "runs" / "stage2" / "model.pt"
    sources = {
        "stage1": (tiny / "runs" / "stage1" / "model.pt", "stage-1"),
        "truncated": (tmp_path / "stage2" / "model.pt", "not a readable checkpoint"),
        "missing": (tmp_path / "no-such.pt", "no such checkpoint file"),
        "elsewhere": (tmp_path / "copy.pt", "cannot tell which stage"),  # no provenance at all
    }
    source, message = sources[case]
    if case == "truncated":
        source.parent.mkdir()
        source.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    elif case == "elsewhere":
        source.write_bytes(checkpoint.read_bytes())
    out = tmp_path / "x.bnn"
    status, _, err = run_cli(cli(tiny, source, "--out", str(out)), capsys)
    assert status == 2
    one_error_line(err, str(source), message)
    assert not out.exists()


def test_an_export_file_is_checked_alone_and_bad_ones_are_one_line(tiny, exported_file, tmp_path, capsys):
    from bnn import evaluate, load_checkpoint
    from study.runner import new_model

    params, data = load_params(tiny / "params.yaml"), PreparedData.load(tiny / "data.pt")
    trained = new_model(params, data)
    trained.load_state_dict(load_checkpoint(tiny / "runs" / "stage2" / "model.pt")["state_dict"])
    expected = evaluate(set_mode(trained, "binary"), data.test, data)["acc"]
    status, stdout, err = run_cli([*cli(tiny, exported_file), "--metrics", str(tmp_path / "m.json")], capsys)
    assert status == 0, err
    assert f"test acc {expected:.4f}" in stdout and "1/32.0 of float32" in stdout
    figures = json.loads((tmp_path / "m.json").read_text())
    assert figures["export_file_bytes"] == exported_file.stat().st_size
    assert "of the float32 network" in stdout and figures["file_size_ratio"] > 1 / 32

    raw = exported_file.read_bytes()
    (tmp_path / "truncated.bnn").write_bytes(raw[: len(raw) // 2])
    status, _, err = run_cli(cli(tiny, tmp_path / "truncated.bnn"), capsys)
    assert status == 2
    one_error_line(err, "truncated.bnn", "not a readable export file")
    prepare(params.with_overrides({"data.name": "mnist5k"})).save(tmp_path / "mnist.pt")  # 28x28, not 8x8
    status, _, err = run_cli([*cli(tiny, exported_file), "--data", str(tmp_path / "mnist.pt")], capsys)
    assert status == 2
    one_error_line(err, "1x8x8 images", "1x28x28")


def test_weights_that_do_not_fit_the_model_are_one_line(tiny, tmp_path, capsys):
    """A search trial's network with a params file whose model is wider than the one it trained."""
    wider = YAML(typ="safe").load((tiny / "params.yaml").read_text())
    wider["model"]["width"] = 64
    with (tmp_path / "params.yaml").open("w") as f:
        YAML().dump(wider, f)
    argv = cli(tiny, tiny / "trial-0.pt", "--params", str(tmp_path / "params.yaml"))  # the last --params wins
    status, _, err = run_cli([*argv, "--out", str(tmp_path / "w.bnn")], capsys)
    assert status == 2
    one_error_line(err, "trial-0.pt", "does not fit model mlp at width 64")
    assert not (tmp_path / "w.bnn").exists()


def test_the_module_runs_as_a_command(tmp_path):
    missing = tmp_path / "missing.pt"
    done = subprocess.run([sys.executable, "-m", "study.export", str(missing), "--out", str(tmp_path / "x")],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {missing}: no such checkpoint file, and not an MLflow run id\n"


def test_a_failed_verification_exits_1_and_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    import study.export.exporter

    real = study.export.exporter.verify
    monkeypatch.setattr(study.export.exporter, "verify", lambda *args: {**real(*args), "match": False})
    out, onnx, metrics = tmp_path / "m.bnn", tmp_path / "m.onnx", tmp_path / "m.json"
    argv = cli(tiny, tiny / "runs" / "stage2" / "model.pt", "--out", str(out), "--onnx", str(onnx))
    status, stdout, err = run_cli([*argv, "--metrics", str(metrics)], capsys)
    assert status == 1
    one_error_line(err, "differ from the trained network")
    assert "differing predictions 0" in stdout  # the figures are still reported
    assert list(tmp_path.iterdir()) == []  # no export, ONNX, metrics or temporary file


# --- broken export files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("file") / "model.bnn"
    assert main(cli(tiny, tiny / "runs" / "stage2" / "model.pt", "--out", str(path))) is None
    return path


def resave(payload: dict, path: Path, **changes) -> Path:
    torch.save({**payload, **changes}, path)
    return path


def test_broken_export_files_are_refused(exported_file, tmp_path):
    payload = torch.load(exported_file, weights_only=True)
    raw = exported_file.read_bytes()
    (tmp_path / "truncated.bnn").write_bytes(raw[: len(raw) // 2])
    altered = {**payload["tensors"], "classifier.bias": payload["tensors"]["classifier.bias"] + 1}
    wider = {**payload["architecture"], "width": 64}
    cases = {
        "no-such.bnn": "no such export file",
        "truncated.bnn": "not a readable export file",
        resave(payload, tmp_path / "v2.bnn", format_version=FORMAT_VERSION + 1).name: "format version 2",
        resave(payload, tmp_path / "other.bnn", format="something else").name: "not a bnn-study-1bit",
        resave(payload, tmp_path / "altered.bnn", tensors=altered).name: "content hash mismatch",
    }
    for name, message in cases.items():
        with pytest.raises(ExportError, match=message):
            load_exported(tmp_path / name)
    # A consistent file (hash recomputed) whose architecture does not fit its tensors.
    rest = {k: v for k, v in payload.items() if k not in ("format", "format_version", "content_sha256")}
    save_export({**rest, "architecture": wider}, tmp_path / "wider.bnn")
    with pytest.raises(ExportError, match="shape"):
        load_exported(tmp_path / "wider.bnn")


def test_a_wrong_sign_bit_fails_verification(tiny, exported_file):
    """The tolerance separates rounding from a real error: one flipped bit is caught."""
    data = PreparedData.load(tiny / "data.pt")
    payload = read_export(exported_file)
    params = load_params(tiny / "params.yaml")
    state = torch.load(tiny / "runs" / "stage2" / "model.pt", weights_only=True)["state_dict"]
    trained = trained_network(architecture(params.model, data), state, "test")
    exported = load_exported(exported_file)
    assert verify(trained, exported, data.test, data)["match"]
    entry = payload["binary_layers"]["blocks.1.linear"]
    entry["bits"][0] ^= 1  # one weight of output channel 0 changes sign
    layer = exported.blocks[1].linear
    layer.weight.copy_(unpack_signs(entry["bits"], entry["shape"]).float() * 2 - 1)
    assert not verify(trained, exported, data.test, data)["match"]


# --- signs, packing and folding, from their definitions ------------------------------------------


def test_packing_round_trip_is_exact_and_least_significant_bit_first():
    gen = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (9,), (3, 5, 3, 3), (64, 17)]:
        signs = torch.rand(shape, generator=gen) < 0.5
        bits = pack_signs(signs)
        assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(signs.numel() / 8)
        assert torch.equal(unpack_signs(bits, shape), signs)
    pattern = torch.tensor([1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert pack_signs(pattern).tolist() == [1, 3]


@pytest.mark.parametrize("binarizer", ["ste", "recu"])
def test_signs_follow_forward_signs_including_zeros(tmp_path, binarizer):
    model = build_model(
        "mlp", num_classes=3, in_channels=1, image_size=2, width=8, weight_binarizer=binarizer
    )
    with torch.no_grad():
        w = model.blocks[0].linear.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
        w[0, :4] = torch.tensor([0.0, -0.0, 1e-30, -1e-30])
        w[1] = 0.0  # a whole channel at zero: every sign +1
    set_mode(model, "binary").eval()
    architecture = arch("mlp", 3, 1, 2, 8, depth=2) | {"weight_binarizer": binarizer}
    payload, exported = export_and_load(model, architecture, tmp_path / "m.bnn")
    layer = model.blocks[0].linear
    expected = layer.forward_signs()
    if binarizer == "ste":  # the definition: +1 where w >= 0 (so at 0 and -0), as the forward's sign
        assert expected[0, :4].tolist() == [True, True, True, False]
        assert torch.equal(expected, layer.weight >= 0)
        assert torch.equal(hard_sign(layer.weight.detach()) > 0, expected)
    assert expected[1].all()
    entry = payload["binary_layers"]["blocks.0.linear"]
    assert torch.equal(unpack_signs(entry["bits"], entry["shape"]), expected)
    assert torch.equal(exported.blocks[0].linear.weight, expected.float() * 2 - 1)
    x = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(6))
    mismatches, diff, biggest = compare(model, exported, x)
    assert mismatches == 0 and diff <= RTOL * max(1.0, biggest)


def test_alpha_is_folded_into_the_batchnorm_by_the_formula(tmp_path):
    model = randomize(build_model("mlp", num_classes=3, in_channels=1, image_size=2, width=8))
    with torch.no_grad():
        model.blocks[0].linear.weight[2] = 0.0  # alpha = 0 on channel 2
    payload, exported = export_and_load(model, arch("mlp", 3, 1, 2, 8), tmp_path / "m.bnn")
    w = model.blocks[0].linear.weight.detach().double()
    bn = model.blocks[0].bn
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    alpha = torch.tensor([sum(abs(float(v)) for v in row) / len(row) for row in w], dtype=torch.float64)
    assert alpha[2] == 0
    folded = payload["folded_bns"]["blocks.0.bn"]
    assert payload["binary_layers"]["blocks.0.linear"]["folded_into"] == "blocks.0.bn"
    torch.testing.assert_close(
        folded["scale"].double(), gamma * alpha / torch.sqrt(var + bn.eps), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(
        folded["shift"].double(), beta - gamma * mean / torch.sqrt(var + bn.eps), rtol=1e-6, atol=0
    )
    assert folded["scale"][2] == 0
    assert "blocks.0.bn.running_mean" not in payload["tensors"]
    x = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    mismatches, diff, biggest = compare(model, exported, x)
    assert mismatches == 0 and diff <= RTOL * max(1.0, biggest)


@pytest.fixture
def unfolded_model():
    """A registry model whose first binary output also feeds a residual (so no fold) and whose second
    binary layer has no BatchNorm after it: both keep alpha as an output scale."""

    class Unfolded(nn.Module):
        def __init__(self, num_classes: int, in_features: int, width: int):
            super().__init__()
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width))
            self.sign1, self.linear1, self.bn1 = (
                RSign(width),
                BinaryLinear(width, width),
                nn.BatchNorm1d(width),
            )
            self.sign2, self.linear2 = RSign(width), BinaryLinear(width, width)
            self.classifier = nn.Linear(width, num_classes)

        def forward(self, x):
            x = self.stem(x)
            y = self.linear1(self.sign1(x))
            x = self.bn1(y) + y
            return self.classifier(self.linear2(self.sign2(x)))

    def export_test_unfolded(*, num_classes, in_channels, image_size, width, act_binarizer, weight_binarizer):
        return Unfolded(num_classes, in_channels * image_size**2, width)

    register_model(export_test_unfolded)
    yield "export_test_unfolded"
    del MODELS["export_test_unfolded"]


def test_alpha_stays_an_output_scale_without_a_sole_batchnorm(unfolded_model, tmp_path):
    model = randomize(build_model(unfolded_model, num_classes=3, in_channels=1, image_size=3, width=16))
    payload, exported = export_and_load(model, arch(unfolded_model, 3, 1, 3, 16), tmp_path / "u.bnn")
    assert payload["folded_bns"] == {}
    for name in ("linear1", "linear2"):
        entry = payload["binary_layers"][name]
        assert entry["folded_into"] == ""
        w = getattr(model, name).weight.detach()
        torch.testing.assert_close(entry["scale"], w.abs().mean(1), rtol=0, atol=0)
    assert "bn1.running_var" in payload["tensors"]
    x = torch.randn(64, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    mismatches, diff, biggest = compare(model, exported, x)
    assert mismatches == 0 and diff <= RTOL * max(1.0, biggest)


# --- the other architectures, random weights -----------------------------------------------------


@pytest.mark.parametrize("name, size, width", [("resnet18", 8, 4), ("reactnet_a", 32, 8), ("cnn", 8, 4)])
def test_random_networks_round_trip(tmp_path, name, size, width):
    architecture = arch(name, 5, 3, size, width)
    model = randomize(build_model(name, num_classes=5, in_channels=3, image_size=size, width=width))
    payload, exported = export_and_load(model, architecture, tmp_path / "m.bnn")
    binary = [n for n, m in model.named_modules() if isinstance(m, BINARY_WEIGHT_LAYERS)]
    assert sorted(payload["binary_layers"]) == sorted(binary)
    assert all(e["folded_into"] for e in payload["binary_layers"].values())  # every one feeds a BN
    assert sum(isinstance(m, SignConv2d) for m in exported.modules()) == len(binary)
    x = torch.randn(32, 3, size, size, generator=torch.Generator().manual_seed(4))
    mismatches, diff, biggest = compare(model, exported, x)
    assert mismatches == 0 and diff <= RTOL * max(1.0, biggest), (diff, biggest)
    assert size_report(payload, 1)["binary_layers_size_ratio"] <= MAX_BINARY_LAYERS_SIZE_RATIO


def test_reactnet_onnx_matches_onnxruntime(tmp_path):
    model = randomize(build_model("reactnet_a", num_classes=10, in_channels=1, image_size=32, width=8))
    architecture = arch("reactnet_a", 10, 1, 32, 8)
    payload, exported = export_and_load(model, architecture, tmp_path / "m.bnn", mean=0.5, std=0.25)
    export_onnx(exported, tmp_path / "m.onnx", payload, [str(i) for i in range(10)], "random")
    gen = torch.Generator().manual_seed(5)
    images = ImageData(torch.randint(0, 256, (64, 1, 32, 32), generator=gen, dtype=torch.uint8),
                       torch.randint(0, 10, (64,), generator=gen))  # fmt: skip
    stats = SimpleNamespace(mean=torch.tensor([0.5]), std=torch.tensor([0.25]))
    result = compare_onnx(tmp_path / "m.onnx", exported, images, stats, batch_size=32)
    assert result["onnx_prediction_mismatches"] == 0
    assert result["onnx_max_abs_logit_diff"] <= 1e-4


def test_the_same_export_has_the_same_bytes_wherever_the_project_is(tiny, tmp_path):
    """The file names a checkpoint of the project by its path from the project root, not the folder."""
    digests = []
    for folder in ("one", "elsewhere/two"):
        copy = tmp_path / folder
        shutil.copytree(tiny, copy, ignore=shutil.ignore_patterns("mlflow.db", "*.bnn"))
        env = {**os.environ, "BNN_STUDY_ROOT": str(copy), "PYTHONPATH": str(PROJECT)}
        checkpoint = str(copy / "runs" / "stage2" / "model.pt")  # absolute, as the DVC stage passes it
        argv = [checkpoint, "--params", "params.yaml", "--data", "data.pt", "--out", "model.bnn"]
        done = subprocess.run([sys.executable, "-m", "study.export", *argv], cwd=copy, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert read_export(copy / "model.bnn")["source"] == "runs/stage2/model.pt"
        digests.append(hashlib.md5((copy / "model.bnn").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
