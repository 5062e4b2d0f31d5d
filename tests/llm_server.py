"""A real HTTP server on 127.0.0.1 whose every reply a test scripts, standing in for a hosted LLM
provider (which cannot be reached from here): it speaks the OpenAI chat-completions wire format
over real sockets, so timeouts, hung connections, 429s and 5xx reach the judge exactly as they
would from a provider. It records each request's arrival time (``time.monotonic()``, as the
judge's limiter), path, headers and JSON body. The ``llm_server`` fixture (tests/conftest.py)
starts one per test."""

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: an assistant message (``content``) or a raw ``body``, after ``delay_s``;
    ``hang``: read the request and never answer."""
    status: int = 200
    content: str | None = "[[A]]"
    body: str | None = None
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    logprobs: list | None = None


class Server:
    """Answers ``replies`` in order, then ``default(request_body)``; records what arrived."""

    def __init__(self):
        self.replies: deque[Reply] = deque()
        self.default = lambda body: Reply()
        self.requests: list[dict] = []  # {"t", "path", "headers", "body"}
        self.in_flight = self.max_in_flight = 0
        self.lock, self.release = threading.Lock(), threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def arrivals(self) -> list[float]:
        return [r["t"] for r in self.requests]

    def _next(self, path, headers, body) -> Reply:
        with self.lock:
            self.requests.append({"t": time.monotonic(), "path": path, "headers": headers, "body": body})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.replies.popleft() if self.replies else self.default(body)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = server._next(self.path, dict(self.headers), body)
                try:
                    if reply.hang:
                        server.release.wait()
                        return
                    time.sleep(reply.delay_s)
                    message = {"role": "assistant", "content": reply.content}
                    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
                    if reply.logprobs is not None:
                        choice["logprobs"] = {"content": reply.logprobs}
                    data = (reply.body if reply.body is not None else json.dumps({"choices": [choice]})).encode()
                    with server.lock:  # before the reply leaves: the judge may send the next one at once
                        server.in_flight -= 1
                    self.send_response(reply.status)
                    for key, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the judge gave up on this request
                    pass

        return Handler
