"""study.reproduce.claim: the verdict rule, and Holm within each family of claims."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.reproduce.bootstrap import detectable_effect, two_way_mean
from study.reproduce.claim import (
    ALPHA,
    FAMILIES,
    POWER,
    Claim,
    decide,
    direction_side,
    verdict_of,
)
from study.reproduce.stats import UNTESTABLE, VERDICTS, Estimate

NAN = float("nan")


def claim(number: str, p: float, side: int = 1, family: str = "accuracy", **kwargs) -> Claim:
    """A claim with the decision test's p-value and side; the measurement itself does not matter here."""
    effect = Estimate(0.01 * side, NAN, NAN, 5)
    return Claim(
        number, f"claim {number}", "> 0", "a difference", effect, "", family, p=p, side=side, **kwargs
    )


def by_number(claims: list[Claim]) -> dict[str, Claim]:
    return {c.number: c for c in claims}


def comparison(effect: float = 0.05, seed: int = 0):
    """A two-way comparison (5 seeds x 300 images) to state a claim's power with."""
    rng = np.random.default_rng(seed)
    a = (rng.random((5, 300)) < 0.8 + effect).astype(np.int8)
    b = (rng.random((5, 300)) < 0.8).astype(np.int8)
    return two_way_mean(a - b)


# --- verdict_of -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adjusted_p", "side", "untestable", "verdict"),
    [
        (0.01, 1, "", "supported"),
        (0.01, -1, "", "contradicted"),
        (0.01, 0, "", "inconclusive"),  # significant, but measured exactly at 0: no side
        (0.049999, 1, "", "supported"),
        (ALPHA, 1, "", "inconclusive"),  # p < ALPHA, strictly
        (0.2, 1, "", "inconclusive"),
        (0.2, -1, "", "inconclusive"),
        (NAN, 1, "", "inconclusive"),  # untested (e.g. one seed)
        (0.001, 1, "never reached the clip", UNTESTABLE),  # untestable wins over any p
        (NAN, -1, "never reached the clip", UNTESTABLE),
    ],
)
def test_verdict_of(adjusted_p, side, untestable, verdict):
    assert verdict_of(adjusted_p, side, untestable) == verdict
    assert verdict in VERDICTS


@pytest.mark.parametrize(
    ("value", "expected", "side"),
    [(0.3, 1, 1), (-0.3, 1, -1), (-0.3, -1, 1), (0.3, -1, -1), (0.0, 1, 0), (NAN, -1, 0)],
)
def test_direction_side(value, expected, side):
    assert direction_side(value, expected) == side


# --- decide: Holm within each family ----------------------------------------------------------------


def test_a_p_that_passes_alone_fails_in_a_family_of_many():
    alone = decide([claim("3", 0.02)])[0]
    assert alone.adjusted_p == pytest.approx(0.02) and alone.verdict == "supported"
    family = decide([claim("3", 0.02), *(claim(f"4{i}", 0.5) for i in range(4))])
    assert family[0].adjusted_p == pytest.approx(0.1) and family[0].verdict == "inconclusive"
    assert {c.verdict for c in family} == {"inconclusive"}


def test_holm_runs_within_each_family_not_across():
    claims = decide(
        [
            claim("a1", 0.01),
            claim("m1", 0.02, family="mechanism"),
            claim("a2", 0.04),
            claim("m2", 0.5, family="mechanism"),
            claim("a3", 0.03),
        ]
    )
    adjusted = {c.number: c.adjusted_p for c in claims}
    assert adjusted == pytest.approx({"a1": 0.03, "a2": 0.06, "a3": 0.06, "m1": 0.04, "m2": 0.5})
    verdicts = {c.number: c.verdict for c in claims}
    assert verdicts == {"a1": "supported", "m1": "supported"} | dict.fromkeys(
        ("a2", "a3", "m2"), "inconclusive"
    )
    # Many mechanism claims leave the accuracy claims' adjustment alone.
    crowded = decide([claim("a1", 0.02), *(claim(f"m{i}", 0.9, family="mechanism") for i in range(10))])
    assert crowded[0].adjusted_p == pytest.approx(0.02) and crowded[0].verdict == "supported"


def test_contradicted_needs_the_same_adjusted_p():
    claims = by_number(decide([claim("4a", 0.001, side=-1), claim("5", 0.03, side=-1)]))
    assert claims["4a"].verdict == "contradicted" and claims["4a"].adjusted_p == pytest.approx(0.002)
    assert claims["5"].verdict == "contradicted" and claims["5"].adjusted_p == pytest.approx(0.03)


def test_untestable_claims_do_not_count_in_the_family_size():
    why = "no weight reached the clip"
    claims = by_number(
        decide(
            [
                claim("6a", 0.5, family="mechanism", untestable=why),
                claim("6b", 0.001, family="mechanism", untestable=why),
                claim("6c", 0.03, family="mechanism"),
            ]
        )
    )
    assert claims["6a"].verdict == claims["6b"].verdict == UNTESTABLE
    assert math.isnan(claims["6b"].adjusted_p) and claims["6b"].p == 0.001  # its p is kept, not used
    assert claims["6c"].adjusted_p == pytest.approx(0.03) and claims["6c"].verdict == "supported"
    assert claims["6c"].alpha == ALPHA
    # Counted, 6a's p would push 6c's over: Holm gives 2 * 0.03.
    counted = decide([claim("6a", 0.5, family="mechanism"), claim("6c", 0.03, family="mechanism")])
    assert counted[1].adjusted_p == pytest.approx(0.06) and counted[1].verdict == "inconclusive"


def test_untested_claims_do_not_count_either():
    """A nan p (too few seeds to test) is inconclusive and leaves the others' adjustment alone."""
    claims = decide([claim("4a", NAN), claim("4b", 0.03)])
    assert claims[0].verdict == "inconclusive" and math.isnan(claims[0].adjusted_p)
    assert claims[1].adjusted_p == pytest.approx(0.03) and claims[1].alpha == ALPHA


def test_mde_is_stated_at_alpha_over_the_tested_claims_of_the_family():
    power = comparison()
    tested = [claim("3", 0.01, power_of=power), claim("4a", 0.2), claim("5", 0.3)]
    untestable = claim("4b", 0.001, untestable="not run")
    mechanism = [claim(f"m{i}", 0.5, family="mechanism") for i in range(6)]
    decided = by_number(decide([*tested, untestable, *mechanism]))
    first = decided["3"]
    assert first.alpha == pytest.approx(ALPHA / 3)  # three tested accuracy claims
    assert first.mde == pytest.approx(detectable_effect(power, ALPHA / 3, POWER))
    alone = decide([claim("3", 0.01, power_of=power)])[0]
    assert alone.alpha == ALPHA and alone.mde == pytest.approx(detectable_effect(power, ALPHA, POWER))
    assert first.mde > alone.mde > 0  # a stricter level needs a larger effect
    assert math.isnan(decided["4a"].mde)  # no comparison to state the power of
    assert decided["m0"].alpha == pytest.approx(ALPHA / 6)


def test_decide_keeps_the_order_and_the_measurements():
    claims = [claim("5", 0.01), claim("1a", 0.2, family="mechanism"), claim("3", 0.02, side=-1)]
    decided = decide(claims)
    assert [c.number for c in decided] == ["5", "1a", "3"]
    for before, after in zip(claims, decided, strict=True):
        for field in ("p", "side", "effect", "family", "statement"):
            assert getattr(after, field) == getattr(before, field)
        assert before.verdict == "inconclusive" and math.isnan(before.adjusted_p)  # the input is unchanged
    assert decide([]) == []


def test_unknown_family_is_refused():
    assert FAMILIES == ("accuracy", "mechanism")
    with pytest.raises(ValueError, match="no family"):
        decide([claim("3", 0.01), claim("7", 0.01, family="latent")])
