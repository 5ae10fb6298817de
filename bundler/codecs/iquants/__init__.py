"""Kernels of the i-quants bundler encodes: IQ4_NL and IQ4_XS (`iq4`), IQ3_XXS and IQ3_S
(`iq3`, on the lattices of `grid4`), IQ2_XXS, IQ2_XS and IQ2_S (`iq2`) and IQ1_S and IQ1_M
(`iq1`), on the grids of `grid8`,
byte-exact with ggml's `quantize_<type>` with or without
an importance matrix (one weight per column, ggml's `quant_weights`), and their decoders.

Importing this table loads no compiler: each kernel is a `Compiled` reference, run from its
native entry when it has one."""

from __future__ import annotations

import functools

import numpy as np

from bundler.codecs.facts import BY_NAME
from bundler.codecs.halftable import HALF_TO_F32
from bundler.codecs.iquants import grid4, grid8, kinds
from bundler.codecs.iquants.grid_points import POINTS_HEX
from bundler.codecs.kernels import Compiled, Kernel, range_kernel, split_run

_PACKAGE = "bundler.codecs.iquants"


def _compiled(module: str, function: str, *factory_args) -> Compiled:
    return Compiled(f"{_PACKAGE}.{module}", function, *factory_args)


def _kernel(name: str, encoder, decoder, *decode_args) -> Kernel:
    facts = BY_NAME[name]
    return range_kernel(
        encoder, decoder, facts.block_size, facts.type_size, HALF_TO_F32, *decode_args
    )


def _lattice_kernel(name: str, encoder, tables, decoder, *decode_args) -> Kernel:
    """The kernel of a lattice type: `encoder(src, dst, weights, n, lo, hi, *tables())`
    over the search tables (built on first use), each thread's range returning its count
    of non-finite blocks or -(1 + block) of its first block the C library aborts on; the
    first such block of all is refused (as -(1 + its first value))."""
    none = np.empty(0, np.float32)
    block = BY_NAME[name].block_size

    def encode(src: np.ndarray, dst: np.ndarray, importance: np.ndarray | None = None) -> int:
        search = tables()
        flat, out = src.reshape(-1), dst.reshape(-1)
        weights = none if importance is None else importance
        aborts: list[int] = []

        def run(lo: int, hi: int) -> int:
            found = encoder(flat, out, weights, src.shape[-1], lo, hi, *search)
            if found < 0:
                aborts.append(-found - 1)
                return 0
            return found

        bad = split_run(run, flat.size // block)
        return -(1 + min(aborts) * block) if aborts else bad

    return _kernel(name, None, decoder, *decode_args)._replace(encode=encode)


def _grid4(name: str):
    return lambda: grid4.lattice(grid4.SIZE[name])


def _grid8(name: str):
    def tables():
        g = grid8.grid(name)
        levels = (g.lattice.astype(np.int32) - 1) // 2
        return levels, grid8.X_P[levels], grid8.X_M[levels], g.kmap, g.neighbours

    return tables


def _grid8_values(name: str) -> np.ndarray:
    """The decoded values of a grid8 type's points, without building its search tables."""
    params = grid8.PARAMS[name]
    points = np.frombuffer(bytes.fromhex(POINTS_HEX[params.size]), "<u2")
    return np.asarray(params.levels, np.float32)[grid8.levels_of(points)]


def _grid8_iq2(name: str):
    @functools.cache
    def tables():
        g = grid8.grid(name)
        levels = (g.lattice.astype(np.int32) - 1) // 2
        values = g.lattice.astype(np.float32)
        return values, grid8.transposed(g.neighbours, values), levels, g.kmap, g.neighbours

    return tables


KERNELS: dict[str, Kernel] = {
    "iq4_nl": _kernel("iq4_nl", _compiled("iq4", "encode_nl"), _compiled("iq4", "decode_nl")),
    "iq4_xs": _kernel("iq4_xs", _compiled("iq4", "encode_xs"), _compiled("iq4", "decode_xs")),
    "iq3_xxs": _lattice_kernel(
        "iq3_xxs",
        functools.partial(_compiled("iq3", "encode"), kinds.IQ3_XXS),
        _grid4("iq3_xxs"),
        _compiled("iq3", "decode_xxs"),
        grid4.decoded("iq3_xxs"),
        grid4.SIGNS,
    ),
    "iq3_s": _lattice_kernel(
        "iq3_s",
        functools.partial(_compiled("iq3", "encode"), kinds.IQ3_S),
        _grid4("iq3_s"),
        _compiled("iq3", "decode_s"),
        grid4.decoded("iq3_s"),
    ),
    **{
        name: _lattice_kernel(
            name,
            functools.partial(_compiled("iq1", "encode"), kind),
            _grid8(name),
            _compiled("iq1", "decode"),
            _grid8_values(name),
            kind,
        )
        for name, kind in (("iq1_s", kinds.IQ1_S), ("iq1_m", kinds.IQ1_M))
    },
    **{
        name: _lattice_kernel(
            name,
            _compiled("iq2", "encoder", name),
            _grid8_iq2(name),
            _compiled("iq2", "decoder", name),
            _grid8_values(name),
        )
        for name in kinds.IQ2
    },
}
