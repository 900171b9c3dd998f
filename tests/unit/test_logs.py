import io
import json
import logging

from smartroute.infra.logs import configure_logging, mask_url
from smartroute.infra.settings import Settings


def test_passwords_in_urls_are_masked():
    text = "connecting to postgresql://app:s3cr%40t@db:5432/x and redis://:pw@cache:6379/0"
    masked = mask_url(text)
    assert "s3cr" not in masked and "pw@" not in masked
    assert "postgresql://app:***@db:5432/x" in masked


def test_json_logs_are_one_object_per_line_and_masked():
    stream = io.StringIO()
    configure_logging(Settings.from_env({"SMARTROUTE_LOG_FORMAT": "json"}), stream=stream)
    try:
        logging.getLogger("smartroute.test").info("db at %s", "postgresql://u:hunter2@h/db")
    finally:
        logging.getLogger().handlers.clear()
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["level"] == "INFO"
    assert record["message"] == "db at postgresql://u:***@h/db"
