"""The export wing: the trained binary network as a 1-bit file, and the proof that it is the same network.

``python -m study.export SOURCE`` (:mod:`study.export.__main__`). Which weights and settings a source
names (:mod:`~study.export.source`), sign bits and folding (:mod:`~study.export.payload`), the file
(:mod:`~study.export.format`), the inference network rebuilt from it (:mod:`~study.export.inference`),
the export and its check (:mod:`~study.export.exporter`, :mod:`~study.export.verify`), ONNX
(:mod:`~study.export.onnx`), and the size and operation counts of every model
(``python -m study.export.summary``). This package imports the core and ``bnn``, never another wing.
"""
