"""Reading a running Flower as a browser would: every page and API route, behind its basic auth."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote


def fetch(url: str, credentials: str | None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET, with basic auth when ``credentials`` (``user:password``) are given."""
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback test server
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch_json(url: str, credentials: str | None) -> object:
    status, body = fetch(url, credentials)
    assert status == 200, (url, status)
    return json.loads(body)


def flower_pages(base: str, credentials: str, worker_prefix: str) -> dict[str, str]:
    """Every page an operator can open, as text: dashboard, workers, one worker (its config and pool),
    tasks, one task, the broker, and the API behind them."""
    workers = fetch_json(f"{base}/api/workers?refresh=1", credentials)
    assert isinstance(workers, dict)
    names = [name for name in workers if name.startswith(worker_prefix)]
    tasks = fetch_json(f"{base}/api/tasks", credentials)
    assert isinstance(tasks, dict)
    paths = ["/", "/workers", "/tasks", "/broker", "/api/workers?refresh=1", "/api/tasks", "/metrics"]
    paths += [f"/worker/{quote(name)}" for name in names] + [f"/api/worker/{quote(name)}" for name in names]
    paths += [f"/task/{task_id}" for task_id in list(tasks)[:3]] + [f"/api/task/info/{task_id}" for task_id in list(tasks)[:3]]
    pages = {}
    for path in paths:
        status, body = fetch(base + path, credentials)
        pages[path] = f"{status} " + body.decode("utf-8", "replace")
    return pages
