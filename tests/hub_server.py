"""A Hugging Face hub on the loopback address, for tests: serves files the tests write, in the hub's URL layout.

``{endpoint}/{repo_id}/resolve/{revision}/{filename}`` answers ``HEAD`` and ``GET`` with the headers
``huggingface_hub`` reads (``X-Repo-Commit``, ``ETag`` = the file's sha256, as the hub gives for LFS
files, ``Content-Length``); a file it does not have gets a 404 with ``X-Error-Code: EntryNotFound``, as
the hub answers. Every request is logged (method, path) so a test can tell a download from a cache hit.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path

__all__ = ["HubServer"]

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class HubServer:
    """``with HubServer() as hub: hub.add(repo_id, filename, path)``; ``hub.endpoint`` is its ``HF_ENDPOINT``.

    Attributes:
        commit: The 40-hex commit every served file belongs to.
        requests: ``(method, path)`` of every request, in order.
    """

    commit = "c0ffee" + "0" * 34

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], Path] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _answer(self, body: bool) -> None:
                server.requests.append((self.command, self.path))
                if self.path == "/":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                m = _RESOLVE.match(self.path.split("?", 1)[0])
                path = server.files.get((m["repo"], m["file"])) if m and m["rev"] in ("main", server.commit) else None
                if path is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if m else "RepoNotFound")
                    self.send_header("X-Repo-Commit", server.commit)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", server.commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def add(self, repo_id: str, filename: str, path: Path) -> None:
        """Serve ``path`` as ``filename`` of the model repo ``repo_id`` (revision ``main``)."""
        self.files[(repo_id, filename)] = Path(path)

    def downloads(self) -> list[str]:
        """Files fetched with GET (``.../resolve/...``; huggingface_hub also GETs an API listing of its own)."""
        return [p for m, p in self.requests if m == "GET" and "/resolve/" in p]

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
