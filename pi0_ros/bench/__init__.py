"""Benchmarks (`pi0-ros bench ...`). Each submodule offers `add_arguments(parser)` and `run(args)`."""
