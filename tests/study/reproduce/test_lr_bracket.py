"""study.reproduce.lr_bracket: learning rates chosen on validation, and sweeps extended until bracketed.

The runs are built by hand: one row per (network, optimizer, lr, seed) with the validation and test
accuracy a run reports, and ``failure`` set (accuracies NaN) where its loss went NaN.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest

from study.reproduce import lr_bracket
from study.reproduce.lr_bracket import (
    bracket_status,
    extensions,
    extensions_done,
    lr_sweep,
    next_lr,
    ratio,
    side_status,
)

SEEDS = 3
ADAM = [1e-3, 4e-3, 1.6e-2]  # the configured lists: a geometric step of 4 and of 3
SGD = [0.01, 0.03, 0.09]
CONFIGURED = {"adam": ADAM, "sgd": SGD}


def runs(
    val: dict[float, float],
    failed: dict[float, int] | None = None,
    test: dict[float, float] | None = None,
    network: str = "binary",
    optimizer: str = "adam",
    seeds: int = SEEDS,
) -> pd.DataFrame:
    """Every seed at every lr of ``val``: validation accuracy ``val[lr]`` + 0.001 * seed (test: ``test``,
    else the same); the first ``failed[lr]`` seeds of an lr failed (NaN loss)."""
    failed = failed or {}
    rows = []
    for lr, accuracy in val.items():
        for seed in range(seeds):
            broken = seed < failed.get(lr, 0)
            rows.append(
                {
                    "network": network,
                    "optimizer": optimizer,
                    "lr": lr,
                    "seed": seed,
                    "val_acc": math.nan if broken else accuracy + 0.001 * seed,
                    "test_acc": math.nan if broken else (test or val)[lr] + 0.001 * seed,
                    "failure": "loss is NaN" if broken else None,
                }
            )
    return pd.DataFrame(rows)


def sweep_of(val: dict[float, float], failed: dict[float, int] | None = None, **kwargs) -> pd.DataFrame:
    return lr_sweep(runs(val, failed, **kwargs))


def chosen(sweep: pd.DataFrame) -> list[float]:
    return sweep.loc[sweep["selected"], "lr"].tolist()


def test_module_doctest():
    assert doctest.testmod(lr_bracket).failed == 0


# --- lr_sweep ---------------------------------------------------------------------------------------


def test_sweep_means_over_the_seeds_that_trained_and_counts_the_failed():
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.80}, failed={1.6e-2: 2}).set_index("lr")
    assert sweep["seeds"].tolist() == [SEEDS] * 3  # failed seeds count as seeds of their lr
    assert sweep["failed"].tolist() == [0, 0, 2]
    assert sweep.loc[4e-3, "val_acc"] == pytest.approx(0.95 + 0.001)  # mean of seeds 0, 1, 2
    assert sweep.loc[1.6e-2, "val_acc"] == pytest.approx(0.80 + 0.002)  # only seed 2 trained
    assert sweep["selected"].tolist() == [False, True, False]


def test_sweep_without_a_failure_column_has_no_failed_seeds():
    sweep = lr_sweep(runs({1e-3: 0.9, 4e-3: 0.8}).drop(columns="failure"))
    assert sweep["failed"].tolist() == [0, 0] and chosen(sweep) == [1e-3]


def test_only_eligible_lrs_are_selected():
    """The best mean validation accuracy is at 1.6e-2, but one seed of it failed: not eligible."""
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.99}, failed={1.6e-2: 1})
    assert chosen(sweep) == [4e-3]


def test_no_eligible_lr_selects_nothing():
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.93}, failed={1e-3: 1, 4e-3: SEEDS})
    assert not sweep["selected"].any()


def test_ties_go_to_the_smaller_lr():
    sweep = sweep_of({1.6e-2: 0.95, 1e-3: 0.90, 4e-3: 0.95})  # listed out of order on purpose
    assert chosen(sweep) == [4e-3]


def test_the_choice_ignores_the_test_split():
    sweep = sweep_of({1e-3: 0.95, 4e-3: 0.90}, test={1e-3: 0.80, 4e-3: 0.99})
    assert chosen(sweep) == [1e-3]
    assert sweep.set_index("lr").loc[4e-3, "test_acc"] == pytest.approx(0.99 + 0.001)


def test_one_choice_per_network_and_optimizer():
    frame = pd.concat(
        [
            runs({1e-3: 0.90, 4e-3: 0.95}),
            runs({1e-3: 0.97, 4e-3: 0.95}, network="real"),
            runs({0.01: 0.80, 0.03: 0.85}, optimizer="sgd"),
        ]
    )
    sweep = lr_sweep(frame)
    picked = sweep[sweep["selected"]].set_index(["network", "optimizer"])["lr"].to_dict()
    assert picked == {("binary", "adam"): 4e-3, ("binary", "sgd"): 0.03, ("real", "adam"): 1e-3}


# --- side_status ------------------------------------------------------------------------------------


def status(val, failed=None, done: int = 0, limit: int = 4) -> dict[str, str]:
    """Both sides' status around the chosen lr of one (network, optimizer)."""
    sweep = sweep_of(val, failed)
    (best,) = chosen(sweep)
    return {side: side_status(sweep, best, side, done, limit) for side in ("lower", "upper")}


def test_interior_optimum_is_bracketed():
    assert status({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.93}) == {"lower": "bracketed", "upper": "bracketed"}


def test_optimum_at_an_edge_is_open():
    assert status({1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.95}) == {"lower": "bracketed", "upper": "open"}
    assert status({1e-3: 0.95, 4e-3: 0.93, 1.6e-2: 0.90}) == {"lower": "open", "upper": "bracketed"}


def test_open_side_with_its_extensions_spent_is_not_bracketed():
    val = {1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.95}
    assert status(val, done=3, limit=4)["upper"] == "open"
    assert status(val, done=4, limit=4)["upper"] == "not bracketed"
    assert status(val, done=0, limit=0)["upper"] == "not bracketed"


def test_diverged_neighbour_is_a_stability_limit():
    """Two of three seeds failed at 1.6e-2: most of them, so the sweep cannot go higher."""
    assert status({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.5}, failed={1.6e-2: 2})["upper"] == "stability limit"
    assert status({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.5}, failed={1.6e-2: 3})["upper"] == "stability limit"


def test_walks_past_an_lr_where_a_minority_of_seeds_failed():
    """One of three seeds failed at 1.6e-2: not eligible, not diverged; the walk goes on to 6.4e-2."""
    base = {1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.97}
    assert status(base, failed={1.6e-2: 1})["upper"] == "open"  # nothing beyond it
    assert status({**base, 6.4e-2: 0.90}, failed={1.6e-2: 1})["upper"] == "bracketed"
    assert status({**base, 6.4e-2: 0.50}, failed={1.6e-2: 1, 6.4e-2: 2})["upper"] == "stability limit"
    # The lower side too, and the nearest lr decides before farther ones.
    low = {2.5e-4: 0.85, 1e-3: 0.99, 4e-3: 0.95, 1.6e-2: 0.90}
    assert status(low, failed={1e-3: 1})["lower"] == "bracketed"
    assert status(low, failed={1e-3: 1, 2.5e-4: 3})["lower"] == "stability limit"


def test_half_of_the_seeds_failing_is_not_divergence():
    """More than half must fail: 2 of 4 seeds is a minority failure, walked past."""
    sweep = lr_sweep(runs({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.5}, failed={1.6e-2: 2}, seeds=4))
    assert side_status(sweep, 4e-3, "upper", 0, 4) == "open"
    sweep = lr_sweep(runs({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.5}, failed={1.6e-2: 3}, seeds=4))
    assert side_status(sweep, 4e-3, "upper", 0, 4) == "stability limit"


# --- next_lr, ratio, extensions_done ----------------------------------------------------------------


def test_next_lr_is_one_step_beyond_the_outermost_lr():
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.95})
    assert next_lr(sweep, "upper", 4.0) == 0.064
    assert next_lr(sweep, "lower", 4.0) == 0.00025
    # To 3 significant digits: 1.6e-2 * 3 ** 0.5 = 0.0277128...
    assert next_lr(sweep, "upper", 3**0.5) == 0.0277
    # From the outermost lr, even one where seeds failed (walked past).
    failed = sweep_of({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.97}, failed={1.6e-2: 1})
    assert next_lr(failed, "upper", 4.0) == 0.064


def test_ratio_is_the_geometric_step_of_the_configured_list():
    assert ratio(ADAM) == pytest.approx(4.0)
    assert ratio(SGD) == pytest.approx(3.0)
    assert ratio([0.09, 0.01, 0.03]) == pytest.approx(3.0)  # any order
    assert ratio([1e-3, 1e-1]) == pytest.approx(100.0)
    assert ratio([0.1]) == 2.0  # a single lr: double and halve


def test_extensions_done_counts_the_lrs_beyond_the_configured_list():
    sweep = sweep_of({2.5e-4: 0.8, 1e-3: 0.9, 4e-3: 0.93, 1.6e-2: 0.95, 6.4e-2: 0.96, 0.256: 0.97})
    assert extensions_done(sweep, ADAM, "upper") == 2
    assert extensions_done(sweep, ADAM, "lower") == 1
    assert extensions_done(sweep_of({1e-3: 0.9, 4e-3: 0.9}), ADAM, "lower") == 0


# --- bracket_status and extensions ------------------------------------------------------------------


def test_bracket_status_per_network_and_optimizer():
    frame = pd.concat(
        [
            runs({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.93}),
            runs({0.01: 0.80, 0.03: 0.85, 0.09: 0.88}, optimizer="sgd"),
            runs({1e-3: 0.9, 4e-3: 0.9, 1.6e-2: 0.9}, failed=dict.fromkeys(ADAM, 1), network="real"),
        ]
    )
    table = bracket_status(lr_sweep(frame), CONFIGURED, limit=4)
    assert list(table.columns) == ["network", "optimizer", "lr", "lower", "upper"]
    rows = table.set_index(["network", "optimizer"])
    assert rows.loc[("binary", "adam")].tolist() == [4e-3, "bracketed", "bracketed"]
    assert rows.loc[("binary", "sgd")].tolist() == [0.09, "bracketed", "open"]
    real = rows.loc[("real", "adam")]
    assert math.isnan(real["lr"]) and real["lower"] == real["upper"] == "no lr trained"


def test_no_extension_when_interior():
    assert extensions(sweep_of({1e-3: 0.90, 4e-3: 0.95, 1.6e-2: 0.93}), CONFIGURED, 4) == []


def test_extension_above_a_best_at_the_top_edge():
    assert extensions(sweep_of({1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.95}), CONFIGURED, 4) == [
        ("binary", "adam", 0.064)
    ]


def test_extension_below_a_best_at_the_bottom_edge():
    sgd = sweep_of({0.01: 0.95, 0.03: 0.93, 0.09: 0.90}, optimizer="sgd")
    assert extensions(sgd, CONFIGURED, 4) == [("binary", "sgd", pytest.approx(0.00333))]


def test_no_extension_past_a_diverged_neighbour():
    """The best configured lr is the top one, and the extension above it diverged: a stability limit."""
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.93, 1.6e-2: 0.95, 6.4e-2: 0.1}, failed={6.4e-2: 3})
    assert extensions(sweep, CONFIGURED, 4) == []
    assert bracket_status(sweep, CONFIGURED, 4)["upper"].item() == "stability limit"


def test_both_sides_open_when_only_one_lr_trained():
    sweep = sweep_of({0.03: 0.9}, optimizer="sgd")
    assert sorted(lr for *_, lr in extensions(sweep, {"adam": ADAM, "sgd": [0.03]}, 4)) == [0.015, 0.06]


def test_no_extension_once_the_limit_is_spent():
    sweep = sweep_of({1e-3: 0.90, 4e-3: 0.91, 1.6e-2: 0.92, 6.4e-2: 0.93, 0.256: 0.94})
    assert extensions(sweep, CONFIGURED, limit=3) == [("binary", "adam", 1.02)]
    assert extensions(sweep, CONFIGURED, limit=2) == []
    assert bracket_status(sweep, CONFIGURED, 2)["upper"].item() == "not bracketed"


def validation_curve(lr: float, peak: float) -> float:
    """A smooth optimum: validation accuracy falls with the distance from ``peak`` in log lr."""
    return 0.95 - 0.02 * np.log10(lr / peak) ** 2


@pytest.mark.parametrize(
    ("peak", "diverges_above", "expected", "added", "sides"),
    [
        (4e-3, None, 4e-3, [], ("bracketed", "bracketed")),  # inside the configured list
        (0.2, None, 0.256, [0.064, 0.256, 1.02], ("bracketed", "bracketed")),  # above it
        # Below it; each step to 3 significant digits (1e-3 / 4 ** 3 = 1.5625e-5 -> 1.56e-5).
        (5e-5, None, 6.25e-5, [2.5e-4, 6.25e-5, 1.56e-5], ("bracketed", "bracketed")),
        (1.0, 0.1, 0.064, [0.064, 0.256], ("bracketed", "stability limit")),  # until the runs diverge
        (1e-9, None, 3.9e-6, [2.5e-4, 6.25e-5, 1.56e-5, 3.9e-6], ("not bracketed", "bracketed")),  # limit
    ],
)
def test_the_extension_loop_brackets_the_optimum(peak, diverges_above, expected, added, sides):
    """The ablation's loop: train the extensions, re-sweep, until no side is open (at most 4 per side)."""
    lrs = list(ADAM)
    for _ in range(10):
        val = {lr: validation_curve(lr, peak) for lr in lrs}
        failed = {lr: SEEDS for lr in lrs if diverges_above and lr > diverges_above}
        sweep = sweep_of(val, failed)
        todo = extensions(sweep, CONFIGURED, 4)
        if not todo:
            break
        lrs += [lr for *_, lr in todo]
    else:
        pytest.fail("the sweep never closed")
    assert chosen(sweep) == [expected]
    assert lrs[len(ADAM) :] == added
    status = bracket_status(sweep, CONFIGURED, 4).iloc[0]
    assert (status["lower"], status["upper"]) == sides
