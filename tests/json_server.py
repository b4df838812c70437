"""A JSON-over-HTTP server on 127.0.0.1 for the tests that talk to an OpenAI-compatible
endpoint: a real socket and a real HTTP exchange, each POST answered by a Python function.

    with JsonServer(lambda headers, body: (200, {"ok": True}, {})) as srv:
        ChatEndpoint(srv.base_url, ...)          # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (request headers, lower-cased; JSON body) -> (status, JSON reply, extra response headers);
# a reply of bytes is sent as it is (a body that is not JSON), its Content-Type from the headers
Answer = Callable[[dict[str, str], dict[str, Any]], tuple[int, dict[str, Any] | bytes, dict[str, str]]]


class JsonServer:
    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply, headers = answer({k.lower(): v for k, v in self.headers.items()}, body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                extra = dict(headers)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", extra.pop("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass   # the client gave up waiting (the timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> JsonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port_url() -> str:
    """An OpenAI-style base URL on 127.0.0.1 where nothing listens: a port bound, then freed."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"
