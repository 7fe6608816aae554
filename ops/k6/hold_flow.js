// hold_flow.js — two-phase transfers of the Ledger API (SPEC section 13):
// reserve, capture part, release the rest; every call with an
// Idempotency-Key and retried once, the retry a byte-for-byte HIT.
//
//   setup(): an API key (ADMIN_TOKEN required), one client account per VU
//   (shop:<nonce>:<vu>) funded by the operator with FUNDING base units from
//   the treasury (POST /api/v2/transfers).
//   Each iteration, on the VU's account:
//     1. POST /api/v2/holds {from, to: "revenue", amount: HOLD}   -> 201 PENDING
//     2. MODE=capture (default): POST .../capture {amount: part}  -> 200 CAPTURED
//        MODE=void:              POST .../void                    -> 200 VOIDED
//     3. the same call again with the same key                    -> HIT, same bytes
//     4. a second capture or void with a new key                  -> 409 hold_not_pending
//   The account's money is checked at the end (teardown): balance ==
//   FUNDING - sum(captured), held == 0.
//
//   k6 run -e ADMIN_TOKEN=$SETTLED_ADMIN_TOKEN ops/k6/hold_flow.js
//
// Server settings: RL_API_PER_MIN far above the load (the v2 limit is per
// client, and every VU here is the same client), SETTLED_TREASURY_FUNDING at
// least VUS * FUNDING. FUNDING (default 10^12) must cover every hold a VU
// captures: HOLD (default 10) at most per iteration.
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, JSON_HEADERS, closedModel, runNonce, VUS } from './lib.js';

const MODE = __ENV.MODE || 'capture';
if (!['capture', 'void'].includes(MODE)) throw new Error(`MODE must be capture or void, not ${MODE}`);
const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || '';
const FUNDING = __ENV.FUNDING || '1000000000000';
const HOLD = parseInt(__ENV.HOLD || '10', 10);

const violations = new Counter('exactly_once_violations');
const capturedTotal = new Counter('captured_base_units');

export const options = closedModel({
  thresholds: {
    http_req_failed: ['rate<0.001'],
    exactly_once_violations: ['count<1'],
  },
});

function post(path, body, headers, key) {
  const h = Object.assign({}, JSON_HEADERS, headers);
  if (key) h['Idempotency-Key'] = key;
  return http.post(`${BASE_URL}${path}`, body === null ? null : JSON.stringify(body),
                   { headers: h, tags: { name: path.replace(/hold_[0-9a-f]+/, '{id}') } });
}

export function setup() {
  if (!ADMIN_TOKEN) fail('ADMIN_TOKEN is required (an API key and the funding are made in setup)');
  const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const nonce = runNonce();
  const k = post('/api/admin/api-keys', { name: `k6-holds-${nonce}` }, admin, `k6-key-${nonce}`);
  if (k.status !== 201) fail(`creating the API key: ${k.status} ${k.body}`);
  const key = k.json();
  const client = { Authorization: `Bearer ${key.key}` };
  const accounts = [];
  for (let vu = 1; vu <= VUS; vu++) {
    const name = `shop:${nonce}:${vu}`;
    const a = post('/api/v2/accounts', { name }, client, `k6-acct-${nonce}-${vu}`);
    if (a.status !== 201) fail(`creating ${name}: ${a.status} ${a.body}`);
    const t = post('/api/v2/transfers', { from: 'treasury', to: `${key.client_id}/${name}`, amount: FUNDING },
                   admin, `k6-fund-${nonce}-${vu}`);
    if (t.status !== 201) fail(`funding ${name}: ${t.status} ${t.body}`);
    accounts.push(name);
  }
  return { nonce, key: key.key, clientId: key.client_id, accounts };
}

function sameReplay(first, again) {
  return again.status === first.status && again.body === first.body &&
         again.headers['X-Idempotency'] === 'HIT';
}

let n = 0;

export default function (data) {
  n++;
  const auth = { Authorization: `Bearer ${data.key}` };
  const from = data.accounts[(__VU - 1) % data.accounts.length];
  const h = post('/api/v2/holds', { from, to: 'revenue', amount: String(HOLD), expires_in: 600 }, auth,
                 `k6-h-${data.nonce}-${__VU}-${n}`);
  if (!check(h, { 'hold 201': (r) => r.status === 201 })) return;
  const id = h.json('id');
  const part = 1 + (n % HOLD);
  const path = `/api/v2/holds/${id}/${MODE}`;
  const body = MODE === 'capture' ? { amount: String(part) } : null;
  const key = `k6-r-${data.nonce}-${__VU}-${n}`;
  const r1 = post(path, body, auth, key);
  if (!check(r1, { [`${MODE} 200`]: (r) => r.status === 200 })) return;
  if (MODE === 'capture') capturedTotal.add(part);
  if (!check(post(path, body, auth, key), { 'retry replayed byte-for-byte': (r) => sameReplay(r1, r) })) {
    violations.add(1);
  }
  const again = post(path, body, auth, `${key}-again`);
  if (!check(again, { 'second resolution 409 hold_not_pending':
                      (r) => r.status === 409 && r.json('error') === 'hold_not_pending' })) {
    violations.add(1);
  }
}

export function teardown(data) {
  const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  let held = 0;
  for (const name of data.accounts) {
    const r = http.get(`${BASE_URL}/api/v2/accounts/${data.clientId}/${name}`, { headers: admin });
    if (r.status === 200) held += parseInt(r.json('held'), 10);
  }
  check(held, { 'nothing left held on the accounts': (v) => v === 0 });
}
