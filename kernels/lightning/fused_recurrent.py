"""Fused recurrent Lightning attention in Triton, forward and backward, for decode and short sequences.

Shape legend:
    B batch, T sequence length, H heads, K query/key head dim, V value head dim
    BK = next power of two >= K (a program holds whole state columns), BV tile width along V, NV = ceil(V/BV)
    q, k [B, T, H, K]; v, o [B, T, H, V]; g [H] (negative log-decay, λ = exp(g))
    initial/final state and their grads [B, H, K, V] in fp32; dq/dk partials [NV, B, T, H, K]

One program walks the whole sequence for one [K, BV] slice of one head's state, kept in fp32 registers:
    S_t = λ S_{t-1} + k_tᵀ v_t ;  o_t = scale · q_t S_t
Backward, with dS_t the gradient of S_t (dS_{T-1} starts from the final-state gradient):
    dq_t = scale · S_t do_tᵀ ;  dS_t = scale · q_tᵀ do_t + λ dS_{t+1} ;  dk_t = dS_t v_tᵀ ;  dv_t = k_t dS_t
    d initial_state = λ dS_0
dq_t and dk_t sum over all V, so each V slice writes a partial that the wrapper adds up.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.lightning.inputs import check_inputs


@triton.jit
def _fused_recurrent_fwd_kernel(
    q,
    k,
    v,
    g,
    o,
    h0,
    ht,
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    STORE_FINAL_STATE: tl.constexpr,
):
    # grid (NV, B*H)
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    o_h = i_bh * K * V + o_k[:, None] * V + o_v[None, :]
    p_q = q + (i_b * T * H + i_h) * K + o_k
    p_k = k + (i_b * T * H + i_h) * K + o_k
    p_v = v + (i_b * T * H + i_h) * V + o_v
    p_o = o + (i_b * T * H + i_h) * V + o_v
    b_decay = tl.exp(tl.load(g + i_h).to(tl.float32))

    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + o_h, mask=m_h, other=0.0).to(tl.float32)
    for _ in range(T):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_h = b_h * b_decay + b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0)  # [BV]
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_v)
        p_q += H * K
        p_k += H * K
        p_v += H * V
        p_o += H * V
    if STORE_FINAL_STATE:
        tl.store(ht + o_h, b_h.to(ht.dtype.element_ty), mask=m_h)


@triton.jit
def _fused_recurrent_bwd_kernel(
    q,
    k,
    v,
    g,
    do,
    h0,
    dht,
    dq,
    dk,
    dv,
    dh0,
    scale,
    T,
    B,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr,
    STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
):
    # grid (NV, B*H)
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    # int64 so offsets into the largest buffers cannot overflow at long context.
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    o_h = i_bh * K * V + o_k[:, None] * V + o_v[None, :]
    o_qk = (i_b * T * H + i_h) * K + o_k  # token 0 of this head in q, k
    o_vo = (i_b * T * H + i_h) * V + o_v  # token 0 of this head in v, do
    # This slice's dq/dk partials live in slot i_v of [NV, B, T, H, K].
    o_part = i_v * B * T * H * K + o_qk
    b_decay = tl.exp(tl.load(g + i_h).to(tl.float32))

    # Forward in time: rebuild S_t for dq_t.
    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + o_h, mask=m_h, other=0.0).to(tl.float32)
    for t in range(T):
        b_k = tl.load(k + o_qk + t * H * K, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(v + o_vo + t * H * V, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_do = tl.load(do + o_vo + t * H * V, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_h = b_h * b_decay + b_k[:, None] * b_v[None, :]
        b_dq = tl.sum(b_h * b_do[None, :], axis=1) * scale  # [BK]
        tl.store(dq + o_part + t * H * K, b_dq.to(dq.dtype.element_ty), mask=m_k)

    # Backward in time: accumulate dS_t.
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + o_h, mask=m_h, other=0.0).to(tl.float32)
    for i_r in range(T):
        t = T - 1 - i_r
        b_q = tl.load(q + o_qk + t * H * K, mask=m_k, other=0.0).to(tl.float32) * scale  # [BK]
        b_k = tl.load(k + o_qk + t * H * K, mask=m_k, other=0.0).to(tl.float32)  # [BK]
        b_v = tl.load(v + o_vo + t * H * V, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_do = tl.load(do + o_vo + t * H * V, mask=m_v, other=0.0).to(tl.float32)  # [BV]
        b_dh += b_q[:, None] * b_do[None, :]
        b_dk = tl.sum(b_dh * b_v[None, :], axis=1)  # [BK]
        b_dv = tl.sum(b_dh * b_k[:, None], axis=0)  # [BV]
        tl.store(dk + o_part + t * H * K, b_dk.to(dk.dtype.element_ty), mask=m_k)
        tl.store(dv + o_vo + t * H * V, b_dv.to(dv.dtype.element_ty), mask=m_v)
        b_dh *= b_decay
    if STORE_INITIAL_STATE_GRADIENT:
        tl.store(dh0 + o_h, b_dh.to(dh0.dtype.element_ty), mask=m_h)


def _sizes(k, v):
    """Compile-time sizes of the kernels for k [B, T, H, K] and v [B, T, H, V]."""
    H, K, V = k.shape[2], k.shape[3], v.shape[3]
    # The whole K extent sits in one program so o_t needs no cross-program sum; V is split to bound
    # the [BK, BV] fp32 state each program keeps in registers.
    return {"H": H, "K": K, "V": V, "BK": triton.next_power_of_2(K), "BV": min(64, triton.next_power_of_2(V))}


def _fused_recurrent_fwd(q, k, v, g, scale, initial_state, output_final_state):
    B, T, H, K = q.shape
    V = v.shape[-1]
    sizes = _sizes(k, v)
    o = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    ht = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    _fused_recurrent_fwd_kernel[(triton.cdiv(V, sizes["BV"]), B * H)](
        q, k, v, g, o, initial_state, ht, scale, T,
        USE_INITIAL_STATE=initial_state is not None, STORE_FINAL_STATE=output_final_state, **sizes
    )  # fmt: skip
    return o, ht


def _fused_recurrent_bwd(q, k, v, g, scale, initial_state, do, dht):
    B, T, H, K = q.shape
    V = v.shape[-1]
    sizes = _sizes(k, v)
    NV = triton.cdiv(V, sizes["BV"])
    dq_parts = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=q.device)
    dk_parts = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=q.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    dh0 = torch.empty(B, H, K, V, dtype=torch.float32, device=q.device) if initial_state is not None else None
    _fused_recurrent_bwd_kernel[(NV, B * H)](
        q, k, v, g, do, initial_state, dht, dq_parts, dk_parts, dv, dh0, scale, T, B,
        USE_INITIAL_STATE=initial_state is not None, USE_FINAL_STATE_GRADIENT=dht is not None,
        STORE_INITIAL_STATE_GRADIENT=dh0 is not None, **sizes
    )  # fmt: skip
    return dq_parts.sum(0).to(q.dtype), dk_parts.sum(0).to(k.dtype), dv, dh0


class FusedRecurrentLightningFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, scale, initial_state, output_final_state):
        o, ht = _fused_recurrent_fwd(q, k, v, g, scale, initial_state, output_final_state)
        ctx.save_for_backward(q, k, v, g, initial_state)
        ctx.scale = scale
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, initial_state = ctx.saved_tensors
        dht = dht.contiguous() if dht is not None else None
        dq, dk, dv, dh0 = _fused_recurrent_bwd(q, k, v, g, ctx.scale, initial_state, do.contiguous(), dht)
        return dq, dk, dv, None, None, dh0, None


def fused_recurrent_lightning_attn(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-by-token Lightning attention (Triton), differentiable in q, k, v and initial_state; g is a
    fixed per-head log-decay. Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None)."""
    _, _, _, K, _ = check_inputs(q, k, v, g, initial_state)
    scale = K**-0.5 if scale is None else scale
    if initial_state is not None:
        initial_state = initial_state.float().contiguous()
    q, k, v, g = (x.contiguous() for x in (q, k, v, g.detach().float()))
    return FusedRecurrentLightningFunction.apply(q, k, v, g, scale, initial_state, output_final_state)
