"""Where the stages run on a Flyte cluster: the task image, the accelerator, the parallel layout, and per stage the
pod's resources and its torchrun (kfpytorch ``Elastic``) shape.

Read when a per-profile workflow is built (``workflows.scale``): Flyte fixes resources and task types when the
workflow is compiled, so these values are the profile's, never a run-time override. The local workflow
(``ling26_pipeline`` on ``tiny_cpu``) runs every stage in one process whatever they say.
"""

from __future__ import annotations

from configs.base import ConfigError, config


@config
class StageResources:
    """One stage's pods. Quantities are Kubernetes/Flyte strings ("8", "64Gi"); ``gpu`` counts GPUs per pod.

    ``nnodes > 1`` or ``nproc_per_node > 1`` makes the stage an ``Elastic`` task: torchrun starts
    ``nproc_per_node`` workers in each of ``nnodes`` pods (a PyTorchJob when ``nnodes > 1``)."""

    cpu: str = "2"
    memory: str = "8Gi"
    gpu: int = 0
    nnodes: int = 1
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        if self.nnodes < 1 or self.nproc_per_node < 1 or self.gpu < 0:
            raise ConfigError(f"nnodes and nproc_per_node must be >= 1 and gpu >= 0, got {self}")
        if self.gpu and self.nproc_per_node > self.gpu:
            raise ConfigError(f"nproc_per_node ({self.nproc_per_node}) exceeds the pod's GPUs ({self.gpu})")

    @property
    def elastic(self) -> bool:
        return self.nnodes > 1 or self.nproc_per_node > 1

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


@config
class ImageConfig:
    """The task image of remote runs (``workflows.image``): CUDA torch, the project's pins, vLLM, the repo."""

    registry: str = "ghcr.io/ling26"
    name: str = "ling26-pipeline"
    # CUDA 12.8 runtime + cuDNN: what the cu128 torch wheels link against (Hopper and Blackwell).
    base_image: str = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
    python_version: str = "3.11"
    # The torch pin comes from here, not PyPI's default CPU/CUDA choice [assumption: a cu128 build of the pin exists].
    torch_index_url: str = "https://download.pytorch.org/whl/cu128"


@config
class ClusterConfig:
    """The defaults are ``tiny_cpu``'s: one process per stage, no GPU, the pods of a 2-core box."""

    image: ImageConfig = ImageConfig()
    # flytekit's GPU accelerator name (the node selector of GPU pods); None on CPU-only profiles.
    accelerator: str | None = None
    gpus_per_node: int = 0
    gpu_memory_gib: int = 0
    # Training ranks of the data-parallel (DeepSpeed ZeRO) group of the pre-training stage.
    data_parallel: int = 1
    # The serving engine's layout (vLLM in evaluation): tensor-parallel size, and experts sharded over that group.
    tensor_parallel: int = 1
    expert_parallel: int = 1
    curate: StageResources = StageResources()
    pretrain: StageResources = StageResources()
    migrate: StageResources = StageResources()
    post_train: StageResources = StageResources()
    kpop_rl: StageResources = StageResources()
    distill: StageResources = StageResources()
    evaluate: StageResources = StageResources()
    publish: StageResources = StageResources()

    def __post_init__(self) -> None:
        if self.pretrain.world_size != self.data_parallel:
            raise ConfigError(
                f"cluster.data_parallel ({self.data_parallel}) must equal the pre-training ranks "
                f"(cluster.pretrain nnodes x nproc_per_node = {self.pretrain.world_size}): ZeRO shards over all of them"
            )
        for name in ("pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate"):
            res: StageResources = getattr(self, name)
            if res.gpu > self.gpus_per_node:
                raise ConfigError(f"cluster.{name}.gpu ({res.gpu}) exceeds cluster.gpus_per_node ({self.gpus_per_node})")
        if self.tensor_parallel > max(1, self.evaluate.gpu):
            raise ConfigError(
                f"cluster.tensor_parallel ({self.tensor_parallel}) needs that many GPUs in the evaluate pod "
                f"(cluster.evaluate.gpu = {self.evaluate.gpu})"
            )
        if self.tensor_parallel % self.expert_parallel:
            raise ConfigError(
                f"cluster.expert_parallel ({self.expert_parallel}) must divide cluster.tensor_parallel "
                f"({self.tensor_parallel}): vLLM shards experts over its tensor-parallel group"
            )


def small_gpu_cluster() -> ClusterConfig:
    """One H100 (80 GB) for every GPU stage: the ~80 M-active model, its optimizer state and a 2,048-token batch of
    16 fit one GPU many times over, and one GPU is the profile's premise ("hours not weeks")."""
    gpu = StageResources(cpu="8", memory="64Gi", gpu=1)
    return ClusterConfig(
        accelerator="nvidia-h100",
        gpus_per_node=1,
        gpu_memory_gib=80,
        curate=StageResources(cpu="16", memory="64Gi"),
        pretrain=gpu,
        migrate=gpu,
        post_train=gpu,
        kpop_rl=gpu,
        distill=gpu,
        evaluate=gpu,
        publish=StageResources(cpu="4", memory="32Gi"),
    )


# A DGX/HGX H100 or H200 node: 8 GPUs, 2 x 56 cores, 2 TiB of memory; the pod asks for most of it and leaves the
# rest to the kubelet and daemon sets.
GPUS_PER_NODE = 8
_NODE = {"cpu": "96", "memory": "1600Gi", "gpu": GPUS_PER_NODE, "nproc_per_node": GPUS_PER_NODE}


def paper_cluster(
    *,
    accelerator: str,
    gpu_memory_gib: int,
    pretrain_nodes: int,
    post_train_nodes: int,
) -> ClusterConfig:
    """The paper profiles on nodes of 8 GPUs with DeepSpeed ZeRO-3 (the engine of ``_paper_scale``).

    Pre-training and migration share one layout, ``pretrain_nodes`` x 8 ranks, chosen by the profile so that
    micro-batch 1 x accumulation x ranks is the paper's global batch (``configs.pipeline._paper_scale``). The
    post-training stages (SFT, RL, preference, KPop RL, distillation) train the same model on far fewer tokens and
    take ``post_train_nodes``. ZeRO-3 keeps 16 bytes of model state per parameter (bf16 weights and gradients,
    fp32 master weights and two Adam moments) spread over all ranks; the planner (``configs.plan``) prints the
    per-GPU bytes. Evaluation serves the model with vLLM on one node, experts sharded over its 8 GPUs."""
    training = StageResources(**_NODE, nnodes=pretrain_nodes)
    post = StageResources(**_NODE, nnodes=post_train_nodes)
    return ClusterConfig(
        accelerator=accelerator,
        gpus_per_node=GPUS_PER_NODE,
        gpu_memory_gib=gpu_memory_gib,
        data_parallel=training.world_size,
        tensor_parallel=GPUS_PER_NODE,
        expert_parallel=GPUS_PER_NODE,
        # CPU work per shard; the fanned-out curation spreads shards over many such pods.
        curate=StageResources(cpu="32", memory="128Gi"),
        pretrain=training,
        migrate=training,
        post_train=post,
        kpop_rl=post,
        distill=post,
        # vLLM starts its own tensor-parallel workers inside the pod: one process, the node's GPUs.
        evaluate=StageResources(cpu="96", memory="1600Gi", gpu=GPUS_PER_NODE),
        # Re-sharding safetensors streams tensor by tensor; the checkpoint lives on the pod's disk, not in memory.
        publish=StageResources(cpu="16", memory="128Gi"),
    )


__all__ = [
    "GPUS_PER_NODE",
    "ClusterConfig",
    "ImageConfig",
    "StageResources",
    "paper_cluster",
    "small_gpu_cluster",
]
