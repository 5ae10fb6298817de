"""Reference material outside this project: real model files from the package index and the
C library of ggml, used by tests and benchmarks as independent oracles."""
