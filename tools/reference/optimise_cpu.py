"""A compiler launcher for the llama-imatrix build: runs the compiler command it is given,
with -O2 in place of -O0 when the file compiled belongs to ggml's CPU back-end (the code
that runs the model), so only that part of the C++ is optimised."""

from __future__ import annotations

import os
import sys

#: Path part of the sources compiled at -O2.
OPTIMISED = f"{os.sep}ggml-cpu{os.sep}"


def command(argv: list[str]) -> list[str]:
    """`argv` (compiler and arguments) with -O0 raised to -O2 for a CPU back-end source."""
    if any(OPTIMISED in a and a.endswith((".cpp", ".c")) for a in argv):
        return ["-O2" if a == "-O0" else a for a in argv]
    return argv


if __name__ == "__main__":
    cmd = command(sys.argv[1:])
    os.execvp(cmd[0], cmd)
