// register_storm.js — POST /api/register floods, like ops/wrk/register_*.lua
// and ops/wrk/replay.lua. MODE picks the scenario:
//   unique  (default) a new wallet every request          (register_unique.lua)
//   key     the same plus a unique Idempotency-Key each    (register_unique_key.lua)
//   replay  100 (key, body) pairs registered in setup(),   (replay.lua)
//           then replayed: every answer must be a HIT
//
//   k6 run -e MODE=key -e BASE_URL=http://127.0.0.1:8080 ops/k6/register_storm.js
//
// The server's rate limits must be far above the load (RL_REGISTER_PER_HOUR,
// RL_REGISTER_PER_DAY_WALLET; ops/bench uses 1000000000), or most answers are 429.
import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { BASE_URL, JSON_HEADERS, closedModel, runNonce, wallet, register } from './lib.js';

const MODE = __ENV.MODE || 'unique';
if (!['unique', 'key', 'replay'].includes(MODE)) throw new Error(`MODE must be unique, key or replay, not ${MODE}`);

const notHit = new Counter('replay_not_hit');

export const options = closedModel({
  thresholds: {
    http_req_failed: ['rate<0.001'],
    // Every replay must be answered from the stored response.
    replay_not_hit: ['count<1'],
  },
});

function replayPairs(nonce) {
  const pairs = [];
  for (let i = 0; i < 100; i++) {
    pairs.push({ key: `k${i}-${nonce}`, body: JSON.stringify({ wallet: wallet(nonce, 'feed', 0, i) }) });
  }
  return pairs;
}

export function setup() {
  const nonce = runNonce();
  if (MODE === 'replay') {
    for (const p of replayPairs(nonce)) {
      const r = http.post(`${BASE_URL}/api/register`, p.body,
                          { headers: Object.assign({ 'Idempotency-Key': p.key }, JSON_HEADERS) });
      if (r.status !== 201) fail(`replay warm-up: ${r.status} ${r.body}`);
    }
  }
  return { nonce, pairs: MODE === 'replay' ? replayPairs(nonce) : [] };
}

let n = 0;

export default function (data) {
  n++;
  if (MODE === 'replay') {
    const p = data.pairs[(__VU * 37 + n) % data.pairs.length];
    const r = http.post(`${BASE_URL}/api/register`, p.body,
                        { headers: Object.assign({ 'Idempotency-Key': p.key }, JSON_HEADERS) });
    const ok = check(r, {
      'status 201': (x) => x.status === 201,
      'X-Idempotency: HIT': (x) => x.headers['X-Idempotency'] === 'HIT',
      'Idempotent-Replayed: true': (x) => x.headers['Idempotent-Replayed'] === 'true',
    });
    if (!ok) notHit.add(1);
    return;
  }
  const w = wallet(data.nonce, 'beef', __VU, n);
  const key = MODE === 'key' ? `bench-${data.nonce}-${__VU}-${n}` : null;
  const r = register(w, key);
  check(r, {
    'status 201': (x) => x.status === 201,
    'MISS when keyed': (x) => !key || x.headers['X-Idempotency'] === 'MISS',
  });
}
