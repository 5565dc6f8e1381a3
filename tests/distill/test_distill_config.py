import pytest

from configs import resolve
from configs.base import ConfigError
from configs.distill import AGENTIC_FAMILIES, DistillConfig


def test_default_routes_agentic_families_to_the_kpop_teacher_and_the_rest_to_post_train():
    teachers = DistillConfig().teachers
    assert {f for f, t in teachers.items() if t == "kpop_rl"} == set(AGENTIC_FAMILIES)
    assert {f for f, t in teachers.items() if t == "post_train"} == {"math", "code"}


def test_pipeline_config_carries_distill_and_takes_dotted_overrides():
    cfg = resolve("tiny_cpu", "distill.top_k=4 distill.teachers.math=kpop_rl distill.on_policy.steps=0")
    assert cfg.distill.top_k == 4
    assert cfg.distill.teachers["math"] == "kpop_rl"
    assert cfg.distill.on_policy.steps == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("distill.top_k=0", "distill.top_k"),
        ("{distill: {teachers: {poetry: post_train}}}", "distill.teachers.poetry"),
        ("distill.teachers.math=oracle", "unknown teacher 'oracle'"),
        ("distill.logit.batch_size=0", "distill.logit.batch_size"),
        ("distill.sampling.temperature=-1.0", "distill.sampling.temperature"),
        ("distill.on_policy.lr=0.0", "distill.logit.lr and distill.on_policy.lr"),
    ],
)
def test_invalid_distill_configs_fail_before_any_work_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve("tiny_cpu", overrides)


def test_teacher_routing_names_known_families_and_at_least_one():
    with pytest.raises(ConfigError, match="unknown family 'poetry'"):
        DistillConfig(teachers={"poetry": "post_train"})
    with pytest.raises(ConfigError, match="at least one family"):
        DistillConfig(teachers={})
