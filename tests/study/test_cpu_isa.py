"""study.cpu_isa: importing study pins torch's, MKL's and oneDNN's code path from params.yaml, before
torch loads; a process that did not take the path its params ask for is refused before it trains."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study import cpu_isa
from study.config import DEFAULT_PARAMS, ParamsError, load_params, read_yaml, validate_params
from study.export import __main__ as export_main
from study.reproduce import ablate, robustness
from study.reproduce.cells import Cell
from study.search import __main__ as search_main
from study.search import bench as search_bench
from study.search import plain as search_plain
from study.stage1_store import stage1_key

PROBE = (  # torch's kernels, oneDNN's variable, the kernels of the OpenBLAS numpy loaded
    "import os, numpy, torch, threadpoolctl; "
    "libs = threadpoolctl.threadpool_info(); "
    "blas = {lib['architecture'] for lib in libs if lib['internal_api'] == 'openblas'}; "
    "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('ONEDNN_MAX_CPU_ISA'), *sorted(blas))"
)
pytestmark = pytest.mark.skipif(not cpu_isa.is_x86(), reason="the pins name x86-64 instruction sets")


def unpinned_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in cpu_isa.PINS["avx2"]}
    return {**env, **extra}


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def project_with(tmp_path, isa: str):
    params = DEFAULT_PARAMS.read_text().replace("cpu_isa: avx2", f"cpu_isa: {isa}")
    assert f"cpu_isa: {isa}" in params
    (tmp_path / "params.yaml").write_text(params)
    return unpinned_env(BNN_STUDY_ROOT=str(tmp_path))


def native_capability() -> list[str]:
    """torch's and OpenBLAS's own choice on this CPU."""
    torch_kernels, _, *openblas = python(PROBE, unpinned_env()).stdout.split()
    return [torch_kernels, *openblas]


def test_importing_study_pins_every_library_to_avx2(tmp_path):
    done = python("import study; " + PROBE, project_with(tmp_path, "avx2"))
    assert done.stdout.split() == ["AVX2", "AVX2", "Haswell"], done.stderr


def test_native_leaves_the_libraries_their_own_choice(tmp_path):
    done = python("import study; " + PROBE, project_with(tmp_path, "native"))
    assert done.stdout.split() == [*native_capability()[:1], "None", *native_capability()[1:]], done.stderr


def test_a_process_that_loaded_torch_first_is_refused(tmp_path):
    if native_capability()[0] == "AVX2":
        pytest.skip("this CPU's own code path is AVX2: loading torch first changes nothing here")
    # torch picks its kernels at its first computation: one before study is imported is too early
    code = "import torch; torch.ones(8).sum(); import study.cpu_isa as c; c.check('avx2')"
    done = python(code, project_with(tmp_path, "avx2"))
    assert done.returncode == 1
    assert "CpuIsaError: cpu_isa: avx2, but this process runs torch's" in done.stderr
    assert "import study (or pipelines) before torch or numpy run anything" in done.stderr


def test_this_test_process_is_pinned_as_the_commands_are():
    cpu_isa.check(load_params().cpu_isa)  # conftest imports study before torch


def test_the_code_path_is_part_of_every_stored_result_key(digits):
    avx2 = load_params()
    native = avx2.model_copy(update={"cpu_isa": "native"})
    assert stage1_key(avx2, digits) != stage1_key(native, digits)
    cell = Cell("wd", "two_stage", (("stage1.weight_decay", 0.0),))
    assert cell.key(avx2, digits) != cell.key(native, digits)


def test_an_unknown_code_path_is_one_line():
    raw = {**read_yaml(DEFAULT_PARAMS), "cpu_isa": "avx512"}
    with pytest.raises(ParamsError, match=r"cpu_isa: Input should be 'avx2' or 'native' \(got 'avx512'\)$"):
        validate_params(raw)


# --- which params file pins a command: its --params, else the project's ------------------------------

ECHO = "import sys; sys.argv = {argv!r}; import study, os; print(os.environ.get('ATEN_CPU_CAPABILITY'))"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["x", "--params", "a.yaml"], "a.yaml"),
        (["x", "ablate", "all", "--params=b.yaml", "--out", "out"], "b.yaml"),
        (["x", "ablate", "all", "--params", "c.yaml", "--quick"], "c.yaml"),
        (["x", "report"], None),
        (["x", "--params"], None),  # no file named: the command's parser refuses it
        (["x", "--paramsfile", "d.yaml"], None),
    ],
)
def test_params_file_finds_the_params_option_or_falls_back(tmp_path, argv, expected):
    default = tmp_path / "params.yaml"
    assert cpu_isa.params_file(argv, default) == (Path(expected) if expected else default)


@pytest.mark.parametrize(
    "argv",
    [
        ["all", "--params", "a.yaml"],
        ["all", "--params=a.yaml", "--out", "o"],
        ["all", "--params", "a.yaml", "--params", "b.yaml"],  # argparse: the last one
    ],
    ids=["space", "equals", "repeated"],
)
def test_params_file_is_the_file_the_commands_parser_reads(argv):
    """The pin must follow the file the command will read."""
    parser = command_parser(ablate.main, ["all"])
    assert cpu_isa.params_file(["x", *argv], Path("params.yaml")) == parser.parse_args(argv).params


def command_parser(main, argv: list[str]) -> argparse.ArgumentParser:
    """A command's own parser, caught as its ``main`` starts to parse."""
    captured = {}

    def capture(self, args=None, namespace=None):
        captured["parser"] = self
        raise SystemExit(0)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        main(argv)
    return captured["parser"]


@pytest.mark.parametrize("module", [ablate, robustness, export_main, search_main, search_plain, search_bench])
def test_commands_with_params_take_no_abbreviation_which_the_pin_could_not_see(module):
    parser = command_parser(module.main, [])
    assert any("--params" in action.option_strings for action in parser._actions)
    assert parser.allow_abbrev is False


@pytest.mark.parametrize(
    ("project", "option", "expected"),
    [
        ("avx2", None, "avx2"),  # the default: the project's params.yaml pins
        ("avx2", "--params", "None"),  # a native params file pins nothing
        ("avx2", "--params=", "None"),
        ("native", None, "None"),
        ("native", "--params", "avx2"),
    ],
)
def test_the_params_file_of_the_command_line_decides_the_pin(tmp_path, project, option, expected):
    env = project_with(tmp_path, project)  # the project's params.yaml, and no pin in the environment
    other = tmp_path / "other" / "params.yaml"
    other.parent.mkdir()
    isa = "native" if project == "avx2" else "avx2"
    other.write_text(DEFAULT_PARAMS.read_text().replace("cpu_isa: avx2", f"cpu_isa: {isa}"))
    argv = {None: ["x"], "--params": ["x", "--params", str(other)], "--params=": ["x", f"--params={other}"]}
    done = python(ECHO.format(argv=argv[option]), env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]
