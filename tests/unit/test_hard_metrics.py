"""metrics.jsonl on resume: a last line cut short by a kill is dropped, not fatal."""

import json
import logging

import pytest

from aapo.metrics import JsonlSink, read_metrics


def _lines(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def test_resume_drops_a_truncated_last_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines({"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}) + '{"step": 3, "lo')
    with caplog.at_level(logging.WARNING, logger="aapo.metrics"):
        sink = JsonlSink(path, resume_step=2)
    sink.write(3, {"loss": 0.3})
    sink.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert "metrics.jsonl:3: dropping an incomplete last line" in caplog.text


def test_resume_still_drops_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines({"step": 1}, {"step": 2}, {"step": 3}))
    JsonlSink(path, resume_step=2).close()
    assert read_metrics(path) == [{"step": 1}, {"step": 2}]


def test_a_broken_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines({"step": 1}) + "garbage\n" + _lines({"step": 2}))
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics record"):
        JsonlSink(path, resume_step=2)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"step": 1}, {"step": "2"}],
            r"metrics.jsonl:2: field 'step' must be an integer >= 0, got '2'",
        ),
        ([{"step": 1}, {"loss": 0.1}, {"step": 3}], r"metrics.jsonl:2: field 'step' .* got None"),
        ([{"step": -4}, {"step": 1}], r"metrics.jsonl:1: field 'step' .* got -4"),
        ([{"step": 1.5}, {"step": 2}], r"metrics.jsonl:1: field 'step' .* got 1.5"),
        (
            [{"step": 1}, {"step": 2}, {"step": 1}, {"step": 3}],
            r"metrics.jsonl:3: step 1 after step 2",
        ),
    ],
)
def test_a_record_whose_step_cannot_be_trusted_is_an_error_naming_it(tmp_path, records, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_lines(*records))
    before = path.read_text()
    with pytest.raises(ValueError, match=message):
        JsonlSink(path, resume_step=2)
    assert path.read_text() == before  # nothing rewritten


def test_a_completions_file_with_many_lines_a_step_resumes(tmp_path):
    path = tmp_path / "completions.jsonl"
    path.write_text(_lines({"step": 1, "c": "a"}, {"step": 1, "c": "b"}, {"step": 2, "c": "c"}))
    JsonlSink(path, resume_step=1).close()
    assert [r["c"] for r in read_metrics(path)] == ["a", "b"]
