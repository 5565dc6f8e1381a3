"""Shortest-correct selection: shortest verified response, pruned of post-answer re-checks, never a wrong one."""

from training.objectives.distill import select_shortest_correct


def rows_and_verifier(env_groups):
    # Task ids repeat across difficulties, so the prompt id is the group's position.
    rows, tasks = [], {}
    for prompt_id, (env, task, candidates) in enumerate(env_groups):
        tasks[prompt_id] = (env, task)
        rows += [{"prompt_id": prompt_id, "text": c.text, "style": c.style} for c in candidates]

    def verify(prompt_id, text):
        env, task = tasks[prompt_id]
        return env.verify(task, text).correct

    return rows, verify


def test_picks_the_shortest_correct_and_never_a_wrong_one(env_groups):
    rows, verify = rows_and_verifier(env_groups)
    selected, stats = select_shortest_correct(rows, verify)
    assert stats["prompts_kept"] == len(env_groups) == len(selected)
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row["text"])
    for row in selected:
        assert verify(row["prompt_id"], row["text"])
        correct_lengths = [len(t) for t in by_prompt[row["prompt_id"]] if verify(row["prompt_id"], t)]
        assert row["length"] == len(row["text"]) <= min(correct_lengths)


def test_prunes_post_answer_rechecks_and_reports_removed_length():
    texts = {
        "a": "40+66=106\n106-15=91\nLet me double-check: 106-15=91\nAnswer: 91",
        "b": "40+66=106\n106-15=91\nLet me double-check: 40+66=106\nLet me double-check: 106-15=91\nAnswer: 91",
        "wrong": "40+66=106\n106-15=92\nAnswer: 92",
    }
    rows = [{"prompt_id": "p", "text": t} for t in texts.values()] + [{"prompt_id": "none", "text": "Answer: 0"}]

    def verify(prompt_id, text):
        return prompt_id == "p" and text.endswith("Answer: 91")

    selected, stats = select_shortest_correct(rows, verify)
    assert [row["text"] for row in selected] == ["40+66=106\n106-15=91\nAnswer: 91"]
    assert selected[0]["original_text"] == texts["a"]
    assert selected[0]["pruned_length"] == len("Let me double-check: 106-15=91\n")
    assert stats["mean_pruned_length"] == selected[0]["pruned_length"]
    assert stats["mean_length_removed"] == (len(texts["a"]) + len(texts["b"])) / 2 - selected[0]["length"]
    assert stats["prompts_without_correct"] == 1


def test_keeps_the_original_when_the_pruned_text_fails_verification():
    text = "<call>x</call>\n2+2=4\n<call>y</call>\nAnswer: 4"
    pruned_away = "<call>x</call>\n2+2=4\nAnswer: 4"

    def verify(prompt_id, candidate):
        # This task requires both tool calls, so the pruned text (a call fewer) is wrong.
        return "<call>y</call>" in candidate

    selected, stats = select_shortest_correct([{"prompt_id": 0, "text": text}], verify)
    assert selected[0]["text"] == text != pruned_away
    assert stats["mean_pruned_length"] == 0


def test_length_fn_counts_tokens_when_given():
    rows = [{"prompt_id": 0, "text": "aaaa bbbb\nAnswer: 1"}, {"prompt_id": 0, "text": "a b c d e f\nAnswer: 1"}]
    selected, _ = select_shortest_correct(rows, lambda p, t: True, length_fn=lambda t: len(t.split()))
    assert selected[0]["text"] == rows[0]["text"] and selected[0]["length"] == 4


def test_without_short_answers_the_verbose_ones_are_pruned_to_the_step_by_step_text(env_groups):
    rows, verify = rows_and_verifier(env_groups)
    selected, stats = select_shortest_correct([r for r in rows if r["style"] not in ("short", "cot")], verify)
    cots = {r["prompt_id"]: r["text"] for r in rows if r["style"] == "cot"}
    assert len(selected) == len(env_groups)
    for row in selected:
        assert row["text"] == cots[row["prompt_id"]] and row["pruned_length"] > 0
    assert stats["mean_pruned_length"] > 0 and stats["mean_length_removed"] > 0
