"""Which variant of its family's shared kernel each i-quant type is: the first argument of
the IQ1 and IQ3 kernels, the key of the IQ2 kernel factories. Importing it loads no
compiler (the registry's kernel table names the kernels through it)."""

from __future__ import annotations

#: IQ3 kernels' `kind`.
IQ3_XXS, IQ3_S = 0, 1
#: IQ1 kernels' `kind`.
IQ1_S, IQ1_M = 0, 1
#: IQ2 kernels' `kind`, by type.
IQ2 = {"iq2_xxs": 0, "iq2_xs": 1, "iq2_s": 2}
