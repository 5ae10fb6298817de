"""Reference material outside this project for tests and CI: the ggml C library and
llama.cpp's llama-quantize built from the llama-cpp-python sources, run as independent
oracles (`python -m tools.reference.ggml_c`, `python -m tools.reference.llama_quantize`)."""
