"""The real ASGI servers boot the project and answer on a socket."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import gateway_process


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_asgi_server_boots_and_answers_healthz(transactional_db, server):
    process = gateway_process(server=server).start()
    try:
        response = httpx.get(process.url + "/healthz?deep=1", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"
        assert response.headers["content-type"] == "application/json"
    finally:
        assert process.stop() is not None
