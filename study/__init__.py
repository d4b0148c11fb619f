"""Orchestration of bnn-study: config, runs, tracking, search and ablations.

Importing ``study`` pins the CPU code path that torch, MKL and oneDNN will take (``cpu_isa`` of the
command's ``--params`` file, else of the project's params.yaml, :mod:`study.cpu_isa`); it must
happen before torch loads, so it happens here, as does keeping freed memory for the next
training step (:mod:`study.heap`).
"""

import sys as _sys

from study import cpu_isa as _cpu_isa
from study import heap as _heap
from study.paths import PROJECT_ROOT as _PROJECT_ROOT

_cpu_isa.pin(_cpu_isa.configured(_cpu_isa.params_file(_sys.argv, _PROJECT_ROOT / "params.yaml")))
_heap.keep_freed_memory()
