"""Training-step benchmark: the cost of the diagnostics and of binarization, measured side by side.

    python -m study.benchmark                 # the default model of params.yaml
    python -m study.benchmark --model mlp --width 256 --steps 200

Prints the median time of one training step (forward, backward, optimizer step) for

- the stage-2 binary model with the FF tracker over the same without it (target <= 1.05), and
- the stage-2 binary model over the same model real-valued (target <= 1.3),

alternating the variants in rounds so drift on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bnn import SignTracker, build_model, create_optimizer, set_mode
from study.config import load_params


def step_timer(model: torch.nn.Module, mode: str, track: bool, x: torch.Tensor, y: torch.Tensor):
    set_mode(model, mode)
    optimizer = create_optimizer(model, "adam", lr=1e-3, weight_decay=5e-6)
    tracker = SignTracker(model) if track else None

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        loss.item()  # the training loop reads the loss every step (NaN check)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if tracker is not None:
            tracker.step()

    return step


def measure(steps: dict, rounds: int, per_round: int) -> dict[str, float]:
    for step in steps.values():  # warm-up
        for _ in range(5):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            samples[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    params = load_params()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=params.model.name)
    parser.add_argument("--width", type=int, default=params.model.width)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=params.stage2.batch_size)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per round and variant")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    def fresh():
        return build_model(
            args.model,
            num_classes=10,
            in_channels=args.channels,
            image_size=args.image_size,
            width=args.width,
            **params.model.options if args.model == params.model.name else {},
        )

    x = torch.randn(args.batch_size, args.channels, args.image_size, args.image_size)
    y = torch.randint(0, 10, (args.batch_size,))
    steps = {
        "binary + diagnostics": step_timer(fresh(), "binary", True, x, y),
        "binary": step_timer(fresh(), "binary", False, x, y),
        "real-valued": step_timer(fresh(), "real", False, x, y),
    }
    times = measure(steps, args.rounds, args.steps)
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {args.image_size}x{args.image_size}x"
        f"{args.channels}, {args.threads} threads; median step time over {args.rounds} rounds"
    )
    for name, seconds in times.items():
        print(f"  {name:22s} {seconds * 1e3:8.2f} ms  ({args.batch_size / seconds:8.0f} img/s)")
    print(f"diagnostics overhead  {times['binary + diagnostics'] / times['binary']:.3f}  (target <= 1.05)")
    print(f"binary / real-valued  {times['binary'] / times['real-valued']:.3f}  (target <= 1.3)")


if __name__ == "__main__":
    main()
