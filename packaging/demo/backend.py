#!/usr/bin/env python3
"""The demo backend behind sluice: a small page, a JSON echo, and a WebSocket echo, on one port.

Run by packaging/run.sh; uses Debian's python3-websockets (no other dependency).
"""
import argparse
import asyncio
import http
import json
import os
import time

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))


def page():
    with open(os.path.join(HERE, "index.html"), "rb") as f:
        return f.read()


async def process_request(path, headers):
    if headers.get("Upgrade", "").lower() == "websocket":
        return None  # continue with the WebSocket handshake
    if path == "/" or path.startswith("/index.html"):
        return http.HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8")], page()
    body = json.dumps({
        "backend": "sluice demo backend",
        "path": path,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "headers": dict(headers.raw_items()),
    }, indent=2).encode() + b"\n"
    return http.HTTPStatus.OK, [("Content-Type", "application/json")], body


async def echo(ws, path=None):
    async for message in ws:
        await ws.send(message)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001)
    args = ap.parse_args()
    async with websockets.serve(echo, args.host, args.port, process_request=process_request,
                                max_size=16 * 1024 * 1024):
        print(f"demo backend listening on {args.host}:{args.port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
