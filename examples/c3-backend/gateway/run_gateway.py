"""Placeholder for chinvex-gateway: a tiny HTTP server on --host/--port (127.0.0.1:7778).

Like the real gateway of incident 003 it warms up before it binds its port
(`GATEWAY_WARMUP_S` seconds, 0 by default), so a port held by another process makes
it crash *after* its warm-up, past PM2's default min_uptime of 1 s: PM2 never counts
those restarts toward max_restarts, which is how it reached 3,446 restarts.
"""
import argparse
import http.server
import json
import os
import signal
import sys
import time


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
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("INFO: Starting gateway warmup...", flush=True)
    time.sleep(float(os.environ.get("GATEWAY_WARMUP_S", "0")))
    print(f"INFO: Gateway warmup complete ({os.environ.get('GATEWAY_CONTEXTS', '0')} contexts loaded)", flush=True)
    try:
        server = http.server.HTTPServer((opts.host, opts.port), Health)
    except OSError as err:
        print(f"ERROR: [Errno {err.errno}] error while attempting to bind on address ('{opts.host}', {opts.port})", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"chinvex-gateway listening on {opts.host}:{opts.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
