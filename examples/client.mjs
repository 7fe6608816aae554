#!/usr/bin/env node
// A settled client in JavaScript: Node's built-in fetch (Node 18+), no
// dependencies. Registers a wallet, claims (prepare + record) and polls the
// intent until it is SETTLED.
//
// A claim is the wallet withdrawing what it is owed: the wallet must have
// been credited first (a webhook payment, a client's transfer or an
// operator's allocation), and it can claim at most its available balance
// (else 422 insufficient_funds).
//
//   SETTLED_URL=http://127.0.0.1:8080 SETTLED_API_KEY=sk_live_... \
//   SETTLED_WALLET=0x... node examples/client.mjs
//
// Environment:
//   SETTLED_URL           server (default http://127.0.0.1:8080)
//   SETTLED_API_KEY       bearer for GET /api/v2/intents/{id} (an API key or
//                         the admin token); required
//   SETTLED_WALLET        wallet to claim for, credited with at least
//                         CLAIM_AMOUNT; required
//   CLAIM_AMOUNT          base units (default "100")
//   SETTLED_TIMEOUT       seconds per HTTP attempt (default 10)
//   SETTLED_MAX_ATTEMPTS  attempts per call before giving up (default 8)
//   SETTLED_POLL_TIMEOUT  seconds to wait for SETTLED (default 120)
//
// Retrying safely: every POST carries an Idempotency-Key chosen once per
// logical operation and reused by all its attempts, so an attempt whose
// answer was lost (timeout, dropped connection) is repeated without a second
// effect: the server replays the first answer (X-Idempotency: HIT). Retried:
// network errors and timeouts, 409 idempotency_key_in_use, 429 and 5xx; the
// wait is exponential backoff with full jitter, never shorter than the
// server's Retry-After. Other statuses are answers, not transient failures.
//
// One line per step on stdout, retries on stderr; the last line is
// "SETTLED <intent id>". Exit 0 when the claim settled, 1 otherwise.
import { randomBytes } from "node:crypto";

const env = process.env;
const BASE = (env.SETTLED_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
const API_KEY = env.SETTLED_API_KEY || "";
const WALLET = env.SETTLED_WALLET || "";
const AMOUNT = env.CLAIM_AMOUNT || "100";
const TIMEOUT_MS = Number(env.SETTLED_TIMEOUT || "10") * 1000;
const MAX_ATTEMPTS = Number(env.SETTLED_MAX_ATTEMPTS || "8");
const POLL_TIMEOUT_MS = Number(env.SETTLED_POLL_TIMEOUT || "120") * 1000;

const BACKOFF_BASE_MS = 250;  // the first retry waits up to this
const BACKOFF_CAP_MS = 8000;  // no single wait is longer (unless Retry-After says so)
const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);

class Failed extends Error {}

const hex = (n) => randomBytes(n).toString("hex");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (msg) => process.stderr.write(msg + "\n");

// Retry-After in ms: delta-seconds or an HTTP date; null if absent.
function retryAfterMs(value) {
	if (!value) return null;
	if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
	const when = Date.parse(value);
	return Number.isNaN(when) ? null : Math.max(0, when - Date.now());
}

// Full jitter: uniform in [0, min(cap, base * 2^attempt)], at least Retry-After.
function backoffMs(attempt, retryAfter) {
	const delay = Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
	return retryAfter === null ? delay : Math.max(delay, retryAfter);
}

// One logical call, retried as described above. Returns {status, body}.
async function call(method, path, { body, idemKey, auth } = {}) {
	for (let attempt = 0; ; attempt++) {
		const headers = { Accept: "application/json", "X-Request-Id": `example-js-${hex(6)}` };
		if (body !== undefined) headers["Content-Type"] = "application/json";
		if (idemKey) headers["Idempotency-Key"] = idemKey;
		if (auth) headers.Authorization = `Bearer ${auth}`;
		let why, retryAfter = null;
		try {
			const resp = await fetch(BASE + path, {
				method,
				headers,
				body: body === undefined ? undefined : JSON.stringify(body),
				signal: AbortSignal.timeout(TIMEOUT_MS),
			});
			const text = await resp.text();
			let answer = null;
			try {
				answer = text ? JSON.parse(text) : null;
			} catch {
				answer = null;
			}
			const code = answer && typeof answer === "object" ? answer.error : undefined;
			const retryable = RETRY_STATUSES.has(resp.status) ||
				(resp.status === 409 && code === "idempotency_key_in_use");
			if (!retryable) return { status: resp.status, body: answer };
			why = `${resp.status} ${code}`;
			retryAfter = retryAfterMs(resp.headers.get("Retry-After"));
		} catch (err) {
			// TimeoutError (our deadline), TypeError "fetch failed" (refused, reset)
			why = `network error: ${err.name}: ${err.cause ? err.cause.code || err.cause.message : err.message}`;
		}
		if (attempt + 1 >= MAX_ATTEMPTS)
			throw new Failed(`${method} ${path}: giving up after ${MAX_ATTEMPTS} attempts (${why})`);
		const delay = backoffMs(attempt, retryAfter);
		log(`${method} ${path}: ${why}; retrying in ${(delay / 1000).toFixed(2)}s` +
			(idemKey ? " with the same Idempotency-Key" : ""));
		await sleep(delay);
	}
}

function expect({ status, body }, ok, what) {
	if (!ok.includes(status)) throw new Failed(`${what}: HTTP ${status} ${JSON.stringify(body)}`);
	return body;
}

async function main() {
	if (!API_KEY) throw new Failed("set SETTLED_API_KEY (an API key or the admin token) to read intents");
	if (!WALLET) throw new Failed(`set SETTLED_WALLET (a wallet credited with at least ${AMOUNT})`);

	// 1. Register (idempotent by key; an already registered wallet is fine).
	const reg = await call("POST", "/api/register", { body: { wallet: WALLET }, idemKey: `register-${hex(12)}` });
	if (reg.status === 409 && reg.body && reg.body.error === "already_registered") {
		console.log(`registered ${WALLET} (already)`);
	} else {
		console.log(`registered ${expect(reg, [201], "register").wallet}`);
	}

	// 2. Prepare: the claim intent and a hold on the wallet's own account.
	let intent = expect(await call("POST", "/api/claim/prepare", {
		body: { wallet: WALLET, amount: AMOUNT }, idemKey: `prepare-${hex(12)}`,
	}), [201], "prepare");
	console.log(`prepared ${intent.id} ${intent.status} amount ${intent.amount}`);

	// 3. Record the chain transaction (here a random hash): PENDING -> SUBMITTED.
	const txHash = "0x" + hex(32);
	intent = expect(await call("POST", "/api/claim/record", {
		body: { intent_id: intent.id, tx_hash: txHash }, idemKey: `record-${hex(12)}`,
	}), [200], "record");
	console.log(`recorded ${intent.id} ${intent.status} tx ${txHash}`);

	// 4. Poll until the confirmation job settles it.
	const deadline = Date.now() + POLL_TIMEOUT_MS;
	for (let wait = 100; ; wait = Math.min(wait * 2, 2000)) {
		intent = expect(await call("GET", `/api/v2/intents/${intent.id}`, { auth: API_KEY }), [200], "read the intent");
		if (intent.status === "SETTLED") {
			console.log(`SETTLED ${intent.id} ledger_tx ${intent.ledger_tx_id}`);
			return;
		}
		if (intent.status === "FAILED") throw new Failed(`intent ${intent.id} FAILED: ${intent.failure_reason}`);
		if (Date.now() > deadline)
			throw new Failed(`intent ${intent.id} still ${intent.status} after ${POLL_TIMEOUT_MS / 1000}s`);
		await sleep(wait);
	}
}

main().catch((err) => {
	log(`client.mjs: ${err instanceof Failed ? err.message : err.stack}`);
	process.exit(1);
});
