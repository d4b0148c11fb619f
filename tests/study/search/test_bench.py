"""The benchmark's README block is generated from its result files, never typed by hand."""

from __future__ import annotations

from study.search.bench import update_readme


def result_file(trials: int) -> str:
    table = f"| arm | speed_vs_plain |\n|---|---|\n| study.search | {trials / 10} |"
    command = f"`python -m study.search.bench --trials {trials}`"
    return f"{command}\n\n{trials} trials per run.\n\n{table}\n\nEvery run:\n\n| x |\n"


def test_the_readme_block_holds_each_summary_fewest_trials_first(tmp_path):
    for trials in (100, 20):
        (tmp_path / f"search-{trials}.md").write_text(result_file(trials))
    readme = tmp_path / "README.md"
    readme.write_text(
        "before\n<!-- bench-search: generated -->\nold numbers\n<!-- /bench-search -->\nafter\n"
    )
    update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("before\n") and text.endswith("after\n")
    block = text.split("<!-- bench-search: generated -->\n")[1].split("<!-- /bench-search -->")[0]
    assert block.index("--trials 20`: 20 trials per run.") < block.index("--trials 100`: 100 trials per run.")
    assert "| study.search | 10.0 |" in block and "Every run" not in block
