"""Placeholder for chinvex-gateway: a tiny HTTP server on --host/--port (127.0.0.1:7778)."""
import argparse
import http.server
import json
import signal
import sys


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"service": "chinvex-gateway", "ok": True}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7778)
    opts = parser.parse_args()
    server = http.server.HTTPServer((opts.host, opts.port), Health)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"chinvex-gateway listening on {opts.host}:{opts.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
