// ledger_flow.js — the Ledger API (SPEC section 13): accounts and transfers,
// with Idempotency-Key retries, as ops/wrk/transfer_revenue.lua measures them.
//
// setup() (needs ADMIN_TOKEN): creates an API key (a client), one client
// account per VU named k6:<nonce>:<vu>, and allocates FUNDING base units to
// each from the treasury (an admin transfer to <client_id>/<name>).
// Each iteration, as that client:
//   1. POST /api/v2/transfers {from: <its account>, to: "revenue", amount}  key T -> 201, MISS
//   2. the same request again (a client retry)                             key T -> identical, HIT
//   3. GET /api/v2/transfers/{id}                                          -> 200, its entries
//   4. GET /api/v2/accounts/<its account>: available never below 0
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ADMIN_TOKEN=... ops/k6/ledger_flow.js
//
// Server settings for a storm: RL_API_PER_MIN far above the load and
// SETTLED_TREASURY_FUNDING >= VUS * FUNDING (ops/bench uses 10^15).
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { randomBytes } from 'k6/crypto';
import { BASE_URL, JSON_HEADERS, VUS, closedModel, hex, runNonce } from './lib.js';

const ADMIN_TOKEN = __ENV.ADMIN_TOKEN || '';
const FUNDING = __ENV.FUNDING || '1000000000';
const AMOUNT = __ENV.AMOUNT || '1';

const violations = new Counter('idempotency_violations');
const overdrawn = new Counter('overdrawn_accounts');

export const options = closedModel({
  thresholds: {
    http_req_failed: ['rate<0.001'],
    idempotency_violations: ['count<1'],
    overdrawn_accounts: ['count<1'],
  },
});

function post(path, body, headers, key) {
  const h = Object.assign({}, JSON_HEADERS, headers);
  if (key) h['Idempotency-Key'] = key;
  return http.post(`${BASE_URL}${path}`, JSON.stringify(body), { headers: h, tags: { name: path } });
}

export function setup() {
  if (!ADMIN_TOKEN) fail('ADMIN_TOKEN is needed to create the client and fund its accounts');
  const admin = { Authorization: `Bearer ${ADMIN_TOKEN}` };
  const nonce = runNonce();
  const k = post('/api/admin/api-keys', { name: `k6-${nonce}` }, admin, `k6-key-${nonce}`);
  if (k.status !== 201) fail(`POST /api/admin/api-keys: ${k.status} ${k.body}`);
  const key = k.json('key'), client = k.json('client_id');
  const auth = { Authorization: `Bearer ${key}` };
  const accounts = [];
  for (let vu = 1; vu <= VUS; vu++) {
    const name = `k6:${nonce}:${vu}`;
    const a = post('/api/v2/accounts', { name }, auth, `k6-acct-${nonce}-${vu}`);
    if (a.status !== 201) fail(`POST /api/v2/accounts: ${a.status} ${a.body}`);
    const f = post('/api/v2/transfers', { from: 'treasury', to: `${client}/${name}`, amount: FUNDING },
                   admin, `k6-fund-${nonce}-${vu}`);
    if (f.status !== 201) fail(`funding ${name}: ${f.status} ${f.body}`);
    accounts.push(name);
  }
  return { key, accounts };
}

export default function (data) {
  const auth = { Authorization: `Bearer ${data.key}` };
  const account = data.accounts[(__VU - 1) % data.accounts.length];
  const key = `k6-t-${hex(randomBytes(12))}`;
  const body = { from: account, to: 'revenue', amount: AMOUNT };
  const first = post('/api/v2/transfers', body, auth, key);
  check(first, { 'transfer 201': (r) => r.status === 201 });
  const again = post('/api/v2/transfers', body, auth, key);
  const same = again.status === first.status && again.body === first.body &&
               again.headers['X-Idempotency'] === 'HIT';
  if (!same) violations.add(1);
  check(again, { 'retry replays': () => same });
  if (first.status === 201) {
    const g = http.get(`${BASE_URL}/api/v2/transfers/${first.json('id')}`,
                       { headers: auth, tags: { name: '/api/v2/transfers/{id}' } });
    check(g, { 'transfer readable': (r) => r.status === 200 && r.json('entries').length === 2 });
  }
  const a = http.get(`${BASE_URL}/api/v2/accounts/${account}`,
                     { headers: auth, tags: { name: '/api/v2/accounts/{account}' } });
  if (a.status === 200 && BigInt(a.json('available')) < 0n) overdrawn.add(1);
}
