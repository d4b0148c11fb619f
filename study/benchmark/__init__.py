"""The training-step benchmark: what the diagnostics and binarization cost per step, per model.

``python -m study.benchmark`` (:mod:`study.benchmark.__main__`) times the step of
``bnn.train_stage`` (:mod:`~study.benchmark.step`, a replica held to the original by the tests) for
every registered model at a small size and both weight binarizers, real-valued, binary, and binary
with every diagnostic (:mod:`~study.benchmark.variants`), optionally beside the public reference
implementations (:mod:`~study.benchmark.reference`), in interleaved rounds
(:mod:`~study.benchmark.timing`), and writes the table the README's bench-step block is generated
from (:mod:`~study.benchmark.report`).
"""
