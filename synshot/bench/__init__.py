"""Benchmarks: each module ``synshot.bench.<area>`` exposes ``run(quick: bool) -> dict``.

``synshot bench`` runs them all and writes ``results/bench.json`` plus a table.
Benchmarks measure; tests check correctness. No test asserts on a timing.
"""

AREAS = ("data", "render", "model", "train", "invert", "track", "small", "scale", "view")
