"""Checks the native-API unit tests share (their app fixture, ``native``, is in conftest)."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Client


def ims_error(resp: Any, code: str, status: int = 400) -> None:
    """The response is an IMS error body with ``code`` and a message."""
    assert resp.status_code == status, resp.text
    assert resp.json["error"]["code"] == code, resp.json
    assert resp.json["error"]["message"]


def wait_job(client: Client, project: str, job_id: str, timeout: float = 20.0) -> dict:
    """Poll GET /v1/{project}/jobs/{job_id} until SUCCESS or FAIL."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.get(f"/v1/{project}/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        if resp.json["status"] in ("SUCCESS", "FAIL"):
            return resp.json
        assert time.monotonic() < deadline, resp.json
        time.sleep(0.05)
