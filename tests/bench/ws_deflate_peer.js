// permessage-deflate peers for tests/bench/ws_compression.py: the benchmark's own load generator
// (sluice_wsload) and backend (sluice_bench_backend) do not speak RFC 7692, Node's `ws` does.
//
//   node ws_deflate_peer.js server --port P [--deflate] [--threshold N]
//       an echo server; GET / answers "hello, world", GET /stats {"bytes_read", "bytes_written",
//       "messages"} over every socket it ever had (the backend leg's wire bytes).
//   node ws_deflate_peer.js echo --url U --connections C --size S (--messages N | --duration D)
//       [--deflate] [--threshold N]
//       closed-loop echo of text messages (64 B: JSON-like; larger: word text); prints one JSON
//       line: messages, msgs_per_s, bytes read/written on the client's sockets, extensions.
//   node ws_deflate_peer.js idle --url U --connections C --hold S [--deflate] [--prime BYTES]
//       opens C WebSockets (each echoing one message of BYTES first when --prime), prints
//       "established C", holds them S seconds, closes them.
//
// `ws` comes from tests/integration/node_modules (NODE_PATH).
'use strict';
const http = require('http');
const WebSocket = require('ws');

function parse(argv) {
  const o = { _: argv[0] };
  for (let i = 1; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) {
      o[k] = true;
    } else {
      o[k] = next;
      i++;
    }
  }
  return o;
}

const opts = parse(process.argv.slice(2));
const threshold = opts.threshold !== undefined ? Number(opts.threshold) : 0;
const deflate = opts.deflate ? { threshold, zlibDeflateOptions: { level: 6 } } : false;

const WORDS = ('the quick brown fox jumps over a lazy dog while seven users send chat messages ' +
  'about orders prices shipping weather football music release notes errors retries latency ' +
  'gateway session token refresh channel subscribe publish update delete create account ' +
  'payment invoice status pending complete failed timeout region europe america asia').split(' ');

// Deterministic pseudo-random text: compressible like real text, not like a repeated byte.
let seed = 12345;
function rnd(n) {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}

function message(size, seq) {
  if (size <= 256) {
    const base = JSON.stringify({ type: 'chat', room: 'r' + (seq % 97), seq, text: '' });
    const pad = Math.max(0, size - base.length);
    let text = '';
    while (text.length < pad) {
      text += WORDS[rnd(WORDS.length)] + ' ';
    }
    const s = JSON.stringify({ type: 'chat', room: 'r' + (seq % 97), seq, text: text.slice(0, pad) });
    return s.length >= size ? s.slice(0, size) : s.padEnd(size, ' ');
  }
  const parts = [];
  let len = 0;
  while (len < size) {
    const w = WORDS[rnd(WORDS.length)] + (rnd(12) === 0 ? '. ' + rnd(100000) + ' ' : ' ');
    parts.push(w);
    len += w.length;
  }
  return parts.join('').slice(0, size);
}

function server() {
  let read = 0, written = 0, messages = 0;
  const live = new Set();
  const srv = http.createServer((req, res) => {
    if (req.url !== '/stats') {
      res.end('hello, world\n');  // what tests/bench/run.py's wait_http_ok expects
      return;
    }
    let r = read, w = written;
    for (const s of live) {
      r += s.bytesRead;
      w += s.bytesWritten;
    }
    res.end(JSON.stringify({ bytes_read: r, bytes_written: w, messages }));
  });
  const wss = new WebSocket.Server({ server: srv, perMessageDeflate: deflate, maxPayload: 1 << 24 });
  wss.on('connection', (ws, req) => {
    const sock = req.socket;
    live.add(sock);
    sock.on('close', () => {
      live.delete(sock);
      read += sock.bytesRead;
      written += sock.bytesWritten;
    });
    ws.on('message', (data, isBinary) => {
      messages++;
      ws.send(data, { binary: isBinary });
    });
    ws.on('error', () => {});
  });
  srv.listen(Number(opts.port), '127.0.0.1', () => console.log('ready'));
}

function echo() {
  const conns = Number(opts.connections || 4);
  const size = Number(opts.size || 64);
  const limit = opts.messages ? Number(opts.messages) : Infinity;  // per connection
  const duration = opts.duration ? Number(opts.duration) * 1000 : Infinity;
  const t0 = Date.now();
  let done = 0, total = 0, errors = 0, read = 0, written = 0, open = 0;
  let extensions = '';
  for (let i = 0; i < conns; i++) {
    const ws = new WebSocket(opts.url, { perMessageDeflate: deflate, maxPayload: 1 << 24 });
    let sent = 0;
    const next = () => {
      if (sent >= limit || Date.now() - t0 >= duration) {
        ws.close(1000);
        return;
      }
      ws.send(message(size, sent++ * conns + i));
    };
    ws.on('open', () => {
      extensions = ws.extensions || '';
      open++;
      next();
    });
    ws.on('message', () => {
      total++;
      next();
    });
    ws.on('error', (e) => {
      errors++;
      console.error(String(e));
    });
    ws.on('close', () => {
      read += ws._socket ? ws._socket.bytesRead : 0;
      written += ws._socket ? ws._socket.bytesWritten : 0;
      if (++done === conns) {
        const secs = (Date.now() - t0) / 1000;
        console.log(JSON.stringify({ messages: total, secs, msgs_per_s: total / secs, errors,
                                     opened: open, bytes_read: read, bytes_written: written,
                                     extensions }));
      }
    });
  }
}

function idle() {
  const conns = Number(opts.connections || 100);
  const prime = opts.prime ? Number(opts.prime) : 0;
  const all = [];
  let ready = 0, errors = 0, pending = 0, started = 0;
  const ramp = 64;  // handshakes in flight
  const open = () => {
    while (pending < ramp && started < conns) {
      started++;
      pending++;
      const ws = new WebSocket(opts.url, { perMessageDeflate: deflate });
      all.push(ws);
      const up = () => {
        pending--;
        if (++ready === conns) {
          console.log('established ' + conns);
          setTimeout(() => {
            for (const w of all) {
              w.close(1000);
            }
            setTimeout(() => {
              console.log(JSON.stringify({ connections: conns, established: ready, errors }));
              process.exit(0);
            }, 500);
          }, Number(opts.hold || 3) * 1000);
        }
        open();
      };
      ws.on('open', () => {
        if (prime) {
          ws.once('message', up);
          ws.send(message(prime, started));
        } else {
          up();
        }
      });
      ws.on('error', (e) => {
        errors++;
        console.error(String(e));
      });
    }
  };
  open();
}

({ server, echo, idle })[opts._]();
