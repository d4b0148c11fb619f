"""The reproduction report's tables, and the short lists and numbers its sentences quote.

A table is a pandas frame of strings, its columns the header: every cell is formatted here, so the
Markdown renderer (:func:`study.render.table` without number parsing) prints it as it is. The
sentences around them live in the report's template (``templates/reproduction.md.j2``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.reproduce.bootstrap import two_way_mean
from study.reproduce.claim import TARGET_EFFECT, Claim
from study.reproduce.claims import verdict_counts
from study.reproduce.stats import Estimate, binomial_se, mean_ci, shape_verdict

# --- cells ----------------------------------------------------------------------------------------


def _fmt(value: float, ci: tuple[float, float] | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}g}"
    if ci is not None and not any(np.isnan(c) for c in ci):
        text += f" [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"
    return text


def _estimate(estimate: Estimate) -> str:
    return _fmt(estimate.value, (estimate.low, estimate.high))


def label(value) -> str:
    """A cell's key as text: ``5e-06`` for a float, the value itself otherwise."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- tables ---------------------------------------------------------------------------------------


def metric_estimate(group: pd.DataFrame, metric: str) -> Estimate:
    """Mean and 95 % CI of one cell's metric: over seeds and test images (two-way bootstrap) for the
    test accuracy, over seeds for the rest."""
    if metric == "test_acc" and "correct" in group:
        runs = group.dropna(subset=["correct"]).sort_values("seed")["correct"]
        return two_way_mean(np.stack(runs.to_list()).astype(np.int64)).estimate
    return mean_ci(group[metric].dropna())


def summary_table(frame: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and 95 % CI of each metric the frame has, one row per cell (:func:`metric_estimate`)."""
    metrics = [m for m in metrics if m in frame]
    rows = [
        [*map(label, keys), str(len(group)), *(_estimate(metric_estimate(group, m)) for m in metrics)]
        for keys, group in frame.groupby(by, sort=True, dropna=False)
    ]
    return pd.DataFrame(rows, columns=[*by, "seeds", *metrics])


def _p(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2g}"


def verdict_cell(claim: Claim, robust: str) -> str:
    """The verdict in bold, unless it changes with the CPU code path: then it is no finding."""
    if robust.startswith("not robust"):
        return f"{robust} (avx2: {claim.verdict})"
    return f"**{claim.verdict}**" + (f" ({robust})" if robust else "")


def claims_table(claims: list[Claim], robust: dict[str, str]) -> pd.DataFrame:
    """Every claim with its measured effect, interval, size, Holm-adjusted p, power and verdict
    (``robust``: per claim, its robustness to the code path, see :func:`robust_text`)."""
    rows = [
        [
            c.number,
            c.statement,
            f"{c.measure}: {c.expected}",
            _fmt(c.effect.value),
            f"[{_fmt(c.effect.low)}, {_fmt(c.effect.high)}]",
            c.size,
            str(c.effect.n),
            _p(c.adjusted_p),
            f"{_fmt(c.mde, digits=2)} (alpha {c.alpha:.2g})" if c.power_of else "",
            verdict_cell(c, robust.get(c.number, "")),
        ]
        for c in claims
    ]
    header = ["claim", "statement", "expected", "measured", "95 % CI", "effect size", "n", "p (Holm)",
              "mde", "verdict"]  # fmt: skip
    return pd.DataFrame(rows, columns=header)


def power_table(claims: list[Claim]) -> pd.DataFrame:
    """The minimum detectable effect of each accuracy claim at its decision's alpha, and whether it
    reaches the target."""
    rows = [
        [c.number, str(c.effect.n), f"{c.alpha:.2g}", _fmt(c.mde, digits=3),
         "yes" if c.mde <= TARGET_EFFECT else "no"]
        for c in claims
        if c.power_of
    ]  # fmt: skip
    header = ["claim", "seeds", "alpha", "minimum detectable effect", f"{TARGET_EFFECT:g} detectable"]
    return pd.DataFrame(rows, columns=header)


def fits_table(claims: list[Claim]) -> pd.DataFrame:
    """The straight-line fit of each weight-decay trend: its lack-of-fit test, the size of the
    curvature, and the same line on a log weight-decay axis."""
    rows = [
        [
            c.number,
            c.statement,
            _fmt(c.fit.r2, digits=3),
            f"F({c.fit.dof[0]}, {c.fit.dof[1]}) = {_fmt(c.fit.f, digits=3)}",
            _fmt(c.fit.p, digits=3),
            shape_verdict(c.fit),
            c.deviation,
            _fmt(c.log_fit.r2, digits=3),
            _fmt(c.log_fit.p, digits=3),
        ]
        for c in claims
        if c.fit and c.log_fit
    ]
    header = ["claim", "trend", "R^2 within seeds", "lack of fit", "p", "shape", "largest deviation",
              "log axis: R^2", "log axis: p"]  # fmt: skip
    return pd.DataFrame(rows, columns=header)


def residual_table(residuals: pd.DataFrame) -> pd.DataFrame:
    """Mean residual over seeds of each fitted claim at each weight-decay level."""
    rows = [
        [claim, f"{decay:g}", str(len(group)), _estimate(mean_ci(group["residual"]))]
        for (claim, decay), group in residuals.groupby(["claim", "weight decay"], sort=True)
    ]
    return pd.DataFrame(rows, columns=["claim", "weight decay", "seeds", "mean residual [95 % CI]"])


def bracket_table(status: pd.DataFrame) -> pd.DataFrame:
    """Each (network, optimizer)'s chosen learning rate and how its sweep ends on either side."""
    rows = [[r.network, r.optimizer, _fmt(r.lr), r.lower, r.upper] for r in status.itertuples()]
    return pd.DataFrame(rows, columns=["network", "optimizer", "chosen lr", "below it", "above it"])


def lr_sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Mean validation and test accuracy of each learning rate tried, the chosen ones marked."""
    rows = [
        [row.network, row.optimizer, label(row.lr), str(row.seeds), str(row.failed), _fmt(row.val_acc),
         _fmt(row.test_acc), "**chosen**" if row.selected else ""]
        for row in sweep.itertuples()
    ]  # fmt: skip
    header = ["network", "optimizer", "lr", "seeds", "diverged", "mean val_acc", "mean test_acc", "chosen"]
    return pd.DataFrame(rows, columns=header)


def robust_text(claims: list[Claim], robustness: pd.DataFrame | None) -> dict[str, str]:
    """Per claim, what the report says of its robustness on the native code path (``reports/robustness.csv``
    of ``python -m study.reproduce robustness``): nothing without a comparison, "stale" for every claim
    when the pinned verdicts it recorded are not these."""
    if robustness is None:
        return {}
    recorded = dict(zip(robustness["claim"], robustness["verdict_avx2"], strict=True))
    native = dict(zip(robustness["claim"], robustness["verdict_native"], strict=True))
    if any(recorded.get(c.number) != c.verdict for c in claims):
        return {c.number: "stale" for c in claims}
    return {
        c.number: "robust" if native[c.number] == c.verdict else f"not robust (native: {native[c.number]})"
        for c in claims
    }


# --- what the sentences quote ---------------------------------------------------------------------


def counts_text(claims: list[Claim], robust: dict[str, str]) -> str:
    """``9 supported, 0 contradicted, ...``: how many claims got each verdict; a verdict that changes
    with the code path counts as "not robust", not as its verdict."""
    flipped = [c for c in claims if robust.get(c.number, "").startswith("not robust")]
    counts = ", ".join(
        f"{n} {verdict}" for verdict, n in verdict_counts([c for c in claims if c not in flipped]).items()
    )
    return counts + (f", {len(flipped)} not robust" if flipped else "")


def accuracy_floor(ablation: dict, frame: pd.DataFrame) -> dict[str, str] | None:
    """The binomial standard error of one test accuracy, from the test-set size the ablation records
    (None when it does not record it)."""
    size = ablation.get("test_size")
    if size is None:
        return None
    accuracy = float(frame["test_acc"].mean())
    se = binomial_se(accuracy, size)
    return {
        "size": str(size),
        "accuracy": f"{accuracy:.3f}",
        "se": f"{se:.4f}",
        "se_pp": f"{100 * se:.2f}",
        "step": f"{1 / size:.2g}",
    }


def robustness_text(robust: dict[str, str]) -> str:
    """The robustness comparison in one sentence ("" without one)."""
    if not robust:
        return ""
    if "stale" in robust.values():
        return ("reports/robustness.csv compares other results than these (its pinned verdicts differ): "
                "re-run `python -m study.reproduce robustness`")  # fmt: skip
    flipped = [number for number, text in robust.items() if text.startswith("not robust")]
    if not flipped:
        return f"every verdict is the same on the native code path ({len(robust)} claims)"
    return f"{len(flipped)} of {len(robust)} verdicts change on the native code path: {', '.join(flipped)}"


def seeds_text(ablations: dict[str, dict]) -> str:
    """``wd 15, optimizer 16, ...``: each ablation's seed count (they may differ: seeds_by_ablation)."""
    return ", ".join(f"{name} {len(ablation['seeds'])}" for name, ablation in ablations.items())


def optimizer_text(ablation: dict) -> str:
    """Each optimizer of the ablation with its settings."""
    return "; ".join(f"{name}: {settings}" for name, settings in ablation.get("optimizers", {}).items())


def chosen_text(sweep: pd.DataFrame) -> str:
    """The learning rate chosen per optimizer and network."""
    chosen = sweep[sweep["selected"]]
    return "; ".join(f"{row.optimizer} ({row.network}) lr {row.lr:g}" for row in chosen.itertuples())


def stage_budget_text(budget: dict) -> str:
    """Each stage's epochs and batch size."""
    return "; ".join(
        f"stage {stage}: {budget[f'stage{stage}_epochs']} epochs, batch {budget[f'stage{stage}_batch_size']}"
        for stage in (1, 2)
    )


def lr_budget_text(latent: pd.DataFrame) -> str:
    """The median stage-2 learning-rate budget per optimizer."""
    return "; ".join(
        f"{name} {_fmt(group['lr_budget'].median())}" for name, group in latent.groupby("optimizer")
    )
