"""A fake Anthropic Messages API on 127.0.0.1, for the real `anthropic` client to talk to."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeAnthropic:
    def __init__(self, answer: str = "# Architecture\nA fake description.", status: int = 200,
                 error: str = "fake internal error"):
        self.answer, self.status, self.error = answer, status, error
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body or b"{}")})
                if fake.status != 200:
                    payload = {"type": "error", "error": {"type": "api_error", "message": fake.error}}
                else:
                    payload = {"id": "msg_fake", "type": "message", "role": "assistant", "model": "fake",
                               "content": [{"type": "text", "text": fake.answer}], "stop_reason": "end_turn",
                               "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
                data = json.dumps(payload).encode()
                self.send_response(fake.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeAnthropic":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
