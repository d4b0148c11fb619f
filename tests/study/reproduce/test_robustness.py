"""study.reproduce.robustness: the verdicts on the native code path compared with the pinned ones, and
how the report marks them (``reports/robustness.csv`` beside it); the native ablations' params and
process. The figures are stubbed out here (test_report.py draws them)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest
from ablation_files import flat, markdown_table, no_figures, section, write_ablations
from ruamel.yaml import YAML
from test_claims import CLAIMS, MARGIN

from study import cpu_isa
from study.artifacts import write_csv
from study.config import DEFAULT_PARAMS, read_yaml, validate_params
from study.reproduce import report, robustness
from study.reproduce.report import load_results, write_report
from study.reproduce.robustness import compare, native_params, run_native_ablations

COLUMNS = ["claim", "verdict_avx2", "verdict_native", "robust", "native_cpu"]
VERDICT_HEADER = ["claim", "statement", "expected", "measured", "95 % CI", "effect size", "n", "p (Holm)",
                  "mde", "verdict"]  # fmt: skip
FLIPPED = "4a"  # supported on the pinned path; the native comparison says inconclusive


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """The synthetic ablations (every claim supported but 1b) and their claims."""
    folder = write_ablations(tmp_path_factory.mktemp("pinned") / "ablations")
    return folder, load_results(folder, MARGIN).claims


@pytest.fixture
def reported(pinned, tmp_path, monkeypatch):
    """The report of the pinned results with ``comparison`` as reports/robustness.csv (None: no file)."""
    monkeypatch.setattr(report, "draw_figures", no_figures)

    def make(comparison: pd.DataFrame | None) -> str:
        folder = tmp_path / "reports"
        folder.mkdir(exist_ok=True)
        if comparison is not None:
            write_csv(folder / "robustness.csv", comparison)
        path, _, _ = write_report(pinned[0], folder / "reproduction.md", MARGIN)
        return path.read_text()

    return make


def verdict_cells(text: str) -> dict[str, str]:
    return {row["claim"]: row["verdict"] for row in markdown_table(text, VERDICT_HEADER)}


def test_compare_marks_the_claims_whose_verdict_differs(pinned):
    claims = pinned[1]
    flipped = {"1b": "supported", "6c": "contradicted"}
    native = [replace(c, verdict=flipped.get(c.number, c.verdict)) for c in reversed(claims)]  # any order
    table = compare(claims, native, "Some CPU @ 3 GHz")
    assert list(table.columns) == COLUMNS
    assert list(table["claim"]) == CLAIMS
    assert list(table["verdict_avx2"]) == [c.verdict for c in claims]
    assert dict(zip(table["claim"], table["verdict_native"], strict=True)) == {
        c.number: flipped.get(c.number, c.verdict) for c in claims
    }
    assert set(table.loc[~table["robust"], "claim"]) == set(flipped)
    assert (table["native_cpu"] == "Some CPU @ 3 GHz").all()
    assert compare(claims, claims, "cpu")["robust"].all()


def test_a_verdict_that_changes_natively_is_not_robust_and_not_bold(pinned, reported):
    claims = pinned[1]
    native = [replace(c, verdict="inconclusive") if c.number == FLIPPED else c for c in claims]
    text = reported(compare(claims, native, "Some CPU"))
    cells = verdict_cells(text)
    assert cells[FLIPPED] == "not robust (native: inconclusive) (avx2: supported)"
    assert "**" not in cells[FLIPPED]
    expected = {c.number: f"**{c.verdict}** (robust)" for c in claims if c.number != FLIPPED}
    assert {number: cell for number, cell in cells.items() if number != FLIPPED} == expected
    verdicts = flat(section(text, "Verdicts").split("\n|", 1)[0])
    assert f"1 of {len(CLAIMS)} verdicts change on the native code path: {FLIPPED};" in verdicts
    assert "a verdict that changes is marked *not robust* and is no finding" in verdicts


@pytest.mark.parametrize(
    "outdated",
    [
        lambda table: table.assign(
            verdict_avx2=table["verdict_avx2"].where(table["claim"] != "6c", "inconclusive")
        ),
        lambda table: table[table["claim"] != "6c"],  # made before the claim existed
    ],
    ids=["a pinned verdict differs", "a claim is missing"],
)
def test_a_comparison_of_other_results_is_stale(pinned, reported, outdated):
    claims = pinned[1]
    native = [replace(c, verdict="inconclusive") if c.number == FLIPPED else c for c in claims]
    text = reported(outdated(compare(claims, native, "Some CPU")))
    assert verdict_cells(text) == {c.number: f"**{c.verdict}** (stale)" for c in claims}
    assert (
        "reports/robustness.csv compares other results than these (its pinned verdicts differ): re-run "
        "`python -m study.reproduce robustness`" in flat(section(text, "Verdicts"))
    )
    assert "not robust (" not in text


def test_without_a_comparison_no_verdict_is_marked_robust(pinned, reported):
    text = reported(None)
    assert verdict_cells(text) == {c.number: f"**{c.verdict}**" for c in pinned[1]}
    assert (
        "The ablations have not been re-run on another code path (`python -m study.reproduce "
        "robustness`), so no verdict is marked robust." in flat(section(text, "Verdicts"))
    )


def test_native_params_differ_from_the_source_in_cpu_isa_only(tmp_path):
    path = native_params(DEFAULT_PARAMS, tmp_path / "work")
    assert path == tmp_path / "work" / "params.yaml"
    source, native = read_yaml(DEFAULT_PARAMS), read_yaml(path)
    assert source["cpu_isa"] == "avx2" and native["cpu_isa"] == "native"
    # json tells 1 from 1.0 and "5e-06" from 5e-06: the values keep their types too
    assert json.dumps({**native, "cpu_isa": "avx2"}, sort_keys=True) == json.dumps(source, sort_keys=True)
    assert validate_params(native).cpu_isa == "native"


def test_native_params_of_a_file_without_cpu_isa(tmp_path):
    older = {k: v for k, v in read_yaml(DEFAULT_PARAMS).items() if k != "cpu_isa"}
    with open(tmp_path / "older.yaml", "w") as stream:
        YAML().dump(older, stream)
    native = read_yaml(native_params(tmp_path / "older.yaml", tmp_path / "work"))
    assert json.dumps(native, sort_keys=True) == json.dumps({**older, "cpu_isa": "native"}, sort_keys=True)


def test_main_writes_a_comparison_the_report_reads(pinned, reported, tmp_path, monkeypatch, capsys):
    """The native ablations stubbed out (the same results again): every verdict robust."""
    runs = []

    def native_ablations(params, out):
        runs.append(read_yaml(params)["cpu_isa"])
        write_ablations(out)

    monkeypatch.setattr(robustness, "RESULTS", pinned[0])
    monkeypatch.setattr(robustness, "WORK", tmp_path / "work")
    monkeypatch.setattr(robustness, "run_native_ablations", native_ablations)
    robustness.main(["--out", str(tmp_path / "reports" / "robustness.csv")])
    assert runs == ["native"]
    assert f"robustness: {tmp_path / 'reports' / 'robustness.csv'}" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "reports" / "robustness.csv")
    assert list(table.columns) == COLUMNS and list(table["claim"].astype(str)) == CLAIMS
    assert table["robust"].all() and (table["native_cpu"] == cpu_isa.cpu_model()).all()
    text = reported(None)  # the csv main wrote is already beside the report
    assert verdict_cells(text) == {c.number: f"**{c.verdict}** (robust)" for c in pinned[1]}
    assert f"every verdict is the same on the native code path ({len(CLAIMS)} claims)" in flat(text)


def test_the_native_ablations_do_not_inherit_the_pinned_code_path(tmp_path, monkeypatch):
    """``python -m study.reproduce robustness`` pins its own process (the project's cpu_isa: avx2) and starts
    ``ablate all --params <native params>`` from it; ``cpu_isa: native`` sets no variable, so the child
    must not get the parent's pins, or it trains on AVX2 and every verdict compares with itself. The
    child here reports its torch pin instead of training."""
    for name, value in cpu_isa.PINS["avx2"].items():
        monkeypatch.setenv(name, value)  # as in the robustness process
    params = native_params(DEFAULT_PARAMS, tmp_path / "work")
    probe = "import os, study; print(os.environ.get('ATEN_CPU_CAPABILITY'))"
    children, run = [], subprocess.run  # robustness.subprocess is this module: keep its own run

    def start(command, **options):
        arguments = command[command.index("study.reproduce") + 1 :]  # ablate all --params ... --out ...
        children.append(
            run(
                [sys.executable, "-c", probe, *arguments],
                capture_output=True,
                text=True,
                timeout=60,
                **options,
            )
        )
        return children[-1]

    monkeypatch.setattr(robustness.subprocess, "run", start)
    run_native_ablations(params, tmp_path / "out")
    assert len(children) == 1 and children[0].returncode == 0, children[0].stderr
    assert children[0].stdout.split() == ["None"], "the native ablations inherit the avx2 pins"
