"""study.reproduce.ablate: grid expansion (the optimizer ablation's learning-rate sweep, the latent ablation's
stage-2 budget), cell keys (only changed cells re-run; the thread count is part of them), a quick
end-to-end ablation with stage-1 and cross-ablation reuse, its columns, results files with nothing
run-specific in them, its MLflow run tree and report, and NaN cells recorded."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ruamel.yaml import YAML

from bnn import DataError, NonFiniteLossError
from study.config import DEFAULT_PARAMS, ParamsError, load_params, read_yaml
from study.reproduce import ablate, cell_worker
from study.reproduce.ablate import ablation_base, expand, run_ablation
from study.reproduce.lr_bracket import bracket_status, lr_sweep
from study.reproduce.report import cell_frame, write_report
from study.reproduce.stats import VERDICTS
from study.runner import prepare
from study.stage1_store import stage1_key
from study.tracking import PARENT_TAG

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's SQLAlchemy store
PROJECT = Path(__file__).resolve().parents[3]

WD_GRID = {"stage1": [0.0, 5.0e-6, 1.0e-4], "stage2": [0.0, 1.0e-5]}
PAPER = (5.0e-6, 0.0)  # the base weight decays: stage 1 5e-6, stage 2 0
SWEEP = {"adam": {"lr": [2.0e-3, 8.0e-3]}, "sgd": {"lr": [0.1], "momentum": 0.9}}
LATENT = {"seeds": 3, "epochs": 5, "batch_size": 32,
          "optimizers": {"adam": {"lr": 2.0e-3}, "sgd": {"lr": 0.1, "momentum": 0.9}}}  # fmt: skip
CLAIM_GROUPS = "123456"  # the paper's six claims, each tested by one or more numbered claims (1a, 1b, ...)
# Every cell has these (latent-weight measures included); binary ones also the sign and dead-weight ones.
METRICS = ["test_acc", "val_acc", "saturation", "saturation_train", "mass_near_one", "mass_near_zero",
           "beyond_clip", "max_abs_weight", "rel_mass_near_zero", "rel_mass_near_extreme", "bimodality",
           "mixture_components", "bic_gain_3v1", "median_abs_start", "lr_budget"]  # fmt: skip
BINARY_METRICS = [  # not dead_relative_update: NaN when no weight has a small gradient
    "ff_ratio",
    "c2i_ratio",
    "c2i_init",
    "changed_from_init",
    "dead_beyond_clip",
    "dead_small_grad",
]


@pytest.fixture(scope="module")
def params():
    """The project's params with the settings the key tests rely on pinned."""
    return load_params(DEFAULT_PARAMS).with_overrides(
        {
            "seed": 0,
            "ablation.seeds": 4,
            "ablation.seeds_by_ablation": {},
            "ablation.quick_seeds": 3,
            "ablation.weight_decay": WD_GRID,
            "ablation.optimizers": SWEEP,
            "ablation.latent": LATENT,
            **{f"{stage}.optimizer": "adam" for stage in ("stage1", "stage2")},
            **{f"{stage}.lr": 2.0e-3 for stage in ("stage1", "stage2")},
            "ablation.recipe_weight_decay": {"stage1": PAPER[0], "stage2": PAPER[1]},
        }
    )


def labels(cells) -> list[dict]:
    return [dict(cell.labels) for cell in cells]


def keys(params, data, name: str, quick: bool = False) -> dict[tuple, str]:
    """Cell labels (as a tuple) -> key."""
    base = ablation_base(params, quick)
    return {cell.labels: cell.key(base, data) for cell in expand(name, params, quick)}


# --- grid expansion -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wd", "optimizer", "stages", "latent"])
def test_the_pipelines_weight_decays_change_no_ablation_cell(params, digits, name):
    """``dvc exp run -S stage1.weight_decay=1e-5``: every cell keeps its key (nothing retrains); the
    cells that do not sweep the decays train with the recipe's, ``ablation.recipe_weight_decay``."""
    experiment = params.with_overrides({"stage1.weight_decay": 1.0e-5, "stage2.weight_decay": 1.0e-4})
    assert keys(experiment, digits, name) == keys(params, digits, name)
    recipe = params.with_overrides({"ablation.recipe_weight_decay": {"stage1": 1.0e-6, "stage2": 0.0}})
    changed = keys(recipe, digits, name) != keys(params, digits, name)
    assert changed == (name != "wd")
    base = ablation_base(experiment, quick=False)
    assert (base.stage1.weight_decay, base.stage2.weight_decay) == PAPER


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


def test_optimizer_grid_is_each_learning_rate_of_each_optimizer_x_binary_and_real_x_seeds(params):
    cells = expand("optimizer", params)
    rates = [("adam", 2.0e-3), ("adam", 8.0e-3), ("sgd", 0.1)]
    assert len(cells) == len(rates) * 2 * 4
    assert [list(c) for c in labels(cells)[:2]] == [["optimizer", "lr", "network", "seed"]] * 2
    found = {(c["optimizer"], c["lr"], c["network"], c["seed"]) for c in labels(cells)}
    assert found == {
        (*rate, network, seed) for rate in rates for network in ("binary", "real") for seed in range(4)
    }
    kinds = {(dict(c.labels)["network"], c.kind) for c in cells}
    assert kinds == {("binary", "two_stage"), ("real", "real")}
    base = ablation_base(params, quick=False)
    for optimizer, lr in rates:
        cell = next(
            c
            for c in cells
            if dict(c.labels) == {"optimizer": optimizer, "lr": lr, "network": "binary", "seed": 2}
        )
        applied = cell.params(base)
        for stage in (applied.stage1, applied.stage2):  # each cell at its own learning rate, in both stages
            assert (stage.optimizer, stage.lr) == (optimizer, lr)
            assert stage.momentum == 0.9
        assert applied.seed == 2


def test_latent_grid_is_adam_and_sgd_in_stage_2_with_its_own_budget_from_the_pipelines_stage_1(params):
    cells = expand("latent", params)
    assert [(c["optimizer"], c["seed"]) for c in labels(cells)] == [
        (optimizer, seed) for seed in range(LATENT["seeds"]) for optimizer in ("adam", "sgd")
    ]
    assert {(c.ablation, c.kind) for c in cells} == {("latent", "two_stage")}
    base = ablation_base(params, quick=False)
    for cell in cells:
        applied = cell.params(base)
        assert applied.stage1 == base.stage1  # stage 1 untouched: adam, weight decay 5e-6, ablation epochs
        stage2 = applied.stage2
        assert (stage2.epochs, stage2.batch_size) == (LATENT["epochs"], LATENT["batch_size"])
        settings = LATENT["optimizers"][dict(cell.labels)["optimizer"]]
        assert (stage2.optimizer, stage2.lr) == (dict(cell.labels)["optimizer"], settings["lr"])
    quick = expand("latent", params, quick=True)
    assert len(quick) == 2 * params.ablation.quick_seeds
    applied = quick[0].params(ablation_base(params, quick=True))
    assert applied.stage2.epochs == params.ablation.quick_epochs  # --quick shortens the latent budget too
    assert applied.stage2.batch_size == LATENT["batch_size"]


def test_latent_cells_share_stage_1_with_the_paper_cell_of_the_wd_grid(params, digits):
    base = ablation_base(params, quick=False)
    wd = {
        (dict(c.labels)["seed"]): c
        for c in expand("wd", params)
        if dict(c.labels)["stage1.weight_decay"] == PAPER[0]
    }
    for cell in expand("latent", params):
        seed = dict(cell.labels)["seed"]
        assert stage1_key(cell.params(base), digits) == stage1_key(wd[seed].params(base), digits)


def test_stages_grid_is_two_stage_and_one_stage_per_seed(params):
    cells = expand("stages", params)
    assert [(c["training"], c["seed"]) for c in labels(cells)] == [
        (training, seed) for seed in range(4) for training in ("two-stage", "one-stage")
    ]
    assert [c.kind for c in cells[:2]] == ["two_stage", "one_stage"]


def test_quick_uses_quick_seeds_and_epochs(params):
    for name, per_seed in (("wd", 6), ("optimizer", 6), ("stages", 2), ("latent", 2)):
        cells = expand(name, params, quick=True)
        assert len(cells) == per_seed * 3, name
        assert {c["seed"] for c in labels(cells)} == {0, 1, 2}
    base = ablation_base(params, quick=True)
    assert base.stage1.epochs == base.stage2.epochs == params.ablation.quick_epochs


@pytest.mark.parametrize(
    ("ablation", "message"),
    [
        (
            {"optimizers": {**SWEEP, "adam": {"lr": 2.0e-3}}},
            r"optimizers\.adam\.lr: a non-empty list .*\(got 0\.002\)",
        ),
        ({"optimizers": {**SWEEP, "adam": {"lr": []}}}, r"optimizers\.adam\.lr: a non-empty list"),
        (
            {"optimizers": {**SWEEP, "adam": {"lr": [2.0e-3, -1.0]}}},
            r"optimizers\.adam\.lr: .*greater than 0",
        ),
        ({"optimizers": {**SWEEP, "adam": {"lr": [2.0e-3, 2.0e-3]}}}, r"optimizers\.adam\.lr: .*distinct"),
        ({"optimizers": {**SWEEP, "sgd": {"lr": [0.1], "momentum": [0.9]}}}, r"optimizers\.sgd\.momentum: "),
        (
            {"optimizers": {**SWEEP, "sgd": {"lr": [0.1], "momentun": 0.9}}},
            r"optimizers\.sgd\.momentun: unknown key",
        ),
        ({"optimizers": {"adam": SWEEP["adam"]}}, r"optimizers: give settings for exactly adam and sgd"),
        (
            {"latent": {**LATENT, "optimizers": SWEEP}},
            r"latent\.optimizers\.adam\.lr: Input should be a valid number",
        ),
        ({"latent": {**LATENT, "batch_size": 0}}, r"latent\.batch_size: .*greater than 0"),
        ({"latent": {**LATENT, "seeds": 2}}, r"latent\.seeds: .*greater than or equal to 3"),
        ({"latent": {**LATENT, "epoch": 3}}, r"latent\.epoch: unknown key"),
    ],
)
def test_bad_ablation_settings_are_one_line_naming_the_key(params, ablation, message):
    with pytest.raises(ParamsError, match=rf"^overrides: ablation\.{message}"):
        params.with_overrides({f"ablation.{key}": value for key, value in ablation.items()})


def test_the_ablation_reads_the_prepared_data_it_declares_to_dvc(params, tmp_path):
    """Not the raw source again: without the ``prepare`` stage's file there is nothing to train on."""
    with pytest.raises(DataError, match="absent.pt does not exist"):
        run_ablation(
            "stages",
            params,
            quick=True,
            out_dir=tmp_path,
            store_dir=tmp_path,
            data_path=tmp_path / "absent.pt",
        )


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


def test_keys_change_with_the_thread_count(params, digits):
    """Float sums depend on torch's thread count: a cell trained with other threads is another cell."""
    threads = params.with_overrides({"threads": params.threads + 1})
    for name in ablate.ABLATIONS:
        assert not set(keys(threads, digits, name).values()) & set(keys(params, digits, name).values()), name


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


def test_seeds_by_ablation_gives_one_ablation_more_seeds_and_quick_ignores_it(params):
    more = params.with_overrides({"ablation.seeds_by_ablation": {"stages": 6}})
    seeds_of = {name: {dict(c.labels)["seed"] for c in expand(name, more)} for name in ("wd", "stages")}
    assert seeds_of == {"wd": set(range(4)), "stages": set(range(6))}
    assert {dict(c.labels)["seed"] for c in expand("stages", more, quick=True)} == set(range(3))


@pytest.mark.parametrize("seeds", [3, 5])
def test_changing_the_seed_count_adds_or_removes_only_those_seeds(params, digits, seeds):
    assert keys(params.with_overrides({"ablation.seeds": seeds}), digits, "latent") == keys(
        params, digits, "latent"
    )  # the latent ablation has its own seed count
    for name in ("wd", "optimizer", "stages"):
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
        assert (
            optimizer[(("optimizer", "adam"), ("lr", 2.0e-3), ("network", "binary"), ("seed", seed))] == paper
        )
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
    for stage in ("stage1", "stage2"):  # one epoch per stage: the linear schedule would run it at lr 0
        raw[stage].update(optimizer="adam", lr=2.0e-3, schedule="constant")
    raw["stage1"]["weight_decay"], raw["stage2"]["weight_decay"] = PAPER
    raw["tracking"] = {"uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "ablate-test"}
    raw["search"]["storage"] = f"sqlite:///{folder / 'optuna.db'}"  # the cells' study
    raw["ablation"].update(
        quick_seeds=3,
        quick_epochs=1,
        weight_decay=WD_GRID,
        optimizers={"adam": {"lr": [2.0e-3]}, "sgd": {"lr": [0.1], "momentum": 0.9}},
        latent=LATENT,
        lr_extensions=1,
        workers=1,
    )
    path = folder / "params.yaml"
    with open(path, "w") as stream:
        YAML().dump(raw, stream)
    prepare(load_params(path)).save(folder / "data.pt")  # what the DVC stage prepare writes
    return path


def test_a_quick_run_goes_to_reports_quick_and_a_full_one_to_the_dvc_stages_folder(tmp_path):
    """Without --out: reports/ablations/ (the DVC stage's outputs) for a full run only; --out wins."""
    reports = ablate.PROJECT_ROOT / "reports"
    assert ablate.results_folder(quick=False) == ablate.RESULTS == reports / "ablations"
    assert ablate.results_folder(quick=True) == ablate.QUICK_RESULTS == reports / "quick"
    assert ablate.results_folder(quick=True, out_dir=tmp_path) == tmp_path
    ignored = subprocess.run(["git", "-C", str(PROJECT), "check-ignore", "-q", "reports/quick/wd.json"])
    assert ignored.returncode == 0, "reports/quick/ is not git-ignored"


@pytest.mark.slow
def test_a_quick_run_by_hand_leaves_the_reproductions_results_alone(tmp_path):
    """``ablate stages --quick`` in a project whose reports/ablations/ holds the DVC stage's results:
    those keep their bytes (and times); the smoke run's go to reports/quick/, as its line says."""
    root = tmp_path / "project"
    root.mkdir()
    write_params(root)
    (root / "data" / "prepared").mkdir(parents=True)
    (root / "data.pt").rename(root / "data" / "prepared" / "data.pt")  # where the DVC stage prepare puts it
    reproduction = root / "reports" / "ablations"
    reproduction.mkdir(parents=True)
    for suffix in ("csv", "json"):
        (reproduction / f"stages.{suffix}").write_text(f"the reproduction's stages.{suffix}\n")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in reproduction.iterdir()}
    env = {**os.environ, "BNN_STUDY_ROOT": str(root), "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([sys.executable, "-m", "study.reproduce", "ablate", "stages", "--quick"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in reproduction.iterdir()} == before
    quick = root / "reports" / "quick"
    assert sorted(p.name for p in quick.iterdir()) == ["stages.csv", "stages.json"]
    assert json.loads((quick / "stages.json").read_text())["quick"] is True
    assert len(pd.read_csv(quick / "stages.csv")) == 2 * 3  # two trainings x quick_seeds
    assert f"-> {quick / 'stages'}.csv and .json" in done.stdout


def store_files(store: Path) -> dict[str, int]:
    return {
        str(p.relative_to(store)): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.suffix in (".json", ".pt")
    }


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    """Every ablation with --quick, then wd again (which must train nothing), then the report."""
    folder = tmp_path_factory.mktemp("ablate")
    params = load_params(write_params(folder))
    out, store = folder / "out", folder / "store"
    with pytest.MonkeyPatch.context() as patch:
        tables = {name: run_ablation(name, params, quick=True, out_dir=out, store_dir=store,
                               data_path=folder / "data.pt")
                  for name in ablate.ABLATIONS}  # fmt: skip
        before = store_files(store)
        wd_csv, wd_json = (out / "wd.csv").read_text(), (out / "wd.json").read_text()

        def must_not_train(*args, **kwargs):
            raise AssertionError("a stored cell was trained again")

        patch.setattr(cell_worker, "run_cell", must_not_train)
        again = run_ablation(
            "wd", params, quick=True, out_dir=out, store_dir=store, data_path=folder / "data.pt"
        )
        after = store_files(store)
    report, figures, claims = write_report(out, folder / "report" / "reproduction.md", params.ablation.margin)
    return {
        "folder": folder, "params": params, "tables": tables, "again": again, "before": before,
        "after": after, "wd_csv": wd_csv, "wd_json": wd_json, "report": report, "figures": figures,
        "claims": claims,
    }  # fmt: skip


def children(ablated, name: str) -> list:
    """The MLflow child runs of ablation ``name``'s parent."""
    client = MlflowClient(ablated["params"].tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test-ablations")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parent = next(
        r for r in runs if r.data.tags.get("bnn.kind") == "ablation" and r.data.tags["ablation"] == name
    )
    return [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]


@pytest.mark.slow
def test_ablations_write_tables_with_every_metric(ablated):
    out = ablated["folder"] / "out"
    sizes = {"wd": 3 * 2 * 3, "optimizer": None, "stages": 2 * 3, "latent": 2 * 3}  # optimizer: see below
    assert set(sizes) == set(ablate.ABLATIONS)
    for name, size in sizes.items():
        table = pd.read_csv(out / f"{name}.csv")
        assert size is None or len(table) == size, name
        assert table["test_acc"].between(0, 1).all(), name
        assert table[METRICS].notna().all().all(), name
        binary = table[table["kind"] != "real"]
        assert binary[BINARY_METRICS].notna().all().all(), name
        assert (table["lr_budget"] > 0).all() and (table["median_abs_start"] > 0).all(), name
        assert (
            table[["rel_mass_near_zero", "rel_mass_near_extreme", "beyond_clip"]].stack().between(0, 1).all()
        )
        assert "failure" not in table and "stage1_cached" not in table, name
        summary = json.loads((out / f"{name}.json").read_text())
        assert summary["ablation"] == name and summary["quick"] is True
        assert summary["seeds"] == [0, 1, 2] and summary["epochs"] == 1 and summary["data"] == "digits"
        assert summary["test_size"] == len(summary["test_labels"]) > 0  # the report's floor and bootstrap
        assert summary["cpu_isa"] == "avx2" and "test_predictions" not in table
        assert [c["key"] for c in summary["cells"]] == list(table["key"])
        for cell in summary["cells"]:
            predictions = cell["test_predictions"]  # per example, in the test split's order
            assert len(predictions) == summary["test_size"] and set(predictions) <= set(range(10))
            correct = sum(p == y for p, y in zip(predictions, summary["test_labels"], strict=True))
            assert correct / summary["test_size"] == pytest.approx(cell["test_acc"])
            # Two epochs in all, whatever the kind: 1 + 1 in two stages, or 2 in one.
            assert [e["step"] for e in cell["history"]] == [1, 2], (name, cell["key"])
            stages = [e["stage"] for e in cell["history"]]
            assert stages == ([1, 2] if cell["kind"] == "two_stage" else [1, 1])
            assert len(cell["histogram"]["counts"]) == len(cell["rel_histogram"]["counts"]) == 121
    wd = pd.read_csv(out / "wd.csv")
    assert set(zip(wd["stage1.weight_decay"], wd["stage2.weight_decay"], wd["seed"], strict=True)) == set(
        itertools.product(WD_GRID["stage1"], WD_GRID["stage2"], range(3))
    )
    optimizer = pd.read_csv(out / "optimizer.csv")
    lrs = set(zip(optimizer["optimizer"], optimizer["lr"], strict=True))
    # The configured lrs, and at most one more per side (lr_extensions 1): a factor 2 away (a single lr).
    configured = {("adam", 2.0e-3), ("sgd", 0.1)}
    assert configured <= lrs <= {(o, float(f"{lr * f:.3g}")) for o, lr in configured for f in (0.5, 1, 2)}
    assert len(optimizer) == 3 * optimizer.groupby(["network", "optimizer", "lr"]).ngroups


def test_the_optimizer_ablation_extends_each_sweep_until_bracketed_or_out_of_extensions(ablated):
    optimizer = pd.read_csv(ablated["folder"] / "out" / "optimizer.csv")
    status = bracket_status(lr_sweep(optimizer), {"adam": [2.0e-3], "sgd": [0.1]}, limit=1)
    assert len(status) == 4  # binary and real, Adam and SGD
    sides = set(status["lower"]) | set(status["upper"])
    assert "open" not in sides and sides <= {"bracketed", "stability limit", "not bracketed"}
    configured = {"adam": 2.0e-3, "sgd": 0.1}
    for row in status.itertuples():
        lrs = set(
            optimizer[(optimizer["network"] == row.network) & (optimizer["optimizer"] == row.optimizer)]["lr"]
        )
        assert row.lr in lrs and len(lrs) <= 3  # the configured lr and at most one more per side
        # A side left unbracketed had its one extension.
        if row.upper == "not bracketed":
            assert max(lrs) > configured[row.optimizer]
        if row.lower == "not bracketed":
            assert min(lrs) < configured[row.optimizer]


@pytest.mark.slow
def test_latent_cells_carry_their_budget_and_start(ablated):
    summary = json.loads((ablated["folder"] / "out" / "latent.json").read_text())
    assert summary["budget"] == {"stage1_epochs": 1, "stage1_batch_size": 128, "stage2_epochs": 1,
                                 "stage2_batch_size": LATENT["batch_size"]}  # fmt: skip
    assert summary["optimizers"] == LATENT["optimizers"]
    table = ablated["tables"]["latent"]
    steps = math.ceil(len(prepare(ablated["params"]).train) / LATENT["batch_size"])
    for cell in summary["cells"]:
        stage2 = [e for e in cell["history"] if e["stage"] == 2]
        lr = LATENT["optimizers"][cell["optimizer"]]["lr"]
        assert [e["lr"] for e in stage2] == [pytest.approx(lr)]
        assert cell["lr_budget"] == pytest.approx(steps * lr)  # one epoch of stage 2 at lr0
        assert cell["dead_small_grad"] == stage2[-1]["dead_small_grad"]
    # Adam and SGD start stage 2 from the same stage-1 weights.
    start = table.groupby("seed")["median_abs_start"].nunique()
    assert (start == 1).all()


@pytest.mark.slow
def test_stage1_trains_once_per_setting_and_seed(ablated):
    cached = {c.data.tags["cell_key"]: c.data.tags["stage1_cached"] for c in children(ablated, "wd")}
    wd = ablated["tables"]["wd"]
    # Each stage-1 setting trains once per seed and serves both stage-2 settings.
    for (wd1, seed), group in wd.groupby(["stage1.weight_decay", "seed"]):
        assert [cached[key] for key in group["key"]] == ["False", "True"], (wd1, seed)
    stage1 = list((ablated["folder"] / "store" / "stage1").glob("*.pt"))
    # The wd grid's stage-1 settings and each binary (optimizer, lr) of the optimizer ablation but
    # Adam at the base lr (the wd grid's paper cell); the latent ablation's is the paper one too.
    binary = ablated["tables"]["optimizer"].query("network == 'binary'")
    optimizer_settings = {pair for pair in zip(binary["optimizer"], binary["lr"], strict=True)} - {
        ("adam", 2e-3)
    }
    assert len(stage1) == 3 * (3 + len(optimizer_settings))
    assert {c.data.tags["stage1_cached"] for c in children(ablated, "latent")} == {"True"}


@pytest.mark.slow
def test_cells_are_shared_across_ablations(ablated):
    tables = ablated["tables"]
    wd = tables["wd"]
    paper = wd[(wd["stage1.weight_decay"] == PAPER[0]) & (wd["stage2.weight_decay"] == PAPER[1])]
    stages, optimizer = tables["stages"], tables["optimizer"]
    two_stage = stages[stages["training"] == "two-stage"]
    adam = optimizer.query("optimizer == 'adam' and network == 'binary' and lr == 2e-3")
    for reused in (two_stage, adam):
        assert list(reused["key"]) == list(paper["key"])
        assert list(reused["test_acc"]) == list(paper["test_acc"])
    cells = list((ablated["folder"] / "store" / "cells").glob("*.json"))
    rows = sum(len(table) for table in tables.values())
    assert len(cells) == rows - 3 - 3 == len(set().union(*(table["key"] for table in tables.values())))


@pytest.mark.slow
def test_rerun_trains_nothing_and_gives_the_same_files(ablated):
    assert ablated["after"] == ablated["before"]  # no store file written again
    pd.testing.assert_frame_equal(ablated["again"], ablated["tables"]["wd"])
    assert (ablated["folder"] / "out" / "wd.csv").read_text() == ablated["wd_csv"]
    assert (ablated["folder"] / "out" / "wd.json").read_text() == ablated["wd_json"]


@pytest.mark.slow
def test_two_workers_write_the_same_results_files_as_one(ablated, tmp_path):
    """Fixed torch threads and nothing run-specific in the files: a fresh store trained by two worker
    processes gives byte-identical results to the single worker's (which reused other ablations' cells)."""
    params = load_params(write_params(tmp_path))  # its own MLflow store
    out = tmp_path / "out"
    run_ablation(
        "stages",
        params,
        quick=True,
        workers=2,
        out_dir=out,
        store_dir=tmp_path / "store",
        data_path=tmp_path / "data.pt",
    )
    for suffix in ("json", "csv"):
        assert (out / f"stages.{suffix}").read_text() == (
            ablated["folder"] / "out" / f"stages.{suffix}"
        ).read_text()


@pytest.mark.slow
def test_results_files_hold_no_run_ids(ablated):
    """Run ids differ between clones: they are in MLflow only, never in the results DVC tracks."""
    client = MlflowClient(ablated["params"].tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test-ablations")
    run_ids = {r.info.run_id for r in client.search_runs([experiment.experiment_id], max_results=1000)}
    for name in ablate.ABLATIONS:
        for suffix in ("json", "csv"):
            text = (ablated["folder"] / "out" / f"{name}.{suffix}").read_text()
            assert "parent_run_id" not in text and not any(run_id in text for run_id in run_ids), name


@pytest.mark.slow
def test_one_mlflow_parent_per_ablation_with_a_child_per_cell(ablated):
    client = MlflowClient(ablated["params"].tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test-ablations")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.data.tags["ablation"]: r for r in runs if r.data.tags.get("bnn.kind") == "ablation"}
    assert sorted(parents) == sorted(ablate.ABLATIONS)
    assert len([r for r in runs if r.data.tags.get("bnn.kind") == "ablation"]) == len(ablate.ABLATIONS)
    reused_counts = {"wd": 0, "optimizer": 3, "stages": 3, "latent": 0}  # the rerun reused its parent
    for name, parent in parents.items():
        assert parent.data.tags["quick"] == "True"
        summary = json.loads((ablated["folder"] / "out" / f"{name}.json").read_text())
        assert summary["mlflow_run_key"] == parent.data.tags["bnn.run_key"]  # finds the parent
        children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
        table = ablated["tables"][name]
        assert sorted(c.data.tags["cell_key"] for c in children) == sorted(table["key"]), name
        assert {c.data.tags["bnn.kind"] for c in children} == {"ablation-cell"}
        assert {c.info.status for c in children} == {"FINISHED"}
        for child in children:  # the cell's final metrics, as in its table
            row = table[table["key"] == child.data.tags["cell_key"]].iloc[0]
            for metric in (
                "test_acc",
                "val_acc",
                "saturation",
                "ff_ratio",
                "mass_near_one",
                "dead_small_grad",
            ):
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
    """The report reads every ablation's results (the claims themselves are tested in test_claims)."""
    text = ablated["report"].read_text()
    section = text.split("## Verdicts", 1)[1].split("Details:", 1)[0]
    rows = re.findall(r"^\| (\w+) +\|.*\| \*\*([^*]+)\*\* +\|$", section, flags=re.MULTILINE)
    numbers = [c.number for c in ablated["claims"]]
    assert {number[0] for number in numbers} == set(CLAIM_GROUPS)
    assert [(c.number, c.verdict) for c in ablated["claims"]] == rows
    assert {verdict for _, verdict in rows} <= set(VERDICTS)
    assert "Seeds** per cell: wd 3, optimizer 3, stages 3, latent 3 (quick run)" in text
    assert ablated["figures"]
    for figure in ablated["figures"]:
        assert figure.exists() and figure.stat().st_size > 0 and figure.suffix == ".png"
        assert f"(figures/{figure.name})" in text
    verdicts = pd.read_csv(ablated["report"].parent / "verdicts.csv")
    assert list(verdicts["claim"].astype(str)) == numbers


# --- a NaN cell is recorded and the ablation goes on -----------------------------------------------


@pytest.mark.slow
def test_a_cell_with_a_nan_loss_is_recorded_as_failed_and_the_rest_runs(tmp_path, monkeypatch):
    params = load_params(write_params(tmp_path))
    real_run_cell = cell_worker.run_cell
    failing = {"training": "one-stage", "seed": 1}

    def run_cell(cell, *args, **kwargs):
        if dict(cell.labels) == failing:
            raise NonFiniteLossError("loss became nan at epoch 1, step 3")
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(cell_worker, "run_cell", run_cell)  # workers=1: the cells run in this process
    out = tmp_path / "out"
    table = run_ablation(
        "stages",
        params,
        quick=True,
        out_dir=out,
        store_dir=tmp_path / "store",
        data_path=tmp_path / "data.pt",
    )
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
    experiment = client.get_experiment_by_name("ablate-test-ablations")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "failure" in r.data.tags]
    assert [r.data.tags["cell_key"] for r in runs] == [failed["key"].item()]
    assert runs[0].info.status == "FINISHED"


@pytest.mark.slow
def test_an_interrupted_cell_fails_at_once_and_the_same_command_goes_on(tmp_path, monkeypatch):
    """Ctrl-C in a cell: its trial is failed now (a re-run need not wait out the grace period), its MLflow
    run is KILLED, and the same command trains it and the rest, reusing the cells done before."""
    import optuna
    from optuna.trial import TrialState

    params = load_params(write_params(tmp_path))
    real_run_cell = cell_worker.run_cell
    trained = []

    def interrupted(cell, *args, **kwargs):
        if len(trained) == 2:
            raise KeyboardInterrupt
        trained.append(cell)
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(cell_worker, "run_cell", interrupted)
    run = {
        "quick": True,
        "out_dir": tmp_path / "out",
        "store_dir": tmp_path / "store",
        "data_path": tmp_path / "data.pt",
    }
    with pytest.raises(KeyboardInterrupt):
        run_ablation("stages", params, **run)
    study = optuna.load_study(study_name=optuna.get_all_study_names(params.search.storage)[0],
                              storage=params.search.storage)  # fmt: skip
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1
    assert TrialState.RUNNING not in states
    client = MlflowClient(params.tracking.uri)
    experiment = client.get_experiment_by_name("ablate-test-ablations")
    statuses = [
        r.info.status for r in client.search_runs([experiment.experiment_id]) if "cell_key" in r.data.tags
    ]
    assert sorted(statuses) == ["FINISHED", "FINISHED", "KILLED"]

    monkeypatch.setattr(cell_worker, "run_cell", real_run_cell)
    trained.clear()
    table = run_ablation("stages", params, **run)
    assert len(table) == 6 and table["test_acc"].notna().all()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 6  # the two done before were not trained again
