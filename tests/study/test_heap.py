"""A process that imports ``study`` reuses freed memory for large tensors, unless its user tunes malloc."""

import os
import subprocess
import sys

import pytest

from study.paths import PROJECT_ROOT

PAGES = 16384  # a 64 MiB tensor in 4 KiB pages
FAULTS = """
import study, resource, torch
torch.ones(1 << 25)  # 128 MiB, freed at once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(1 << 24)  # 64 MiB
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(("users", "reused"), [({}, True), ({"MALLOC_MMAP_MAX_": "65536"}, False)])
def test_a_large_tensor_reuses_freed_memory_unless_the_user_tunes_malloc(users, reused):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", FAULTS], cwd=PROJECT_ROOT, env={**env, **users},
                          capture_output=True, text=True, check=True)  # fmt: skip
    faults = int(done.stdout.split()[-1])
    assert (faults < PAGES / 10) if reused else (faults >= PAGES), faults
