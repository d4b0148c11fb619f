"""Claim 6: Adam's latent weights end in three peaks (-1, 0, +1), SGD's stay centred, on the absolute scale.

AdamBNN's peaks sit at +-1 because the clip STE stops the gradient there: a weight that Adam carries
to the clip stays near it. So the claim is measured on the absolute scale, at a stage-2 budget
where Adam's weights reach the clip (``ablation.latent``), with the masses near 0, near +-1 and
beyond the clip, and a multimodality test (Gaussian mixtures of 1 and 3 components compared by BIC,
:mod:`bnn.latent`). Whether the runs reached the clip is measured, not assumed: when Adam's runs
put less than ``REACHED`` of their weights within ``0.1`` of +-1 or beyond the clip, 6a and 6b are
untestable at this budget. Each measure is compared Adam - SGD paired by seed (both optimizers
start stage 2 from the same stage-1 weights).
"""

from __future__ import annotations

import pandas as pd

from study.reproduce.claim import Claim, direction_side
from study.reproduce.stats import paired_difference

REACHED = 0.01  # the share of Adam's weights at the clip (near +-1 or beyond) that lets claim 6 act


def _difference(latent: pd.DataFrame, metric: str):
    pivot = latent.pivot_table(index="seed", columns="optimizer", values=metric).dropna()
    return paired_difference(pivot["adam"], pivot["sgd"])


def reach(latent: pd.DataFrame) -> tuple[float, str]:
    """The median share of Adam's weights at the clip, and "" or why the claim cannot act."""
    adam = latent[latent["optimizer"] == "adam"]
    at_clip = float((adam["mass_near_one"] + adam["beyond_clip"]).median())
    if at_clip >= REACHED:
        return at_clip, ""
    largest = float(adam["max_abs_weight"].max())
    budget = float(adam["lr_budget"].median())
    why = (
        f"Adam's weights do not reach the clip at this budget: a median {100 * at_clip:.2g} % lie within "
        f"0.1 of +-1 or beyond it (largest |w| {largest:.3g}; stage-2 lr budget {budget:.3g}), "
        f"below the {100 * REACHED:g} % the claim needs: train stage 2 longer or at a larger lr"
    )
    return at_clip, why


def latent_claim(number: str, statement: str, metric: str, measure: str, latent: pd.DataFrame,
                 untestable: str, detail: str) -> Claim:  # fmt: skip
    difference, p = _difference(latent, metric)
    return Claim(
        number,
        statement,
        "> 0",
        f"{measure}, Adam - SGD",
        difference,
        f"{difference.value:+.3g}",
        "mechanism",
        p=p,
        side=direction_side(difference.value, +1),
        detail=untestable or detail,
        untestable=untestable,
    )


def latent_claims(latent: pd.DataFrame) -> list[Claim]:
    """Claims 6a (mass near +-1), 6b (three modes rather than one) and 6c (mass near 0)."""
    at_clip, why = reach(latent)
    components = latent.groupby("optimizer")["mixture_components"].median()
    modes = ", ".join(f"{name} {value:g}" for name, value in components.items())
    clip = f"median share of Adam's weights at the clip (within 0.1 of +-1, or beyond): {100 * at_clip:.3g} %"
    return [
        latent_claim("6a", "Adam's latent weights pile up near -1 and +1 more than SGD's", "mass_near_one",
                     "share of weights within 0.1 of +-1", latent, why, clip),
        latent_claim("6b", "Adam's latent weights are three-peaked (-1, 0, +1), SGD's one-peaked",
                     "bic_gain_3v1", "BIC(1 component) - BIC(3), per weight", latent, why,
                     f"components chosen by BIC (median over seeds): {modes}"),
        latent_claim("6c", "Adam's latent weights pile up near 0 more than SGD's", "mass_near_zero",
                     "share of weights within 0.1 of 0", latent, "", ""),
    ]  # fmt: skip
