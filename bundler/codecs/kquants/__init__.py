"""Kernels of the K-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K (256-value super-blocks).

Encoders reproduce ggml's reference quantizers (`quantize_row_<type>_ref`, no importance
matrix) and, given importance weights, its weighted ones (`quantize_<type>` with
`quant_weights`) byte for byte: every step is float32 arithmetic in the reference's order, without
fused multiply-add, and codes are rounded with ggml's `nearest_int` (add 1.5 * 2^23, read the
mantissa: round half to even). Facts and search parameters are those of the reference notes
(shared K-quant section); the layouts are in `facts.py` and ggml's `ggml-common.h`.

The modules, one job each: `common` (constants, rounding, packed-scale readers), `search`
(the per-sub-block searches, run on LANES sub-blocks at once so that the compiler
vectorises across sub-blocks while each still sees exactly the reference's sequence of
operations), `workspace` (a worker's scratch and the steps every encoder shares), `blocks`
(each type's search parameters, header and packing), `encode` and `decode` (kernels over
ranges of super-blocks, one compiled per type), `kernels` (the registry's table of them).
Each type's kernels compile on its first use only; importing the package loads none of
them (the legacy codecs share `common`, `search` and `workspace`).
"""
