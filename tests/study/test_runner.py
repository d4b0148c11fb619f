"""study.runner: the two-stage run is bit-identical for a seed, whatever the process or its threads."""

from __future__ import annotations

import json

import torch
import torch.multiprocessing as mp

from study.config import DEFAULT_PARAMS, load_params
from study.runner import prepare, run_stage1, run_stage2


def tiny_params():
    return load_params(DEFAULT_PARAMS).with_overrides(
        {
            "seed": 3,
            "threads": 1,
            "data.name": "digits",
            "model.width": 32,
            "stage1.epochs": 2,
            "stage2.epochs": 2,
        }
    )


def two_stage_history(threads_before: int) -> list[dict]:
    """Both stages' per-epoch records, after setting torch's threads to something else first."""
    torch.set_num_threads(threads_before)
    params = tiny_params()
    data = prepare(params)
    stage1 = run_stage1(params, data)
    stage2 = run_stage2(params, data, stage1.model.state_dict(), stage1.result.init_signs)
    return stage1.result.history + stage2.result.history


def test_same_seed_is_bit_identical_across_processes_and_inherited_thread_counts():
    here = two_stage_history(threads_before=2)
    with mp.get_context("spawn").Pool(1) as pool:
        other = pool.apply(two_stage_history, (1,))
    # Exact equality of every float, not approximate (as text: NaN, an undefined measure, is not == NaN).
    assert json.dumps(here) == json.dumps(other)
    assert torch.get_num_threads() == tiny_params().threads  # the run fixed the thread count itself
