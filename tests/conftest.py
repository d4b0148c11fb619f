import study  # noqa: F401  first: pins the CPU code path (cpu_isa) before torch loads, as the commands do

# isort: split
import pytest
import torch
from postgres_server import databases  # noqa: F401  (a fixture for every test)

from bnn import prepare_data

pytest_plugins = ["checkout_check"]  # the suite leaves the checkout alone (tests/checkout_check.py)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits: the fastest real data set, for tests."""
    return prepare_data("digits", val_fraction=0.15, test_fraction=0.15, seed=0)


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end pipeline file first: the longest, it runs in one test process (``--dist
    loadfile``) while the other process takes every other file."""
    items.sort(key=lambda item: item.path.name != "test_pipeline.py")  # stable: the rest keep their order
