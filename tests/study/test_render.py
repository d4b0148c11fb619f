"""study.render: a wing's template filled in strictly; frames as Markdown tables."""

import jinja2
import pandas as pd
import pytest

from study.render import render, table


def test_a_template_gets_every_name_it_uses():
    text = render("study.search", "summary.md.j2", study_name="s", top="| t |", pareto=None, pareto_size=0,
                  importances=None, best=type("Best", (), {"number": 3, "user_attrs": {"val_acc": 0.5}}),
                  test={"acc": 0.25}, best_yaml="best_params.yaml", command="dvc exp run export -S a=1",
                  full_command="dvc exp run -S a=1", study_cost="12 cells")  # fmt: skip
    assert text.startswith("# Search `s`\n") and "\n      dvc exp run export -S a=1\n" in text
    assert "(`dvc exp run -S a=1`) DVC would also re-run" in text and text.endswith("settings: 12 cells.\n")
    assert "## Best trial 3" in text and "val_acc 0.5000, test_acc 0.2500" in text
    assert "Pareto" not in text and "importances" not in text
    with pytest.raises(jinja2.UndefinedError, match="study_name"):
        render("study.search", "summary.md.j2", top="", pareto=None, importances=None)


def test_a_table_is_the_frame_without_its_index():
    frame = pd.DataFrame({"claim": ["1a", "4b"], "verdict": ["supported", "inconclusive"]}, index=[7, 9])
    lines = table(frame).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["claim", "verdict"]
    assert set(lines[1]) <= set("|:-") and len(lines) == 4
    assert "7" not in table(frame) and "| 4b " in lines[3]
