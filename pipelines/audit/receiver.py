"""`provline lineage serve`: a Marquez-compatible OpenLineage receiver that writes to the lineage store.

POST /api/v1/lineage with one RunEvent as JSON (what openlineage-python's HttpTransport sends):
201 Created when stored (also when it was a duplicate: re-sending is idempotent); 400 with a JSON
error body for a body that is not JSON or not a valid RunEvent (Marquez answers 400/422 for those;
we answer 400 for both with the reason); 413 over the size limit; 411 without Content-Length;
404 for other paths, 405 for other methods. A handler error answers 500 and the server keeps going.

A Starlette app served by uvicorn: HTTP parsing, keep-alive (idle connections closed after 5 s),
concurrency (asyncio: a slow client costs a socket, not a thread; the store's writes run in a worker
thread, one at a time) and a graceful stop on Ctrl-C / SIGTERM are theirs."""

from __future__ import annotations

import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipelines.audit.store import IngestError, LineageStore

LINEAGE_PATH = "/api/v1/lineage"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024


class LineageReceiver:
    """The receiver on host:port (0: a free port); `start()` serves in a thread, `serve_forever()` here."""

    def __init__(self, store: LineageStore, host: str = "127.0.0.1", port: int = 5000,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.store = store
        self.max_bytes = max_bytes
        self.received = 0
        self._socket = socket.create_server((host, port))  # bound now: .url is known before serving
        routes = [Route(path, self._post, methods=["POST"]) for path in (LINEAGE_PATH, LINEAGE_PATH + "/")]
        app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})
        # a stop waits for the requests in flight, at most 3 s (a client stalled mid-body never finishes)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=3))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the lineage receiver did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError(f"the lineage receiver on {self.url} did not stop")
        self._socket.close()

    async def _post(self, request: Request) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            return JSONResponse({"error": "Content-Length is required"}, 411)
        if int(length) > self.max_bytes:  # answered without reading the body
            return JSONResponse({"error": f"payload of {length} bytes is over the limit of {self.max_bytes} bytes"},
                                413)
        body = await request.body()
        try:
            event = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return JSONResponse({"error": f"malformed JSON: {error}"}, 400)
        if isinstance(event, list):
            return JSONResponse({"error": "send one event per request (a JSON object), not a list"}, 400)
        try:
            result = await run_in_threadpool(self.store.ingest_payloads, [body], source="http")
        except IngestError as error:
            return JSONResponse({"error": "invalid OpenLineage RunEvent", "problems": error.problems}, 400)
        self.received += 1  # on the event loop: one at a time
        return JSONResponse({"stored": result.added, "duplicate": result.duplicates > 0}, 201)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    if error.status_code == 405:
        return JSONResponse({"error": f"{request.method} not allowed; POST events to {LINEAGE_PATH}"}, 405)
    return JSONResponse({"error": f"no such endpoint {request.url.path}; POST events to {LINEAGE_PATH}"},
                        error.status_code)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    # uvicorn logs the traceback ("Exception in ASGI application") and keeps serving
    return JSONResponse({"error": "internal error", "detail": str(error)[:500]}, 500)


def serve(store: LineageStore, host: str = "127.0.0.1", port: int = 5000, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    server = LineageReceiver(store, host, port, max_bytes)
    print(f"lineage receiver on {server.url}{LINEAGE_PATH} -> {store.path} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()  # uvicorn stops on Ctrl-C / SIGTERM, finishing the requests in flight
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled
        pass
