"""study.reproduce.latent_claims on synthetic latent-weight measures: Adam against SGD, paired by seed.

Each seed has an Adam and an SGD row with the measures of ``bnn.latent`` drawn from
numpy.random.default_rng: a planted Adam - SGD gain, a per-seed offset (sd ``offset``) shared by
both optimizers (they start stage 2 from the same stage-1 weights) and per-run noise.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from study.reproduce.claim import decide
from study.reproduce.latent_claims import REACHED, latent_claims, reach
from study.reproduce.stats import UNTESTABLE

SEEDS = 5


def latent_frame(
    *,
    one_gain: float = 0.0,
    zero_gain: float = 0.0,
    bic_gain: float = 0.0,
    at_clip: float = 0.2,
    beyond: float = 0.0,
    seed: int = 0,
    seeds: int = SEEDS,
    offset: float = 0.02,
) -> pd.DataFrame:
    """Adam and SGD per seed. ``at_clip``: both optimizers' mass within 0.1 of +-1 before Adam's
    ``one_gain``; ``beyond``: Adam's share beyond the clip; the gains are Adam - SGD in the mass near
    1, near 0 and the BIC gain of three components over one."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, offset, seeds)
    rows = []
    for s, optimizer in itertools.product(range(seeds), ("adam", "sgd")):
        adam = optimizer == "adam"
        rows.append(
            {
                "seed": s,
                "optimizer": optimizer,
                "mass_near_one": at_clip + (one_gain if adam else 0) + offsets[s] / 10 + rng.normal(0, 0.002),
                "beyond_clip": beyond if adam else 0.0,
                "mass_near_zero": 0.3 + (zero_gain if adam else 0) + offsets[s] + rng.normal(0, 0.005),
                "bic_gain_3v1": 0.01 + (bic_gain if adam else 0) + offsets[s] + rng.normal(0, 0.005),
                "mixture_components": 3 if adam and bic_gain > 0 else 1,
                "max_abs_weight": (1.3 if at_clip + beyond >= REACHED else 0.42) * (1 if adam else 0.5),
                "lr_budget": 0.36 if adam else 36.0,
            }
        )
    return pd.DataFrame(rows)


def decided(frame: pd.DataFrame) -> dict:
    return {c.number: c for c in decide(latent_claims(frame))}


def test_claims_6a_to_6c_in_the_mechanism_family():
    claims = latent_claims(latent_frame())
    assert [c.number for c in claims] == ["6a", "6b", "6c"]
    assert {c.family for c in claims} == {"mechanism"}
    assert all(c.measure.endswith("Adam - SGD") for c in claims)


@pytest.mark.parametrize(
    ("gain", "expected"), [(0.1, "supported"), (-0.1, "contradicted"), (0.0, "inconclusive")]
)
def test_planted_effects_are_found_when_the_weights_reach_the_clip(gain, expected):
    claims = decided(latent_frame(one_gain=gain, zero_gain=gain, bic_gain=gain, at_clip=0.2))
    for number in ("6a", "6b", "6c"):
        assert claims[number].verdict == expected, number
        assert not claims[number].untestable
        assert claims[number].effect.n == SEEDS
    for number in ("6a", "6b", "6c"):  # the measured differences recover the planted gain
        assert claims[number].effect.value == pytest.approx(gain, abs=0.01), number


def test_the_pairing_by_seed_removes_the_shared_offset():
    """The seed offsets (sd 0.05) are larger than the gain (0.03); paired by seed the gain is found,
    paired with the wrong seeds (SGD's rows shifted by one seed) it is lost in the offsets."""
    frame = latent_frame(zero_gain=0.03, offset=0.05)
    paired = decided(frame)["6c"]
    assert paired.verdict == "supported" and paired.effect.high - paired.effect.low < 0.035
    sgd = frame["optimizer"] == "sgd"
    shifted = frame.assign(seed=np.where(sgd, (frame["seed"] + 1) % SEEDS, frame["seed"]))
    mispaired = decided(shifted)["6c"]
    assert mispaired.effect.value == pytest.approx(paired.effect.value)  # the same mean difference
    assert mispaired.p > 10 * paired.p and mispaired.verdict == "inconclusive"


def test_untestable_when_adams_weights_do_not_reach_the_clip():
    """Adam puts 0.5 % of its weights near +-1 (below the 1 % needed): 6a and 6b cannot act, 6c can."""
    frame = latent_frame(one_gain=0.001, zero_gain=0.1, bic_gain=0.1, at_clip=0.004)
    at_clip, why = reach(frame)
    assert at_clip == pytest.approx(0.005, abs=0.003) and at_clip < REACHED
    claims = decided(frame)
    assert claims["6a"].verdict == claims["6b"].verdict == UNTESTABLE
    assert claims["6a"].untestable == why and claims["6a"].detail == why
    assert "do not reach the clip" in why and "largest |w| 0.42" in why and "lr budget 0.36" in why
    assert claims["6c"].verdict == "supported" and not claims["6c"].untestable
    # Untestable claims do not count in the family: 6c is adjusted as if alone.
    assert claims["6c"].adjusted_p == pytest.approx(claims["6c"].p)
    assert math.isnan(claims["6a"].adjusted_p)


def test_weights_beyond_the_clip_count_as_reaching_it():
    frame = latent_frame(one_gain=0.05, at_clip=0.0, beyond=0.02)
    at_clip, why = reach(frame)
    assert at_clip >= REACHED and why == ""
    assert decided(frame)["6a"].verdict != UNTESTABLE


def test_reach_is_the_median_over_adams_seeds():
    frame = latent_frame(at_clip=0.0)
    adam = frame["optimizer"] == "adam"
    frame.loc[adam, "mass_near_one"] = [0.0, 0.0, 0.02, 0.03, 0.04]  # median 0.02
    frame.loc[~adam, "mass_near_one"] = 0.5  # SGD's plays no part
    assert reach(frame) == (pytest.approx(0.02), "")
    frame.loc[adam, "mass_near_one"] = [0.0, 0.0, 0.005, 0.03, 0.04]  # median 0.005
    at_clip, why = reach(frame)
    assert at_clip == pytest.approx(0.005) and why


def test_reach_at_the_threshold_is_testable():
    frame = latent_frame()
    adam = frame["optimizer"] == "adam"
    frame.loc[adam, "mass_near_one"] = REACHED
    assert reach(frame) == (pytest.approx(REACHED), "")


def test_details_state_the_share_at_the_clip_and_the_components():
    claims = decided(latent_frame(bic_gain=0.1, at_clip=0.2))
    assert claims["6a"].detail.startswith("median share of Adam's weights at the clip")
    assert claims["6b"].detail == "components chosen by BIC (median over seeds): adam 3, sgd 1"


def test_planted_nulls_are_rejected_at_about_the_nominal_rate():
    rejected = sum(c.p < 0.05 for seed in range(60) for c in latent_claims(latent_frame(seed=seed + 1)))
    assert rejected / 180 <= 0.12  # 0.05 expected
