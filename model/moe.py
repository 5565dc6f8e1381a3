"""Ling-2.0 sparse MoE: fp32 sigmoid router with group-limited top-k, sorted expert dispatch, shared expert,
and the aux-loss-free balancing that trains the router's expert bias.

Router math (official ``BailingMoeV2Gate``), per token with logits l = x W_r^T in fp32:
    s  = sigmoid(l)                          unbiased scores, the only source of the weights
    s' = s + b                               b = expert_bias, used for selection only
    group score g = sum of the top-2 s' in the group; keep the topk_group best groups, mask the rest
    idx = top-A of s' over the kept experts
    w  = s[idx] / (sum s[idx] + 1e-20) * routed_scaling_factor       (normalised only when A > 1)
    y  = sum_a w_a Expert_{idx_a}(x) + SharedExpert(x)

Shape legend: see ``layers.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SwiGLUMLP


class RouterStats:
    """Routing of one forward pass, one row per MoE layer in model order (the MTP layer last).

    ``tokens_per_expert`` counts (non-padding) tokens sent to each expert: the input of ``update_expert_bias``
    after the trainer sums it over micro-batches and data-parallel ranks. ``router_logits`` keeps the graph
    for the z-loss; ``z_loss`` is its value, summed over layers. Both statistics are computed when first read:
    training reads them every step, decoding never does and skips their ~10 ops per layer.
    """

    def __init__(self, routings: Sequence[Routing]) -> None:
        self.routings = tuple(routings)

    @property
    def router_logits(self) -> tuple[torch.Tensor, ...]:  # L_moe x [N, E] fp32
        return tuple(r.router_logits for r in self.routings)

    @cached_property
    def tokens_per_expert(self) -> torch.Tensor:  # [L_moe, E] float
        return torch.stack([r.tokens_per_expert for r in self.routings])

    @cached_property
    def z_loss(self) -> torch.Tensor:  # scalar
        return torch.stack([r.z_loss for r in self.routings]).sum()


def group_limited_topk(scores_NE: torch.Tensor, n_group: int, topk_group: int, top_k: int) -> torch.Tensor:
    """Indices [N, A] of the top-A experts among the ``topk_group`` groups with the best top-2 score sums."""
    N, E = scores_NE.shape
    grouped = scores_NE.view(N, n_group, E // n_group)
    group_scores = grouped.topk(min(2, E // n_group), dim=-1).values.sum(dim=-1)  # [N, n_group]
    kept_groups = group_scores.topk(topk_group, dim=-1).indices
    group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, kept_groups, True)
    masked = grouped.masked_fill(~group_mask[..., None], float("-inf")).view(N, E)
    return masked.topk(top_k, dim=-1).indices


class Router(nn.Module):
    """The official ``gate``: ``weight`` [E, D] and the ``expert_bias`` buffer [E] (fp32, no gradient)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))
        self.register_buffer("expert_bias", torch.zeros(config.num_experts, dtype=torch.float32))

    def _apply(self, fn, recurse=True):
        # The bias moves by ~1e-3 per step; bf16 storage would round those steps away, so it stays fp32
        # whatever dtype the model is cast to (the released checkpoints store it in fp32 too).
        super()._apply(fn, recurse)
        self.expert_bias = self.expert_bias.float()
        return self

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns expert indices [N, A], their weights [N, A] (fp32) and the router logits [N, E] (fp32)."""
        logits_NE = F.linear(x_ND.float(), self.weight.float())
        scores_NE = torch.sigmoid(logits_NE)
        topk_idx = group_limited_topk(scores_NE + self.expert_bias, self.n_group, self.topk_group, self.top_k)
        topk_weight = scores_NE.gather(1, topk_idx)
        if self.top_k > 1:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        return topk_idx, topk_weight * self.routed_scaling_factor, logits_NE


# Padded batched matmuls win while the busiest expert holds at most this many times the mean load; past
# it the zero padding costs more than the per-expert launches it saves (early training is imbalanced).
MAX_PADDING_RATIO = 1.5


def dispatch_to_experts(
    x_ND: torch.Tensor, topk_idx_NA: torch.Tensor, topk_weight_NA: torch.Tensor, experts: Sequence[nn.Module]
) -> torch.Tensor:
    """sum_a w[n, a] * experts[idx[n, a]](x[n]); the loop is over experts, never over tokens.

    The N*A (token, slot) pairs are sorted by expert. When routing is balanced enough, the slices are laid
    out in an [E, C, D] buffer (C = the busiest expert's load, zero-padded) and all experts run as two
    ``bmm`` calls on their stacked weights (official per-expert parameters, so checkpoints keep the
    released names); otherwise each expert runs once on its contiguous slice. The weighted outputs are
    summed back per token with ``index_add_``. Both paths compute the same sum (benchmarks/moe_block.py
    times them). Gathers are ``index_select`` (backward: ``index_add_``), not advanced indexing, whose
    backward is an accumulating ``index_put_`` several times slower on CPU.
    """
    N, A = topk_idx_NA.shape
    if N == 1 and not torch.is_grad_enabled():
        return _one_token(x_ND, topk_idx_NA, topk_weight_NA, experts)
    E, D = len(experts), x_ND.shape[-1]
    flat_idx = topk_idx_NA.reshape(-1)
    order = flat_idx.argsort(stable=True)
    token_of_slot = order // A
    counts_E = torch.bincount(flat_idx, minlength=E)
    capacity = int(counts_E.max())
    weight_of_slot = topk_weight_NA.reshape(-1).index_select(0, order)  # fp32: the weighted sum is fp32 as official
    if E * capacity <= MAX_PADDING_RATIO * N * A:
        return _batched_experts(x_ND, token_of_slot, flat_idx[order], weight_of_slot, counts_E, capacity, experts)
    x_sorted = x_ND.index_select(0, token_of_slot)  # [N*A, D]
    # While training, an expert that got no tokens still runs (on zero rows): its gradient is then a zero
    # tensor, not None, so every data-parallel rank reduces the same parameters (ZeRO 1-3 buckets would
    # otherwise differ in size between ranks and the collective aborts).
    run_empty = torch.is_grad_enabled()
    outputs, start = [], 0
    for expert, count in zip(experts, counts_E.tolist(), strict=True):
        if count or run_empty:
            outputs.append(expert(x_sorted[start : start + count]))
        start += count
    weighted = torch.cat(outputs) * weight_of_slot[:, None]
    y_ND = torch.zeros(N, D, dtype=weighted.dtype, device=x_ND.device)
    return y_ND.index_add_(0, token_of_slot, weighted).to(x_ND.dtype)


def _one_token(
    x_1D: torch.Tensor, topk_idx_1A: torch.Tensor, topk_weight_1A: torch.Tensor, experts: Sequence[nn.Module]
) -> torch.Tensor:
    """Decoding one token: run its A experts directly, no sort, count or scatter (a third of the ops)."""
    out_AD = torch.cat([experts[e](x_1D) for e in topk_idx_1A[0].tolist()])
    return (out_AD * topk_weight_1A[0, :, None]).sum(0, keepdim=True).to(x_1D.dtype)


def _batched_experts(
    x_ND: torch.Tensor,
    token_of_slot_S: torch.Tensor,
    expert_of_slot_S: torch.Tensor,
    weight_of_slot_S: torch.Tensor,
    counts_E: torch.Tensor,
    capacity: int,
    experts: Sequence[nn.Module],
) -> torch.Tensor:
    """The weighted expert sum through a padded [E, C, D] buffer: row r = e·C + i holds expert e's i-th token.

    Each buffer row names its token; padding rows name an extra all-zero row N of x and carry weight 0, so they
    add nothing and their gradient lands on the dropped row. Tokens are gathered straight into the buffer and
    the weighted outputs summed straight out of it: no intermediate expert-sorted copies.
    """
    (N, D), E = x_ND.shape, len(experts)
    slot_S = torch.arange(token_of_slot_S.shape[0], device=x_ND.device)
    rank_in_expert_S = slot_S - (counts_E.cumsum(0) - counts_E).repeat_interleave(counts_E)
    row_of_slot_S = expert_of_slot_S * capacity + rank_in_expert_S
    token_of_row_R = torch.full((E * capacity,), N, dtype=torch.long, device=x_ND.device)
    token_of_row_R[row_of_slot_S] = token_of_slot_S
    weight_of_row_R = weight_of_slot_S.new_zeros(E * capacity).index_copy(0, row_of_slot_S, weight_of_slot_S)
    x_padded = torch.cat((x_ND, x_ND.new_zeros(1, D)))
    x_ECD = x_padded.index_select(0, token_of_row_R).view(E, capacity, D)
    w_gate_up = torch.cat(
        [torch.stack([e.gate_proj.weight for e in experts]), torch.stack([e.up_proj.weight for e in experts])], dim=1
    )  # [E, 2I, D]
    w_down = torch.stack([e.down_proj.weight for e in experts])  # [E, D, I]
    gate_ECI, up_ECI = torch.bmm(x_ECD, w_gate_up.transpose(1, 2)).chunk(2, dim=-1)
    out_RD = torch.bmm(F.silu(gate_ECI) * up_ECI, w_down.transpose(1, 2)).reshape(E * capacity, D)
    weighted_RD = out_RD * weight_of_row_R[:, None]
    y_ND = torch.zeros(N + 1, D, dtype=weighted_RD.dtype, device=x_ND.device)
    return y_ND.index_add_(0, token_of_row_R, weighted_RD)[:N].to(x_ND.dtype)


@dataclass
class Routing:
    """One MoE layer's routing; what the trainer needs from it is derived on first read."""

    topk_idx: torch.Tensor  # [N, A]
    router_logits: torch.Tensor  # [N, E] fp32
    token_mask: torch.Tensor | None  # [N] bool, True for real tokens; None: all real
    num_experts: int

    @cached_property
    def tokens_per_expert(self) -> torch.Tensor:  # [E] float
        selected = self.topk_idx if self.token_mask is None else self.topk_idx[self.token_mask]
        return torch.bincount(selected.reshape(-1), minlength=self.num_experts).float()

    @cached_property
    def z_loss(self) -> torch.Tensor:
        """Mean over real tokens of logsumexp(logits)^2."""
        lse_sq = torch.logsumexp(self.router_logits, dim=-1).square()
        if self.token_mask is None:
            return lse_sq.mean()
        return (lse_sq * self.token_mask).sum() / self.token_mask.sum().clamp(min=1)


class SparseMoeBlock(nn.Module):
    """``gate`` + ``experts.{0..E-1}`` + ``shared_experts``, the official module names."""

    def __init__(self, config) -> None:
        super().__init__()
        self.num_experts = config.num_experts
        self.gate = Router(config)
        self.experts = nn.ModuleList(
            SwiGLUMLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts)
        )
        self.shared_experts = (
            SwiGLUMLP(config.hidden_size, config.moe_intermediate_size * config.num_shared_experts)
            if config.num_shared_experts
            else None
        )

    def forward(self, x_BTD: torch.Tensor, token_mask_N: torch.Tensor | None) -> tuple[torch.Tensor, Routing]:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        topk_idx, topk_weight, logits_NE = self.gate(x_ND)
        y_ND = dispatch_to_experts(x_ND, topk_idx, topk_weight, self.experts)
        if self.shared_experts is not None:
            y_ND = y_ND + self.shared_experts(x_ND)
        return y_ND.view(B, T, D), Routing(topk_idx, logits_NE, token_mask_N, self.num_experts)


def collect_router_stats(routings: Sequence[Routing]) -> RouterStats | None:
    return RouterStats(routings) if routings else None


def routers(model: nn.Module) -> list[Router]:
    """Every router of ``model`` in module order, which is the row order of ``RouterStats.tokens_per_expert``."""
    return [m for m in model.modules() if isinstance(m, Router)]


@torch.no_grad()
def update_expert_bias(model: nn.Module, counts_per_layer: torch.Tensor | Sequence[torch.Tensor], rate: float) -> None:
    """Aux-loss-free balancing, once per optimizer step, with counts summed over the step (and all ranks):

        e_i = mean_j(c_j) - c_i                     (positive for under-loaded experts)
        b_i <- b_i + rate * (sign(e_i) - mean_j sign(e_j))

    Subtracting the mean sign keeps sum(b) unchanged (the zero-mean variant of the official Megatron patch),
    so the biases cannot drift together.
    """
    layer_routers = routers(model)
    if len(counts_per_layer) != len(layer_routers):
        raise ValueError(f"got counts for {len(counts_per_layer)} MoE layers, the model has {len(layer_routers)}")
    for router, counts_E in zip(layer_routers, counts_per_layer, strict=True):
        counts_E = counts_E.to(device=router.expert_bias.device, dtype=torch.float32)
        sign_E = torch.sign(counts_E.mean() - counts_E)
        router.expert_bias += rate * (sign_E - sign_E.mean())
