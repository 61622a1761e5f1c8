"""Log lines in logfmt and JSON, with every known secret redacted."""

from __future__ import annotations

import json
import logging
import sys

from pg_runbook_exporter.logs import JsonFormatter, LogfmtFormatter, RedactingFilter


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(
        "pg_runbook_exporter.session", logging.WARNING, __file__, 1, message, args, None
    )


def test_secrets_and_url_passwords_are_redacted_whatever_the_format() -> None:
    redacting = RedactingFilter(("hunter2",))
    line = record("lost %s: %s", "postgresql://u:pa55@db/portal", 'password "hunter2" rejected')
    assert redacting.filter(line)
    logfmt = LogfmtFormatter().format(line)
    assert logfmt.endswith(
        "level=warning logger=pg_runbook_exporter.session "
        'msg="lost postgresql://u:***@db/portal: password \\"***\\" rejected"'
    )
    as_json = json.loads(JsonFormatter().format(line))
    assert as_json["msg"] == 'lost postgresql://u:***@db/portal: password "***" rejected'
    assert as_json["level"] == "warning"
    assert "hunter2" not in logfmt + json.dumps(as_json)


def test_a_traceback_is_redacted_too() -> None:
    try:
        raise RuntimeError("connect to postgresql://u:s3cret@db failed")
    except RuntimeError:
        line = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    RedactingFilter().filter(line)
    text = LogfmtFormatter().format(line)
    assert "s3cret" not in text
    assert "postgresql://u:***@db" in text
