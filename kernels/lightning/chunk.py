"""Chunked Lightning attention in Triton, forward and backward, for training and prefill.

Shape legend:
    B batch, T sequence length, H heads, K query/key head dim, V value head dim
    BT chunk length, NT = ceil(T / BT) chunks, BK / BV tile widths along K / V
    q, k [B, T, H, K]; v, o [B, T, H, V]; g [H] (negative log-decay, λ = exp(g))
    h, dh [B, NT, H, K, V]; initial/final state and their grads [B, H, K, V] in fp32

Within chunk n (local index i, valid length L ≤ BT), with h_n the state entering the chunk:
    o_i       = scale · ( λ^(i+1) q_i h_n + Σ_{j≤i} λ^(i-j) (q_i·k_j) v_j )
    h_{n+1}   = λ^L h_n + Σ_j λ^(L-1-j) k_jᵀ v_j
Backward, with dh_n the gradient of the state leaving chunk n:
    dh_{n-1}  = λ^L dh_n + scale · Σ_i λ^(i+1) q_iᵀ do_i
    dq_i      = scale · ( λ^(i+1) do_i h_nᵀ + Σ_{j≤i} λ^(i-j) (do_i·v_j) k_j )
    dk_j      = λ^(L-1-j) v_j dh_nᵀ + scale · Σ_{i≥j} λ^(i-j) (do_i·v_j) q_i
    dv_j      = λ^(L-1-j) k_j dh_n  + scale · Σ_{i≥j} λ^(i-j) (q_i·k_j) do_i
Every decay is exp of a non-positive number; entries that would need a positive exponent (i < j, or
rows past the end of the last chunk) are masked before the exp, because exp(+|g|·BT) overflows fp32 for
fast-decaying heads and inf · 0 is NaN.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.lightning.inputs import check_inputs

DEFAULT_CHUNK_SIZE = 64


@triton.jit
def _tile(r0, c0, R, C, stride_r, stride_c, BR: tl.constexpr, BC: tl.constexpr):
    """Element offsets and in-bounds mask of the [BR, BC] tile at (r0, c0) of an [R, C] matrix; a
    transposed view is the same call with the strides swapped. Tensors of one layout share the offsets."""
    o_r = r0 + tl.arange(0, BR)
    o_c = c0 + tl.arange(0, BC)
    offsets = o_r[:, None] * stride_r + o_c[None, :] * stride_c
    mask = (o_r[:, None] < R) & (o_c[None, :] < C)
    return offsets, mask


@triton.jit
def _chunk_fwd_h_kernel(
    k,
    v,
    g,
    h,
    h0,
    ht,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
):
    # grid (ceil(K/BK), ceil(V/BV), B*H): one [BK, BV] tile of one head's state, walked over the chunks.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NT = tl.cdiv(T, BT)
    k += (i_b * T * H + i_h) * K
    v += (i_b * T * H + i_h) * V
    b_g = tl.load(g + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)

    o_h, m_h = _tile(i_k * BK, i_v * BV, K, V, V, 1, BK, BV)
    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_bh * K * V + o_h, mask=m_h, other=0.0).to(tl.float32)

    for i_t in range(NT):
        tl.store(h + ((i_b * NT + i_t) * H + i_h) * K * V + o_h, b_h.to(h.dtype.element_ty), mask=m_h)
        # k read transposed, [BK, BT], so the update is one [BK, BT] x [BT, BV] product.
        o_kT, m_kT = _tile(i_k * BK, i_t * BT, K, T, 1, H * K, BK, BT)
        o_v, m_v = _tile(i_t * BT, i_v * BV, T, V, H * V, 1, BT, BV)
        b_kT = tl.load(k + o_kT, mask=m_kT, other=0.0)  # [BK, BT]
        b_v = tl.load(v + o_v, mask=m_v, other=0.0)  # [BT, BV]
        L = tl.minimum(BT, T - i_t * BT)
        b_wk = tl.exp(tl.where(o_t < L, b_g * (L - 1 - o_t), float("-inf")))  # [BT]
        b_h = b_h * tl.exp(b_g * L) + tl.dot((b_kT * b_wk[None, :]).to(b_v.dtype), b_v)

    if STORE_FINAL_STATE:
        tl.store(ht + i_bh * K * V + o_h, b_h.to(ht.dtype.element_ty), mask=m_h)


@triton.jit
def _chunk_fwd_o_kernel(
    q,
    k,
    v,
    h,
    g,
    o,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
):
    # grid (ceil(V/BV), NT, B*H): one [BT, BV] tile of the output; chunks are independent given h.
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NT = tl.cdiv(T, BT)
    q += (i_b * T * H + i_h) * K
    k += (i_b * T * H + i_h) * K
    v += (i_b * T * H + i_h) * V
    o += (i_b * T * H + i_h) * V
    h += ((i_b * NT + i_t) * H + i_h) * K * V
    b_g = tl.load(g + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)

    b_o = tl.zeros([BT, BV], dtype=tl.float32)  # [BT, BV] inter-chunk part
    b_A = tl.zeros([BT, BT], dtype=tl.float32)  # [BT, BT] q_i·k_j
    for i_k in range(tl.cdiv(K, BK)):
        o_q, m_q = _tile(i_t * BT, i_k * BK, T, K, H * K, 1, BT, BK)
        o_kT, m_kT = _tile(i_k * BK, i_t * BT, K, T, 1, H * K, BK, BT)
        o_h, m_h = _tile(i_k * BK, i_v * BV, K, V, V, 1, BK, BV)
        b_q = tl.load(q + o_q, mask=m_q, other=0.0)  # [BT, BK]
        b_kT = tl.load(k + o_kT, mask=m_kT, other=0.0)  # [BK, BT]
        b_h = tl.load(h + o_h, mask=m_h, other=0.0)  # [BK, BV]
        b_o += tl.dot(b_q, b_h.to(b_q.dtype))
        b_A += tl.dot(b_q, b_kT)

    o_v, m_v = _tile(i_t * BT, i_v * BV, T, V, H * V, 1, BT, BV)
    b_v = tl.load(v + o_v, mask=m_v, other=0.0)  # [BT, BV]
    b_o = b_o * tl.exp(b_g * (o_t + 1))[:, None]
    diff = o_t[:, None] - o_t[None, :]
    b_A = b_A * tl.exp(tl.where(diff >= 0, b_g * diff, float("-inf")))
    b_o += tl.dot(b_A.to(b_v.dtype), b_v)
    tl.store(o + o_v, (b_o * scale).to(o.dtype.element_ty), mask=m_v)


@triton.jit
def _chunk_bwd_dh_kernel(
    q,
    do,
    g,
    dh,
    dht,
    dh0,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr,
    STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
):
    # grid (ceil(K/BK), ceil(V/BV), B*H): the state gradient tile, walked from the last chunk back.
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NT = tl.cdiv(T, BT)
    q += (i_b * T * H + i_h) * K
    do += (i_b * T * H + i_h) * V
    b_g = tl.load(g + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)

    o_dh, m_dh = _tile(i_k * BK, i_v * BV, K, V, V, 1, BK, BV)
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + i_bh * K * V + o_dh, mask=m_dh, other=0.0).to(tl.float32)

    for i_r in range(NT):
        i_t = NT - 1 - i_r
        tl.store(dh + ((i_b * NT + i_t) * H + i_h) * K * V + o_dh, b_dh.to(dh.dtype.element_ty), mask=m_dh)
        o_qT, m_qT = _tile(i_k * BK, i_t * BT, K, T, 1, H * K, BK, BT)
        o_do, m_do = _tile(i_t * BT, i_v * BV, T, V, H * V, 1, BT, BV)
        b_qT = tl.load(q + o_qT, mask=m_qT, other=0.0)  # [BK, BT]
        b_do = tl.load(do + o_do, mask=m_do, other=0.0)  # [BT, BV]
        L = tl.minimum(BT, T - i_t * BT)
        b_wq = tl.exp(b_g * (o_t + 1)) * scale  # [BT]
        b_dh = b_dh * tl.exp(b_g * L) + tl.dot((b_qT * b_wq[None, :]).to(b_do.dtype), b_do)

    if STORE_INITIAL_STATE_GRADIENT:
        tl.store(dh0 + i_bh * K * V + o_dh, b_dh.to(dh0.dtype.element_ty), mask=m_dh)


@triton.jit
def _chunk_bwd_dv_kernel(
    q,
    k,
    do,
    dh,
    g,
    dv,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
):
    # grid (ceil(V/BV), NT, B*H): one [BT, BV] tile of dv.
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NT = tl.cdiv(T, BT)
    q += (i_b * T * H + i_h) * K
    k += (i_b * T * H + i_h) * K
    do += (i_b * T * H + i_h) * V
    dv += (i_b * T * H + i_h) * V
    dh += ((i_b * NT + i_t) * H + i_h) * K * V
    b_g = tl.load(g + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)

    b_dv = tl.zeros([BT, BV], dtype=tl.float32)  # [BT, BV] state part
    b_At = tl.zeros([BT, BT], dtype=tl.float32)  # [BT, BT] row j, column i: k_j·q_i
    for i_k in range(tl.cdiv(K, BK)):
        o_k, m_k = _tile(i_t * BT, i_k * BK, T, K, H * K, 1, BT, BK)
        o_qT, m_qT = _tile(i_k * BK, i_t * BT, K, T, 1, H * K, BK, BT)
        o_dh, m_dh = _tile(i_k * BK, i_v * BV, K, V, V, 1, BK, BV)
        b_k = tl.load(k + o_k, mask=m_k, other=0.0)  # [BT, BK]
        b_qT = tl.load(q + o_qT, mask=m_qT, other=0.0)  # [BK, BT]
        b_dh = tl.load(dh + o_dh, mask=m_dh, other=0.0)  # [BK, BV]
        b_At += tl.dot(b_k, b_qT)
        b_dv += tl.dot(b_k, b_dh.to(b_k.dtype))

    o_do, m_do = _tile(i_t * BT, i_v * BV, T, V, H * V, 1, BT, BV)
    b_do = tl.load(do + o_do, mask=m_do, other=0.0)  # [BT, BV]
    L = tl.minimum(BT, T - i_t * BT)
    b_wk = tl.exp(tl.where(o_t < L, b_g * (L - 1 - o_t), float("-inf")))  # [BT]
    # Transposed causal mask: key j (row) feeds query i (column) only when i >= j.
    diff = o_t[None, :] - o_t[:, None]
    b_At = b_At * tl.exp(tl.where(diff >= 0, b_g * diff, float("-inf"))) * scale
    b_dv = b_dv * b_wk[:, None] + tl.dot(b_At.to(b_do.dtype), b_do)
    tl.store(dv + o_do, b_dv.to(dv.dtype.element_ty), mask=m_do)


@triton.jit
def _chunk_bwd_dqk_kernel(
    q,
    k,
    v,
    h,
    do,
    dh,
    g,
    dq,
    dk,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
):
    # grid (ceil(K/BK), NT, B*H): one [BT, BK] tile of dq and of dk.
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NT = tl.cdiv(T, BT)
    v += (i_b * T * H + i_h) * V
    do += (i_b * T * H + i_h) * V
    h += ((i_b * NT + i_t) * H + i_h) * K * V
    dh += ((i_b * NT + i_t) * H + i_h) * K * V
    b_g = tl.load(g + i_h).to(tl.float32)
    o_t = tl.arange(0, BT)

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)  # [BT, BK] state part
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)  # [BT, BK] state part
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)  # [BT, BT] row i, column j: do_i·v_j
    for i_v in range(tl.cdiv(V, BV)):
        o_v, m_v = _tile(i_t * BT, i_v * BV, T, V, H * V, 1, BT, BV)
        # States read transposed, [BV, BK], so both products below are plain row-major dots.
        o_hT, m_hT = _tile(i_v * BV, i_k * BK, V, K, 1, V, BV, BK)
        b_v = tl.load(v + o_v, mask=m_v, other=0.0)  # [BT, BV]
        b_do = tl.load(do + o_v, mask=m_v, other=0.0)  # [BT, BV]
        b_hT = tl.load(h + o_hT, mask=m_hT, other=0.0)  # [BV, BK]
        b_dhT = tl.load(dh + o_hT, mask=m_hT, other=0.0)  # [BV, BK]
        b_dA += tl.dot(b_do, tl.trans(b_v))
        b_dq += tl.dot(b_do, b_hT.to(b_do.dtype))
        b_dk += tl.dot(b_v, b_dhT.to(b_v.dtype))

    o_q, m_q = _tile(i_t * BT, i_k * BK, T, K, H * K, 1, BT, BK)
    o_q += (i_b * T * H + i_h) * K
    b_q = tl.load(q + o_q, mask=m_q, other=0.0)  # [BT, BK]
    b_k = tl.load(k + o_q, mask=m_q, other=0.0)  # [BT, BK]
    L = tl.minimum(BT, T - i_t * BT)
    b_wq = tl.exp(b_g * (o_t + 1)) * scale  # [BT]
    b_wk = tl.exp(tl.where(o_t < L, b_g * (L - 1 - o_t), float("-inf")))  # [BT]
    diff = o_t[:, None] - o_t[None, :]
    b_dA = b_dA * tl.exp(tl.where(diff >= 0, b_g * diff, float("-inf"))) * scale
    b_dq = b_dq * b_wq[:, None] + tl.dot(b_dA.to(b_k.dtype), b_k)
    b_dk = b_dk * b_wk[:, None] + tl.dot(tl.trans(b_dA).to(b_q.dtype), b_q)
    tl.store(dq + o_q, b_dq.to(dq.dtype.element_ty), mask=m_q)
    tl.store(dk + o_q, b_dk.to(dk.dtype.element_ty), mask=m_q)


def _tile_width(dim: int) -> int:
    # tl.dot needs every tile side >= 16; 64 keeps the [BT, BT] + [BT, BV] accumulators in registers.
    return min(64, max(16, triton.next_power_of_2(dim)))


def _sizes(k, v, BT):
    """Compile-time sizes of the kernels for k [B, T, H, K] and v [B, T, H, V]."""
    H, K, V = k.shape[2], k.shape[3], v.shape[3]
    return {"H": H, "K": K, "V": V, "BT": BT, "BK": _tile_width(K), "BV": _tile_width(V)}


def _chunk_fwd_h(k, v, g, initial_state, output_final_state, BT):
    B, T, H, K = k.shape
    V = v.shape[-1]
    sizes = _sizes(k, v, BT)
    # States entering each chunk, kept in the input dtype (bf16 at scale) as the o kernel reads them;
    # the running state itself accumulates in fp32 registers.
    h = torch.empty(B, triton.cdiv(T, BT), H, K, V, dtype=k.dtype, device=k.device)
    ht = torch.empty(B, H, K, V, dtype=torch.float32, device=k.device) if output_final_state else None
    grid = (triton.cdiv(K, sizes["BK"]), triton.cdiv(V, sizes["BV"]), B * H)
    _chunk_fwd_h_kernel[grid](
        k, v, g, h, initial_state, ht, T,
        USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=output_final_state, **sizes
    )  # fmt: skip
    return h, ht


def _chunk_fwd_o(q, k, v, g, h, scale, BT):
    B, T, H, _ = q.shape
    sizes = _sizes(k, v, BT)
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    grid = (triton.cdiv(sizes["V"], sizes["BV"]), triton.cdiv(T, BT), B * H)
    _chunk_fwd_o_kernel[grid](q, k, v, h, g, o, scale, T, **sizes)
    return o


def _chunk_bwd(q, k, v, g, initial_state, do, dht, scale, BT):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, BT)
    sizes = _sizes(k, v, BT)
    NK, NV = triton.cdiv(K, sizes["BK"]), triton.cdiv(V, sizes["BV"])
    # Recomputing the chunk states costs one cheap pass and saves keeping NT·K·V per head from forward.
    h, _ = _chunk_fwd_h(k, v, g, initial_state, False, BT)
    dh = torch.empty(B, NT, H, K, V, dtype=q.dtype, device=q.device)
    dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device) if initial_state is not None else None
    _chunk_bwd_dh_kernel[(NK, NV, B * H)](
        q, do, g, dh, dht, dh0, scale, T,
        USE_FINAL_STATE_GRADIENT=dht is not None, STORE_INITIAL_STATE_GRADIENT=dh0 is not None, **sizes
    )  # fmt: skip
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    _chunk_bwd_dv_kernel[(NV, NT, B * H)](q, k, do, dh, g, dv, scale, T, **sizes)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    _chunk_bwd_dqk_kernel[(NK, NT, B * H)](q, k, v, h, do, dh, g, dq, dk, scale, T, **sizes)
    return dq, dk, dv, dh0


class ChunkLightningFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, scale, initial_state, output_final_state, chunk_size):
        h, ht = _chunk_fwd_h(k, v, g, initial_state, output_final_state, chunk_size)
        o = _chunk_fwd_o(q, k, v, g, h, scale, chunk_size)
        ctx.save_for_backward(q, k, v, g, initial_state)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, initial_state = ctx.saved_tensors
        dht = dht.contiguous() if dht is not None else None
        dq, dk, dv, dh0 = _chunk_bwd(q, k, v, g, initial_state, do.contiguous(), dht, ctx.scale, ctx.chunk_size)
        return dq, dk, dv, None, None, dh0, None, None


def chunk_lightning_attn(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked Lightning attention (Triton), differentiable in q, k, v and initial_state; g is a fixed
    per-head log-decay. Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None)."""
    _, _, _, K, _ = check_inputs(q, k, v, g, initial_state)
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16 (tl.dot tiles), got {chunk_size}")
    scale = K**-0.5 if scale is None else scale
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    q, k, v, g = (x.contiguous() for x in (q, k, v, g.detach().float()))
    return ChunkLightningFunction.apply(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
