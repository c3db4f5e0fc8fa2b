"""Benchmarks behind ``make bench`` / ``make bench-gpu``: latency of the pooling modules, evaluation (scoring)
speed against the official per-caption strategy, and a one-shot GPU check. The scripts under ``scripts/`` are
thin shells over these modules; :mod:`temde.bench.timing` says how every figure is measured."""
