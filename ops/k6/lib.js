// lib.js — helpers shared by the k6 scripts in ops/k6 (k6 >= 0.45).
// The scripts mirror ops/wrk: same routes, same bodies, same uniqueness rules.
//
// Environment (k6 run -e NAME=value):
//   BASE_URL   server under test, default http://127.0.0.1:8080
//   VUS        virtual users (= wrk connections), default 64
//   DURATION   default 10s
import http from 'k6/http';
import { sleep } from 'k6';
import { hmac, randomBytes } from 'k6/crypto';
import encoding from 'k6/encoding';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
export const VUS = parseInt(__ENV.VUS || '64', 10);
export const DURATION = __ENV.DURATION || '10s';
export const JSON_HEADERS = { 'Content-Type': 'application/json' };

// Same load shape as `wrk -c64 -d10s`: a fixed number of users, each sending
// its next request as soon as the previous answer arrives.
export function closedModel(extra) {
  return Object.assign({
    scenarios: {
      main: { executor: 'constant-vus', vus: VUS, duration: DURATION, exec: 'default' },
    },
    // setup() registers wallets; give it room on a slow disk.
    setupTimeout: '120s',
    summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
  }, extra || {});
}

export function hex(bytes) {
  const b = new Uint8Array(bytes);
  let s = '';
  for (let i = 0; i < b.length; i++) s += (b[i] < 16 ? '0' : '') + b[i].toString(16);
  return s;
}

// 8 hex digits, fresh per run: makes wallets and keys unique across runs
// against the same database. Created in setup() and handed to every VU.
export function runNonce() {
  return hex(randomBytes(4));
}

function pad(n, width) {
  const s = n.toString(16);
  return s.length >= width ? s.slice(-width) : '0'.repeat(width - s.length) + s;
}

// "0x" + nonce(8) + tag(4) + vu(6) + n(22) = 0x + 40 hex digits, lower case.
// Unique per (run, tag, VU, n): use __VU and __ITER (or a per-VU counter).
export function wallet(nonce, tag, vu, n) {
  return '0x' + nonce + tag + pad(vu, 6) + pad(n, 22);
}

export function register(w, key) {
  const headers = Object.assign({}, JSON_HEADERS);
  if (key) headers['Idempotency-Key'] = key;
  return http.post(`${BASE_URL}/api/register`, JSON.stringify({ wallet: w }), { headers });
}

// Registers count wallets (tag 'c1a1', VU 0) for the claim and webhook
// scripts; 201 or 409 (already there) are both fine.
export function registerWallets(nonce, count) {
  const out = [];
  const reqs = [];
  for (let i = 0; i < count; i++) {
    const w = wallet(nonce, 'c1a1', 0, i);
    out.push(w);
    reqs.push(['POST', `${BASE_URL}/api/register`, JSON.stringify({ wallet: w }),
               { headers: JSON_HEADERS }]);
  }
  for (let i = 0; i < reqs.length; i += 50) {
    for (const r of http.batch(reqs.slice(i, i + 50))) {
      if (r.status !== 201 && r.status !== 409) {
        throw new Error(`registering wallets: ${r.status} ${r.body}`);
      }
    }
  }
  return out;
}

// Pays amount base units into each wallet through the API, as a payment
// provider would: a signed Standard Webhooks payment per wallet (secret =
// SETTLED_STANDARD_WEBHOOK_SECRET, whsec_...), which the webhook job credits
// from revenue. Then waits (up to 120 s) until every wallet's balance shows
// it, reading GET /api/v2/accounts/{wallet} with adminToken. A claim spends
// only what its wallet holds, so the claim scripts fund their wallets first.
export function fundWallets(wallets, amount, secret, adminToken) {
  if (!secret.startsWith('whsec_')) throw new Error('SECRET must be the whsec_ Standard Webhooks secret');
  const key = encoding.b64decode(secret.slice('whsec_'.length), 'std');
  const now = Math.floor(Date.now() / 1000);
  const reqs = wallets.map((w, i) => {
    const id = `msg_fund_${now}_${i}_${hex(randomBytes(4))}`;
    const body = JSON.stringify({ type: 'payment.confirmed', data: { wallet: w, amount: String(amount), asset: 'USD' } });
    const headers = Object.assign({}, JSON_HEADERS, {
      'webhook-id': id, 'webhook-timestamp': String(now),
      'webhook-signature': 'v1,' + hmac('sha256', key, `${id}.${now}.${body}`, 'base64'),
    });
    return ['POST', `${BASE_URL}/api/webhooks/standard`, body, { headers }];
  });
  for (let i = 0; i < reqs.length; i += 50) {
    for (const r of http.batch(reqs.slice(i, i + 50))) {
      if (r.status !== 200) throw new Error(`funding wallets: ${r.status} ${r.body}`);
    }
  }
  const auth = { headers: { Authorization: `Bearer ${adminToken}` } };
  const deadline = Date.now() + 120000;
  for (const w of wallets) {
    for (;;) {
      const r = http.get(`${BASE_URL}/api/v2/accounts/${w}`, auth);
      if (r.status === 200 && Number(r.json('balance')) >= Number(amount)) break;
      if (Date.now() > deadline) throw new Error(`funding wallets: ${w} not credited after 120 s (${r.status} ${r.body})`);
      sleep(0.05);
    }
  }
}
