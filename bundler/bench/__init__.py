"""Benchmarks: this project beside the reference implementations, in one run."""
