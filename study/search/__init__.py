"""The search wing: an Optuna study over each stage's optimizer, learning rate and weight decay.

``python -m study.search`` (:mod:`study.search.__main__`). What a search run is
(:mod:`~study.search.run`), the study and its worker loop (:mod:`~study.search.optimize`), one trial
(:mod:`~study.search.trial`), the stage-1 candidates trials share (:mod:`~study.search.candidates`),
sampling the space (:mod:`~study.search.sampling`), the summary (:mod:`~study.search.summary`), and
the throughput benchmark against a plain Optuna loop (:mod:`~study.search.plain`,
:mod:`~study.search.bench`, :mod:`~study.search.throughput`). The Optuna storage is the core's
:mod:`study.storage` (the ablations' cells share it). This package imports the core (``study.*``
modules) and ``bnn``, never another wing.
"""
