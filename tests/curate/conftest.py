import pytest

from configs import resolve

SMALL = {
    "environments.sft_prompts_per_family": 24,
    "environments.rl_prompts_per_family": 8,
    "environments.eval_prompts_per_family": 12,
    "environments.max_difficulty": 2,
    "curate.stdlib_max_files": 12,
    "curate.env_pretrain_prompts_per_family": 40,
    "curate.vocab_size": 512,
    "model.vocab_size": 512,
    "curate.shard_tokens": 20000,
}


@pytest.fixture(scope="session")
def small_cfg():
    return resolve("tiny_cpu", SMALL)


@pytest.fixture(scope="session")
def curated(small_cfg, tmp_path_factory):
    from corpus.curation import run_curation

    out = tmp_path_factory.mktemp("curated")
    report = run_curation(small_cfg, out)
    return out, report
