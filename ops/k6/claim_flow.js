// claim_flow.js — the claim flow with Idempotency-Key reuse (SPEC sections 4,
// 7, 8), and the claim_prepare throughput scenario of ops/wrk/claim_prepare.lua.
//
//   MODE=flow (default), each iteration:
//     1. POST /api/claim/prepare {wallet, amount}    key P  -> 201 PENDING, MISS
//     2. the same request again (a client retry)     key P  -> identical bytes, HIT
//     3. POST /api/claim/record {intent_id, tx_hash} key R  -> 200 SUBMITTED, MISS
//     4. the same request again                      key R  -> identical bytes, HIT
//     5. GET /api/v2/intents/{id} (ADMIN_TOKEN) shows the history
//   MODE=prepare: only POST /api/claim/prepare {wallet, amount:"1"}, no key,
//     round-robin over the registered wallets (claim_prepare.lua).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... -e SECRET=whsec_... \
//          ops/k6/claim_flow.js
//
// A claim spends the wallet's own money (SPEC section 7): setup() registers
// WALLETS (default 256) wallets and pays each FUNDS (default 10^12) base
// units through the API, a signed Standard Webhooks payment (SECRET =
// SETTLED_STANDARD_WEBHOOK_SECRET), waiting with ADMIN_TOKEN until every
// one is credited. Server settings for a storm: RL_CLAIM_PER_HOUR,
// RL_REGISTER_* and RL_WEBHOOK_PER_MIN far above the load. AMOUNT (default
// "1") is in base units.
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { randomBytes } from 'k6/crypto';
import { BASE_URL, JSON_HEADERS, closedModel, fundWallets, hex, runNonce, registerWallets } from './lib.js';

const MODE = __ENV.MODE || 'flow';
if (!['flow', 'prepare'].includes(MODE)) throw new Error(`MODE must be flow or prepare, not ${MODE}`);
const WALLETS = parseInt(__ENV.WALLETS || '256', 10);
const AMOUNT = __ENV.AMOUNT || '1';
const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || '';
const SECRET = __ENV.SECRET || '';
const FUNDS = __ENV.FUNDS || '1000000000000';
if (!SECRET || !ADMIN_TOKEN) throw new Error('set -e SECRET=whsec_... (SETTLED_STANDARD_WEBHOOK_SECRET) and -e ADMIN_TOKEN=... to fund the wallets');

const secondEffect = new Counter('idempotency_violations');

export const options = closedModel({
  thresholds: {
    http_req_failed: ['rate<0.001'],
    idempotency_violations: ['count<1'],
  },
});

export function setup() {
  const nonce = runNonce();
  const probe = http.post(`${BASE_URL}/api/claim/prepare`, '{}', { headers: JSON_HEADERS });
  if (probe.status === 404) fail('POST /api/claim/prepare: route missing (404)');
  const wallets = registerWallets(nonce, WALLETS);
  fundWallets(wallets, FUNDS, SECRET, ADMIN_TOKEN);
  return { nonce, wallets };
}

function post(path, body, key) {
  const headers = Object.assign({}, JSON_HEADERS);
  if (key) headers['Idempotency-Key'] = key;
  return http.post(`${BASE_URL}${path}`, body, { headers, tags: { name: path } });
}

function sameReplay(first, again) {
  return again.status === first.status && again.body === first.body &&
         again.headers['X-Idempotency'] === 'HIT' && again.headers['Idempotent-Replayed'] === 'true';
}

let n = 0;

export default function (data) {
  n++;
  const w = data.wallets[(__VU * 7919 + n) % data.wallets.length];
  const prepareBody = JSON.stringify({ wallet: w, amount: AMOUNT });
  if (MODE === 'prepare') {
    check(post('/api/claim/prepare', prepareBody), { 'prepare 201': (r) => r.status === 201 });
    return;
  }

  const pKey = `prep-${data.nonce}-${__VU}-${n}`;
  const p1 = post('/api/claim/prepare', prepareBody, pKey);
  if (!check(p1, { 'prepare 201': (r) => r.status === 201,
                   'prepare MISS': (r) => r.headers['X-Idempotency'] === 'MISS' })) return;
  const intent = p1.json();
  check(intent, { 'intent PENDING': (i) => i.status === 'PENDING' });

  const p2 = post('/api/claim/prepare', prepareBody, pKey);
  if (!check(p2, { 'prepare retry replayed byte-for-byte': (r) => sameReplay(p1, r) })) {
    // A 409 in_use is allowed only while the first runs; here it has finished.
    secondEffect.add(1);
  }

  const recordBody = JSON.stringify({ intent_id: intent.id, tx_hash: '0x' + hex(randomBytes(32)) });
  const rKey = `rec-${data.nonce}-${__VU}-${n}`;
  const r1 = post('/api/claim/record', recordBody, rKey);
  if (!check(r1, { 'record 200': (r) => r.status === 200,
                   'intent SUBMITTED': (r) => r.status === 200 && r.json('status') === 'SUBMITTED' })) return;
  const r2 = post('/api/claim/record', recordBody, rKey);
  if (!check(r2, { 'record retry replayed byte-for-byte': (r) => sameReplay(r1, r) })) {
    secondEffect.add(1);
  }

  const g = http.get(`${BASE_URL}/api/v2/intents/${intent.id}`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, tags: { name: '/api/v2/intents/{id}' },
  });
  check(g, {
    'intent readable': (r) => r.status === 200,
    'history has PENDING, LOCKED, SUBMITTED': (r) => {
      const seen = (r.json('transitions') || r.json('history') || []).map((h) => h.to || h.status);
      return ['PENDING', 'LOCKED', 'SUBMITTED'].every((s) => seen.includes(s));
    },
  });
}
