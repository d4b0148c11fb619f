"""The reproduction wing: AdamBNN's claims tested by ablations over seeds, with honest statistics.

``python -m study.reproduce ablate NAME`` trains an ablation's cells (:mod:`~study.reproduce.ablate`)
and ``python -m study.reproduce report`` tests the claims (:mod:`~study.reproduce.claims`, with
:mod:`~study.reproduce.stats`) and writes the report from its template
(:mod:`~study.reproduce.report`, ``templates/``). This package imports the core and ``bnn``, never
another wing.
"""
