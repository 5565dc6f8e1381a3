"""Each profile's tasks for a cluster: the pipeline's tasks re-declared with the profile's image, pods and torchrun
shape (``cfg.cluster``).

Flyte fixes a task's type (a plain pod, or kfpytorch ``Elastic``: torchrun in one pod, a PyTorchJob over several),
its image and its resources when the workflow is compiled, so on a cluster the profile cannot be a workflow input.
Every profile therefore gets its own copy of each task here, named ``<task>_<profile>`` and kept as an attribute of
this module, so that flytekit's default task resolver finds it again by module and name inside the container. The
copies run the very same functions as the local tasks (``tasks.*.task``), with the same cache policy.
``workflows.pipeline`` builds one workflow per profile from them; ``ling26_pipeline`` keeps the local tasks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from flytekit import Cache, PythonFunctionTask, Resources, task
from flytekit.extras.accelerators import GPUAccelerator

from configs import PROFILES, PipelineConfig
from configs.cluster import StageResources
from tasks.distill.task import distill
from tasks.evaluate.task import evaluate
from tasks.kpop_rl.task import kpop_rl
from tasks.migrate.task import migrate
from tasks.pipeline_run import close_pipeline_run, open_pipeline_run, resolve_config
from tasks.post_train.task import post_train
from tasks.pretrain.task import pretrain
from tasks.publish.task import publish
from workflows.curation import CURATION_TASKS
from workflows.image import task_image

# The local tasks by name: the pipeline's bookkeeping tasks, then its stages in order (curation's map and reduce
# tasks, ending with the curate stage task, in place of the stage).
LOCAL_TASKS: dict[str, PythonFunctionTask] = {
    "resolve_config": resolve_config,
    "open_pipeline_run": open_pipeline_run,
    **CURATION_TASKS,
    "pretrain": pretrain,
    "migrate": migrate,
    "post_train": post_train,
    "kpop_rl": kpop_rl,
    "distill": distill,
    "evaluate": evaluate,
    "publish": publish,
    "close_pipeline_run": close_pipeline_run,
}
# The bookkeeping tasks only open and close MLflow runs and parse the config: a small pod.
BOOKKEEPING = StageResources(cpu="1", memory="2Gi")


def stage_resources(cfg: PipelineConfig, name: str) -> StageResources:
    """The pods ``cfg`` asks for task ``name``; each of curation's map and reduce tasks gets the curate stage's."""
    cluster = cfg.cluster
    by_stage = {
        **{curation_task: cluster.curate for curation_task in CURATION_TASKS},
        "pretrain": cluster.pretrain,
        "migrate": cluster.migrate,
        "post_train": cluster.post_train,
        "kpop_rl": cluster.kpop_rl,
        "distill": cluster.distill,
        "evaluate": cluster.evaluate,
        "publish": cluster.publish,
    }
    return by_stage.get(name, BOOKKEEPING)


def _task_config(res: StageResources) -> Any:
    if not res.elastic:
        return None
    from flytekitplugins.kfpytorch import Elastic

    # Shared memory comes from the task's `shared_memory` (below), the plugin's own switch being deprecated.
    return Elastic(nnodes=res.nnodes, nproc_per_node=res.nproc_per_node, increase_shared_mem=False)


def profile_task(name: str, cfg: PipelineConfig) -> PythonFunctionTask:
    """Local task ``name`` re-declared for ``cfg``'s cluster as ``<name>_<profile>``: the profile's image, the pod's
    requests = limits (a GPU pod must ask for whole GPUs it keeps; equal memory keeps the pod from being evicted
    first), the accelerator on GPU pods, and ``Elastic`` where the stage runs on several processes."""
    base = LOCAL_TASKS[name]
    res = stage_resources(cfg, name)
    function: Callable[..., Any] = base.task_function

    @functools.wraps(function)
    def variant(**kwargs: Any) -> Any:
        return function(**kwargs)

    variant.__name__ = variant.__qualname__ = f"{name}_{cfg.profile}"
    variant.__module__ = __name__
    meta = base.metadata
    pod = Resources(cpu=res.cpu, mem=res.memory, gpu=res.gpu or None)
    return task(
        variant,
        task_config=_task_config(res),
        cache=Cache(version=meta.cache_version, ignored_inputs=meta.cache_ignore_input_vars) if meta.cache else False,
        enable_deck=not base.disable_deck,
        container_image=task_image(cfg.cluster.image),
        requests=pod,
        limits=pod,
        accelerator=GPUAccelerator(cfg.cluster.accelerator) if res.gpu and cfg.cluster.accelerator else None,
        # torchrun's workers (gloo's and NCCL's transports, DataLoader workers) exchange tensors through /dev/shm,
        # which a pod holds at 64 MB unless asked.
        shared_memory=True if res.elastic else None,
    )


def profile_tasks(profile: str) -> Mapping[str, PythonFunctionTask]:
    """The tasks of ``profile``'s workflow, by local name."""
    return TASKS[profile]


def _declare_all() -> dict[str, dict[str, PythonFunctionTask]]:
    declared = {}
    for profile, make in PROFILES.items():
        cfg = make()
        declared[profile] = {name: profile_task(name, cfg) for name in LOCAL_TASKS}
        # Module attributes: what the default task resolver loads in the container ("task-name pretrain_ling26_1t").
        globals().update({t.task_function.__name__: t for t in declared[profile].values()})
    return declared


TASKS = _declare_all()
