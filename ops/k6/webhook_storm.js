// webhook_storm.js — signed webhook intake (SPEC section 9), every event new
// and validly signed, like ops/wrk/webhook_standard.lua (which needs ops/bench
// to sign ahead of time; k6 signs each request itself).
//
//   PROVIDER=standard (default)  POST /api/webhooks/standard, Standard Webhooks:
//     webhook-id, webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256
//     of id.timestamp.body keyed with base64-decoded whsec_ secret>"
//     secret: -e SECRET=whsec_... (= SETTLED_STANDARD_WEBHOOK_SECRET)
//   PROVIDER=stripe   POST /api/webhooks/stripe, Stripe-Signature t=<unix>,v1=<hex
//     HMAC-SHA256 of "t.body">; secret = SETTLED_STRIPE_WEBHOOK_SECRET
//   PROVIDER=coinbase POST /api/commerce/webhook, X-CC-Webhook-Signature = hex
//     HMAC-SHA256 of the raw body; event.created_at is the timestamp;
//     secret = SETTLED_WEBHOOK_SECRET
//
//   k6 run -e SECRET=whsec_... -e BASE_URL=http://127.0.0.1:8080 ops/k6/webhook_storm.js
//
// Each paying event credits one of WALLETS (default 256) wallets registered in
// setup(); REDELIVER=0.1 re-sends that share of events (must answer 200
// {"status":"duplicate"} and change nothing). Server: RL_WEBHOOK_PER_MIN far
// above the load. The job worker processes the events after the 200; watch
// settled_jobs{state="available"} on /metrics to see the backlog drain.
import http from 'k6/http';
import { check, fail } from 'k6';
import { hmac } from 'k6/crypto';
import encoding from 'k6/encoding';
import { closedModel, runNonce, registerWallets, BASE_URL } from './lib.js';

const PROVIDER = __ENV.PROVIDER || 'standard';
const SECRET = __ENV.SECRET || '';
const WALLETS = parseInt(__ENV.WALLETS || '256', 10);
const REDELIVER = parseFloat(__ENV.REDELIVER || '0');

const ROUTES = {
  standard: '/api/webhooks/standard',
  stripe: '/api/webhooks/stripe',
  coinbase: '/api/commerce/webhook',
};
if (!ROUTES[PROVIDER]) throw new Error(`PROVIDER must be standard, stripe or coinbase, not ${PROVIDER}`);
if (!SECRET) throw new Error('set -e SECRET=... to the server\'s webhook secret for ' + PROVIDER);
if (PROVIDER === 'standard' && !SECRET.startsWith('whsec_')) throw new Error('a Standard Webhooks secret starts with whsec_');

export const options = closedModel({
  thresholds: { http_req_failed: ['rate<0.001'] },
});

export function setup() {
  const nonce = runNonce();
  return { nonce, wallets: registerWallets(nonce, WALLETS) };
}

// Returns [body, headers] for event number n of this VU.
function signed(data, n) {
  const w = data.wallets[(__VU * 7919 + n) % data.wallets.length];
  const id = `evt_${data.nonce}_${__VU}_${n}`;
  const now = Math.floor(Date.now() / 1000);
  const headers = { 'Content-Type': 'application/json' };
  let body;
  if (PROVIDER === 'standard') {
    body = JSON.stringify({ type: 'payment.confirmed', data: { wallet: w, amount: '100', asset: 'USD' } });
    const key = encoding.b64decode(SECRET.slice('whsec_'.length), 'std'); // ArrayBuffer
    headers['webhook-id'] = id;
    headers['webhook-timestamp'] = String(now);
    headers['webhook-signature'] = 'v1,' + hmac('sha256', key, `${id}.${now}.${body}`, 'base64');
  } else if (PROVIDER === 'stripe') {
    body = JSON.stringify({
      id, type: 'payment_intent.succeeded', created: now,
      data: { object: { amount: 100, currency: 'usd', metadata: { wallet: w } } },
    });
    headers['Stripe-Signature'] = `t=${now},v1=` + hmac('sha256', SECRET, `${now}.${body}`, 'hex');
  } else {
    body = JSON.stringify({
      event: {
        id, type: 'charge:confirmed', created_at: new Date(now * 1000).toISOString(),
        data: { metadata: { wallet: w }, pricing: { local: { amount: '1.00', currency: 'USD' } } },
      },
    });
    headers['X-CC-Webhook-Signature'] = hmac('sha256', SECRET, body, 'hex');
  }
  return [body, headers];
}

let n = 0;

export default function (data) {
  n++;
  const [body, headers] = signed(data, n);
  const url = `${BASE_URL}${ROUTES[PROVIDER]}`;
  const r = http.post(url, body, { headers, tags: { name: ROUTES[PROVIDER] } });
  if (r.status === 404) fail(`${ROUTES[PROVIDER]}: route missing (404)`);
  check(r, { 'accepted 200': (x) => x.status === 200 });
  if (REDELIVER > 0 && Math.random() < REDELIVER) {
    const again = http.post(url, body, { headers, tags: { name: ROUTES[PROVIDER] + ' (redelivery)' } });
    check(again, {
      'redelivery 200 duplicate': (x) => x.status === 200 && x.json('status') === 'duplicate',
    });
  }
}
