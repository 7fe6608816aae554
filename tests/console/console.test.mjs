// Drives the operator console in Debian's chromium (headless) with
// puppeteer-core, against a running settled that tests/integration/
// test_console.py prepared. Nothing is downloaded: the browser is
// /usr/bin/chromium (CHROMIUM overrides).
//
//   node console.test.mjs   with SETTLED_URL, ADMIN_TOKEN, BATCH_ID, DEAD_JOB,
//                           KEY_ID, SHOTS (a directory for the PNGs)
//
// It signs in, checks what each view shows against what the API answers
// (fetched here with the same token), approves the pending batch, retries
// the dead job, rotates the key, renders the API reference, and fails on
// any console error or Content-Security-Policy violation. Prints one JSON
// line of results; exit code 1 on the first failed check.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const BASE = env('SETTLED_URL');
const TOKEN = env('ADMIN_TOKEN');
const BATCH = env('BATCH_ID');
const DEAD = env('DEAD_JOB');
const KEY = env('KEY_ID');
const SHOTS = env('SHOTS');
const TZ = 'Asia/Tokyo';
// The harness's factor for slow runs (a server under Valgrind): every wait scales.
const FACTOR = Number(process.env.TIME_FACTOR || 1);
const results = {};

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}
async function api(method, path, headers) {
  const r = await fetch(BASE + path, { method, headers: { Authorization: `Bearer ${TOKEN}`, ...(headers || {}) } });
  return { status: r.status, body: await r.json().catch(() => null) };
}
function money(base) {
  let v = BigInt(base);
  const neg = v < 0n;
  if (neg) v = -v;
  return (neg ? '−' : '') + '$' + new Intl.NumberFormat('en-US').format(v / 100n) + '.' + String(v % 100n).padStart(2, '0');
}

mkdirSync(SHOTS, { recursive: true });
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--lang=en-US', '--no-first-run',
    '--disable-extensions', '--disable-background-networking', '--disable-component-update'],
  env: { ...process.env, TZ, LANG: 'en_US.UTF-8' },
  protocolTimeout: 120000 * FACTOR,
});
const problems = [];
let page = null;
try {
  page = await browser.newPage();
  await page.emulateTimezone(TZ);
  await page.setViewport({ width: 1280, height: 860 });
  page.setDefaultTimeout(20000 * FACTOR);
  // Chromium logs every non-2xx fetch as "Failed to load resource"; the
  // console expects some (a refused token, a 404 it shows): not problems.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push('console: ' + m.text());
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.evaluateOnNewDocument(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));
  });

  // ---- the page and its policy
  const resp = await page.goto(BASE + '/console', { waitUntil: 'networkidle0' });
  const csp = resp.headers()['content-security-policy'] || '';
  check(/script-src 'self'/.test(csp) && /connect-src 'self'/.test(csp) && !/unsafe-inline/.test(csp), 'strict CSP: ' + csp);
  results.csp = csp;
  await page.waitForSelector('#login:not([hidden])');
  await page.screenshot({ path: join(SHOTS, 'login.png') });

  // ---- a wrong token is refused and not kept
  await page.type('#token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.includes('not the admin token'));
  check(await page.evaluate(() => sessionStorage.length === 0), 'a refused token is not stored');

  // ---- sign in: the token only in sessionStorage, never in the URL or a cookie
  await page.$eval('#token', (e) => { e.value = ''; });
  await page.type('#token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#view[data-ready="overview"]');
  const stored = await page.evaluate(() => ({ s: sessionStorage.getItem('settled.admin_token'), l: localStorage.length, c: document.cookie, u: location.href }));
  check(stored.s === TOKEN && stored.l === 0 && stored.c === '' && !stored.u.includes(TOKEN), 'token in sessionStorage only');
  check(!requests.some((u) => u.includes(TOKEN)), 'the token never in a request URL');

  // ---- overview: readiness and reconciliation as the API says
  const ready = await (await fetch(BASE + '/health/ready')).json();
  const parts = await page.$$eval('#readiness tbody tr', (rows) => rows.map((r) => [r.dataset.part, r.children[1].textContent]));
  check(parts.length === Object.keys(ready.checks).length && parts.every(([p, s]) => ready.checks[p] && s === ready.checks[p].status),
    'readiness parts ' + JSON.stringify(parts));
  await page.click('#run-reconciliation');
  await page.waitForFunction(() => document.querySelector('#flash').textContent.includes('Reconciliation ran'));
  const report = (await api('GET', '/api/admin/reconciliation')).body;
  const checks = await page.$$eval('#checks tr', (rows) => rows.map((r) => [r.dataset.check, r.children[1].textContent]));
  check(checks.length === Object.keys(report.checks).length, 'every reconciliation check shown');
  for (const [name, shown] of checks) check(shown === (report.checks[name].ok ? 'ok' : 'FAILED'), 'check ' + name);
  const ranShown = await page.$eval('#reconciliation time', (t) => t.textContent);
  const ranWant = new Date(report.ran_at).toLocaleString('en-US', { dateStyle: 'medium', timeStyle: 'medium', timeZone: TZ });
  check(ranShown === ranWant, `time in the viewer's zone: ${ranShown} vs ${ranWant}`);
  results.reconciliation = { ok: report.ok, checks: checks.length, shown_ran_at: ranShown, utc: report.ran_at };
  await page.screenshot({ path: join(SHOTS, 'overview.png'), fullPage: true });

  // ---- payouts: approve the pending batch
  await page.goto(BASE + '/console#payouts');
  await page.waitForSelector(`#batch-list tr[data-id="${BATCH}"] button.approve`);
  const shownTotal = await page.$eval(`#batch-list tr[data-id="${BATCH}"]`, (tr) => tr.children[5].textContent);
  const before = (await api('GET', `/api/v2/payouts/batch/${BATCH}`)).body;
  check(shownTotal === money(before.total_amount), `batch total ${shownTotal} vs ${before.total_amount}`);
  await page.screenshot({ path: join(SHOTS, 'payouts.png'), fullPage: true });
  await page.click(`#batch-list tr[data-id="${BATCH}"] button.approve`);
  await page.click(`#batch-list tr[data-id="${BATCH}"] button.approve`);   // confirm
  await page.waitForFunction((b) => document.querySelector('#flash').textContent.includes(b + ' approved'), {}, BATCH);
  const after = (await api('GET', `/api/v2/payouts/batch/${BATCH}`)).body;
  check(after.status === 'APPROVED' || after.status === 'COMPLETED', 'batch approved: ' + after.status);
  results.batch = { id: BATCH, before: before.status, after: after.status, total: shownTotal };

  // ---- dead letters: retry the dead job
  await page.goto(BASE + '/console#dlq');
  await page.waitForSelector(`#dlq-list tr[data-id="${DEAD}"] button.retry`);
  await page.screenshot({ path: join(SHOTS, 'dlq.png'), fullPage: true });
  await page.click(`#dlq-list tr[data-id="${DEAD}"] button.retry`);
  await page.waitForFunction((j) => document.querySelector('#flash').textContent.includes('Job ' + j + ' queued again'), {}, DEAD);
  results.dlq = { retried: Number(DEAD) };

  // ---- API keys: rotate; the new key is shown once and works
  await page.goto(BASE + '/console#keys');
  await page.waitForSelector(`#key-list tr[data-id="${KEY}"] button.rotate`);
  await page.click(`#key-list tr[data-id="${KEY}"] button.rotate`);
  await page.click(`#key-list tr[data-id="${KEY}"] button.rotate`);   // confirm
  await page.waitForSelector('#new-key');
  const newKey = await page.$eval('#new-key', (e) => e.textContent);
  check(/^sk_live_[A-Za-z0-9]{8}_[A-Za-z0-9]+$/.test(newKey), 'a new key shown: ' + newKey.slice(0, 12));
  const probe = await fetch(BASE + '/api/v2/intents/int_nope', { headers: { Authorization: `Bearer ${newKey}` } });
  check(probe.status === 404, 'the rotated key authenticates: ' + probe.status);
  const keys = (await api('GET', '/api/admin/api-keys')).body.data;
  const rows = await page.$$eval('#key-list tbody tr', (trs) => trs.map((t) => t.dataset.id));
  check(keys.every((k) => rows.includes(k.id)), 'every key listed');
  await page.screenshot({ path: join(SHOTS, 'keys.png'), fullPage: true });
  await page.click('#key-secret button');
  check(!(await page.$('#new-key')), 'the key is gone once acknowledged');
  results.keys = { rotated: KEY, listed: rows.length };

  // ---- intents: the list and one intent's transitions
  await page.goto(BASE + '/console#intents');
  await page.waitForSelector('#intent-list tbody tr.clickable');
  const listed = (await api('GET', '/api/admin/intents?limit=20')).body.data;
  const shownIds = await page.$$eval('#intent-list tbody tr', (trs) => trs.map((t) => t.dataset.id));
  check(JSON.stringify(shownIds) === JSON.stringify(listed.map((i) => i.id)), 'intents list as the API says');
  await page.click('#intent-list tbody tr.clickable');
  await page.waitForSelector('#transitions tbody tr');
  const shownTransitions = await page.$$eval('#transitions tbody tr', (trs) => trs.length);
  const one = (await api('GET', `/api/v2/intents/${listed[0].id}`)).body;
  check(shownTransitions === one.transitions.length, 'transitions shown');
  await page.screenshot({ path: join(SHOTS, 'intents.png'), fullPage: true });
  results.intents = { listed: shownIds.length, transitions: shownTransitions };

  // ---- accounts: the treasury's balance
  await page.goto(BASE + '/console#accounts');
  await page.waitForSelector('#account-search');
  await page.type('#account-search', 'treasury');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#account-balance');
  const treasury = (await api('GET', '/api/v2/accounts/treasury')).body;
  const shownBalance = await page.$eval('#account-balance', (e) => e.textContent);
  check(shownBalance === money(treasury.balance), `treasury ${shownBalance} vs ${treasury.balance}`);
  // The lists: every client's accounts and everyone's holds, as the API says.
  await page.waitForSelector('#account-list tbody tr');
  await page.waitForSelector('#hold-list tbody tr');
  const accounts = (await api('GET', '/api/v2/accounts?limit=20')).body.data;
  const shownAccounts = await page.$$eval('#account-list tbody tr', (trs) => trs.map((t) => t.children[0].textContent));
  check(JSON.stringify(shownAccounts) === JSON.stringify(accounts.map((a) => a.name)), 'accounts listed: ' + shownAccounts);
  const holdsApi = (await api('GET', '/api/v2/holds?limit=20')).body.data;
  const shownHolds = await page.$$eval('#hold-list tbody tr', (trs) => trs.map((t) => t.dataset.id));
  check(JSON.stringify(shownHolds) === JSON.stringify(holdsApi.map((x) => x.id)), 'holds listed');
  await page.screenshot({ path: join(SHOTS, 'accounts.png'), fullPage: true });
  results.accounts = { treasury: shownBalance, accounts: shownAccounts.length, holds: shownHolds.length };

  // ---- the API reference, rendered from the served document
  await page.goto(BASE + '/api/docs', { waitUntil: 'networkidle0' });
  await page.waitForSelector('#docs[data-ready="true"]');
  const doc = await (await fetch(BASE + '/api/docs/openapi.json')).json();
  const nOps = Object.values(doc.paths).reduce((n, item) => n + ['get', 'post', 'put', 'patch', 'delete'].filter((m) => item[m]).length, 0);
  const shownOps = await page.$$eval('section.op', (s) => s.length);
  check(shownOps === nOps, `every operation rendered: ${shownOps} of ${nOps}`);
  await page.screenshot({ path: join(SHOTS, 'api-docs.png') });
  results.docs = { operations: shownOps };

  // ---- signing out forgets the token
  await page.goto(BASE + '/console');
  await page.waitForSelector('#logout:not([hidden])');
  await page.click('#logout');
  check(await page.evaluate(() => sessionStorage.length === 0), 'sign-out clears the token');

  check(!requests.some((u) => !u.startsWith(BASE) && !u.startsWith('data:')), 'no request leaves the server: ' +
    requests.filter((u) => !u.startsWith(BASE)).join(' '));
  check(problems.length === 0, 'no console errors or CSP violations: ' + problems.join('; '));
  results.requests = requests.length;
  console.log(JSON.stringify({ ok: true, results }));
} catch (e) {
  if (page) await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  console.log(JSON.stringify({ ok: false, error: e.message, problems, results }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
