"""A real HTTP server answering the two paths of EC2's instance metadata service that spot
notices use, on 127.0.0.1, for tests (EC2's own is reachable only from an EC2 instance)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from drkd.train.spot_notice import NOTICE_PATH, TOKEN_PATH

TOKEN = "test-session-token"


class MetadataServer:
    """IMDSv2 (``imdsv1=False``: a token is required, as on current AMIs) or IMDSv1 (PUT refused).

    ``post_notice()`` makes the instance-action path answer 200, as EC2 does two minutes before it
    reclaims a spot instance; until then it answers 404. ``requests`` counts notice requests.
    """

    def __init__(self, imdsv1: bool = False) -> None:
        self.imdsv1, self.notice, self.requests = imdsv1, False, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                if self.path != TOKEN_PATH or server.imdsv1:
                    return self._send(405)
                self._send(200, TOKEN)

            def do_GET(self) -> None:
                if self.path != NOTICE_PATH:
                    return self._send(404)
                server.requests += 1
                if not server.imdsv1 and self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._send(401)
                if not server.notice:
                    return self._send(404)
                self._send(200, json.dumps({"action": "terminate", "time": "2026-11-22T12:00:00Z"}))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def post_notice(self) -> None:
        self.notice = True

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
