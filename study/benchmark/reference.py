"""The public reference implementations timed beside ours, imported at run time from a local folder.

``--reference-dir DIR`` (or ``$BNN_REFERENCE_REPOS``) holds checkouts of the repositories, each in a
folder named as the repository: ``DIR/AdamBNN`` (github.com/liuzechun/AdamBNN) and ``DIR/ReCU``
(github.com/z-hXu/ReCU). Nothing of theirs is copied into this project: their model files are
imported from there when the benchmark runs, their sibling imports (``from modules import *``)
resolved in their folder, and removed from ``sys.modules`` afterwards.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from bnn.layers import BinaryConv2d, SignActivation, set_act_std_normalise, set_mode
from study.errors import InputError

ENV = "BNN_REFERENCE_REPOS"


class ReferenceError(InputError):
    """The reference folder lacks a repository, or its model file does not import."""


@dataclass(frozen=True)
class Reference:
    label: str  # the variant's name in the table
    model: str  # our model and weight binarizer it stands beside
    binarizer: str
    repo: str  # the folder in DIR, named as the GitHub repository
    url: str
    root: str  # the folder their imports are relative to (their scripts run from there)
    source: str  # the model file, relative to root
    builder: str  # what in it builds the model (keyword ``num_classes``)
    tau_layer: str | None = None  # ReCU: the layer whose ``tau`` buffer its training loop sets per epoch
    binary_conv: str | None = None  # ReCU: its binary conv, which ``build(..., ours=True)`` swaps for ours


REFERENCES = (
    Reference("AdamBNN reactnet", "reactnet_a", "ste", "AdamBNN", "github.com/liuzechun/AdamBNN",
              "step2", "reactnet.py", "reactnet"),
    Reference("ReCU resnet18_1w1a", "resnet18", "recu", "ReCU", "github.com/z-hXu/ReCU",
              "cifar", "models_cifar/resnet2.py", "resnet18_1w1a", tau_layer="BinarizeConv2d",
              binary_conv="BinarizeConv2d"),
)  # fmt: skip

SKIPPED = (
    f"reference comparison skipped: to time AdamBNN's ReActNet-A and ReCU's resnet18_1w1a beside ours, "
    f"pass --reference-dir DIR (or set {ENV}=DIR) with checkouts of "
    + " and ".join(f"{ref.url} in DIR/{ref.repo}" for ref in REFERENCES)
)


def source_path(folder: Path, ref: Reference) -> Path:
    return folder / ref.repo / ref.root / ref.source


def load(folder: Path) -> dict[Reference, Callable[..., nn.Module]]:
    """Each reference's model builder, imported from ``folder``; :class:`ReferenceError` when one
    is missing or fails to import (before anything is timed)."""
    if not folder.is_dir():
        raise ReferenceError(f"reference folder {folder} does not exist")
    builders = {}
    for ref in REFERENCES:
        path = source_path(folder, ref)
        if not path.is_file():
            wanted = f"a checkout of {ref.url} in {ref.repo}"
            raise ReferenceError(f"{path} not found: {folder} must hold {wanted}")
        module = _import(path, folder / ref.repo / ref.root)
        if not callable(getattr(module, ref.builder, None)):
            raise ReferenceError(f"{path} has no {ref.builder}")
        builders[ref] = _builder(module, ref)
    return builders


def commit(folder: Path, ref: Reference) -> str:
    """The checked-out commit of a reference repository, or ``unknown`` (not a git checkout)."""
    checkout = folder / ref.repo
    if not (checkout / ".git").exists():
        return "unknown"
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def with_our_binary_conv(model: nn.Module, conv_type: type) -> nn.Module:
    """``model`` with every ``conv_type`` (ReCU's ``BinarizeConv2d``: the input divided by its std,
    signed with ReCU's activation gradient; ReCU's weight path; the output times a learnable scale)
    replaced by ours computing the same (tests/bnn/test_layers.py holds them equal): a
    ``SignActivation`` with ``std_normalise`` before a ``BinaryConv2d`` with the ``recu`` binarizer.
    The same network, so a step of each times only the binary layers' code."""
    for parent in list(model.modules()):
        for name, conv in list(parent.named_children()):
            if isinstance(conv, conv_type):
                ours = BinaryConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                                    bias=conv.bias is not None, weight_binarizer="recu")  # fmt: skip
                sign = set_act_std_normalise(SignActivation("approx_sign"), True)
                setattr(parent, name, nn.Sequential(sign, ours))
    return set_mode(model, "binary")


def _builder(module: ModuleType, ref: Reference) -> Callable[..., nn.Module]:
    def build(num_classes: int, tau: float, ours: bool = False) -> nn.Module:
        """Their model; with ``ours``, our binary conv in place of theirs (:func:`with_our_binary_conv`)."""
        model = getattr(module, ref.builder)(num_classes=num_classes)
        if ours:
            return with_our_binary_conv(model, getattr(module, ref.binary_conv))
        if ref.tau_layer is not None:
            layer_type = getattr(module, ref.tau_layer)
            for layer in model.modules():
                if isinstance(layer, layer_type):
                    layer.tau = torch.tensor(tau)
        return model

    return build


def _import(path: Path, root: Path) -> ModuleType:
    """``path`` as a module whose imports resolve in ``root`` first; ReCU's ``utils/options.py``
    parses the command line when imported, so it sees none."""
    root = root.resolve()
    saved_path, saved_argv = list(sys.path), sys.argv
    sys.path.insert(0, str(root))
    sys.argv = sys.argv[:1]
    try:
        spec = importlib.util.spec_from_file_location(f"_reference_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        raise ReferenceError(f"{path} does not import: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path[:] = saved_path
        sys.argv = saved_argv
        for name, imported in list(sys.modules.items()):
            if root in Path(getattr(imported, "__file__", None) or "/").resolve().parents:
                del sys.modules[name]
    return module
