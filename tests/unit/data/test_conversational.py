"""TRL's conversational prompt form: loaded as given, checked by file:line, never mixed."""

import json

import pytest

from aapo.data.datasets import DatasetError, load_problems
from aapo.data.rows import prepare_rows
from aapo.models import load_tokenizer

SYSTEM = {"role": "system", "content": "Answer in \\boxed{}."}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_conversational_rows_load_and_render_their_own_messages(tmp_path):
    rows = [
        {"prompt": [SYSTEM, {"role": "user", "content": "What is 2 + 3?"}], "answer": "5"},
        {"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "answer": "2"},
    ]
    loaded = load_problems(_write(tmp_path / "c.jsonl", rows))
    assert [r["problem"] for r in loaded] == ["What is 2 + 3?", "What is 1 + 1?"]
    tokenizer = load_tokenizer("bundled")
    prepared, _ = prepare_rows(loaded, tokenizer, None, "plain", 512)
    assert prepared[0].conversational
    text = tokenizer.decode(prepared[0].prompt_ids)
    assert "Answer in \\boxed{}." in text and "What is 2 + 3?" in text
    # a configured system prompt opens only the messages that have none
    with_system, _ = prepare_rows(loaded, tokenizer, "Be brief.", "plain", 512)
    assert "Be brief." not in tokenizer.decode(with_system[0].prompt_ids)
    assert "Be brief." in tokenizer.decode(with_system[1].prompt_ids)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([{"role": "user"}], "prompt message 0 must be"),
        ([{"role": "robot", "content": "x"}], "prompt message 0 must be"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
         "must end with a user turn"),
        ([], "must end with a user turn"),
    ],
)  # fmt: skip
def test_bad_messages_are_named_by_line(tmp_path, prompt, message):
    rows = [
        {"prompt": [{"role": "user", "content": "ok"}], "answer": "1"},
        {"prompt": prompt, "answer": "2"},
    ]
    with pytest.raises(DatasetError, match=rf"c.jsonl:2: .*{message}"):
        load_problems(_write(tmp_path / "c.jsonl", rows))


def test_mixed_forms_are_refused(tmp_path):
    path = _write(
        tmp_path / "m.jsonl",
        [
            {"prompt": [{"role": "user", "content": "1 + 1"}], "answer": "2"},
            {"prompt": "2 + 2", "answer": "4"},
        ],
    )
    with pytest.raises(DatasetError, match=r"m.jsonl:2: rows mix conversational prompts"):
        load_problems(path)


def test_worked_examples_follow_a_conversations_system_turns(tmp_path):
    rows = [{"prompt": [SYSTEM, {"role": "user", "content": "What is 4 + 4?"}], "answer": "8"}]
    loaded = load_problems(_write(tmp_path / "c.jsonl", rows))
    tokenizer = load_tokenizer("bundled")
    (row,), _ = prepare_rows(loaded, tokenizer, None, "plain", 512, "boxed_arithmetic")
    text = tokenizer.decode(row.prompt_ids)
    system, shot, question = (
        text.index("Answer in \\boxed{}."),
        text.index("The final answer is \\boxed{5}."),
        text.index("What is 4 + 4?"),
    )
    assert system < shot < question
