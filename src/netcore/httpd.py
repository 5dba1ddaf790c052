"""A small HTTP endpoint on daemon threads, for metrics and health checks.

Stdlib only (wsgiref + a thread per request), so that /metrics never runs on
the event loop and needs nothing installed. One instance per listening port.
"""
from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _HTTPServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):       # no line per scrape on stderr
        pass


class HTTPEndpoint:
    """Serves a WSGI app on host:port (0: a free port, known after start())."""

    def __init__(self, app, host: str, port: int, name: str = "netcore-http"):
        self.app, self.host, self.port, self.name = app, host, port, name
        self._http = None

    def start(self) -> int:
        """Bind and serve; an OSError (socket.gaierror for a host that does not
        resolve) when the address cannot be had."""
        family = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_Server", (_HTTPServer,), {"address_family": family})
        self._http = make_server(self.host, self.port, self.app, server_class, _QuietHandler)
        self.port = self._http.server_port
        threading.Thread(target=self._http.serve_forever, name=self.name, daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
