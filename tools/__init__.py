"""The top layer: the command lines, benchmarks, load generation, test harnesses and the
offline evaluation of the live pipeline (prequential replay, top-N, quality report).

Everything here may import every layer below (stream, models, features, infra) and
nothing below imports it; the layers contract in pyproject.toml checks both.
"""
