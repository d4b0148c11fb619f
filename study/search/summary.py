"""What a finished search leaves behind: tables, importances, seaborn figures, the best params.

Written to the search's results folder and logged to the study's MLflow parent run:
``summary.md`` (rendered from ``templates/summary.md.j2``, and printed), ``trials.csv``,
``top_trials.csv``, ``importances.csv``, ``best_params.yaml`` (the layout of ``params.yaml``), and the
figures (:mod:`study.search.figures`) ``history.png``, ``hyperparameters.png``, ``ff_c2i.png``.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from ruamel.yaml import YAML  # noqa: E402

from bnn import PreparedData, evaluate, set_mode  # noqa: E402
from study.artifacts import atomic_write, write_csv  # noqa: E402
from study.config import Params  # noqa: E402
from study.paths import PROJECT_ROOT  # noqa: E402
from study.render import render, table  # noqa: E402
from study.runner import new_model  # noqa: E402
from study.search import candidates as stage1_candidates  # noqa: E402
from study.search.figures import ff_c2i_figure, history_figure, hyperparameter_figure, pareto_figure  # noqa: E402
from study.search.run import SearchRun, checkpoint_path  # noqa: E402
from study.tracking import CHECKPOINT_ARTIFACTS, Tracker, flatten  # noqa: E402

ABLATIONS = PROJECT_ROOT / "reports" / "ablations"  # the reproduction's results, read only to size it

STAGE_KEYS = [
    f"{stage}.{key}" for stage in ("stage1", "stage2") for key in ("optimizer", "lr", "weight_decay")
]
METRICS = [
    "val_acc",
    "ff_ratio",
    "c2i_ratio",
    "c2i_init",
    "changed_from_init",
    "saturation",
    "stage1_val_acc",
]


def trial_overrides(
    trial: FrozenTrial, fixed: dict[str, Any] | None = None, candidates: dict[str, dict] | None = None
) -> dict[str, Any]:
    """The dotted settings a trial ran with beyond the base params (``<key>:zero`` switches folded in,
    the stage-1 candidate's label replaced by its settings)."""
    values = dict(fixed or {})
    for name, value in trial.params.items():
        if name == stage1_candidates.PARAM and candidates:
            values.update(candidates[value])
        elif name.endswith(":zero"):
            if value:
                values[name.removesuffix(":zero")] = 0.0
        else:
            values[name] = value
    return values


def trials_frame(
    trials: list[FrozenTrial], params: Params, candidates: dict[str, dict] | None = None
) -> pd.DataFrame:
    """One row per trial: state, the effective stage settings, the metrics, cache use, pruning, failure."""
    base = params.model_dump()
    rows = []
    for trial in trials:
        settings = trial_overrides(trial, params.search.fixed, candidates)
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        for key in dict.fromkeys(STAGE_KEYS + list(params.search.space.root) + list(settings)):
            stage, field = key.split(".", 1)
            row[key] = settings.get(key, base[stage][field])
        for key in METRICS + ["stage1_cached", "pruned_at_epoch", "fail_reason"]:
            row[key] = trial.user_attrs.get(key)
        if trial.datetime_complete and trial.datetime_start:
            row["seconds"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append(row)
    return pd.DataFrame(rows)


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The single best trial; for two objectives, the most accurate trial on the Pareto front."""
    if len(study.directions) == 1:
        return study.best_trial
    return max(study.best_trials, key=lambda t: t.values[0])


def importances(study: optuna.Study) -> pd.DataFrame:
    """Optuna's default evaluator (PED-ANOVA) on validation accuracy; empty when too few trials.

    Only parameters that every complete trial has are ranked: a conditional one (SGD momentum, set
    only where SGD was drawn) would otherwise be scored on the few trials that used it and could
    outrank what decided the rest. PED-ANOVA explains what makes the target *low*, so the accuracy
    is negated.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    shared = [
        name for name in (complete[0].params if complete else {}) if all(name in t.params for t in complete)
    ]
    if not shared:
        return pd.DataFrame(columns=["parameter", "importance"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "few trials in a regime": expected early on
            scores = optuna.importance.get_param_importances(
                study, params=shared, target=lambda t: -t.values[0]
            )
    except (ValueError, RuntimeError):
        return pd.DataFrame(columns=["parameter", "importance"])
    return pd.DataFrame(list(scores.items()), columns=["parameter", "importance"])


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in sorted(overrides.items()):
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def write_yaml(path: Path, data: dict, fixed: dict[str, Any]) -> Path:
    yaml = YAML()
    yaml.default_flow_style = False

    def dump(tmp: Path) -> None:
        with open(tmp, "w") as stream:
            stream.write(
                "# The searched settings of the best trial, in the layout of params.yaml. Apply with\n"
            )
            stream.write("#   " + exp_run_command(data) + "\n")
            if fixed:
                stream.write(f"# The search ran every trial with {fixed} (search.fixed); not applied here.\n")
            yaml.dump(data, stream)

    return atomic_write(path, dump)


def exp_run_command(tree: dict[str, Any], target: str = "export") -> str:
    """``dvc exp run TARGET -S key=value ...``: the pipeline up to ``target`` with these settings (with
    no target DVC would run every stage, the reproduction study's ablations included)."""
    flags = [f"-S {key}={value}" for key, value in flatten(tree).items()]
    return " ".join(["dvc exp run", *([target] if target else []), *flags])


def study_cost(trials: list[FrozenTrial], params: Params, ablations: Path = ABLATIONS) -> str:
    """What ``dvc exp run`` with no target adds to the pipeline: the reproduction's ablations, sized by
    the epochs their last results in ``ablations`` trained, timed at this search's median seconds per
    epoch (complete trials that trained their own stage 1). An upper bound: cells that do not depend
    on the new settings, and shared stage-1 runs, are taken from the cell store."""
    runs = epochs = 0
    for path in sorted(ablations.glob("*.json")):
        cells = json.loads(path.read_text()).get("cells", [])
        runs += len(cells)
        epochs += sum(len(cell.get("history", [])) for cell in cells)
    if not runs:
        return f"the reproduction's ablations (no results in {ablations} to size them)"
    searched = params.with_overrides(params.search.fixed)
    per_trial = searched.stage1.epochs + searched.stage2.epochs
    seconds = [
        t.duration.total_seconds() / per_trial
        for t in trials
        if t.state == TrialState.COMPLETE and t.duration and not t.user_attrs.get("stage1_cached")
    ]
    size = f"up to {runs:,} cell runs, {epochs:,} epochs in all (as in {ablations.name}/)"
    if not seconds:
        return size
    return f"{size}, about {epochs * statistics.median(seconds) / 60:,.0f} min at this search's speed"


def pareto_frame(study: optuna.Study, frame: pd.DataFrame) -> pd.DataFrame:
    """The trials no other trial beats on both accuracy and FF ratio (two-objective studies)."""
    front = {t.number for t in study.best_trials}
    return frame[frame["number"].isin(front)].sort_values("val_acc", ascending=False)


def fetch_checkpoint(tracker: Tracker, trial: FrozenTrial, checkpoint: Path) -> Path | None:
    """The trial's network: this host's file, else the copy in the trial's MLflow run (a worker on
    another host trained it); None when neither exists."""
    if checkpoint.exists():
        return checkpoint
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return None
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        tracker.client.download_artifacts(
            run_id, f"{CHECKPOINT_ARTIFACTS}/{checkpoint.name}", str(checkpoint.parent)
        )
    except MlflowException:
        return None
    return checkpoint if checkpoint.exists() else None


def test_accuracy(
    run: SearchRun, overrides: dict[str, Any], checkpoint: Path | None, data: PreparedData
) -> dict[str, float] | None:
    """The best trial's stage-2 network on the test split: the search's only look at it."""
    if checkpoint is None:
        return None
    params = run.params.with_overrides({**run.params.search.fixed, **overrides})
    model = new_model(params, data)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    return evaluate(set_mode(model, "binary"), data.test, data)


def summarize(study: optuna.Study, run: SearchRun, tracker: Tracker, data: PreparedData) -> None:
    """Tables, figures and the best trial's test accuracy, written to ``run.out_dir``, printed as
    Markdown (``summary.md``, from ``templates/summary.md.j2``) and logged to the parent run."""
    sns.set_theme(style="whitegrid", context="notebook")
    trials = study.get_trials(deepcopy=False)
    candidates = stage1_candidates.of_study(study)
    frame = trials_frame(trials, run.params, candidates)
    out = run.out_dir
    write_csv(out / "trials.csv", frame)
    states = frame["state"].value_counts().to_dict()
    cached = int(frame["stage1_cached"].fillna(False).astype(bool).sum())
    print(
        f"\n{len(trials)} trials: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + f"; stage 1 reused from the store in {cached}"
    )
    if not any(t.state == TrialState.COMPLETE for t in trials):
        print("no trial completed: nothing to summarise")
        return
    columns = ["number", *dict.fromkeys(STAGE_KEYS + list(run.params.search.space.root)), *METRICS]
    top = frame[frame["state"] == "COMPLETE"].sort_values("val_acc", ascending=False)[columns].head(10)
    write_csv(out / "top_trials.csv", top)
    scores = importances(study)
    write_csv(out / "importances.csv", scores)
    best, overrides, best_yaml, test = best_results(study, run, tracker, data, candidates)
    front = pareto_frame(study, frame) if len(study.directions) == 2 else None
    if front is not None:
        write_csv(out / "pareto.csv", front[columns])
    figures = draw_figures(frame, front, out)
    text = summary_text(run, trials, top, front, scores, best, test, best_yaml, overrides)
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text))
    print("\n" + text + f"results: {out}")
    parent = tracker.run_logger(run.parent_run_id)
    log_summary(parent, best, test, scores, states, cached)
    parent.log_artifacts(
        [out / "summary.md", out / "trials.csv", out / "top_trials.csv", out / "importances.csv", best_yaml,
         *figures] + ([out / "pareto.csv"] if front is not None else [])
    )  # fmt: skip


def best_results(study: optuna.Study, run: SearchRun, tracker: Tracker, data: PreparedData, candidates):
    """The best trial, its settings (written as ``best_params.yaml``) and its one test accuracy;
    the other trials' checkpoints are deleted."""
    best = best_trial(study)
    overrides = trial_overrides(best, candidates=candidates)  # `fixed` only shortened the search
    best_yaml = write_yaml(run.out_dir / "best_params.yaml", nested(overrides), run.params.search.fixed)
    checkpoint = fetch_checkpoint(tracker, best, checkpoint_path(run, best.number))
    test = test_accuracy(run, overrides, checkpoint, data)
    for other in (run.out_dir / "checkpoints").glob("trial-*.pt"):
        if other.name != f"trial-{best.number}.pt":
            other.unlink(missing_ok=True)
    return best, overrides, best_yaml, test


def summary_text(run: SearchRun, trials, top, front, scores, best, test, best_yaml: Path, overrides) -> str:
    pareto_columns = ["number", *dict.fromkeys(STAGE_KEYS), "val_acc", "ff_ratio"]
    return render(
        "study.search",
        "summary.md.j2",
        study_name=run.study_name,
        top=table(top, floatfmt=".4g"),
        pareto=None if front is None else table(front[pareto_columns], floatfmt=".4g"),
        pareto_size=0 if front is None else len(front),
        importances=None if scores.empty else table(scores, floatfmt=".4g"),
        best=best,
        test=test,
        best_yaml=best_yaml.name,
        command=exp_run_command(nested(overrides)),
        full_command=exp_run_command(nested(overrides), target=""),
        study_cost=study_cost(trials, run.params),
    )


def draw_figures(frame: pd.DataFrame, front: pd.DataFrame | None, out: Path) -> list[Path]:
    figures = [
        history_figure(frame, out / "history.png"),
        hyperparameter_figure(frame, out / "hyperparameters.png"),
        ff_c2i_figure(frame, out / "ff_c2i.png"),
    ]
    if front is not None:
        figures.append(pareto_figure(frame, front.sort_values("ff_ratio"), out / "pareto.png"))
    return figures


def log_summary(
    parent, best: FrozenTrial, test: dict | None, scores: pd.DataFrame, states: dict, cached: int
) -> None:
    """The best trial's metrics, the importances and the trial counts as metrics of the parent run."""
    summary = {f"best_{k}": best.user_attrs[k] for k in METRICS if k in best.user_attrs}
    if test:
        summary["best_test_acc"] = test["acc"]
    summary.update(
        {f"importance.{p}": v for p, v in zip(scores["parameter"], scores["importance"], strict=True)}
    )
    summary.update(
        {
            "trials_finished": states.get("COMPLETE", 0) + states.get("PRUNED", 0),
            "trials_pruned": states.get("PRUNED", 0),
            "stage1_cache_hits": cached,
        }
    )
    parent.log_metrics(summary)
    parent.set_tags({"best_trial": best.number})
