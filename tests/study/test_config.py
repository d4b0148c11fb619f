"""params.yaml validation: the real file validates; every bad input stops with one line naming the key."""

import copy

import pytest
from ruamel.yaml import YAML

from study.config import DEFAULT_PARAMS, Params, ParamsError, load_params, read_yaml, validate_params

DELETE = object()


@pytest.fixture(scope="module")
def real_params() -> dict:
    """The repository's params.yaml, read as study.config.read_yaml reads it (ruamel, YAML 1.2)."""
    return read_yaml(DEFAULT_PARAMS)


def edited(raw: dict, **changes) -> dict:
    """A deep copy of ``raw`` with dotted keys (given as ``stage1__lr``) set, or removed with DELETE."""
    copied = copy.deepcopy(raw)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        section = copied
        for key in parents:
            section = section.setdefault(key, {})
        if value is DELETE:
            del section[last]
        else:
            section[last] = value
    return copied


def assert_one_line_naming(err: pytest.ExceptionInfo, key: str) -> None:
    message = str(err.value)
    assert "\n" not in message and "\r" not in message, message
    assert key in message, message


def test_repository_params_validate(real_params):
    params = validate_params(real_params)
    assert isinstance(params, Params)
    assert params.stage1.lr == pytest.approx(2e-3)
    assert params.stage1.weight_decay == pytest.approx(5e-6)


def test_load_params_reads_the_repository_file():
    assert load_params(DEFAULT_PARAMS) == validate_params(read_yaml(DEFAULT_PARAMS))


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        pytest.param({"bogus": 1}, "bogus", id="unknown-top-level-key"),
        pytest.param({"stage1__lrr": 0.1}, "stage1.lrr", id="unknown-nested-key"),
        pytest.param({"data__augment__flip": True}, "data.augment.flip", id="unknown-deep-key"),
        pytest.param({"stage1__epochs": "ten"}, "stage1.epochs", id="epochs-string"),
        pytest.param({"stage1__epochs": True}, "stage1.epochs", id="epochs-bool"),
        pytest.param({"stage1__epochs": 10.5}, "stage1.epochs", id="epochs-float"),
        pytest.param({"stage1__epochs": 0}, "stage1.epochs", id="epochs-zero"),
        pytest.param({"stage1__lr": "fast"}, "stage1.lr", id="lr-string"),
        pytest.param({"stage1__lr": -0.001}, "stage1.lr", id="lr-negative"),
        pytest.param({"stage2__lr": 0}, "stage2.lr", id="lr-zero"),
        pytest.param({"stage1__lr": DELETE}, "stage1.lr", id="lr-missing"),
        pytest.param({"stage2__optimizer": "adagrad"}, "stage2.optimizer", id="unknown-optimizer"),
        pytest.param({"stage1__schedule": "step"}, "stage1.schedule", id="unknown-schedule"),
        pytest.param({"stage1__betas": [0.9, 1.5]}, "stage1.betas", id="beta-out-of-range"),
        pytest.param({"model__name": "vgg"}, "model.name", id="unknown-model"),
        pytest.param({"model__options": {"foo": 1}}, "model.options.foo", id="unknown-model-option"),
        pytest.param({"model__options": {"depth": "x"}}, "model.options.depth", id="wrong-type-model-option"),
        pytest.param({"model__act_binarizer": "sign"}, "model.act_binarizer", id="unknown-binarizer"),
        pytest.param({"model__width": -4}, "model.width", id="negative-width"),
        pytest.param({"data__name": "imagenet"}, "data.name", id="unknown-data-set"),
        pytest.param(
            {"data__name": "cifar10", "data__path": "no/such/cifar-10-batches-py"},
            "data.path",
            id="cifar10-missing-path",
        ),
        pytest.param({"data__name": "cifar10", "data__path": None}, "data.path", id="cifar10-no-path"),
        pytest.param(
            {"data__name": "imagefolder", "data__path": ".", "data__image_size": None},
            "data.image_size",
            id="imagefolder-without-image-size",
        ),
        pytest.param(
            {"data__val_fraction": 0.5, "data__test_fraction": 0.5},
            "data.test_fraction",
            id="fractions-sum-to-one",
        ),
        pytest.param({"data__val_fraction": 1.5}, "data.val_fraction", id="fraction-above-one"),
        pytest.param({"device": "tpu"}, "device", id="unknown-device"),
        pytest.param({"tracking__uri": 3}, "tracking.uri", id="uri-not-a-string"),
        pytest.param({"stage1": None}, "stage1", id="section-null"),
        pytest.param({"stage2": DELETE}, "stage2", id="section-missing"),
    ],
)
def test_bad_params_raise_one_line_naming_the_key(real_params, changes, key):
    with pytest.raises(ParamsError) as err:
        validate_params(edited(real_params, **changes))
    assert_one_line_naming(err, key)
    assert str(err.value).startswith("params.yaml: ")


def test_errors_show_the_offending_value(real_params):
    with pytest.raises(ParamsError, match=r"stage1\.lr: .*greater than 0 \(got -0\.001\)"):
        validate_params(edited(real_params, stage1__lr=-0.001))
    with pytest.raises(ParamsError, match=r"stage1\.epochs: .*integer \(got True\)"):
        validate_params(edited(real_params, stage1__epochs=True))


def test_a_key_holding_a_newline_still_gives_one_line(real_params):
    with pytest.raises(ParamsError) as err:
        validate_params(edited(real_params, **{"stage1__l\nr": 1}))
    assert_one_line_naming(err, "stage1.l\\nr")


def test_top_level_not_a_mapping():
    with pytest.raises(ParamsError) as err:
        validate_params([1, 2])
    assert_one_line_naming(err, "params.yaml")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("stage1: [unclosed\n", id="unclosed-flow"),
        pytest.param("seed: 0\n  device: cpu\n", id="bad-indent"),
        pytest.param("a:\tb\n\tc: 1\n", id="tab"),
        pytest.param("seed: 0\nseed: 1\n", id="duplicate-key"),
        pytest.param(b"\x80\x00\xff\xfe", id="binary"),
    ],
)
def test_file_that_is_not_yaml(tmp_path, content):
    path = tmp_path / "params.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert_one_line_naming(err, str(path))


def test_duplicate_key_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nseed: 1\n")
    with pytest.raises(ParamsError, match=r'line 2 .*duplicate key "seed"'):
        read_yaml(path)


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_params_file_missing_or_a_folder(tmp_path, make):
    path = tmp_path / "params.yaml"
    if make == "folder":
        path.mkdir()
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert_one_line_naming(err, str(path))


@pytest.mark.parametrize("content", ["", "just a string\n", "- 1\n- 2\n"])
def test_yaml_that_is_not_a_mapping(tmp_path, content):
    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert_one_line_naming(err, "params.yaml")


def test_yaml_1_2_exponent_without_dot_is_a_number(tmp_path, real_params):
    text = "lr: 5e-6\nwd: 1e3\nflag: yes\noctal: 010\n"
    loaded = YAML(typ="safe").load(text)
    assert loaded["lr"] == pytest.approx(5e-6) and isinstance(loaded["lr"], float)
    assert loaded["wd"] == 1000.0
    assert loaded["flag"] == "yes"  # YAML 1.2: not a boolean
    assert loaded["octal"] == 10  # YAML 1.2: not octal

    path = tmp_path / "params.yaml"
    path.write_text("lr: 5e-6\n")
    assert read_yaml(path) == {"lr": pytest.approx(5e-6)}

    params = validate_params(edited(real_params, stage1__lr=read_yaml(path)["lr"]))
    assert params.stage1.lr == pytest.approx(5e-6)


def test_valid_model_option_is_accepted(real_params):
    params = validate_params(edited(real_params, model__options={"depth": 3}))
    assert params.model.options == {"depth": 3}


def test_training_key_follows_the_named_sections(real_params):
    base = validate_params(real_params)
    other_lr = validate_params(edited(real_params, stage2__lr=1e-4))
    assert base.training_key("stage1") == other_lr.training_key("stage1")
    assert base.training_key("stage2") != other_lr.training_key("stage2")
    assert len(base.training_key("seed", "model")) == 16
