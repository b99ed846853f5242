"""A fake Anthropic API for tests, demos and benchmarks: the wire protocol of anthropic-api.md on a
real socket, with fault injection, usage overrides and a request log. Plain Python (no Django), so
tests, the benchmark and `manage.py fake_anthropic` can all import it.

    with FakeAnthropic(api_keys={"sk-ant-test-1"}) as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-test-1")
"""

from .app import USAGE_OVERRIDE_HEADER
from .faults import FAULT_HEADER, MAGIC_WORD, STREAM_SHAPE_HEADER
from .request_log import RecordedRequest
from .server import KEYS_ENV_VAR, FakeAnthropic, api_keys_from, run_until_signalled

__all__ = [
    "FAULT_HEADER",
    "KEYS_ENV_VAR",
    "MAGIC_WORD",
    "STREAM_SHAPE_HEADER",
    "USAGE_OVERRIDE_HEADER",
    "FakeAnthropic",
    "RecordedRequest",
    "api_keys_from",
    "run_until_signalled",
]
