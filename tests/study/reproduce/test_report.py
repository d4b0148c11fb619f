"""study.reproduce.report end to end: the report, its figures and verdicts.csv from the four ablations'
JSON files (synthetic, as ``ablate`` writes them: tests/study/reproduce/ablation_files.py), and the
one-line errors of results the report cannot use."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from ablation_files import (
    ABLATIONS,
    TOP,
    edit_ablation,
    flat,
    markdown_table,
    no_figures,
    section,
    write_ablations,
)
from test_claims import ACCURACY, CLAIMS, MARGIN, SEEDS

from study.cpu_isa import cpu_model
from study.reproduce import report as report_module
from study.reproduce.claim import ALPHA
from study.reproduce.report import ResultsError, write_report
from study.reproduce.stats import VERDICTS

VERDICT_HEADER = ["claim", "statement", "expected", "measured", "95 % CI", "effect size", "n", "p (Holm)",
                  "mde", "verdict"]  # fmt: skip
SWEEP_HEADER = ["network", "optimizer", "lr", "seeds", "diverged", "mean val_acc", "mean test_acc", "chosen"]
FITS_HEADER = ["claim", "trend", "R^2 within seeds", "lack of fit", "p", "shape", "largest deviation",
               "log axis: R^2", "log axis: p"]  # fmt: skip
PLANTED = dict.fromkeys(CLAIMS, "supported") | {"1b": "inconclusive"}  # FF rises with stage 2 only
OPTIMIZER = "Optimizer: Adam vs SGD, binary and real-valued"
RUNS = 9 * SEEDS + 12 * SEEDS + 2 * SEEDS + 2 * SEEDS  # wd grid, lr sweeps, stages, latent
FAILED = 1 + SEEDS  # the top Adam lr: one seed of the binary network, every seed of the real one


@pytest.fixture(scope="module")
def clones(tmp_path_factory) -> dict[str, dict]:
    """The same results in two folders (two clones, each with its own MLflow run keys), each reported."""
    out = {}
    for clone in ("one", "two"):
        root = tmp_path_factory.mktemp(f"clone-{clone}")
        results = write_ablations(root / "ablations", run_key=f"runkey-{clone}-7f3e")
        report, figures, claims = write_report(results, root / "reports" / "reproduction.md", MARGIN)
        out[clone] = {"root": root, "report": report, "figures": figures, "claims": claims}
    return out


@pytest.fixture(scope="module")
def text(clones) -> str:
    return clones["one"]["report"].read_text()


def test_two_clones_give_byte_identical_reports_without_paths_or_run_keys(clones, tmp_path_factory):
    one, two = clones["one"], clones["two"]
    for name in ("reproduction.md", "verdicts.csv"):
        first, second = (clone["report"].parent / name for clone in (one, two))
        assert first.read_bytes() == second.read_bytes(), name
        for clone in (one, two):
            content = (clone["report"].parent / name).read_text()
            assert str(clone["root"]) not in content and str(tmp_path_factory.getbasetemp()) not in content
            assert "/tmp" not in content and "runkey-" not in content, name
    assert [f.name for f in one["figures"]] == [f.name for f in two["figures"]]
    for first, second in zip(one["figures"], two["figures"], strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def test_every_claim_is_in_the_verdict_table_with_one_of_the_four_verdicts(clones, text):
    rows = markdown_table(text, VERDICT_HEADER)
    assert [row["claim"] for row in rows] == CLAIMS
    shown = {row["claim"]: re.fullmatch(r"\*\*(.+)\*\*", row["verdict"]).group(1) for row in rows}
    assert set(shown.values()) <= set(VERDICTS)
    assert shown == PLANTED
    verdicts = pd.read_csv(clones["one"]["report"].parent / "verdicts.csv", dtype={"claim": str})
    assert dict(zip(verdicts["claim"], verdicts["verdict"], strict=True)) == shown
    assert {c.number: c.verdict for c in clones["one"]["claims"]} == shown
    assert "13 claims: 12 supported, 0 contradicted, 1 inconclusive, 0 untestable at this budget." in text
    assert "so no verdict is marked robust" in flat(section(text, "Verdicts"))  # no robustness.csv beside it


def test_setup_names_the_cpu_and_the_pinned_code_path(text):
    setup = flat(section(text, "Set-up"))
    pins = "ATEN_CPU_CAPABILITY=avx2, MKL_CBWR=AVX2, ONEDNN_MAX_CPU_ISA=AVX2, OPENBLAS_CORETYPE=Haswell"
    assert f"CPU code path `cpu_isa: avx2` ({pins}): the trained numbers are the same" in setup
    assert f"This report was generated on: {cpu_model()}." in setup
    assert f"{RUNS} runs in all, {FAILED} failed (NaN or infinite loss)" in setup
    assert (
        "Chosen: adam (binary) lr 0.004; sgd (binary) lr 0.1; adam (real) lr 0.004; sgd (real) lr 0.1."
        in setup
    )
    assert "stage 2: 30 epochs, batch 32" in setup


def test_the_power_section_states_the_alpha_of_each_accuracy_claim(text):
    alpha = f"{ALPHA / len(ACCURACY):.2g}"  # Holm's first step over the six tested accuracy claims
    power = section(text, "Power")
    rows = markdown_table(power, ["claim", "seeds", "alpha", "minimum detectable effect", "0.005 detectable"])
    assert [row["claim"] for row in rows] == ACCURACY
    assert {row["alpha"] for row in rows} == {alpha} and {row["seeds"] for row in rows} == {str(SEEDS)}
    assert all(float(row["minimum detectable effect"]) > 0 for row in rows)
    assert "Test-set floor: 300 test samples" in flat(power)
    mde = {row["claim"]: row["mde"] for row in markdown_table(text, VERDICT_HEADER)}
    assert all(mde[c].endswith(f"(alpha {alpha})") for c in ACCURACY)
    assert all(mde[c] == "" for c in set(CLAIMS) - set(ACCURACY))


def test_the_lr_bracket_table_says_where_each_sweep_ends(text):
    rows = markdown_table(
        section(text, OPTIMIZER), ["network", "optimizer", "chosen lr", "below it", "above it"]
    )
    assert rows == [
        # one seed failed at the top Adam lr: not eligible, not diverged, and no extension allowed
        {"network": "binary", "optimizer": "adam", "chosen lr": "0.004", "below it": "bracketed",
         "above it": "not bracketed"},
        {"network": "binary", "optimizer": "sgd", "chosen lr": "0.1", "below it": "bracketed",
         "above it": "bracketed"},
        {"network": "real", "optimizer": "adam", "chosen lr": "0.004", "below it": "bracketed",
         "above it": "stability limit"},  # every seed diverged there
        {"network": "real", "optimizer": "sgd", "chosen lr": "0.1", "below it": "bracketed",
         "above it": "bracketed"},
    ]  # fmt: skip


def test_the_shapes_table_gives_the_largest_deviation_and_the_log_axis(text):
    shapes = text.split("### Shapes", 1)[1]
    rows = markdown_table(shapes, FITS_HEADER)
    assert [row["claim"] for row in rows] == ["1a", "1b", "2a", "2b"]
    for row in rows:
        assert row["shape"] in ("shape consistent", "shape rejected")
        assert re.fullmatch(r"F\(\d+, \d+\) = \S+", row["lack of fit"])
        assert 0 <= float(row["log axis: R^2"]) <= 1
    assert all(re.fullmatch(r"\S+ % of FF at \S+", row["largest deviation"]) for row in rows[:2])
    assert all(re.fullmatch(r"\S+ at \S+", row["largest deviation"]) for row in rows[2:])
    assert "Mean residual of the straight line at each weight-decay level" in shapes


def test_the_figures_exist_and_are_linked(clones, text):
    figures = clones["one"]["figures"]
    assert len(figures) == 8 and len({f.name for f in figures}) == 8
    for figure in figures:
        assert figure.parent == clones["one"]["report"].parent / "figures"
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure.name
        assert len(re.findall(rf"^!\[[^]]+\]\(figures/{re.escape(figure.name)}\)$", text, re.MULTILINE)) == 1


def test_diverged_optimizer_cells_count_in_the_sweep_table(text):
    optimizer = section(text, OPTIMIZER)
    rows = {(r["network"], r["optimizer"], r["lr"]): r for r in markdown_table(optimizer, SWEEP_HEADER)}
    assert len(rows) == 12
    top = f"{TOP:g}"
    assert rows["real", "adam", top] == {
        "network": "real", "optimizer": "adam", "lr": top, "seeds": str(SEEDS), "diverged": str(SEEDS),
        "mean val_acc": "n/a", "mean test_acc": "n/a", "chosen": "",
    }  # fmt: skip
    assert (
        rows["binary", "adam", top]["diverged"] == "1"
        and rows["binary", "adam", top]["mean val_acc"] != "n/a"
    )
    assert {key: row["diverged"] for key, row in rows.items() if key[2] != top} == {
        key: "0" for key in rows if key[2] != top
    }
    chosen = markdown_table(optimizer, ["network", "optimizer", "lr", "seeds", "test_acc"])
    assert [(r["network"], r["optimizer"], r["lr"], r["seeds"]) for r in chosen] == [
        ("binary", "adam", "0.004", "5"), ("binary", "sgd", "0.1", "5"),
        ("real", "adam", "0.004", "5"), ("real", "sgd", "0.1", "5"),
    ]  # fmt: skip


def test_results_of_the_native_code_path_say_the_numbers_depend_on_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "draw_figures", no_figures)
    results = write_ablations(tmp_path / "ablations")
    for name in ABLATIONS:
        edit_ablation(results, name, lambda ablation: ablation.update(cpu_isa="native"))
    report, _, _ = write_report(results, tmp_path / "reports" / "reproduction.md", MARGIN)
    setup = flat(section(report.read_text(), "Set-up"))
    assert (
        "CPU code path `cpu_isa: native`: each library takes this CPU's best kernels, so the numbers" in setup
    )
    assert "ATEN_CPU_CAPABILITY" not in setup and f"generated on: {cpu_model()}." in setup


def test_a_missing_latent_json_is_one_line_naming_the_command(tmp_path):
    results = write_ablations(tmp_path / "ablations")
    (results / "latent.json").unlink()
    with pytest.raises(FileNotFoundError) as failure:
        write_report(results, tmp_path / "reports" / "reproduction.md", MARGIN)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(
        f"{results / 'latent.json'} is missing: run `python -m study.reproduce ablate latent`"
    )
    assert not (tmp_path / "reports").exists()  # nothing written


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("stages", lambda ablation: ablation["cells"][3].pop("test_predictions")),
        ("wd", lambda ablation: ablation.pop("test_labels")),
    ],
    ids=["a cell without predictions", "an ablation without test labels"],
)
def test_results_without_test_predictions_name_the_ablate_command(tmp_path, name, change):
    results = write_ablations(tmp_path / "ablations")
    edit_ablation(results, name, change)
    with pytest.raises(ResultsError) as failure:
        write_report(results, tmp_path / "reports" / "reproduction.md", MARGIN)
    message = str(failure.value)
    assert (
        "\n" not in message
        and f"the {name} ablation's results hold no per-example test predictions" in message
    )
    assert message.endswith(f"re-run `python -m study.reproduce ablate {name}`")
    assert not (tmp_path / "reports").exists()
