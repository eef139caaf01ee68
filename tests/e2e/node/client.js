// client.js — drives the relay with Node's `ws` library (an independent
// RFC 6455 implementation) and prints one JSON result line for pytest.
// Usage: node client.js <scenario> <port>
// With RELAY_TLS_CA (a PEM file) and RELAY_TLS_NAME set it speaks wss:// to
// 127.0.0.1, verifying the chain for that name (SNI and Host).
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const [scenario, port] = process.argv.slice(2);
const tlsName = process.env.RELAY_TLS_NAME;
const base = tlsName ? `wss://127.0.0.1:${port}` : `ws://127.0.0.1:${port}`;
const tlsOpts = tlsName ? { ca: fs.readFileSync(process.env.RELAY_TLS_CA), servername: tlsName }
  : {};
const serverHeaders = (sid) => ({
  'X-Pyrycode-Server': sid, 'X-Pyrycode-Version': '0.1.0', 'User-Agent': 'pyry-node',
});
const clientHeaders = (sid) => ({
  'X-Pyrycode-Server': sid, 'X-Pyrycode-Token': 'NODE-SECRET', 'User-Agent': 'node-phone',
});

function open(path, headers, opts = {}) {
  return new Promise((resolve, reject) => {
    const all = tlsName ? { Host: `${tlsName}:${port}`, ...headers } : headers;
    const ws = new WebSocket(base + path,
      { headers: all, perMessageDeflate: true, ...tlsOpts, ...opts });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

const nextMessage = (ws) => new Promise((resolve) => ws.once('message', (d, isBinary) =>
  resolve({ text: d.toString(), isBinary })));
const closed = (ws) => new Promise((resolve) => ws.once('close', (code, reason) =>
  resolve({ code, reason: reason.toString() })));

const scenarios = {
  // Both endpoints accept; compression is declined; frames route both ways as text.
  async route() {
    const b = await open('/v1/server', serverHeaders('node1'));
    const p = await open('/v1/client', clientHeaders('node1'));
    p.send(JSON.stringify({ hello: 'from node' }));
    const env = JSON.parse((await nextMessage(b)).text);
    b.send(JSON.stringify({ conn_id: env.conn_id, frame: { ok: true } }));
    const got = await nextMessage(p);
    const out = { extensions: b.extensions, frame: env.frame, conn_id: env.conn_id,
      reply: got.text, replyIsBinary: got.isBinary };
    p.close(1000);
    out.notice = JSON.parse((await nextMessage(b)).text);
    b.close();
    return out;
  },
  // Missing headers: the upgrade is refused with 400.
  async gate() {
    try {
      await open('/v1/server', { 'User-Agent': 'x' });
      return { status: 101 };
    } catch (e) {
      return { status: Number(String(e.message).replace('status ', '')) };
    }
  },
  // Ping payload comes back in the pong.
  async ping() {
    const b = await open('/v1/server', serverHeaders('node2'));
    const pong = new Promise((resolve) => b.once('pong', (d) => resolve(d.toString())));
    b.ping('node-ping-7');
    const out = { pong: await pong };
    b.close();
    return out;
  },
  // A message over the cap closes with 1009.
  async oversize() {
    const b = await open('/v1/server', serverHeaders('node3'));
    const done = closed(b);
    b.send('"' + 'x'.repeat(262144) + '"');
    return done;
  },
  // Unknown server-id: close 4404 with the exact reason.
  async noserver() {
    const p = await open('/v1/client', clientHeaders('nobody-here'));
    return closed(p);
  },
  // Stays open until the relay shuts down; prints the close it gets.
  async wait_shutdown() {
    const b = await open('/v1/server', serverHeaders('node4'));
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    return closed(b);
  },
};

(async () => {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  const out = await Promise.race([run(),
    new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 15000))]);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
})().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e) }) + '\n');
  process.exit(1);
});
