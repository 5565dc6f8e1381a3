"""lm-evaluation-harness on an exported checkpoint, offline: our held-out set as a local task through
lm_eval's Hugging Face class (our modeling code via trust_remote_code), both request types checked against
our own engine — generate_until against greedy decoding, loglikelihood against our log-probs."""

import pytest
import torch

from configs.evaluation import scale_evaluate
from data_contracts.evaluation import ComparisonRow
from evals.compare import load_engine
from evals.lm_eval_task import lm_eval_results, lm_eval_rows, metrics_from, run_lm_eval, write_local_task
from inference.sampling import SamplingParams

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.setenv(name, "1")
        yield


@pytest.fixture(scope="module")
def local_task(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    names = write_local_task(world.tasks, world.envs, folder, max_gen_toks=64)
    return folder, names


@pytest.fixture(scope="module")
def results(world, local_task):
    folder, names = local_task
    return lm_eval_results(world.checkpoint, names, include_path=folder, batch_size=4, log_samples=True)


def test_local_task_has_a_generation_and_a_loglikelihood_part(world, local_task):
    folder, names = local_task
    assert names == ["ling26_heldout_gen", "ling26_heldout_ll"]
    assert {p.name for p in folder.glob("*.yaml")} == {f"{n}.yaml" for n in names}


def test_the_model_lm_eval_runs_is_our_code_with_our_weights(world, results):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(world.checkpoint), trust_remote_code=True, device="cpu", batch_size=1)
    assert type(lm.model).__module__.startswith("transformers_modules.")
    ours = load_engine(world.checkpoint, base=world.model_cfg).model
    tokens = torch.from_numpy(world.heldout_tokens[:40].astype("int64"))[None]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(tokens).logits, ours(tokens).logits, rtol=0, atol=0)


def test_generate_until_answers_what_our_greedy_engine_answers(world, results):
    samples = results["samples"]["ling26_heldout_gen"]
    tool_free = [t for t in world.tasks if not world.envs[t.family].tool_names]
    assert len(samples) == len(tool_free)
    engine = load_engine(world.checkpoint, base=world.model_cfg)
    greedy = engine.generate([t.prompt for t in tool_free], SamplingParams(temperature=0.0, max_new_tokens=64))
    by_prompt = {t.prompt: g.text for t, g in zip(tool_free, greedy, strict=True)}
    for sample in samples:
        assert sample["resps"][0][0] == by_prompt[sample["doc"]["prompt"]]
        # The memorised answers are the tasks' answers, so the filtered exact match holds per document.
        assert sample["exact_match"] == 1.0, sample["filtered_resps"]
    assert metrics_from(results)["ling26_heldout_gen"]["exact_match:answer"] == 1.0


def test_loglikelihood_equals_our_log_probs(world, results):
    engine = load_engine(world.checkpoint, base=world.model_cfg)
    samples = results["samples"]["ling26_heldout_ll"]
    assert len(samples) == len(world.tasks)
    for sample in samples:
        prompt, reference = sample["doc"]["prompt"], sample["doc"]["reference"]
        # lm_eval's split: the context's trailing whitespace (our prompts' newline) moves to the continuation,
        # the whole text is encoded once and the context's tokens are cut off its front.
        context = prompt.rstrip()
        whole, head = engine.encode(prompt + reference), engine.encode(context)
        with torch.no_grad():
            logp = torch.log_softmax(engine.model(torch.tensor([whole])).logits[0].float(), -1)
        ours = sum(float(logp[i - 1, whole[i]]) for i in range(len(head), len(whole)))
        loglikelihood, is_greedy = sample["resps"][0][0]
        assert loglikelihood == pytest.approx(ours, abs=1e-3)
        assert is_greedy  # memorised: every reference token is the argmax
    metrics = metrics_from(results)["ling26_heldout_ll"]
    assert metrics["acc"] == 1.0 and 1.0 <= metrics["perplexity"] < 2.0


def test_run_lm_eval_metrics_become_comparison_rows(world, local_task):
    folder, names = local_task
    metrics = run_lm_eval(world.checkpoint, names[:1], include_path=folder, limit=2, batch_size=2)
    assert set(metrics) == {"ling26_heldout_gen"} and "exact_match_stderr:answer" in metrics["ling26_heldout_gen"]
    rows = ComparisonRow.validate(__import__("pandas").DataFrame(lm_eval_rows("sft", metrics)))
    assert list(rows["metric"]) == ["lm_eval.ling26_heldout_gen.exact_match:answer"]


def test_unknown_tasks_and_folders_without_a_tokenizer_are_refused(world, local_task, tmp_path):
    folder, _ = local_task
    with pytest.raises(FileNotFoundError, match=r"lacks config\.json, tokenizer\.json, tokenizer_config\.json"):
        run_lm_eval(tmp_path, ["ling26_heldout_gen"], include_path=folder)
    with pytest.raises(ValueError, match="no task 'ling26_nope'"):
        run_lm_eval(world.checkpoint, ["ling26_nope"], include_path=folder)


def test_the_scale_profile_names_public_tasks_lm_eval_knows():
    from lm_eval.tasks import TaskManager

    assert set(scale_evaluate().lm_eval.tasks) <= set(TaskManager().all_tasks)
