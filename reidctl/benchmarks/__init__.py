"""Goal measurements, run as scripts: ``python -m reidctl.benchmarks.<name>``.

Each module measures one figure the documentation quotes (INT8 speed-up and accuracy,
``reidctl infer`` overhead, preprocessing, evaluation, re-ranking and local-distance speed,
FAISS search at scale, Ray scaling, ``reidctl bench``'s run-to-run stability) by calling
reidctl's public library only; its ``main`` is a small argparse parser that prints the table.
They are not part of the ``reidctl`` command line and hold no logic of their own beyond the
measurement.

They ship in the wheel (``[tool.setuptools.packages.find] include = ["reidctl*"]``): the
docs give each figure with the ``python -m reidctl.benchmarks...`` command that reproduces
it, and that command has to work on an installed reidctl, on the machine being measured,
not only in a source checkout. They cost a few tens of kilobytes and import nothing
optional at module import (faiss, Ray, onnxruntime load inside ``main``).
"""
