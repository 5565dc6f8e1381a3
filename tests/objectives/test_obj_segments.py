"""The deterministic redundancy detector that stands in for the report's LLM judge, and post-answer pruning."""

from training.objectives.segments import prune_after_answer, redundancy_fraction, redundant_flags, segments


def test_flags_every_verbose_response_and_no_step_by_step_one(env_groups):
    for _, _, candidates in env_groups:
        for c in candidates:
            if c.style == "verbose":
                assert redundancy_fraction(c.text) > 0, c.text
            if c.style in ("cot", "short"):
                assert redundancy_fraction(c.text) == 0, c.text


def test_repeated_tool_call_is_redundant_even_with_other_spacing_and_key_order():
    call = '<call>{"tool":"lookup","args":{"item":"zorb","field":"price"}}</call><result>4</result>'
    again = '<call>{"args": {"field": "price", "item": "zorb"}, "tool": "lookup"}</call><result>4</result>'
    text = f"{call}\nprice of zorb = 4\n{again}\nAnswer: 4"
    assert redundant_flags(segments(text)) == [False, False, True]
    assert redundancy_fraction(text) == 1 / 3


def test_recheck_counts_only_after_the_answer_is_derived():
    before = "12*3=36\nLet me double-check: 36+1=37\n37-2=35\nAnswer: 35"
    after = "12*3=36\n36-1=35\nLet me verify: 35+1=36\nAnswer: 35"
    assert redundancy_fraction(before) == 0
    assert redundancy_fraction(after) == 1 / 3


def test_restated_step_is_redundant_anywhere():
    assert redundancy_fraction("2+2=4\n4*3=12\n2 + 2 = 4\n12-1=11\nAnswer: 11") == 1 / 4


def test_pruning_turns_verbose_into_step_by_step_and_keeps_it_correct(env_groups):
    for env, task, candidates in env_groups:
        cot = next(c.text for c in candidates if c.style == "cot")
        for c in candidates:
            pruned = prune_after_answer(c.text)
            if c.style == "verbose":
                assert pruned == cot
                assert env.verify(task, pruned).correct
            if c.style in ("cot", "short"):
                assert pruned == c.text


def test_pruning_keeps_new_reasoning_after_an_early_match():
    # 3+4=7 already shows the final value; the next step is still needed and is not a re-check.
    text = "3+4=7\n7*1=7\nLet me double-check: 7*1=7\nAnswer: 7\n"
    assert prune_after_answer(text) == "3+4=7\n7*1=7\nAnswer: 7\n"


def test_response_without_answer_line_is_left_alone():
    text = "2+2=4\n2+2=4"
    assert prune_after_answer(text) == text
    assert redundancy_fraction(text) == 1 / 2
