"""Equivalence classes of the training setup: runs that must compute the same training, for the MoE base
(``Ling2ForCausalLM``) and the hybrid (``HybridForCausalLM``: Lightning + MLA), on CPU with gloo.

Every setup trains the same tiny model (``equivalence_worker.tiny_config``: MoE with shared expert,
group-limited routing, aux-loss-free expert bias, router z-loss, MTP) from the same seed for 5 optimizer
steps on the same 8 windows of 16 tokens per step, under DeepSpeed fp32 with gradient clipping at 1.0
(active: grad norms are 1.6-5). Per-micro-batch means of equal-sized micro-batches (no padding: the LM
loss, the MTP loss and the z-loss all average over the same number of tokens per micro-batch) average to
the global batch's mean, and the engine divides each micro-batch's gradient by the accumulation steps
and averages over ranks, so every setup below computes the same gradient in exact arithmetic. The pairs:

- ZeRO-0 vs ZeRO-3: one rank (``z0-mb8`` / ``z3-mb8``) and two ranks (``z0-2x4`` / ``z3-2x4``), where each
  rank holds half of each flattened parameter and gradient, reduce-scattered and all-gathered in fp32.
- 1 process vs 2 processes: ``z0-mb8`` vs ``z0-2x4``: 2 ranks x half the micro-batch. ``TokenBatches``
  gives rank r windows [4r, 4r + 4) of the one-process batch, so both see the same 8 windows per step.
- Gradient accumulation 1x8 vs 8x1: ``z0-mb8`` vs ``z0-mb1x8`` (micro-batch 1, 8 accumulation steps take
  the same 8 windows one by one).
- All three at once: ``z0-mb8`` vs ``z3-2x1x4`` (2 ranks, ZeRO-3, micro-batch 1 x 4 accumulation steps).
- ZeRO-3 with ranks on different MoE paths: ``z3-2x4-mixed-paths`` (rank 0's blocks always run padded
  ``bmm`` on stacked expert weights, rank 1's one expert module at a time) vs ``z0-2x4``. Before the MoE
  blocks became ZeRO-3 leaf modules this aborted in gloo with a collective mismatch
  (``training/deepspeed_engine.py``); ``z3-2x4`` hit it by itself, with the default path choice.

The router's expert-bias update must see the loads of the whole optimizer step: the loop averages the
per-micro-batch loads, ``expert_bias_updater`` averages them over ranks, and the sign update is invariant
to that positive scale (powers of two here, so exact). Routing is therefore compared exactly: the expert
loads of every step (integers) and the final expert biases (bitwise). A routing tie flipped by round-off
would fail there instead of hiding in a tolerance; in the reference runs the closest selections (k-th vs
(k+1)-th biased expert score, and the kept vs first dropped group) are 2.5e-5 apart, well above the setups'
round-off. The negative control ``z0-2x4-local-bias`` updates each rank's bias from its own loads only; it
must fail the comparison (it does: losses by 200x, weights by 100x, the drift by 900x the tolerances).

Tolerances, from what differs (fp32 everywhere; measured worst case in brackets, this 2-core EPYC):
- per-step loss, rel 1e-5 [6e-7]: the order of the token sums (one mean of 128 vs means of 64 or 16
  averaged, gloo's two-rank sum), plus the weights' drift below; ~100 fp32 ulps.
- per-step grad norm, rel 1e-4 [1.4e-5, hybrid 8x1]: also the order of the squares summed (ZeRO-3 sums
  per-partition norms); grows step by step with the weights' drift.
- final weights, per element |a - b| <= 5e-4 + 1e-4 |b| [1.2e-4 abs, hybrid 8x1, a dense FFN element]:
  AdamW normalises each element's update to about lr (1e-2), so an element whose gradient is a near-zero
  sum of cancelling terms turns a round-off-sized gradient difference into an update difference up to a
  fraction of lr. The bound is lr / 20; the broken control moves elements by 5e-2.
- all weights together, ||a - b|| / ||b - w_init|| <= 2e-4 [2.8e-5]: the drift relative to how far
  training moved the weights (the control: 0.18).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from equivalence_worker import MODELS, tiny_config
from safetensors.torch import load_file

from training.launch import run_distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

LOSS_RTOL = 1e-5
GRAD_NORM_RTOL = 1e-4
WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 5e-4
DRIFT_BOUND = 2e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One launch per world size; each trains every setup of that size for both models."""
    out = tmp_path_factory.mktemp("equivalence")
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "LING26_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions")),
    }
    for nproc in (1, 2):
        run_distributed("equivalence_worker:main", nproc, ["--out", str(out)], env=env, timeout=600)
    return out


def load(runs: Path, model: str, setup: str) -> tuple[dict, dict[str, torch.Tensor]]:
    record = json.loads((runs / f"{model}-{setup}.json").read_text())
    return record, load_file(str(runs / f"{model}-{setup}.safetensors"))


def initial_weights(model: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)  # what the worker builds the model with
    return MODELS[model](tiny_config(model)).state_dict()


def weight_drift(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], init: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b - init|| over all trained tensors (the expert biases are compared exactly instead)."""
    names = [n for n in b if not n.endswith("expert_bias")]
    diff = sum(float((a[n].double() - b[n].double()).square().sum()) for n in names)
    moved = sum(float((b[n].double() - init[n].double()).square().sum()) for n in names)
    return (diff / moved) ** 0.5


def assert_equivalent(runs: Path, model: str, reference: str, other: str) -> None:
    ref, ref_weights = load(runs, model, reference)
    got, got_weights = load(runs, model, other)
    assert len(got["loss"]) == len(ref["loss"]) == 5
    assert got["tokens_per_expert"] == ref["tokens_per_expert"], "routing differs"
    assert got["loss"] == pytest.approx(ref["loss"], rel=LOSS_RTOL)
    assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=GRAD_NORM_RTOL)
    assert got_weights.keys() == ref_weights.keys()
    biases = [n for n in ref_weights if n.endswith("expert_bias")]
    assert len(biases) == len(ref["tokens_per_expert"][0]) and all(ref_weights[n].abs().sum() > 0 for n in biases)
    for name, tensor in got_weights.items():
        if name in biases:
            assert torch.equal(tensor, ref_weights[name]), name
        else:
            torch.testing.assert_close(tensor, ref_weights[name], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, msg=name)
    assert weight_drift(got_weights, ref_weights, initial_weights(model)) <= DRIFT_BOUND


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize(
    ("reference", "other"),
    [
        pytest.param("z0-mb8", "z3-mb8", id="zero0-vs-zero3-one-rank"),
        pytest.param("z0-2x4", "z3-2x4", id="zero0-vs-zero3-two-ranks"),
        pytest.param("z0-mb8", "z0-2x4", id="one-vs-two-processes"),
        pytest.param("z0-mb8", "z0-mb1x8", id="accumulation-1x8-vs-8x1"),
        pytest.param("z0-mb8", "z3-2x1x4", id="all-three"),
        pytest.param("z0-2x4", "z3-2x4-mixed-paths", id="zero3-ranks-on-different-moe-paths"),
    ],
)
def test_equivalent_setups_train_the_same(runs, model, reference, other):
    assert_equivalent(runs, model, reference, other)


@pytest.mark.parametrize("model", list(MODELS))
def test_setups_ran_with_the_world_sizes_they_name(runs, model):
    sizes = {s: load(runs, model, s)[0]["world_size"] for s in ("z0-mb8", "z3-mb8", "z0-mb1x8", "z0-2x4", "z3-2x1x4")}
    assert sizes == {"z0-mb8": 1, "z3-mb8": 1, "z0-mb1x8": 1, "z0-2x4": 2, "z3-2x1x4": 2}


@pytest.mark.parametrize("model", list(MODELS))
def test_per_rank_router_statistics_would_break_the_equivalence(runs, model):
    """The control: expert biases updated from each rank's own loads. The comparison must catch it."""
    ref, ref_weights = load(runs, model, "z0-mb8")
    local, local_weights = load(runs, model, "z0-2x4-local-bias")
    assert local["tokens_per_expert"][0] == ref["tokens_per_expert"][0]  # the first step routes before any update
    assert local["tokens_per_expert"] != ref["tokens_per_expert"]
    assert max(abs(a - b) / b for a, b in zip(local["loss"], ref["loss"], strict=True)) > 100 * LOSS_RTOL
    assert weight_drift(local_weights, ref_weights, initial_weights(model)) > 100 * DRIFT_BOUND
    with pytest.raises(AssertionError):
        assert_equivalent(runs, model, "z0-mb8", "z0-2x4-local-bias")
