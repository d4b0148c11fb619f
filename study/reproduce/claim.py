"""One tested claim, and the rule that turns the tests of a family of claims into verdicts.

Each claim carries the p-value of its decision test (two-sided for a direction; "two one-sided
tests" for non-inferiority; the largest of its comparisons for "best", an intersection-union test)
and the side of its expectation the measurement fell on. The claims form pre-specified families
(``accuracy``: the test-accuracy claims; ``mechanism``: the FF, C2I and latent-weight claims), and
within each family the p-values are Holm-adjusted. The rule, the same for every claim:

- *supported*: Holm-adjusted p < ``ALPHA`` and the measurement on the expected side;
- *contradicted*: Holm-adjusted p < ``ALPHA`` and the measurement on the other side;
- *inconclusive*: otherwise;
- *untestable at this budget*: the runs never reached the state the claim is about (measured, and
  said why); such a claim has no p-value and does not count in its family.

A claim's minimum detectable effect is stated at ``ALPHA / m`` (m: the tested claims of its family),
the level Holm's first step demands: the alpha its decision may have to pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from study.reproduce.bootstrap import TwoWay, detectable_effect
from study.reproduce.stats import UNTESTABLE, Estimate, LinearFit, Verdict, holm

ALPHA = 0.05
POWER = 0.8
TARGET_EFFECT = 0.005  # 0.5 percentage points: the accuracy difference the study should detect
FAMILIES = ("accuracy", "mechanism")
NAN = float("nan")


@dataclass(frozen=True)
class Claim:
    """A claim, its measurement and test; ``verdict``, ``adjusted_p``, ``alpha`` and ``mde`` are set by
    :func:`decide` from the whole family."""

    number: str
    statement: str
    expected: str  # the expectation in words, e.g. "> 0"
    measure: str  # what ``effect`` measures
    effect: Estimate  # the measured value and its 95 % interval
    size: str  # the effect's size in the claim's own units, in words
    family: str
    p: float = NAN  # the decision test's p-value (nan: untested)
    side: int = 0  # +1: measured on the expected side, -1: on the other
    detail: str = ""
    fit: LinearFit | None = None  # the fitted shape (weight-decay trends)
    log_fit: LinearFit | None = None  # the same line on a log weight-decay axis (decays > 0)
    deviation: str = ""  # the fitted line's largest mean deviation, in words
    power_of: TwoWay | None = None  # the comparison whose power is stated (accuracy claims)
    untestable: str = ""  # why the runs cannot test it ("" when they can)
    adjusted_p: float = NAN
    alpha: float = NAN  # the level of the minimum detectable effect: ALPHA / tested claims of the family
    mde: float = NAN
    verdict: Verdict = "inconclusive"


def verdict_of(adjusted_p: float, side: int, untestable: str) -> Verdict:
    """The rule of the module docstring for one claim."""
    if untestable:
        return UNTESTABLE
    if math.isnan(adjusted_p) or adjusted_p >= ALPHA or side == 0:
        return "inconclusive"
    return "supported" if side > 0 else "contradicted"


def decide(claims: list[Claim]) -> list[Claim]:
    """Every claim with its Holm-adjusted p (within its family), its verdict, and its minimum
    detectable effect at ``ALPHA / m``; in the input order."""
    decided = {}
    for family in FAMILIES:
        members = [c for c in claims if c.family == family]
        pvalues = [NAN if c.untestable else c.p for c in members]
        tested = sum(not math.isnan(p) for p in pvalues)
        alpha = ALPHA / max(tested, 1)
        for claim, adjusted in zip(members, holm(pvalues), strict=True):
            mde = detectable_effect(claim.power_of, alpha, POWER) if claim.power_of else NAN
            verdict = verdict_of(adjusted, claim.side, claim.untestable)
            decided[claim.number] = replace(claim, adjusted_p=adjusted, alpha=alpha, mde=mde, verdict=verdict)
    unknown = [c.number for c in claims if c.number not in decided]
    if unknown:
        raise ValueError(f"claims {unknown} belong to no family of {FAMILIES}")
    return [decided[c.number] for c in claims]


def direction_side(value: float, expected: int) -> int:
    """+1 if ``value`` lies on the ``expected`` side of 0 (+1 or -1), -1 on the other, 0 at 0 or nan."""
    if math.isnan(value) or value == 0:
        return 0
    return 1 if (value > 0) == (expected > 0) else -1
