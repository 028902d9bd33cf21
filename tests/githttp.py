"""A real git server over HTTP for tests: `git http-backend` behind optional Basic auth.

The password is the PAT a client must send; the server records the user names it saw.
It can hold the pack response (`pack_delay`, so a sampler sees git running) or stall
mid-pack (`stall_after`, for size and time limits). Shared by test_store and test_security.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote


class GitServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, root: Path, password: str | None) -> None:
        super().__init__(("127.0.0.1", 0), GitHandler)
        self.root, self.password = root, password
        self.usernames: list[str] = []
        self.pack_delay = 0.0  # seconds to hold the pack response: keeps git alive to be observed
        self.stall_after: int | None = None  # send this many pack bytes, then stall until closed
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{repo}"

    def close(self) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: GitServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def serve(self) -> None:
        srv = self.server
        user = ""
        if srv.password is not None:
            kind, _, encoded = self.headers.get("Authorization", "").partition(" ")
            user, _, password = base64.b64decode(encoded or b"").decode().partition(":")
            if kind != "Basic" or password != srv.password:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            srv.usernames.append(user)
        assert "chunked" not in self.headers.get("Transfer-Encoding", "")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(srv.root), "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command, "PATH_INFO": unquote(path), "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0", "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                             timeout=30).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        is_pack = self.command == "POST" and path.endswith("git-upload-pack")
        if is_pack:
            time.sleep(srv.pack_delay)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if is_pack and srv.stall_after is not None:
            self.wfile.write(payload[:srv.stall_after])
            self.wfile.flush()
            srv.closing.wait(60)
            return
        self.wfile.write(payload)


def publish(server_root: Path, work_tree: Path, name: str) -> None:
    """Serve `work_tree`'s history as `<name>` (a bare clone under the server root)."""
    target = server_root / name
    if target.exists():
        subprocess.run(["git", "--git-dir", str(target), "fetch", "-q", str(work_tree), "+refs/heads/*:refs/heads/*"],
                       check=True, capture_output=True)
    else:
        subprocess.run(["git", "clone", "-q", "--bare", str(work_tree), str(target)], check=True, capture_output=True)
