"""study.ablate: grid expansion, cell keys (only changed cells re-run), a quick end-to-end ablation
with stage-1 and cross-ablation reuse, its MLflow run tree and report, and NaN cells recorded."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ruamel.yaml import YAML

from bnn import NonFiniteLossError
from study import ablate
from study.ablate import ablation_base, expand, run_ablation
from study.config import DEFAULT_PARAMS, load_params, read_yaml
from study.report import cell_frame, write_report
from study.tracking import PARENT_TAG

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's SQLAlchemy store

WD_GRID = {"stage1": [0.0, 5.0e-6, 1.0e-4], "stage2": [0.0, 1.0e-5]}
PAPER = (5.0e-6, 0.0)  # the base weight decays: stage 1 5e-6, stage 2 0
CLAIMS = ["1a", "1b", "2a", "2b", "3", "4a", "4b", "5", "6"]
VERDICTS = {"supported", "contradicted", "inconclusive"}
METRICS = ["test_acc", "val_acc", "ff_ratio", "c2i_ratio", "c2i_init", "saturation", "mass_near_one",
           "mass_near_zero"]  # fmt: skip


@pytest.fixture(scope="module")
def params():
    """The project's params with the settings the key tests rely on pinned."""
    return load_params(DEFAULT_PARAMS).with_overrides(
        {
            "seed": 0,
            "ablation.seeds": 4,
            "ablation.quick_seeds": 3,
            "ablation.weight_decay": WD_GRID,
            "ablation.optimizers": {"adam": {"lr": 2.0e-3}, "sgd": {"lr": 0.1, "momentum": 0.9}},
            **{f"{stage}.optimizer": "adam" for stage in ("stage1", "stage2")},
            **{f"{stage}.lr": 2.0e-3 for stage in ("stage1", "stage2")},
            "stage1.weight_decay": PAPER[0],
            "stage2.weight_decay": PAPER[1],
        }
    )


def labels(cells) -> list[dict]:
    return [dict(cell.labels) for cell in cells]


def keys(params, data, name: str, quick: bool = False) -> dict[tuple, str]:
    """Cell labels (as a tuple) -> key."""
    base = ablation_base(params, quick)
    return {cell.labels: cell.key(base, data) for cell in expand(name, params, quick)}


# --- grid expansion -------------------------------------------------------------------------------


def test_wd_grid_is_stage1_x_stage2_x_seeds(params):
    cells = expand("wd", params)
    expected = itertools.product(range(4), WD_GRID["stage1"], WD_GRID["stage2"])
    assert [(c["seed"], c["stage1.weight_decay"], c["stage2.weight_decay"]) for c in labels(cells)] == list(
        expected
    )
    assert len(cells) == 3 * 2 * 4
    assert {(c.ablation, c.kind) for c in cells} == {("wd", "two_stage")}
    cell = cells[3]  # seed 0, stage-1 5e-6, stage-2 1e-5
    applied = cell.params(ablation_base(params, quick=False))
    assert (applied.stage1.weight_decay, applied.stage2.weight_decay, applied.seed) == (5.0e-6, 1.0e-5, 0)
    assert applied.stage1.epochs == applied.stage2.epochs == params.ablation.epochs


def test_optimizer_grid_is_two_optimizers_x_binary_and_real_x_seeds(params):
    cells = expand("optimizer", params)
    assert len(cells) == 2 * 2 * 4
    found = {(c["optimizer"], c["network"], c["seed"]) for c in labels(cells)}
    assert found == set(itertools.product(("adam", "sgd"), ("binary", "real"), range(4)))
    kinds = {(dict(c.labels)["network"], c.kind) for c in cells}
    assert kinds == {("binary", "two_stage"), ("real", "real")}
    base = ablation_base(params, quick=False)
    sgd = next(c for c in cells if dict(c.labels) == {"optimizer": "sgd", "network": "binary", "seed": 2})
    applied = sgd.params(base)
    for stage in (applied.stage1, applied.stage2):  # each optimizer at its own settings, in both stages
        assert (stage.optimizer, stage.lr, stage.momentum) == ("sgd", 0.1, 0.9)
    assert applied.seed == 2


def test_stages_grid_is_two_stage_and_one_stage_per_seed(params):
    cells = expand("stages", params)
    assert [(c["training"], c["seed"]) for c in labels(cells)] == [
        (training, seed) for seed in range(4) for training in ("two-stage", "one-stage")
    ]
    assert [c.kind for c in cells[:2]] == ["two_stage", "one_stage"]


def test_quick_uses_quick_seeds_and_epochs(params):
    for name, per_seed in (("wd", 6), ("optimizer", 4), ("stages", 2)):
        cells = expand(name, params, quick=True)
        assert len(cells) == per_seed * 3, name
        assert {c["seed"] for c in labels(cells)} == {0, 1, 2}
    base = ablation_base(params, quick=True)
    assert base.stage1.epochs == base.stage2.epochs == params.ablation.quick_epochs


def test_unknown_ablation_raises(params):
    with pytest.raises(ValueError, match="unknown ablation 'lr'"):
        expand("lr", params)


# --- keys: only changed cells re-run --------------------------------------------------------------


def test_keys_are_unique_and_ignore_settings_that_do_not_train(params, digits):
    for name in ablate.ABLATIONS:
        found = keys(params, digits, name)
        assert len(set(found.values())) == len(found), name
    unrelated = params.with_overrides(
        {"ablation.margin": 0.01, "tracking.experiment": "other", "ablation.workers": 2}
    )
    assert keys(unrelated, digits, "wd") == keys(params, digits, "wd")
    longer = params.with_overrides({"ablation.epochs": params.ablation.epochs + 1})
    assert not set(keys(longer, digits, "wd").values()) & set(keys(params, digits, "wd").values())


def test_changing_one_grid_value_changes_only_its_cells_keys(params, digits):
    before = keys(params, digits, "wd")
    changed = params.with_overrides({"ablation.weight_decay": {**WD_GRID, "stage2": [0.0, 2.0e-5]}})
    after = keys(changed, digits, "wd")
    assert len(after) == len(before)
    for label, key in after.items():
        wd2 = dict(label)["stage2.weight_decay"]
        if wd2 == 0.0:
            assert before[label] == key  # untouched cells keep their results
        else:
            assert wd2 == 2.0e-5 and key not in before.values()  # only these re-run
    # The same for a stage-1 value.
    changed = params.with_overrides({"ablation.weight_decay": {**WD_GRID, "stage1": [0.0, 5.0e-6, 1.0e-3]}})
    after = keys(changed, digits, "wd")
    unchanged = {label: key for label, key in after.items() if dict(label)["stage1.weight_decay"] != 1.0e-3}
    assert unchanged == {label: key for label, key in before.items() if label in unchanged}
    assert len(unchanged) == 2 * 2 * 4
    assert not {k for label, k in after.items() if label not in unchanged} & set(before.values())


@pytest.mark.parametrize("seeds", [3, 5])
def test_changing_the_seed_count_adds_or_removes_only_those_seeds(params, digits, seeds):
    for name in ablate.ABLATIONS:
        before = keys(params, digits, name)  # 4 seeds
        after = keys(params.with_overrides({"ablation.seeds": seeds}), digits, name)
        common = {label: key for label, key in before.items() if dict(label)["seed"] < min(4, seeds)}
        assert {label: after[label] for label in common} == common, name
        more, fewer = (after, before) if seeds > 4 else (before, after)
        assert set(fewer) == set(common), name
        assert {dict(label)["seed"] for label in set(more) - set(common)} == {max(4, seeds) - 1}, name


def test_stages_two_stage_cell_reuses_the_wd_cell_with_the_base_weight_decays(params, digits):
    wd = keys(params, digits, "wd")
    stages = keys(params, digits, "stages")
    optimizer = keys(params, digits, "optimizer")
    for seed in range(4):
        paper = wd[(("stage1.weight_decay", PAPER[0]), ("stage2.weight_decay", PAPER[1]), ("seed", seed))]
        assert stages[(("training", "two-stage"), ("seed", seed))] == paper
        # Adam at the base learning rate is the base recipe too.
        assert optimizer[(("optimizer", "adam"), ("network", "binary"), ("seed", seed))] == paper
        assert stages[(("training", "one-stage"), ("seed", seed))] not in wd.values()
    other_seeds = {k for label, k in wd.items() if dict(label)["seed"] != 0}
    assert stages[(("training", "two-stage"), ("seed", 0))] not in other_seeds


# --- a quick ablation end to end ------------------------------------------------------------------


def write_params(folder: Path) -> Path:
    raw = read_yaml(DEFAULT_PARAMS)
    raw["seed"] = 0
    raw["data"].update(name="digits", val_fraction=0.15, test_fraction=0.15, split_seed=0)
    raw["data"]["augment"] = {"crop_padding": 0, "hflip": False}
    raw["model"].update(name="mlp", width=32)
    for stage in ("stage1", "stage2"):
        raw[stage].update(optimizer="adam", lr=2.0e-3)
    raw["stage1"]["weight_decay"], raw["stage2"]["weight_decay"] = PAPER
    raw["tracking"] = {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "ablate-test"}
    raw["ablation"].update(
        quick_seeds=3,
        quick_epochs=1,
        weight_decay=WD_GRID,
        optimizers={"adam": {"lr": 2.0e-3}, "sgd": {"lr": 0.1, "momentum": 0.9}},
        workers=1,
    )
    path = folder / "params.yaml"
    with open(path, "w") as stream:
        YAML().dump(raw, stream)
    return path


@pytest.fixture
def one_thread():
    """One torch thread per worker (``work`` uses cores / workers): a width-32 MLP gains nothing from
    two, and on a busy 2-core machine two OpenMP threads make it several times slower."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 1)
        yield


def store_files(store: Path) -> dict[str, int]:
    return {
        str(p.relative_to(store)): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.suffix in (".json", ".pt")
    }


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    """wd, optimizer and stages with --quick, then wd again (which must train nothing), then the report."""
    folder = tmp_path_factory.mktemp("ablate")
    params = load_params(write_params(folder))
    out, store = folder / "out", folder / "store"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: 1)  # see one_thread
        tables = {name: run_ablation(name, params, quick=True, out_dir=out, store_dir=store)
                  for name in ablate.ABLATIONS}  # fmt: skip
        before = store_files(store)
        wd_csv = (out / "wd.csv").read_text()

        def must_not_train(*args, **kwargs):
            raise AssertionError("a stored cell was trained again")

        patch.setattr(ablate, "run_cell", must_not_train)
        again = run_ablation("wd", params, quick=True, out_dir=out, store_dir=store)
        after = store_files(store)
    report, figures, claims = write_report(out, folder / "report" / "reproduction.md", params.ablation.margin)
    return {
        "folder": folder, "params": params, "tables": tables, "again": again, "before": before,
        "after": after, "wd_csv": wd_csv, "report": report, "figures": figures, "claims": claims,
    }  # fmt: skip


@pytest.mark.slow
def test_ablations_write_tables_with_every_metric(ablated):
    out = ablated["folder"] / "out"
    sizes = {"wd": 3 * 2 * 3, "optimizer": 2 * 2 * 3, "stages": 2 * 3}
    for name, size in sizes.items():
        table = pd.read_csv(out / f"{name}.csv")
        assert len(table) == size, name
        assert table["test_acc"].between(0, 1).all() and table["test_acc"].notna().all(), name
        assert (
            table[[m for m in METRICS if m not in ("ff_ratio", "c2i_ratio", "c2i_init")]].notna().all().all()
        )
        binary = table[table["kind"] != "real"]
        assert binary[["ff_ratio", "c2i_ratio", "c2i_init"]].notna().all().all(), name
        assert "failure" not in table, name
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["ablation"] == name and summary["quick"] is True
        assert summary["seeds"] == [0, 1, 2] and summary["epochs"] == 1 and summary["data"] == "digits"
        assert [c["key"] for c in summary["cells"]] == list(table["key"])
        for cell in summary["cells"]:
            # Two epochs in all, whatever the kind: 1 + 1 in two stages, or 2 in one.
            assert [e["step"] for e in cell["history"]] == [1, 2], (name, cell["key"])
            stages = [e["stage"] for e in cell["history"]]
            assert stages == ([1, 2] if cell["kind"] == "two_stage" else [1, 1])
            assert len(cell["histogram"]["counts"]) == 121
    wd = pd.read_csv(out / "wd.csv")
    assert set(zip(wd["stage1.weight_decay"], wd["stage2.weight_decay"], wd["seed"], strict=True)) == set(
        itertools.product(WD_GRID["stage1"], WD_GRID["stage2"], range(3))
    )


@pytest.mark.slow
def test_stage1_trains_once_per_setting_and_seed(ablated):
    wd = ablated["tables"]["wd"]
    # Each stage-1 setting trains once per seed and serves both stage-2 settings.
    for (wd1, seed), group in wd.groupby(["stage1.weight_decay", "seed"]):
        assert list(group["stage1_cached"]) == [False, True], (wd1, seed)
    stage1 = list((ablated["folder"] / "store" / "stage1").glob("*.pt"))
    assert len(stage1) == 3 * 3 + 3  # the wd grid's stage-1 settings, and SGD's for the optimizer ablation


@pytest.mark.slow
def test_cells_are_shared_across_ablations(ablated):
    tables = ablated["tables"]
    wd = tables["wd"]
    paper = wd[(wd["stage1.weight_decay"] == PAPER[0]) & (wd["stage2.weight_decay"] == PAPER[1])]
    stages, optimizer = tables["stages"], tables["optimizer"]
    two_stage = stages[stages["training"] == "two-stage"]
    adam = optimizer[(optimizer["optimizer"] == "adam") & (optimizer["network"] == "binary")]
    for reused in (two_stage, adam):
        assert list(reused["key"]) == list(paper["key"])
        assert list(reused["test_acc"]) == list(paper["test_acc"])
    cells = list((ablated["folder"] / "store" / "cells").glob("*.json"))
    assert len(cells) == 18 + 12 + 6 - 3 - 3  # the shared cells are stored once


@pytest.mark.slow
def test_rerun_trains_nothing_and_gives_the_same_table(ablated):
    assert ablated["after"] == ablated["before"]  # no store file written again
    pd.testing.assert_frame_equal(ablated["again"], ablated["tables"]["wd"])
    assert (ablated["folder"] / "out" / "wd.csv").read_text() == ablated["wd_csv"]


@pytest.mark.slow
def test_one_mlflow_parent_per_ablation_with_a_child_per_cell(ablated):
    client = MlflowClient(ablated["params"].tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.data.tags["ablation"]: r for r in runs if r.data.tags.get("bnn.kind") == "ablation"}
    assert sorted(parents) == sorted(ablate.ABLATIONS)
    assert (
        len([r for r in runs if r.data.tags.get("bnn.kind") == "ablation"]) == 3
    )  # the rerun reused its parent
    reused_counts = {"wd": 0, "optimizer": 3, "stages": 3}
    for name, parent in parents.items():
        assert parent.data.tags["quick"] == "True"
        summary = json.loads((ablated["folder"] / "out" / f"{name}.json").read_text())
        assert summary["parent_run_id"] == parent.info.run_id
        children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
        table = ablated["tables"][name]
        assert sorted(c.data.tags["cell_key"] for c in children) == sorted(table["key"]), name
        assert {c.data.tags["bnn.kind"] for c in children} == {"ablation-cell"}
        assert {c.info.status for c in children} == {"FINISHED"}
        for child in children:  # the cell's final metrics, as in its table
            row = table[table["key"] == child.data.tags["cell_key"]].iloc[0]
            for metric in ("test_acc", "val_acc", "saturation", "ff_ratio", "mass_near_one"):
                if not math.isnan(row[metric]):
                    assert child.data.metrics[metric] == pytest.approx(row[metric]), (name, metric)
        reused = [c for c in children if c.data.tags.get("reused") == "true"]
        assert len(reused) == reused_counts[name], name
        if name == "stages":
            assert {c.data.tags["cell.training"] for c in reused} == {"two-stage"}
            # The stored per-epoch history is replayed into the child, epochs numbered across stages.
            for stage, steps in (("stage1", [1]), ("stage2", [2])):
                history = client.get_metric_history(reused[0].info.run_id, f"{stage}.val_acc")
                assert [m.step for m in history] == steps


@pytest.mark.slow
def test_report_has_every_claim_with_a_verdict_and_the_figures(ablated):
    text = ablated["report"].read_text()
    section = text.split("## Verdicts", 1)[1].split("Details:", 1)[0]
    rows = re.findall(r"^\| (\w+) \|.*\| \*\*(\w+)\*\* \|$", section, flags=re.MULTILINE)
    assert [number for number, _ in rows] == CLAIMS
    assert {verdict for _, verdict in rows} <= VERDICTS
    assert [c.number for c in ablated["claims"]] == CLAIMS
    assert [(c.number, c.verdict) for c in ablated["claims"]] == rows
    assert "3 per cell (quick run)" in text
    assert len(ablated["figures"]) == 5
    for figure in ablated["figures"]:
        assert figure.exists() and figure.stat().st_size > 0 and figure.suffix == ".png"
        assert f"(figures/{figure.name})" in text
    verdicts = pd.read_csv(ablated["report"].parent / "verdicts.csv")
    assert list(verdicts["claim"].astype(str)) == CLAIMS


# --- a NaN cell is recorded and the ablation goes on -----------------------------------------------


@pytest.mark.slow
def test_a_cell_with_a_nan_loss_is_recorded_as_failed_and_the_rest_runs(tmp_path, monkeypatch, one_thread):
    params = load_params(write_params(tmp_path))
    real_run_cell = ablate.run_cell
    failing = {"training": "one-stage", "seed": 1}

    def run_cell(cell, *args, **kwargs):
        if dict(cell.labels) == failing:
            raise NonFiniteLossError("loss became nan at epoch 1, step 3")
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(ablate, "run_cell", run_cell)  # workers=1: the cells run in this process
    out = tmp_path / "out"
    table = run_ablation("stages", params, quick=True, out_dir=out, store_dir=tmp_path / "store")
    assert len(table) == 6
    failed = table[table["failure"].notna()]
    assert list(zip(failed["training"], failed["seed"], strict=True)) == [("one-stage", 1)]
    assert "loss became nan" in failed["failure"].item()
    assert math.isnan(failed["test_acc"].item())
    rest = table[table["failure"].isna()]
    assert len(rest) == 5 and rest["test_acc"].notna().all()  # the cells after the failure ran too
    # The failure is stored (a re-run does not retry a cell that diverges by construction) ...
    stored = json.loads((tmp_path / "store" / "cells" / f"{failed['key'].item()}.json").read_text())
    assert set(stored) == {"failure"}
    # ... dropped from the claims' frame, and tagged on the cell's MLflow run.
    frame = cell_frame(json.loads((out / "stages.json").read_text()))
    assert len(frame) == 5 and ("one-stage", 1) not in set(zip(frame["training"], frame["seed"], strict=True))
    client = MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "failure" in r.data.tags]
    assert [r.data.tags["cell_key"] for r in runs] == [failed["key"].item()]
    assert runs[0].info.status == "FINISHED"
