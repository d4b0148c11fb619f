"""Where the project and its stores are."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.paths import find_store_root


@pytest.mark.parametrize(
    ("project", "stores"),
    [
        ("/home/me/bnn-study", "/home/me/bnn-study"),
        # dvc exp run --temp / --queue: a copy of the repository that DVC deletes afterwards
        ("/home/me/bnn-study/.dvc/tmp/exps/tmp4k2j9x", "/home/me/bnn-study"),
        ("/home/me/bnn-study/.dvc/tmp/exps/run/abc123", "/home/me/bnn-study"),
        ("/home/me/.dvc/elsewhere", "/home/me/.dvc/elsewhere"),
    ],
)
def test_stores_of_a_temporary_experiment_are_the_repositorys(project: str, stores: str) -> None:
    assert find_store_root(Path(project)) == Path(stores)
