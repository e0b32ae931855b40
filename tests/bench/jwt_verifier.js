// A JWT verifier for nginx's auth_request in tests/bench/run.py's `auth` scenario: the closest
// open-source equivalent of sluice's `jwt` filter is nginx asking a local service per request.
//
//   node jwt_verifier.js --port P --key PUBLIC.pem --alg ES256|RS256
//
// 204 when the Authorization header carries a token of that algorithm whose signature verifies
// with the key and whose exp has not passed, 401 otherwise. Node (one process, OpenSSL under
// node:crypto) rather than Python, which would measure the interpreter more than the check.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const key = crypto.createPublicKey(fs.readFileSync(args.key));
const alg = args.alg;

function verify(auth) {
  if (!auth || !auth.startsWith('Bearer ')) {
    return false;
  }
  const parts = auth.slice(7).split('.');
  if (parts.length !== 3) {
    return false;
  }
  let header, claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch (e) {
    return false;
  }
  if (header.alg !== alg) {
    return false;
  }
  const data = Buffer.from(parts[0] + '.' + parts[1]);
  const sig = Buffer.from(parts[2], 'base64url');
  const ok = alg === 'ES256'
    ? crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig)
    : crypto.verify('sha256', data, key, sig);
  return ok && typeof claims.exp === 'number' && claims.exp > Date.now() / 1000;
}

http.createServer((req, res) => {
  res.writeHead(verify(req.headers.authorization) ? 204 : 401);
  res.end();
}).listen(Number(args.port), '127.0.0.1', () => console.log('ready'));
