"""`provline lineage serve`: a Marquez-compatible OpenLineage receiver that writes to the lineage store.

POST /api/v1/lineage with one RunEvent as JSON (what openlineage-python's HttpTransport sends):
201 Created when stored (also when it was a duplicate: re-sending is idempotent); 400 with a JSON
error body for a body that is not JSON or not a valid RunEvent (Marquez answers 400/422 for those;
we answer 400 for both with the reason); 413 over the size limit; 411 without Content-Length;
404 for other paths, 405 for other methods. A handler error answers 500 and the server keeps going.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipelines.audit.store import IngestError, LineageStore

log = logging.getLogger(__name__)

LINEAGE_PATH = "/api/v1/lineage"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


class LineageReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: LineageStore, host: str = "127.0.0.1", port: int = 5000,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.store = store
        self.max_bytes = max_bytes
        self.received = 0
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: LineageReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # quiet by default; requests go to logging
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _reply(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        try:
            self._post()
        except Exception as error:  # noqa: BLE001 - never let one request take the server down
            log.exception("lineage receiver: request failed")
            self.close_connection = True
            try:
                self._reply(500, {"error": "internal error", "detail": str(error)[:500]})
            except OSError:
                pass

    def _post(self) -> None:
        if self.path.split("?")[0].rstrip("/") != LINEAGE_PATH:
            self._discard()
            return self._reply(404, {"error": f"no such endpoint {self.path}; POST events to {LINEAGE_PATH}"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return self._reply(411, {"error": "Content-Length is required"})
        size = int(length)
        if size > self.server.max_bytes:
            self.close_connection = True  # do not read the oversized body
            return self._reply(413, {"error": f"payload of {size} bytes is over the limit of "
                                              f"{self.server.max_bytes} bytes"})
        body = self.rfile.read(size)
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return self._reply(400, {"error": f"malformed JSON: {error}"})
        if isinstance(event, list):
            return self._reply(400, {"error": "send one event per request (a JSON object), not a list"})
        try:
            result = self.server.store.ingest_payloads([body], source="http")
        except IngestError as error:
            return self._reply(400, {"error": "invalid OpenLineage RunEvent", "problems": error.problems})
        with self.server._count_lock:
            self.server.received += 1
        self._reply(201, {"stored": result.added, "duplicate": result.duplicates > 0})

    def _discard(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.server.max_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _not_allowed(self) -> None:
        self._discard()
        if self.path.split("?")[0].rstrip("/") == LINEAGE_PATH:
            return self._reply(405, {"error": f"{self.command} not allowed; POST events to {LINEAGE_PATH}"})
        return self._reply(404, {"error": f"no such endpoint {self.path}"})

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815


def serve(store: LineageStore, host: str = "127.0.0.1", port: int = 5000, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    server = LineageReceiver(store, host, port, max_bytes)
    print(f"lineage receiver on {server.url}{LINEAGE_PATH} -> {store.path} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
