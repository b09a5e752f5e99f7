"""IIIF servers for the tests: the Image API reference implementation, a static server for manifests and
layouts, a misbehaving server, and Presentation 2.1 / 3.0 manifests written the way archives publish them.

The image server is ``iiif_testserver.py`` of the ``iiif`` package (github.com/zimeon/iiif, the IIIF
Image API reference implementation, GPL-3.0). It is a test-only dependency run as its own process
on a loopback port, never imported: Pisar's code neither links nor ships it.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from infra.local_services import Service, free_port, wait_for

# The archive's servers listen on 127.0.0.3, which the tests allow (PISAR_IIIF_ALLOW_NETWORKS): the
# rest of loopback, 127.0.0.1 with Redis and Postgres on it included, stays forbidden as in production.
ARCHIVE_HOST = "127.0.0.3"
ARCHIVE_NETWORK = f"{ARCHIVE_HOST}/32"
CAPPED_WIDTH = 1200
IIIF_TESTSERVER = str(Path(sys.executable).with_name("iiif_testserver.py"))


def start_image_server(image_dir: Path) -> Service:
    """The reference Image API server for ``image_dir`` (identifier: a file's name without its suffix),
    Image API 2.1 under ``/2.1_pil/`` and 3.0 under ``/3.0_pil/``."""
    port = free_port()
    proc = subprocess.Popen(  # in the image folder's parent: the server writes iiif_testserver.pid where it runs
        [
            sys.executable,
            IIIF_TESTSERVER,
            "--host",
            ARCHIVE_HOST,
            "--port",
            str(port),
            "--image-dir",
            str(image_dir),
            "--api-versions",
            "2.1,3.0",
            "-q",
        ],
        cwd=image_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{ARCHIVE_HOST}:{port}"
    wait_for(lambda: urllib.request.urlopen(url + "/", timeout=2).status == 200, "the IIIF image server", 30, proc)
    return Service(url, proc, grace_seconds=5)


def start_static_server(folder: Path) -> Service:
    """Python's own file server for ``folder``: the manifests and layouts an archive publishes."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", ARCHIVE_HOST, "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{ARCHIVE_HOST}:{port}"
    wait_for(lambda: urllib.request.urlopen(url + "/", timeout=2).status == 200, "the static file server", 30, proc)
    return Service(url, proc, grace_seconds=5)


def canvas_v3(canvas_id: str, label: str, size: tuple[int, int], service: str, layout: str | None = None) -> dict[str, Any]:
    """A Presentation 3.0 canvas painted with one image from an Image API 3 service, linking its PAGE file by ``seeAlso``."""
    canvas: dict[str, Any] = {
        "id": canvas_id,
        "type": "Canvas",
        "label": {"none": [label]},
        "width": size[0],
        "height": size[1],
        "items": [
            {
                "id": f"{canvas_id}/page",
                "type": "AnnotationPage",
                "items": [
                    {
                        "id": f"{canvas_id}/page/image",
                        "type": "Annotation",
                        "motivation": "painting",
                        "body": {
                            "id": f"{service}/full/max/0/default.jpg",
                            "type": "Image",
                            "format": "image/jpeg",
                            "width": size[0],
                            "height": size[1],
                            "service": [{"id": service, "type": "ImageService3", "profile": "level1"}],
                        },
                        "target": canvas_id,
                    }
                ],
            }
        ],
    }
    if layout:
        canvas["seeAlso"] = [
            {
                "id": layout,
                "type": "Dataset",
                "format": "application/xml",
                "profile": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15",
            }
        ]
    return canvas


def manifest_v3(manifest_id: str, label: str, canvases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": manifest_id,
        "type": "Manifest",
        "label": {"en": [label]},
        "items": canvases,
    }


def canvas_v2(canvas_id: str, label: str, size: tuple[int, int], service: str, layout: str | None = None) -> dict[str, Any]:
    """A Presentation 2.1 canvas: its image a ``sc:painting`` annotation with an Image API 2 service."""
    canvas: dict[str, Any] = {
        "@id": canvas_id,
        "@type": "sc:Canvas",
        "label": label,
        "width": size[0],
        "height": size[1],
        "images": [
            {
                "@id": f"{canvas_id}/image",
                "@type": "oa:Annotation",
                "motivation": "sc:painting",
                "on": canvas_id,
                "resource": {
                    "@id": f"{service}/full/full/0/default.jpg",
                    "@type": "dctypes:Image",
                    "format": "image/jpeg",
                    "width": size[0],
                    "height": size[1],
                    "service": {
                        "@context": "http://iiif.io/api/image/2/context.json",
                        "@id": service,
                        "profile": "http://iiif.io/api/image/2/level1.json",
                    },
                },
            }
        ],
    }
    if layout:
        canvas["seeAlso"] = [
            {"@id": layout, "format": "application/xml", "profile": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"}
        ]
    return canvas


def manifest_v2(manifest_id: str, label: str, canvases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": manifest_id,
        "@type": "sc:Manifest",
        "label": label,
        "sequences": [{"@id": f"{manifest_id}/sequence/normal", "@type": "sc:Sequence", "canvases": canvases}],
    }


def collection_v3(collection_id: str, members: list[str]) -> dict[str, Any]:
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": collection_id,
        "type": "Collection",
        "label": {"en": ["a test collection"]},
        "items": [{"id": m, "type": "Manifest", "label": {"en": [m]}} for m in members],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")


class Misbehaving(http.server.ThreadingHTTPServer):
    """An in-process server that misbehaves by path; it counts the requests each path got.

    ``/busy/...``: 429 with ``Retry-After: 1`` on the first request, then it passes on to the real
    server at ``upstream`` (a rate-limited archive); ``/capped/...``: the real server, its
    ``info.json`` saying ``maxWidth: CAPPED_WIDTH``; ``/hang/...``: accepts and never answers;
    ``/redirect?to=URL``: 302 to URL; ``/deep``: a JSON document 1,000 levels deep; ``/notjson``:
    HTML; ``/huge``: a 50 MB manifest. ``/up/PATH``: the real server's ``PATH``; ``/down/TAG/PATH``:
    503 while ``down`` is set (a server that is down), then the real server's ``PATH``.
    """

    daemon_threads = True

    def __init__(self, upstream: str = "", host: str = ARCHIVE_HOST) -> None:
        super().__init__((host, free_port()), _Handler)
        self.upstream = upstream
        self.hits: Counter[str] = Counter()
        self.agents: set[tuple[str, str]] = set()  # (User-Agent, Accept-Encoding) of the requests seen
        self.stop_hanging = threading.Event()
        self.down = True
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def close(self) -> None:
        self.stop_hanging.set()
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Misbehaving

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        self.server.hits[path.split("?", 1)[0]] += 1
        self.server.agents.add((self.headers.get("User-Agent", ""), self.headers.get("Accept-Encoding", "")))
        if path.startswith("/busy/"):
            if self.server.hits[path.split("?", 1)[0]] == 1:
                return self._send(429, b"slow down", {"Retry-After": "1"})
            return self._relay(path.removeprefix("/busy"))
        if path.startswith(("/up/", "/down/")):
            if path.startswith("/down/") and self.server.down:
                return self._send(503, b"down for maintenance")
            return self._relay(path.removeprefix("/up") if path.startswith("/up/") else "/" + path.split("/", 3)[3])
        if path.startswith("/capped/"):  # the upstream image server, but it serves nothing wider than CAPPED_WIDTH
            with urllib.request.urlopen(self.server.upstream + path.removeprefix("/capped"), timeout=30) as response:
                body, kind = response.read(), response.headers.get("Content-Type", "")
            if path.endswith("/info.json"):
                body = json.dumps({**json.loads(body), "maxWidth": CAPPED_WIDTH}).encode()
            return self._send(200, body, {"Content-Type": kind})
        if path.startswith("/hang"):
            self.server.stop_hanging.wait(60)
            return None
        if path.startswith("/redirect?to="):
            return self._send(302, b"", {"Location": path.split("=", 1)[1]})
        if path == "/deep":
            return self._send(200, b"[" * 1000 + b"]" * 1000)
        if path == "/notjson":
            return self._send(200, b"<html><body>not a manifest</body></html>", {"Content-Type": "text/html"})
        if path == "/huge":
            return self._send(200, b'{"label": "' + b"x" * (50 << 20) + b'"}')
        return self._send(404, b"no such thing")

    def _relay(self, path: str) -> None:
        """The upstream server's answer for ``path``, passed on."""
        with urllib.request.urlopen(self.server.upstream + path, timeout=30) as response:
            return self._send(200, response.read(), {"Content-Type": response.headers.get("Content-Type", "")})

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Listener:
    """A socket listening on ``host`` that records every connection: proof that nothing connected."""

    def __init__(self, host: str) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.3)
        self.sock.close()
