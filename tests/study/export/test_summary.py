"""Parameters, memory and operations as ReActNet and AdamBNN count them."""

from __future__ import annotations

import doctest

import pytest

from bnn.models.registry import MODELS
from study.export import summary as model_summary
from study.export.summary import PAPER_REACTNET_A, SETTINGS, build, layer_table, totals
from study.readme import replace_block


def costs(name: str) -> dict[str, float]:
    setting = next(s for s in SETTINGS if s.model == name)
    return totals(layer_table(build(setting), (setting.channels, setting.size, setting.size)))


def test_every_model_of_the_registry_has_a_setting():
    assert sorted(s.model for s in SETTINGS) == sorted(MODELS)


def test_the_mlp_in_closed_form():
    """784 -> 256 real stem, two binary 256 x 256 layers, a real 256 -> 10 classifier (all MACs)."""
    cost = costs("mlp")
    assert cost["binary_params"] == cost["bops"] == 2 * 256 * 256
    assert cost["flops"] == 784 * 256 + 256 * 10
    assert cost["ops"] == pytest.approx(2 * 256 * 256 / 64 + 784 * 256 + 256 * 10)
    assert cost["bytes_1bit"] == cost["binary_params"] / 8 + 4 * cost["real_params"]
    assert cost["bytes_32bit"] == 4 * (cost["binary_params"] + cost["real_params"])


def test_reactnet_a_on_imagenet_matches_the_papers_operations():
    cost = costs("reactnet_a")
    assert cost["ops"] == pytest.approx(PAPER_REACTNET_A["ops"], rel=0.01)
    assert cost["binary_params"] / 8 < cost["bytes_1bit"] < cost["bytes_32bit"] / 10


def test_the_docstring_example_runs():
    assert doctest.testmod(model_summary).failed == 0


def test_the_readme_block_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- model-summary: generated -->\nold\n<!-- /model-summary -->\nb\n")
    replace_block(readme, "model-summary", "| new |")
    assert readme.read_text() == "a\n<!-- model-summary: generated -->\n| new |\n<!-- /model-summary -->\nb\n"
