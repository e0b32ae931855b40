#!/usr/bin/env node
// A Node `ws` client for sluice's integration tests (driven by test_websocket_node.py).
//
//   node ws_client.js URL [--protocol P]... [--header "Name: value"]... [--origin O]
//                         [--close-code N] [--close-reason R] [--oversize N] [--hold]
//                         [--timeout MS]
//
// Default script: connect (offering permessage-deflate, as ws does by default, and the
// protocols P in order when given; with the extra request headers given), send a non-ASCII
// text, a binary message, a text in two fragments, a ping, a 256 KiB binary message, checking
// every echo and the pong; then close with the code and reason given (default 1000) and wait
// for the closing handshake.
// --oversize N: after connecting, send one N-byte binary message and report the close that
// follows (sluice's 1009).
// --hold: after the exchange, keep the connection open until the other side closes it, and
// report that close (and "open_ms": how long the session lasted).
//
// Prints one JSON line: {"ok": bool, "steps": [...], "protocol": ..., "extensions": ...,
// "close_code": ..., "close_reason": ..., "error": ...}; exits 0 when ok.

"use strict";

const path = require("path");
let WebSocket;
try {
  WebSocket = require(path.join(__dirname, "node_modules", "ws"));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: "cannot load ws (run `npm install` in " +
    __dirname + "): " + e.message }));
  process.exit(2);
}

function parseArgs(argv) {
  const out = { url: argv[0], closeCode: 1000, closeReason: "", timeout: 15000, protocols: [],
                 headers: {} };
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === "--hold") { out.hold = true; i--; continue; }
    if (k === "--protocol") out.protocols.push(v);
    else if (k === "--header") {
      const colon = v.indexOf(":");
      out.headers[v.slice(0, colon).trim()] = v.slice(colon + 1).trim();
    }
    else if (k === "--origin") out.origin = v;
    else if (k === "--close-code") out.closeCode = parseInt(v, 10);
    else if (k === "--close-reason") out.closeReason = v;
    else if (k === "--oversize") out.oversize = parseInt(v, 10);
    else if (k === "--timeout") out.timeout = parseInt(v, 10);
    else throw new Error("unknown option " + k);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const result = { ok: false, steps: [], protocol: null, extensions: null, close_code: null,
                 close_reason: null, error: null };
let finished = false;

function finish(ok, error) {
  if (finished) return;
  finished = true;
  result.ok = ok;
  if (error) result.error = String(error);
  console.log(JSON.stringify(result));
  process.exit(ok ? 0 : 1);
}

const timer = setTimeout(() => finish(false, "timeout after " + args.timeout + " ms"), args.timeout);

const opts = { handshakeTimeout: 5000, maxPayload: 64 * 1024 * 1024 };
if (args.origin) opts.origin = args.origin;
if (Object.keys(args.headers).length) opts.headers = args.headers;
const ws = new WebSocket(args.url, args.protocols, opts);
let openedAt = null;

// Each step: send something, then the predicate on what comes back.
const text = "h\u00e9llo \u2713 \ud83d\ude80 from node";
const bin = Buffer.alloc(1000);
for (let i = 0; i < bin.length; i++) bin[i] = (i * 31 + 7) & 255;
const big = Buffer.alloc(256 * 1024);
for (let i = 0; i < big.length; i++) big[i] = (i * 13) & 255;

const steps = [
  { name: "text", send: () => ws.send(text),
    check: (data, isBinary) => !isBinary && data.toString("utf8") === text },
  { name: "binary", send: () => ws.send(bin),
    check: (data, isBinary) => isBinary && Buffer.compare(data, bin) === 0 },
  { name: "fragmented", send: () => { ws.send("frag", { fin: false }); ws.send("mented", { fin: true }); },
    check: (data, isBinary) => !isBinary && data.toString("utf8") === "fragmented" },
  { name: "ping", send: () => ws.ping(Buffer.from("node ping")), pong: true },
  { name: "big", send: () => ws.send(big),
    check: (data, isBinary) => isBinary && Buffer.compare(data, big) === 0 },
];
let current = -1;

function next() {
  current++;
  if (current < steps.length) {
    steps[current].send();
    return;
  }
  if (args.hold) {
    result.steps.push("holding");
    return;
  }
  result.steps.push("closing");
  ws.close(args.closeCode, args.closeReason);
}

ws.on("open", () => {
  openedAt = Date.now();
  result.protocol = ws.protocol;
  result.extensions = ws.extensions;
  result.steps.push("open");
  if (args.oversize) {
    ws.send(Buffer.alloc(args.oversize, 0x61));
    result.steps.push("oversize-sent");
    return;
  }
  next();
});

ws.on("message", (data, isBinary) => {
  const step = steps[current];
  if (!step || step.pong || !step.check(data, isBinary)) {
    finish(false, "unexpected message at step " + (step ? step.name : current) + ": " +
           (isBinary ? "binary " + data.length : JSON.stringify(data.toString("utf8").slice(0, 100))));
    return;
  }
  result.steps.push(step.name);
  next();
});

ws.on("pong", (data) => {
  const step = steps[current];
  if (!step || !step.pong || data.toString() !== "node ping") {
    finish(false, "unexpected pong " + JSON.stringify(data.toString()));
    return;
  }
  result.steps.push(step.name);
  next();
});

ws.on("unexpected-response", (req, res) => {
  result.http_status = res.statusCode;
  finish(false, "handshake answered HTTP " + res.statusCode);
});

ws.on("error", (e) => {
  result.steps.push("error:" + e.message);
});

ws.on("close", (code, reason) => {
  clearTimeout(timer);
  result.close_code = code;
  result.close_reason = reason.toString("utf8");
  if (openedAt !== null) result.open_ms = Date.now() - openedAt;
  if (args.oversize) {
    finish(true);
  } else {
    finish(current === steps.length, current === steps.length ? null : "closed early");
  }
});
