"""The typed ``params.yaml``: loading, validation, and one-line errors.

Every entry point (DVC stages, search, ablations) loads params through :func:`load_params`, so a
wrong key, a wrong type or an impossible value stops before any work with one line naming the key:

    params.yaml: stage1.lr: Input should be greater than 0 (got -0.001)

YAML is read as YAML 1.2 (``ruamel.yaml``, as DVC reads it), so ``5e-6`` is a number; validation
is strict, so ``epochs: true`` or ``lr: "fast"`` are type errors instead of silent coercions.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML, YAMLError

from bnn.binarize import ACTIVATION_BINARIZERS, WEIGHT_BINARIZERS
from bnn.data import DATASETS
from bnn.layers import INITS
from bnn.models import MODELS, model_options
from bnn.train import StageConfig
from study.errors import InputError
from study.paths import PROJECT_ROOT
from study.space import SearchSpace, check_against

DEFAULT_PARAMS = PROJECT_ROOT / "params.yaml"
SOURCES_WITH_PATH = ("cifar10", "imagefolder")


class ParamsError(InputError):
    """A params file that cannot be used; the message is one line naming the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AugmentConfig(_Section):
    crop_padding: int = Field(0, ge=0)
    hflip: bool = False


class DataConfig(_Section):
    name: str = "mnist5k"
    path: str | None = None
    image_size: PositiveInt | None = None
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    verify_checksums: bool = True
    augment: AugmentConfig = AugmentConfig()

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}, choose from {sorted(DATASETS)}")
        return name

    @model_validator(mode="after")
    def _path_exists(self) -> DataConfig:
        if self.name in SOURCES_WITH_PATH:
            if self.path is None:
                raise ValueError(f"path: data set {self.name!r} is read from a local folder; set data.path")
            if not resolve_path(self.path).exists():
                raise ValueError(f"path: {self.path!r} does not exist")
        if self.name == "imagefolder" and self.image_size is None:
            raise ValueError("image_size: required for imagefolder (images are resized to it)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"test_fraction: val_fraction + test_fraction must be below 1 "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )
        return self


class ModelConfig(_Section):
    name: str = "cnn"
    width: PositiveInt = 32
    act_binarizer: str = "approx_sign"
    weight_binarizer: str = "ste"
    act_std_normalise: bool = False  # ReCU recipe: divide sign inputs by their per-sample std in training
    init: str = "kaiming"
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}, choose from {sorted(MODELS)}")
        return name

    @field_validator("act_binarizer")
    @classmethod
    def _known_act(cls, name: str) -> str:
        if name not in ACTIVATION_BINARIZERS:
            raise ValueError(
                f"unknown activation binarizer {name!r}, choose from {sorted(ACTIVATION_BINARIZERS)}"
            )
        return name

    @field_validator("weight_binarizer")
    @classmethod
    def _known_weight(cls, name: str) -> str:
        if name not in WEIGHT_BINARIZERS:
            raise ValueError(f"unknown weight binarizer {name!r}, choose from {list(WEIGHT_BINARIZERS)}")
        return name

    @field_validator("init")
    @classmethod
    def _known_init(cls, name: str) -> str:
        if name not in INITS:
            raise ValueError(f"unknown init {name!r}, choose from {list(INITS)}")
        return name

    @model_validator(mode="after")
    def _known_options(self) -> ModelConfig:
        unknown = sorted(set(self.options) - set(model_options(self.name)))
        if unknown:
            raise ValueError(
                f"options.{unknown[0]}: not an option of model {self.name!r} "
                f"(options: {sorted(model_options(self.name))})"
            )
        for key, value in self.options.items():
            default = model_options(self.name)[key]
            expected = (list, tuple) if isinstance(default, tuple) else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
                raise ValueError(
                    f"options.{key}: expected {type(default).__name__} like {default!r}, got {value!r}"
                )
        return self


class DistillConfig(_Section):
    """Optional distillation from a real-valued teacher of the same architecture (off by default)."""

    enabled: bool = False
    teacher_epochs: PositiveInt = 10


class EvaluationConfig(_Section):
    batch_size: PositiveInt = 512
    histogram_bins: PositiveInt = 121


class TrackingConfig(_Section):
    """``uri: null`` means ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``."""

    uri: str | None = None
    experiment: str = "bnn-study"


class SearchConfig(_Section):
    """``python -m study.search``: the Optuna study; the command line overrides these."""

    study_name: str = "bnn-search"
    storage: str | None = None
    trials: PositiveInt = 50
    seed: int = 0
    pruner: Literal["halving", "median", "hyperband", "none"] = "median"
    objectives: list[Literal["acc", "ff"]] = ["acc"]
    workers: PositiveInt = 1
    stage1_candidates: int = Field(
        4, ge=0
    )  # shared stage-1 settings (study/search/candidates.py); 0: per trial
    fixed: dict[str, Any] = {}
    space: SearchSpace = SearchSpace({})

    @field_validator("objectives")
    @classmethod
    def _acc_first(cls, objectives: list[str]) -> list[str]:
        if objectives not in (["acc"], ["acc", "ff"]):
            raise ValueError("use [acc] or [acc, ff]")
        return objectives


class LauncherConfig(_Section):
    """Where the workers of a search run (study/launch.py): ``local`` processes of the command (as
    ``--workers``), or a job array through submitit: ``slurm``, or ``submitit-local`` (the same code
    path in local processes, to try it on a laptop). One worker per array task, one GPU per task."""

    kind: Literal["local", "slurm", "submitit-local"] = "local"
    tasks: PositiveInt = 4  # the job array's size: worker tasks, each one worker process
    partition: str | None = None  # null: the cluster's default partition
    time_min: PositiveInt = 240  # each task's time limit; a timed-out or preempted task is requeued
    gpus_per_task: int = Field(0, ge=0)  # 1 on a GPU partition: the task sees its GPU (CUDA_VISIBLE_DEVICES)
    cpus_per_task: PositiveInt | None = None  # null: the top-level `threads`
    mem_gb: float = Field(8.0, gt=0)
    folder: str | None = None  # submitit's logs and pickles; null: <store root>/submitit (git-ignored)
    setup: list[str] = []  # shell lines before each task starts (module load ..., source .venv/bin/activate)
    slurm_additional_parameters: dict[str, str | int | float | bool] = {}  # more #SBATCH flags, as given


class WeightDecayGrid(_Section):
    """The ``wd`` ablation's grid. Stage 2's spans four decades, so the FF and C2I trends are fitted over
    a range where they move; the paper's cell (stage 1 5e-6, stage 2 0) is in the defaults."""

    stage1: list[float] = [0.0, 1.0e-6, 5.0e-6, 1.0e-4]
    stage2: list[float] = [0.0, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]

    @field_validator("stage1", "stage2")
    @classmethod
    def _non_negative(cls, values: list[float]) -> list[float]:
        if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
            raise ValueError("a non-empty list of distinct non-negative values")
        return values


class RecipeWeightDecay(_Section):
    """The weight decays of every ablation cell that does not vary them: AdamBNN's recipe, pinned here
    rather than taken from the pipeline's ``stage1``/``stage2`` sections. The ablations test the paper's
    claims about its recipe; an experiment on the pipeline's weight decay
    (``dvc exp run -S stage1.weight_decay=1e-5``) then leaves every ablation cell as it was (the ``wd``
    ablation sweeps both decays on its own grid)."""

    stage1: float = Field(5.0e-6, ge=0)
    stage2: float = Field(0.0, ge=0)


def _check_optimizers(optimizers: dict[str, dict[str, Any]], sweep: bool) -> None:
    """Settings for exactly Adam and SGD, each valid as a stage's settings. With ``sweep``, ``lr``
    is a list of learning rates (one cell each); every other key is one setting, as in a stage."""
    if set(optimizers) != {"adam", "sgd"}:
        raise ValueError("give settings for exactly adam and sgd")
    for name, settings in optimizers.items():
        if "optimizer" in settings:
            raise ValueError(f"{name}.optimizer: the key names the optimizer already")
        rates = settings.get("lr")
        if sweep and (not isinstance(rates, list) or not rates):
            raise ValueError(f"{name}.lr: a non-empty list of learning rates, one cell each (got {rates!r})")
        for candidate in [{**settings, "lr": lr} for lr in rates] if sweep else [settings]:
            try:
                stage = {"epochs": 1, **candidate, "optimizer": name}
                StageConfig.model_validate_json(json.dumps(stage), strict=True)
            except ValidationError as exc:
                raise ValueError(f"{name}.{_first_error(exc)}") from None
        if sweep and len(set(rates)) != len(rates):
            raise ValueError(f"{name}.lr: the learning rates must be distinct (got {rates!r})")


class LatentAblationConfig(_Section):
    """The ``latent`` ablation (claim 6, dead weights): Adam against SGD in stage 2, from the same stage 1
    (the pipeline's, at ``ablation.epochs``), with a stage-2 budget of its own: more epochs and a
    smaller batch, i.e. more optimizer steps, so the latent weights can move (science.md, "Scale
    matters"). Defaults: about 3.5 minutes with 2 workers on 2 cores (default MLP, mnist5k)."""

    seeds: int = Field(5, ge=3)
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 16
    # Adam at a learning rate where its weights reach the clip (claim 6 acts there; measured in the report)
    optimizers: dict[str, dict[str, Any]] = {"adam": {"lr": 4.0e-2}, "sgd": {"lr": 0.1, "momentum": 0.9}}

    @field_validator("optimizers")
    @classmethod
    def _adam_and_sgd(cls, optimizers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _check_optimizers(optimizers, sweep=False)
        return optimizers


class AblationConfig(_Section):
    """``python -m study.reproduce ablate`` and the DVC ablation stages (see README, Reproduction study)."""

    seeds: int = Field(10, ge=3)
    # More seeds for one ablation where its accuracy claim needs them to detect a 0.5 pp difference
    # (the report gives each claim's minimum detectable effect); the others keep ``seeds``.
    seeds_by_ablation: dict[Literal["wd", "optimizer", "stages"], Annotated[int, Field(ge=3)]] = {}
    epochs: PositiveInt = 6
    quick_seeds: int = Field(3, ge=2)
    quick_epochs: PositiveInt = 2  # the linear schedule runs the last epoch at lr 0: one would train nothing
    weight_decay: WeightDecayGrid = WeightDecayGrid()
    recipe_weight_decay: RecipeWeightDecay = RecipeWeightDecay()
    # Each optimizer at every learning rate of its list (a small sweep; the claims pick the best on
    # the validation split per optimizer and network), in both stages.
    optimizers: dict[str, dict[str, Any]] = {
        "adam": {"lr": [5.0e-4, 2.0e-3, 8.0e-3]},
        "sgd": {"lr": [0.03, 0.1, 0.3], "momentum": 0.9},
    }
    # Extra learning rates per side that the optimizer ablation may add to bracket each optimum
    # (study/reproduce/lr_bracket.py); 0 keeps the configured lists as they are.
    lr_extensions: int = Field(4, ge=0)
    latent: LatentAblationConfig = LatentAblationConfig()
    margin: float = Field(0.005, ge=0, lt=1)
    workers: PositiveInt = 1

    @field_validator("optimizers")
    @classmethod
    def _adam_and_sgd(cls, optimizers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _check_optimizers(optimizers, sweep=True)
        return optimizers


class Params(_Section):
    seed: int = 0
    device: str = "auto"
    # Intra-op torch threads of every training run. Float sums depend on the thread count, so it is
    # fixed here (and part of every stored result's key), never derived from --workers or the cores:
    # the same seed gives bit-identical metrics on a CPU whatever the worker count.
    threads: PositiveInt = 1
    # The CPU code path of torch, MKL and oneDNN (study/cpu_isa.py): avx2 gives the same numbers on any
    # x86-64 CPU with AVX2; native takes this CPU's best kernels (machine-dependent numbers).
    cpu_isa: Literal["avx2", "native"] = "avx2"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    stage1: StageConfig
    stage2: StageConfig
    distill: DistillConfig = DistillConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig = SearchConfig()
    ablation: AblationConfig = AblationConfig()
    launcher: LauncherConfig = LauncherConfig()

    @model_validator(mode="after")
    def _search_fits_stages(self) -> Params:
        stages = {"stage1": self.stage1, "stage2": self.stage2}
        fixed = {key: [value] for key, value in self.search.fixed.items()}
        checks = [("search.fixed", fixed), ("search.space", self.search.space)]
        for name, space in checks:
            try:
                check_against(SearchSpace.model_validate(space), stages)
            except ValueError as exc:
                raise ValueError(f"{name}.{_message(exc)}") from None
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Params:
        """A copy with dotted keys set (``{"stage1.lr": 1e-3}``), validated like the file."""
        raw = self.model_dump(mode="json")
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            section = raw
            for part in parents:
                section = section[part]
            section[leaf] = value
        return validate_params(raw, source="overrides")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError(f"unknown device {device!r}, use auto, cpu or cuda[:N]")
        return device

    def training_key(self, *sections: str) -> str:
        """A short hash of the named sections: what determines a trained result."""
        dumped = self.model_dump(mode="json")
        return hashlib.sha256(
            json.dumps({s: dumped[s] for s in sections}, sort_keys=True).encode()
        ).hexdigest()[:16]


def resolve_path(path: str | Path) -> Path:
    """Relative paths in params are relative to the project root, wherever a stage runs."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, or binary
        raise ParamsError(f"{path}: params file could not be read ({type(exc).__name__})") from None
    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where} ({' '.join(str(problem).split())})") from None


def validate_params(raw: Any, source: str = "params.yaml") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate_json(json.dumps(raw), strict=True)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {_first_error(exc)}") from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    return validate_params(read_yaml(path), source=Path(path).name)


def _message(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return _first_error(exc)
    return str(exc)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    # Validators that name a sub-key start their message with "key: ".
    if ": " in message and " " not in message.split(": ", 1)[0]:
        sub, message = message.split(": ", 1)
        location = f"{location}.{sub}" if location else sub
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and not isinstance(error["input"], dict):
        got = error["input"]
        if not (isinstance(got, str) and repr(got) in message):  # "unknown model 'vgg'" names it already
            message = f"{message} (got {got!r})"
    line = f"{location}: {message}" if location else message
    return line.replace("\r", "\\r").replace("\n", "\\n")  # one line, even for a key holding a newline
