"""Each weight tensor's sensitivity estimated from the model's own weights, for a size
target without an importance matrix (bundler.plan.target, step 3).

A size target minimises `sum_t s_t * sum_ij w_j (W_ij - Q(W)_ij)^2`. With an importance
matrix, `w_j` is the measured mean squared activation entering column j. Without one, this
module derives both `w` and `s` from the weights of a llama-style decoder (blocks of
RMSNorm -> attention -> residual add, RMSNorm -> SwiGLU feed-forward -> residual add; GGUF
tensor names `blk.N.attn_q.weight` ...) by propagating second moments through the network
under one assumption: the output of every RMSNorm, before its gain, has unit mean square in
every coordinate (what RMSNorm makes true of the average over coordinates), and
coordinates are uncorrelated.

Column weights (the mean squared input of each column, what an importance row holds):

- attn_q/k/v take `g_a * x` (`g_a` the block's attn_norm gain): `w_j = g_a,j^2`;
  ffn_gate/up take `g_f * x`: `w_j = g_f,j^2`; the output matrix takes `g_o * x`
  (output_norm): `w_j = g_o,j^2`.
- attn_output takes the attention's mix of value rows; each value coordinate has mean
  square `E[v_i^2] = sum_j W_v[i,j]^2 g_a,j^2` and a query head reads the value head of its
  group (grouped-query attention): `w_c = E[v_kv(c)^2]` (attention taken as preserving the
  scale of the values it mixes: the upper bound, reached by a head attending to one token).
- ffn_down takes `silu(z_g) * z_u` with `z_g`, `z_u` the gate's and up's outputs, taken as
  independent Gaussians of variances `s_g,i^2 = sum_j W_g[i,j]^2 g_f,j^2` (and `s_u,i^2`
  from W_u): `w_i = E[silu(z_g)^2] s_u,i^2`, the expectation by Gauss-Hermite quadrature.

With these, `sum_ij w_j dW_ij^2` is the expected squared error of the tensor's output. The
per-tensor factor `s_t` carries that output error to one common place, the logits:

- attn_output and ffn_down write the residual stream; an error `d` there reaches the logits
  through the final RMSNorm and the output matrix as `W_out (g_o * d) / rms(r_L)`, so
  `s = c_res = mean_j(g_o,j^2 * ||W_out[:,j]||^2) / rms(r_L)^2`, `rms(r_L)^2` the final
  residual's mean square, propagated as the token embedding's mean square plus every
  block's output mean square (`sum_c ||W_o[i,c]||^2 w_c`, averaged over i, and likewise
  for ffn_down).
- attn_v: an error in value row i reaches the residual through the attn_output columns of
  the query heads reading it: `s = c_res * mean_i sum_{c in heads(i)} ||W_o[:,c]||^2`.
- ffn_up: `dh_i = silu(z_g,i) dz_u,i`: `s = c_res * mean_i E[silu(z_g,i)^2] ||W_d[:,i]||^2`;
  ffn_gate: `dh_i = silu'(z_g,i) z_u,i dz_g,i`: `s = c_res * mean_i E[silu'(z_g,i)^2]
  s_u,i^2 ||W_d[:,i]||^2`.
- attn_q/k: a query error changes the scores `q.k / sqrt(d_head)` by `dq.k / sqrt(d_head)`,
  which moves the head's output by the score change times the spread of the values it
  mixes (taken as their mean square): `s = c_res * mean over the head's rows of
  E[k_t^2] / d_head * sum_{c in head} E[v_c^2] ||W_o[:,c]||^2`, and for a key row the same
  summed over the query heads of its group with `E[q_t^2]`.
- The output matrix's error is a logit error: `s = 1`. A token embedding row is added to
  the residual when its token is read: `w_j = c_res / n_vocab` (tokens taken as equally
  frequent), plus `g_o,j^2` when the embedding is also the output matrix (no
  output.weight).

Tensors this does not recognise (another architecture, other names) keep `w = 1`, `s = 1`
scaled like the rest (`Sensitivity.covered` says which were estimated).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from bundler.bundle import Bundle, Tensor
from bundler.plan.curves import float_rows
from bundler.plan.model import model_info

#: Gauss-Hermite nodes for expectations over a standard normal.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
#: Rows of the token embedding / output matrix read at once.
_CHUNK_ROWS = 4096
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


@dataclass
class Sensitivity:
    """Per-column weights and per-tensor factors of the tensors estimated."""

    column_weights: dict[str, np.ndarray] = field(default_factory=dict)
    factors: dict[str, float] = field(default_factory=dict)

    @property
    def covered(self) -> list[str]:
        return sorted(self.column_weights)


def _silu_moments(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[silu(z)^2] and E[silu'(z)^2] for z ~ N(0, sigma^2), elementwise."""
    z = np.asarray(sigma, np.float64)[:, None] * _NODES[None, :]
    s = 1.0 / (1.0 + np.exp(-z))
    silu = z * s
    dsilu = s * (1.0 + z * (1.0 - s))
    return (silu**2) @ _WEIGHTS, (dsilu**2) @ _WEIGHTS


def _squares(t: Tensor) -> np.ndarray:
    """The tensor's values squared, as float32 rows."""
    return np.square(float_rows(t, None))


def _vector(t: Tensor) -> np.ndarray:
    return float_rows(t, None).astype(np.float64).reshape(-1)


def _column_energy(t: Tensor) -> np.ndarray:
    """sum_i W[i,j]^2, read in chunks of rows."""
    n = t.shape[-1]
    rows = t.n_values // n
    total = np.zeros(n)
    for start in range(0, rows, _CHUNK_ROWS):
        pick = np.arange(start, min(rows, start + _CHUNK_ROWS))
        total += np.square(float_rows(t, pick)).sum(axis=0, dtype=np.float64)
    return total


def estimate(bundle: Bundle) -> Sensitivity:
    """The data-free sensitivity of `bundle`'s weights (module docstring); empty when the
    model is not a llama-style decoder this recognises."""
    tensors = bundle.tensors
    hp = model_info(bundle).hparams
    blocks: dict[int, dict[str, Tensor]] = {}
    for name, t in tensors.items():
        found = _BLOCK.match(name)
        if found:
            blocks.setdefault(int(found.group(1)), {})[found.group(2)] = t
    need = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
            "ffn_up", "ffn_down")  # fmt: skip
    out_norm = tensors.get("output_norm.weight")
    embed = tensors.get("token_embd.weight")
    output = tensors.get("output.weight", embed)
    if (
        not blocks
        or any(any(k not in b for k in need) for b in blocks.values())
        or out_norm is None
        or embed is None
        or hp.n_head <= 0
        or hp.n_head_kv <= 0
        or hp.n_head % hp.n_head_kv
    ):
        return Sensitivity()
    g_out = _vector(out_norm)
    d_model = g_out.size
    d_head = d_model // hp.n_head
    group = hp.n_head // hp.n_head_kv

    columns: dict[str, np.ndarray] = {}
    rows: dict[str, float] = {}  # mean row factor, before c_res
    embed_energy = _column_energy(embed)
    residual = float(np.mean(embed_energy)) / (embed.n_values // d_model)
    for i in sorted(blocks):
        b = blocks[i]
        g_a, g_f = _vector(b["attn_norm"]) ** 2, _vector(b["ffn_norm"]) ** 2
        sq, sk, sv, so = (_squares(b[k]) for k in ("attn_q", "attn_k", "attn_v", "attn_output"))
        q2, k2, v2 = (w @ g_a for w in (sq, sk, sv))
        # attn_output column c reads value coordinate kv(c) of its query head's group
        c = np.arange(so.shape[1])
        kv = (c // d_head // group) * d_head + c % d_head
        a2 = v2[kv]
        wo_cols = so.sum(axis=0, dtype=np.float64)
        for k in ("attn_q", "attn_k", "attn_v"):
            columns[_name(i, k)] = g_a
        columns[_name(i, "attn_output")] = a2
        rows[_name(i, "attn_output")] = 1.0
        # value row r reaches the residual through the columns c with kv(c) == r
        rows[_name(i, "attn_v")] = float(np.mean(np.bincount(kv, wo_cols, minlength=v2.size)))
        head_out = (a2 * wo_cols).reshape(hp.n_head, d_head).sum(axis=1)  # per query head
        k_head = k2.reshape(hp.n_head_kv, d_head)
        q_rows = k_head[np.arange(hp.n_head) // group] / d_head * head_out[:, None]
        rows[_name(i, "attn_q")] = float(np.mean(q_rows))
        q_head = q2.reshape(hp.n_head, d_head) / d_head * head_out[:, None]
        rows[_name(i, "attn_k")] = float(
            np.mean(q_head.reshape(hp.n_head_kv, group, d_head).sum(1))
        )
        sg, su, sd = (_squares(b[k]) for k in ("ffn_gate", "ffn_up", "ffn_down"))
        sg2, su2 = sg @ g_f, su @ g_f
        silu2, dsilu2 = _silu_moments(np.sqrt(sg2))
        h2 = silu2 * su2
        wd_cols = sd.sum(axis=0, dtype=np.float64)
        for k in ("ffn_gate", "ffn_up"):
            columns[_name(i, k)] = g_f
        columns[_name(i, "ffn_down")] = h2
        rows[_name(i, "ffn_down")] = 1.0
        rows[_name(i, "ffn_up")] = float(np.mean(silu2 * wd_cols))
        rows[_name(i, "ffn_gate")] = float(np.mean(dsilu2 * su2 * wd_cols))
        residual += float(np.mean(so @ a2)) + float(np.mean(sd @ h2))
    out_energy = embed_energy if output is embed else _column_energy(output)
    c_res = float(np.mean(g_out**2 * out_energy)) / residual
    sens = Sensitivity(columns, {n: c_res * r for n, r in rows.items()})
    n_vocab = embed.n_values // d_model
    embed_w = np.full(d_model, c_res / n_vocab)
    if output is embed:
        embed_w = embed_w + g_out**2
    else:
        sens.column_weights[output.name] = g_out**2
        sens.factors[output.name] = 1.0
    sens.column_weights[embed.name] = embed_w
    sens.factors[embed.name] = 1.0
    if not all(math.isfinite(f) and f >= 0 for f in sens.factors.values()):
        return Sensitivity()
    return sens


def _name(block: int, kind: str) -> str:
    return f"blk.{block}.{kind}.weight"
