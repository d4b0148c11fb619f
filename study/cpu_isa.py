"""The CPU code path of every training process, fixed so that a seed gives the same numbers on any x86-64.

torch's own kernels (ATen), MKL (matrix products) and oneDNN (convolutions) each pick the kernels for
the widest instruction set the CPU has, and kernels for different instruction sets round differently:
one seed trained on an AVX-512 machine and on an AVX2 machine ends with different weights (measured
here: stage-1 weights of the default MLP differ with ATen's choice alone; a binary CNN's differ with
each of the three), and numpy's OpenBLAS, which the report's fits use, changes p-values in their last
digits. ``cpu_isa: avx2`` in params.yaml (the default) makes all four use their AVX2 kernels, which
every x86-64 CPU of the last decade has; ``native`` lets each take the best for this CPU (the numbers
then depend on the machine).

The libraries read their variables once, at their first computation, so the variables are set when
``study`` or ``pipelines`` is imported (every command's first import), from the ``cpu_isa`` of the
params file the command will read (its ``--params``, else the project's params.yaml).
:func:`check` confirms at training time that the running process took the code path its params
ask for. Other architectures (ARM) and GPUs are not covered: their numbers stay their own.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from study.errors import InputError

CHOICES = ("avx2", "native")
PINS = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels
        "MKL_CBWR": "AVX2",  # MKL's matrix products (torch)
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions (torch)
        "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS (the report's statistics)
    }
}
TORCH_CAPABILITY = {"avx2": "AVX2"}  # what torch.backends.cpu.get_cpu_capability() reports when pinned
OPENBLAS_CORE = {"avx2": "Haswell"}  # what threadpoolctl reports for a pinned OpenBLAS


class CpuIsaError(InputError):
    """This process does not run the CPU code path its params ask for."""


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cpu_model() -> str:
    """This machine's CPU model, as the OS names it (Linux: /proc/cpuinfo), for the reports' set-up."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def params_file(argv: list[str], default: Path) -> Path:
    """The params file a command will read: its ``--params FILE`` (or ``--params=FILE``), else ``default``.

    Read from the raw command line because the pin must be set before the command parses anything:
    a ``--params`` file with another ``cpu_isa`` than the project's then trains on its own code path.
    """
    found = default
    for i, arg in enumerate(argv):  # the last one wins, as in argparse (whose parsers take no abbreviation)
        if arg == "--params" and i + 1 < len(argv):
            found = Path(argv[i + 1])
        elif arg.startswith("--params="):
            found = Path(arg.split("=", 1)[1])
    return found


def configured(params_file: Path) -> str:
    """``cpu_isa`` of a params file, read without loading torch (validated later with the rest)."""
    from ruamel.yaml import YAML  # light: this runs before torch loads

    try:
        params = YAML(typ="safe").load(params_file.read_text())
    except Exception:  # a missing or broken file is reported by the params validation, not here
        return CHOICES[0]
    value = params.get("cpu_isa", CHOICES[0]) if isinstance(params, dict) else CHOICES[0]
    return value if isinstance(value, str) else CHOICES[0]


def pin(isa: str) -> None:
    """Set the libraries' variables for ``isa`` (nothing for ``native``, or off x86-64)."""
    if is_x86():
        os.environ.update(PINS.get(isa, {}))


def check(isa: str) -> None:
    """Raise :class:`CpuIsaError` when torch or OpenBLAS in this process does not run ``isa``'s kernels."""
    if not is_x86():
        return
    if isa not in PINS:
        _check_unpinned(isa)
        return
    import torch

    wrong = []
    torch_kernels = torch.backends.cpu.get_cpu_capability()
    if torch_kernels != TORCH_CAPABILITY[isa]:
        wrong.append(f"torch's {torch_kernels} kernels")
    wrong += [f"OpenBLAS's {core} kernels" for core in sorted(_openblas_cores() - {OPENBLAS_CORE[isa]})]
    wrong += [f"no {name}={value}" for name, value in PINS[isa].items() if os.environ.get(name) != value]
    if wrong:
        raise CpuIsaError(
            f"cpu_isa: {isa}, but this process runs {', '.join(wrong)}: import study (or pipelines) "
            "before torch or numpy run anything, or start it with those variables set; on a CPU "
            "without AVX2 set cpu_isa: native (its numbers are then its own)"
        )


def _check_unpinned(isa: str) -> None:
    """A process whose params ask for another code path must not run under a pin it inherited (a
    parent that pinned its own, say): its numbers would be the pin's, its keys this isa's."""
    inherited = [f"{name}={value}" for pin in PINS.values() for name, value in pin.items()
                 if os.environ.get(name) == value]  # fmt: skip
    if inherited:
        raise CpuIsaError(
            f"cpu_isa: {isa}, but this process runs pinned ({', '.join(inherited)}): start it without "
            "those variables"
        )


def _openblas_cores() -> set[str]:
    """The kernel sets of the OpenBLAS libraries loaded in this process (numpy's, scipy's)."""
    from threadpoolctl import threadpool_info

    return {lib["architecture"] for lib in threadpool_info() if lib.get("internal_api") == "openblas"}
