// healthz.js — GET /healthz, like ops/wrk/healthz.lua.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 ops/k6/healthz.js
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, closedModel } from './lib.js';

export const options = closedModel({
  thresholds: { http_req_failed: ['rate<0.001'] },
});

export default function () {
  const r = http.get(`${BASE_URL}/healthz`);
  check(r, { 'status 200': (x) => x.status === 200 });
}
