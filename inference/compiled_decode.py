"""One-token decode step of our two architectures with the per-token fixed cost compiled.

Decoding one token at hidden 256 is a few hundred small ops (embedding, norms, projections, router, experts,
head), each costing more to dispatch than to compute. ``DecodeStep`` runs that fixed part through
``torch.compile`` (inductor, C++ on CPU) in a few reusable pieces, one per layer kind, and leaves only the
part whose shapes grow with the context eager: appending to the cache and the attention over it (SDPA over
the MLA latent for the hybrid, grouped-rows SDPA over keys and values for the GQA base). So every compiled
shape is static (batch, hidden, heads), nothing recompiles as the context grows, and both models get exactly
the same treatment. One change to the attention itself: at batch 1 the hybrid's latent attention splits its
cached tokens across the cores (``latent_attention``), which the base's two key/value heads already get.

    layer ℓ, Lightning:  h -> [norm, Lightning step on the fp32 state, dense, norm, MoE] -> h, state   (compiled)
    layer ℓ, MLA / GQA:  h -> [norm, projections, RoPE] -> q, new latent / k, v                         (compiled)
                         cache append, SDPA over all S cached tokens                                     (eager)
                         [output projection, residual, norm, MoE] -> h                                   (compiled)

The MoE of one decode step runs each token's A experts as reductions over the experts' weights stacked once
per ``refresh`` ([E, 2I, D] and [E, D, I]) and indexed by the router's choice: inductor fuses the gather into
the reduction, so no expert weights are copied and there is no data-dependent Python loop (the eager path's
``.tolist()`` over chosen experts would break the graph). Weights are read live from the modules except the
stacked expert weights: call ``refresh()`` after the weights change (``NativeEngine`` does, per batch).

The compiled step equals the model's eager forward within float rounding (different reduction orders; see
``tests/inference/test_compiled_decode.py`` for the tolerance). Shape legend: see ``model/layers.py`` and
``model/mla.py``; L = Rc + Kr the MLA latent width, M = H query rows of the absorbed MLA step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import Attention, attention_bias, grouped_rows_decode
from model.layers import qk_norm_rotary
from model.ling2 import default_position_ids
from model.mla import MultiLatentAttention
from model.moe import SparseMoeBlock


class _LayerState:
    """The one-layer cache a Lightning layer reads and replaces inside a compiled piece (its fp32 state)."""

    def __init__(self, state_BHKK: torch.Tensor) -> None:
        self.state_BHKK = state_BHKK

    def get_state(self, layer_idx: int) -> torch.Tensor:
        return self.state_BHKK

    def set_state(self, layer_idx: int, state_BHKK: torch.Tensor) -> None:
        self.state_BHKK = state_BHKK.float()


def _ffn(mlp: nn.Module, x_ND: torch.Tensor, w_gate_up_EXD: torch.Tensor | None, w_down_EDI: torch.Tensor | None):
    """The layer's FFN on N tokens: a dense SwiGLU as is; a MoE block with each token's A experts read from the
    stacked weights by index (X = 2I rows: gate then up)."""
    if not isinstance(mlp, SparseMoeBlock):
        return mlp(x_ND)
    topk_idx_NA, topk_weight_NA, _ = mlp.gate(x_ND)
    # Elementwise product + sum, not matmul: inductor fuses the indexed read into the reduction (no copy).
    gate_up_NAX = (w_gate_up_EXD[topk_idx_NA] * x_ND[:, None, None, :]).sum(-1)
    gate_NAI, up_NAI = gate_up_NAX.chunk(2, dim=-1)
    act_NAI = F.silu(gate_NAI) * up_NAI
    out_NAD = (w_down_EDI[topk_idx_NA] * act_NAI[:, :, None, :]).sum(-1)
    y_ND = (out_NAD * topk_weight_NA[..., None]).sum(1).to(x_ND.dtype)  # fp32 weights, as the eager block
    if mlp.shared_experts is not None:
        y_ND = y_ND + mlp.shared_experts(x_ND)
    return y_ND


def _post_attention(layer: nn.Module, h_B1D: torch.Tensor, y_B1D: torch.Tensor, w_gate_up, w_down) -> torch.Tensor:
    """Residual add of the attention output, then the FFN half of the layer."""
    h_B1D = h_B1D + y_B1D
    B, _, D = h_B1D.shape
    x_ND = layer.post_attention_layernorm(h_B1D).view(B, D)
    return h_B1D + _ffn(layer.mlp, x_ND, w_gate_up, w_down).view(B, 1, D)


def lightning_layer(layer, h_B1D, state_BHKK, cos_B1R, sin_B1R, w_gate_up, w_down):
    """A whole Lightning layer for one token: its own attention module on a one-layer cache, then the FFN."""
    slot = _LayerState(state_BHKK)
    y_B1D = layer.attention(layer.input_layernorm(h_B1D), cos_B1R, sin_B1R, None, slot)
    return _post_attention(layer, h_B1D, y_B1D, w_gate_up, w_down), slot.state_BHKK


def mla_pre(layer, h_B1D, cos_B1R, sin_B1R):
    """MLA up to its cache: (query rows with W_UK absorbed [B, 1, M, L], the new token's latent [B, 1, L])."""
    attn: MultiLatentAttention = layer.attention
    B, H = h_B1D.shape[0], attn.num_heads
    q_nope_BH1N, q_rope_BH1R, latent_B1L = attn.project(layer.input_layernorm(h_B1D), cos_B1R, sin_B1R)
    w_uk_HNC = attn.kv_b_proj.weight.view(H, attn.nope_dim + attn.v_dim, attn.kv_lora_rank)[:, : attn.nope_dim]
    q_latent_BH1C = q_nope_BH1N @ w_uk_HNC
    q_B1ML = torch.cat((q_latent_BH1C, q_rope_BH1R), dim=-1).reshape(B, 1, H, -1)
    return q_B1ML, latent_B1L


def mla_post(layer, h_B1D, ctx_B1ML, w_gate_up, w_down):
    """W_UV on the attended latent, the output projection, then the FFN half."""
    attn: MultiLatentAttention = layer.attention
    B, _, H, _ = ctx_B1ML.shape
    w_uv_HVC = attn.kv_b_proj.weight.view(H, attn.nope_dim + attn.v_dim, attn.kv_lora_rank)[:, attn.nope_dim :]
    ctx_BH1C = ctx_B1ML[..., : attn.kv_lora_rank].reshape(B, H, 1, attn.kv_lora_rank)
    y_BH1V = ctx_BH1C @ w_uv_HVC.transpose(1, 2)
    y_B1D = attn.dense(y_BH1V.transpose(1, 2).reshape(B, 1, H * attn.v_dim))
    return _post_attention(layer, h_B1D, y_B1D, w_gate_up, w_down)


def gqa_pre(layer, h_B1D, cos_B1R, sin_B1R):
    """GQA up to its cache: q [B, H, 1, K], k and v [B, G, 1, K] (QK-norm and partial RoPE applied)."""
    attn: Attention = layer.attention
    x_B1D = layer.input_layernorm(h_B1D)
    B, H, G = x_B1D.shape[0], attn.num_heads, attn.num_kv_heads
    qkv_B1XK = attn.query_key_value(x_B1D).view(B, 1, H + 2 * G, attn.head_dim)
    qk_norms = (attn.query_layernorm, attn.key_layernorm) if attn.use_qk_norm else None
    qk_BX1K = qk_norm_rotary(qkv_B1XK[:, :, : H + G], qk_norms, H, cos_B1R, sin_B1R)
    q_BH1K, k_BG1K = qk_BX1K.split([H, G], dim=1)
    return q_BH1K, k_BG1K, qkv_B1XK[:, :, H + G :].transpose(1, 2)


def gqa_post(layer, h_B1D, y_BH1K, w_gate_up, w_down):
    attn: Attention = layer.attention
    B = y_BH1K.shape[0]
    y_B1D = attn.dense(y_BH1K.transpose(1, 2).reshape(B, 1, attn.num_heads * attn.head_dim))
    return _post_attention(layer, h_B1D, y_B1D, w_gate_up, w_down)


def embed(backbone, ids_B1, position_ids_B1):
    """Token embeddings and every rotary table the backbone has (one for GQA; Lightning's and MLA's)."""
    h_B1D = backbone.word_embeddings(ids_B1)
    tables = [backbone.rotary_emb(position_ids_B1, h_B1D.dtype)]
    if hasattr(backbone, "rotary_emb_mla"):
        tables.append(backbone.rotary_emb_mla(position_ids_B1, h_B1D.dtype))
    return h_B1D, tables


def head(backbone, lm_head, h_B1D):
    return lm_head(backbone.norm(h_B1D)).float()


# Below this many cached tokens per split, one SDPA call is cheaper than splitting and merging.
MIN_SPLIT_TOKENS = 1024


def latent_attention(q_B1ML, latent_BSL, bias_B11S, scale: float, splits: int) -> torch.Tensor:
    """The absorbed MLA attention of one new token over the S cached latents, [B, 1, M, L].

    SDPA's CPU kernel parallelises over batch x heads, and the absorbed step has one latent head: at batch 1
    it runs on one core while the base's GQA (2 key/value heads) uses two. Unpadded rows with fewer rows than
    ``splits`` therefore split the S tokens into ``splits`` equal parts run as heads of one call (flash-decoding),
    plus the remainder, and merge the parts by their log-sum-exp. Same function as one SDPA call."""
    rows, tokens, width = latent_BSL.shape
    if bias_B11S is not None or rows >= splits or tokens < splits * MIN_SPLIT_TOKENS:
        kv_B1SL = latent_BSL[:, None]
        return F.scaled_dot_product_attention(q_B1ML, kv_B1SL, kv_B1SL, attn_mask=bias_B11S, scale=scale)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    chunk, query_rows = tokens // splits, q_B1ML.shape[2]
    main_BPCL = latent_BSL[:, : splits * chunk].view(rows, splits, chunk, width)  # P = splits, C = chunk
    out_BPML, lse_BPM = flash(q_B1ML.expand(rows, splits, query_rows, width), main_BPCL, main_BPCL, scale=scale)[:2]
    if tokens > splits * chunk:
        tail_B1RL = latent_BSL[:, splits * chunk :][:, None]
        tail_out, tail_lse = flash(q_B1ML, tail_B1RL, tail_B1RL, scale=scale)[:2]
        out_BPML, lse_BPM = torch.cat((out_BPML, tail_out), dim=1), torch.cat((lse_BPM, tail_lse), dim=1)
    weight_BPM = torch.softmax(lse_BPM, dim=1)
    return (out_BPML * weight_BPM[..., None].to(out_BPML.dtype)).sum(1, keepdim=True)


PIECES = ("embed", "lightning_layer", "mla_pre", "mla_post", "gqa_pre", "gqa_post", "head")


class DecodeStep:
    """``step(ids [B, 1], cache, attention_mask [B, S] or None) -> logits [B, 1, V] fp32`` for a
    ``HybridForCausalLM`` (``HybridCache``) or ``Ling2ForCausalLM`` (``KVCache``), after an ordinary forward
    has prefilled ``cache``. The new token must be real (mask 1), as in every decode step of the engines.

    ``dynamic`` is ``torch.compile``'s: None (default) compiles for the first batch size and once more with a
    symbolic batch when it changes (the engine's batch shrinks as rows finish); False compiles static shapes per
    batch size (benchmarks). On CPU the pieces use inductor's C++ wrapper (``cpp_wrapper``), which calls the
    compiled kernels from C++ instead of Python: the fixed cost at batch 1 fell by another ~15-20 % with it
    (BENCHMARKS.md "Long context")."""

    def __init__(self, model: nn.Module, *, dynamic: bool | None = None) -> None:
        self.model = model
        self.backbone = model.model
        self.layers = list(self.backbone.layers[: self.backbone.num_main_layers])
        self.is_hybrid = hasattr(self.backbone, "rotary_emb_mla")
        options = {"cpp_wrapper": True} if next(model.parameters()).device.type == "cpu" else {}
        for name in PIECES:
            setattr(self, f"_{name}", torch.compile(globals()[name], dynamic=dynamic, options=options))
        self._stacked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Stack every MoE layer's expert weights again (after training changed them)."""
        self._stacked = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer.mlp, SparseMoeBlock):
                experts = layer.mlp.experts
                gate_up_EXD = torch.stack([torch.cat((e.gate_proj.weight, e.up_proj.weight)) for e in experts])
                down_EDI = torch.stack([e.down_proj.weight for e in experts])
                self._stacked[i] = (gate_up_EXD.detach(), down_EDI.detach())

    @torch.no_grad()
    def step(self, ids_B1: torch.Tensor, cache, attention_mask_BS: torch.Tensor | None = None) -> torch.Tensor:
        num_past = cache.get_seq_length()
        # [B, 1] with or without a mask, so both calls share one compiled shape.
        position_ids_B1 = default_position_ids(attention_mask_BS, num_past, 1, ids_B1.device).expand(ids_B1.shape[0], 1)
        h_B1D, tables = self._embed(self.backbone, ids_B1, position_ids_B1)
        bias_B11S = attention_bias(attention_mask_BS, 1, num_past, h_B1D.dtype, h_B1D.device)
        for i, layer in enumerate(self.layers):
            w_gate_up, w_down = self._stacked.get(i, (None, None))
            if self.is_hybrid:
                h_B1D = self._hybrid_layer(i, layer, h_B1D, tables, bias_B11S, cache, w_gate_up, w_down)
            else:
                cos_B1R, sin_B1R = tables[0]
                q_BH1K, k_BG1K, v_BG1K = self._gqa_pre(layer, h_B1D, cos_B1R, sin_B1R)
                k_BGSK, v_BGSK = cache.update(k_BG1K, v_BG1K, i)
                y_BH1K = grouped_rows_decode(q_BH1K, k_BGSK, v_BGSK, bias_B11S)
                h_B1D = self._gqa_post(layer, h_B1D, y_BH1K, w_gate_up, w_down)
        if self.is_hybrid:
            cache.advance(1)
        return self._head(self.backbone, self.model.lm_head, h_B1D)

    def _hybrid_layer(self, i, layer, h_B1D, tables, bias_B11S, cache, w_gate_up, w_down) -> torch.Tensor:
        if layer.layer_type == "linear_attention":
            cos_B1R, sin_B1R = tables[0]
            h_B1D, state_BHKK = self._lightning_layer(
                layer, h_B1D, cache.get_state(i), cos_B1R, sin_B1R, w_gate_up, w_down
            )
            cache.set_state(i, state_BHKK)
            return h_B1D
        cos_B1R, sin_B1R = tables[1]
        attn: MultiLatentAttention = layer.attention
        q_B1ML, latent_B1L = self._mla_pre(layer, h_B1D, cos_B1R, sin_B1R)
        latent_BSL = cache.update_latent(i, latent_B1L)
        ctx_B1ML = latent_attention(q_B1ML, latent_BSL, bias_B11S, attn.scale, torch.get_num_threads())
        return self._mla_post(layer, h_B1D, ctx_B1ML, w_gate_up, w_down)
