"""Log lines in Distribution's two shapes, with its fields, and ``log.reportcaller``."""

from __future__ import annotations

import json
import logging

import pytest

from cargohold.log import JSONFormatter, LogstashFormatter, Recurring, TextFormatter


def record(message: str = "hello %s", *args: object, **fields: object) -> logging.LogRecord:
    made = logging.getLogger("cargohold.test").makeRecord(
        "cargohold.test",
        logging.WARNING,
        __file__,
        42,
        message,
        args or ("world",),
        None,
        func="some_function",
    )
    made.fields = fields  # as extra={"fields": ...} sets it
    return made


def test_text_lines_are_logrus_key_values() -> None:
    line = TextFormatter({"service": "registry"}).format(record(**{"http.request.id": "x-1"}))
    assert line.startswith('time="')
    assert ' level=warning msg="hello world" ' in line
    assert line.endswith("http.request.id=x-1 service=registry")


def test_json_lines_carry_the_fields() -> None:
    entry = json.loads(JSONFormatter({"service": "registry"}).format(record(pid=7)))
    assert (entry["level"], entry["msg"]) == ("warning", "hello world")
    assert (entry["service"], entry["pid"]) == ("registry", 7)
    assert "func" not in entry


@pytest.mark.parametrize("shape", [TextFormatter, JSONFormatter])
def test_reportcaller_names_the_function_and_the_line(shape: type[TextFormatter]) -> None:
    line = shape({}, report_caller=True).format(record())
    if shape is JSONFormatter:
        entry = json.loads(line)
        assert entry["func"] == "test_log.some_function"
        assert entry["file"] == f"{__file__}:42"
    else:
        assert "func=test_log.some_function" in line
        assert f"file={__file__}:42" in line


def test_logstash_lines_are_json_with_the_caller_as_function() -> None:
    entry = json.loads(LogstashFormatter({}, report_caller=True).format(record()))
    assert (entry["msg"], entry["function"]) == ("hello world", "test_log.some_function")


def test_a_recurring_problem_is_told_once_per_interval_with_how_often_it_came(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    recurring = Recurring(logging.getLogger("cargohold.test"), 60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="cargohold.test"):
        for second in (0, 1, 2, 30, 61, 62, 200):
            now[0] = float(second)
            recurring.warning("full", "storage is full: %s", "/srv")
        recurring.warning("other", "storage unavailable")
    assert [r.getMessage() for r in caplog.records] == [
        "storage is full: /srv",
        "storage is full: /srv (and 3 more times in the last 60 s)",
        "storage is full: /srv (and 1 more times in the last 60 s)",
        "storage unavailable",
    ]
