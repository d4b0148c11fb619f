"""DVC stage ``prepare``: load the configured data set, split it by seed, save it with its hash."""

from __future__ import annotations

from pipelines.common import PREPARED, PREPARED_DATA
from study.artifacts import write_json
from study.cli import run_main
from study.config import load_params
from study.runner import prepare


def main() -> None:
    params = load_params()
    data = prepare(params)
    data.save(PREPARED_DATA)
    write_json(
        PREPARED / "summary.json",
        {
            "name": data.name,
            "fingerprint": data.fingerprint(),
            "classes": len(data.classes),
            "image_shape": list(data.train.images.shape[1:]),
            "train": len(data.train),
            "val": len(data.val),
            "test": len(data.test),
        },
    )
    print(
        f"prepared {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test images"
    )


if __name__ == "__main__":
    run_main(main)
