"""A misbehaving MCP server + authorization server in one, on 127.0.0.1.

Real HTTP (stdlib ThreadingHTTPServer), so the broker's transport limits
meet real sockets. Tests set `metadata` (overrides merged into an otherwise
valid AS metadata document) or `mode`:

- "normal": valid documents, with `metadata` applied;
- "huge": the AS metadata is 5 MB of JSON;
- "slow": the AS metadata drips one byte every 0.3 s.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HostileServer:
    def __init__(self) -> None:
        self.metadata: dict = {}
        self.mode = "normal"
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.mcp_url = f"{self.base}/mcp"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def as_metadata(self) -> dict:
        doc = {
            "issuer": self.base,
            "authorization_endpoint": f"{self.base}/authorize",
            "token_endpoint": f"{self.base}/token",
            "registration_endpoint": f"{self.base}/register",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
        }
        doc.update(self.metadata)
        return doc

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _json(self, status, doc, extra=()):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/mcp":
                    prm = f"{server.base}/.well-known/oauth-protected-resource/mcp"
                    self._json(
                        401, {"error": "invalid_token"}, [("WWW-Authenticate", f'Bearer resource_metadata="{prm}"')]
                    )
                else:
                    self._json(404, {})

            def do_GET(self):
                if self.path == "/.well-known/oauth-protected-resource/mcp":
                    self._json(200, {"resource": server.mcp_url, "authorization_servers": [server.base]})
                elif self.path == "/.well-known/oauth-authorization-server":
                    if server.mode == "huge":
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.end_headers()  # no Content-Length: the cap must hold while streaming
                        try:
                            self.wfile.write(b'{"x": "' + b"a" * (5 << 20) + b'"}')
                        except OSError:
                            pass
                    elif server.mode == "slow":
                        body = json.dumps(server.as_metadata()).encode()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        try:
                            for i in range(len(body)):
                                self.wfile.write(body[i : i + 1])
                                self.wfile.flush()
                                time.sleep(0.3)
                        except OSError:
                            pass
                    else:
                        self._json(200, server.as_metadata())
                else:
                    self._json(404, {})

        return Handler
