"""study.cpu_isa: importing study pins torch's, MKL's and oneDNN's code path from params.yaml, before
torch loads; a process that did not take the path its params ask for is refused before it trains."""

import os
import subprocess
import sys

import pytest

from study import cpu_isa
from study.config import DEFAULT_PARAMS, ParamsError, load_params, read_yaml, validate_params
from study.reproduce.cells import Cell
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
