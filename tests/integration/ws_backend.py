#!/usr/bin/python3
"""A WebSocket test backend for sluice's integration tests (Debian's python3-websockets).

    ws_backend.py --port 0 --events FILE

Listens on 127.0.0.1 only. When it listens it prints one line, "ready PORT", and flushes.

WebSocket behaviour (any path):
  - echoes every text and binary message as it came (same type, same payload);
  - "close:CODE:REASON"   closes the connection with that code and reason;
  - "die"                 drops its TCP connection at once (transport.abort()), no close frame;
  - "fragments:A|B|C"     sends one text message made of the fragments A, B, C;
  - the subprotocol "chat" is chosen when the client offers it; messages of any size are taken
    (max_size=None); the backend never pings by itself.

What it saw is appended to FILE as JSON lines (flushed per line), one object per event:
  {"ev": "open",  "id": N, "path": "...", "headers": [[name, value], ...], "subprotocol": ...}
  {"ev": "msg",   "id": N, "type": "text"|"binary", "len": L, "sha256": "...",
                  "text": "..." (text up to 4 KiB) | "hex": "..." (binary up to 4 KiB)}
  {"ev": "close", "id": N, "code": C, "reason": "..."}   (code 1006 when no close frame came)

Plain HTTP GETs (no Upgrade) are answered by process_request:
  /page      the browser test page (HTML): it opens ws://<same host>/ws/browser offering "chat",
             checks the echo of a text and a binary message, closes with 4000 and expects 4000
             back; it shows its result ("OK:..." or "FAIL:...") in the page and reports it with
             GET /report?<result>;
  /page?big  the same page, but it opens /ws/browser-big and sends 100 KiB, expecting close
             1009 (the test sets max_message_bytes = 64 KiB);
  /report?R  records {"ev": "report", "text": R} and answers 200;
  anything else: 404.
"""

import argparse
import asyncio
import hashlib
import http
import json
import sys
import urllib.parse

import websockets
import websockets.exceptions

EVENTS = None
_next_id = 0

PAGE = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>pending</title></head>
<body><pre id="result">pending</pre>
<script>
(function () {
  var out = document.getElementById("result");
  var log = [];
  var reported = false;
  function done(text) {
    if (reported) return;
    reported = true;
    out.textContent = text;
    document.title = text.slice(0, 100);
    fetch("/report?" + encodeURIComponent(text)).catch(function () {});
  }
  var timer = setTimeout(function () { done("FAIL:timeout:" + log.join(",")); }, 20000);
  var base = "ws://" + location.host;
  var text = "h\u00e9llo \u2713 \ud83d\ude80 from chromium";
  var bin = new Uint8Array(300);
  for (var i = 0; i < bin.length; i++) bin[i] = (i * 7) & 255;

  // /page: echo of text and binary, then a close with code 4000 (echoed by the backend).
  function phase1() {
    var ws = new WebSocket(base + "/ws/browser", ["chat"]);
    ws.binaryType = "arraybuffer";
    var step = 0;
    ws.onopen = function () {
      log.push("open:" + ws.protocol + ":" + JSON.stringify(ws.extensions));
      ws.send(text);
    };
    ws.onmessage = function (ev) {
      if (step === 0) {
        if (ev.data !== text) { done("FAIL:text-echo:" + ev.data); return; }
        log.push("text");
        step = 1;
        ws.send(bin.buffer);
      } else if (step === 1) {
        var got = new Uint8Array(ev.data);
        var ok = got.length === bin.length;
        for (var j = 0; ok && j < got.length; j++) ok = got[j] === bin[j];
        if (!ok) { done("FAIL:binary-echo:" + got.length); return; }
        log.push("binary");
        step = 2;
        ws.close(4000, "browser done");
      }
    };
    ws.onerror = function () { log.push("error1"); };
    ws.onclose = function (ev) {
      log.push("close:" + ev.code + ":" + ev.reason + ":" + ev.wasClean);
      done((step === 2 && ev.code === 4000 ? "OK:" : "FAIL:phase1:") + log.join(","));
    };
  }

  // /page?big: a message over max_message_bytes (the test sets 64 KiB): sluice closes with 1009.
  function phase2() {
    var ws = new WebSocket(base + "/ws/browser-big");
    ws.onopen = function () { ws.send(new Uint8Array(100 * 1024)); };
    ws.onmessage = function () { log.push("unexpected-message"); };
    ws.onerror = function () { log.push("error2"); };
    ws.onclose = function (ev) {
      clearTimeout(timer);
      log.push("close:" + ev.code);
      done((ev.code === 1009 ? "OK:" : "FAIL:") + log.join(","));
    };
  }
  if (location.search === "?big") phase2(); else phase1();
})();
</script>
</body></html>
"""


def record(obj):
    EVENTS.write(json.dumps(obj) + "\n")
    EVENTS.flush()


def record_message(cid, msg):
    if isinstance(msg, str):
        raw = msg.encode("utf-8")
        ev = {"ev": "msg", "id": cid, "type": "text", "len": len(raw),
              "sha256": hashlib.sha256(raw).hexdigest()}
        if len(raw) <= 4096:
            ev["text"] = msg
    else:
        ev = {"ev": "msg", "id": cid, "type": "binary", "len": len(msg),
              "sha256": hashlib.sha256(msg).hexdigest()}
        if len(msg) <= 4096:
            ev["hex"] = msg.hex()
    record(ev)


async def process_request(path, headers):
    if "upgrade" in headers.get("Connection", "").lower():
        return None
    if path.startswith("/report"):
        record({"ev": "report", "text": urllib.parse.unquote(path.partition("?")[2])})
        return (http.HTTPStatus.OK, [("Cache-Control", "no-store")], b"thanks\n")
    if path.startswith("/page"):
        return (http.HTTPStatus.OK, [("Content-Type", "text/html; charset=utf-8"),
                                     ("Cache-Control", "no-store")], PAGE.encode("utf-8"))
    return (http.HTTPStatus.NOT_FOUND, [], b"not found\n")


async def handler(ws, path=None):
    global _next_id
    _next_id += 1
    cid = _next_id
    record({"ev": "open", "id": cid, "path": ws.path,
            "headers": [[k, v] for k, v in ws.request_headers.raw_items()],
            "subprotocol": ws.subprotocol})
    try:
        async for msg in ws:
            record_message(cid, msg)
            if isinstance(msg, str) and msg.startswith("close:"):
                _, code, reason = msg.split(":", 2)
                await ws.close(int(code), reason)
                break
            if msg == "die":
                ws.transport.abort()
                break
            if isinstance(msg, str) and msg.startswith("fragments:"):
                await ws.send(msg[len("fragments:"):].split("|"))
                continue
            await ws.send(msg)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            pass
        record({"ev": "close", "id": cid, "code": ws.close_code, "reason": ws.close_reason})


async def main():
    global EVENTS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--events", required=True)
    args = ap.parse_args()
    EVENTS = open(args.events, "a", encoding="utf-8")
    async with websockets.serve(handler, "127.0.0.1", args.port, subprotocols=["chat"],
                                process_request=process_request, max_size=None,
                                max_queue=None, ping_interval=None, close_timeout=5) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write("ready %d\n" % port)
        sys.stdout.flush()
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
