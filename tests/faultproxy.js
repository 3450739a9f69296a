// Fault-injecting HTTP proxy for the S3 tests, on mockttp (pinned in
// package-lock.json). Started and killed by pid by tests/integration/harness.py
// (FaultProxy):
//
//     node tests/faultproxy.js PORT UPSTREAM_PORT PLAN_FILE
//
// Every request to 127.0.0.1:PORT is forwarded to 127.0.0.1:UPSTREAM_PORT
// (s3rver) unless a rule of the plan matches. PLAN_FILE holds a JSON array of
// rules, re-read whenever it changes (counters restart then):
//
//     {"method": "PUT", "path": "partNumber", "nth": 2, "times": 1,
//      "action": "reset", "ms": 0}
//
// method and path (a substring of the request's path and query) select the
// requests a rule counts; the rule fires on its nth to (nth + times - 1)th
// match (times -1: forever). Actions before forwarding: reset (TCP RST),
// close (FIN, no response), hang (never answer), delay (ms, then forward),
// 500, slowdown (503 SlowDown), complete-error (200 with an <Error> body, not
// forwarded). After forwarding: truncate (half the body, then close), flip
// (one byte of the body inverted). Each fired fault is logged to stdout as
// "FAULT <action> <method> <path>", which tests read to prove it happened.
'use strict';

const fs = require('fs');
const http = require('http');
const mockttp = require('mockttp');

const [port, upstreamPort, planFile] = process.argv.slice(2);
let plan = { mtime: -1, rules: [], counts: [] };

function loadPlan() {
    let mtime = 0;
    try {
        mtime = fs.statSync(planFile).mtimeMs;
    } catch (e) {
        mtime = 0;
    }
    if (mtime !== plan.mtime) {
        let rules = [];
        try {
            rules = JSON.parse(fs.readFileSync(planFile, 'utf8'));
        } catch (e) {
            rules = [];
        }
        plan = { mtime, rules, counts: rules.map(() => 0) };
    }
}

function pick(req) {
    loadPlan();
    for (let i = 0; i < plan.rules.length; i++) {
        const r = plan.rules[i];
        if (r.method && r.method !== req.method) continue;
        if (r.path && !req.path.includes(r.path)) continue;
        const n = ++plan.counts[i];
        const nth = r.nth || 1;
        const times = r.times === undefined ? 1 : r.times;
        if (n >= nth && (times < 0 || n < nth + times)) return r;
    }
    return null;
}

function forward(req) {
    return new Promise((resolve, reject) => {
        const headers = {};
        for (const [k, v] of Object.entries(req.headers)) headers[k] = v;
        const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method,
                                  path: req.path, headers }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                                          body: Buffer.concat(chunks) }));
            res.on('error', reject);
        });
        up.on('error', reject);
        up.end(req.body.buffer);
    });
}

function s3Error(status, code) {
    return { statusCode: status, headers: { 'content-type': 'application/xml' },
             body: `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code>` +
                   `<Message>injected by faultproxy</Message></Error>` };
}

async function handle(req) {
    const rule = pick(req);
    const action = rule ? rule.action : null;
    if (action) console.log(`FAULT ${action} ${req.method} ${req.path}`);
    switch (action) {
    case 'reset': return 'reset';
    case 'close': return 'close';
    case 'hang': return new Promise(() => {});
    case 'delay': await new Promise((r) => setTimeout(r, rule.ms || 1000)); break;
    case '500': return s3Error(500, 'InternalError');
    case 'slowdown': return s3Error(503, 'SlowDown');
    case 'complete-error': return s3Error(200, 'InternalError');
    default: break;
    }
    let res;
    try {
        res = await forward(req);
    } catch (e) {
        console.log(`UPSTREAM ${req.method} ${req.path}: ${e.message}`);
        return 'reset';
    }
    const headers = {};
    for (const [k, v] of Object.entries(res.headers)) {
        if (!['transfer-encoding', 'connection', 'keep-alive', 'content-length'].includes(k))
            headers[k] = v;
    }
    let body = res.body;
    if (action === 'truncate' && body.length > 1) {
        headers['content-length'] = String(body.length);
        headers['connection'] = 'close';
        body = body.subarray(0, Math.floor(body.length / 2));
    } else if (action === 'flip' && body.length > 0) {
        body = Buffer.from(body);
        body[Math.floor(body.length / 2)] ^= 0xff;
    }
    if (req.method !== 'HEAD' && action !== 'truncate')
        headers['content-length'] = String(body.length);
    else if (req.method === 'HEAD' && res.headers['content-length'])
        headers['content-length'] = res.headers['content-length'];
    return { statusCode: res.status, headers, rawBody: body };
}

(async () => {
    const server = mockttp.getLocal({ cors: false, recordTraffic: false, http2: false });
    await server.forAnyRequest().thenCallback(handle);
    await server.start({ startPort: Number(port), endPort: Number(port) });
    console.log(`faultproxy listening on ${port}, upstream ${upstreamPort}`);
})().catch((e) => {
    console.error(e);
    process.exit(1);
});
