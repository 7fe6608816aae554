/* settled operator console. Plain JavaScript, no framework, no network
 * access but this server's own API (the page's Content-Security-Policy says
 * connect-src 'self'). The admin token lives in sessionStorage only (gone
 * when the tab closes) and travels only as an Authorization header; it is
 * never put in a URL or a cookie. Data is shown with textContent, never as
 * HTML. Money is base units of USD (cents) shown as dollars; times are shown
 * in the viewer's time zone (the UTC value in the tooltip). */
'use strict';

(function () {
  const TOKEN_KEY = 'settled.admin_token';
  const PAGE = 20;
  const $ = (sel) => document.querySelector(sel);

  // ---- small DOM helper: h('td', {class: 'num'}, 'text', node, ...)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // ---- formatting
  const grouping = new Intl.NumberFormat(undefined, { useGrouping: true });
  function money(baseUnits) {
    if (baseUnits === null || baseUnits === undefined || baseUnits === '') return '—';
    let v;
    try { v = BigInt(baseUnits); } catch (e) { return String(baseUnits); }
    const neg = v < 0n;
    if (neg) v = -v;
    const cents = String(v % 100n).padStart(2, '0');
    return (neg ? '−' : '') + '$' + grouping.format(v / 100n) + '.' + cents;
  }
  function when(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return h('time', { datetime: iso, title: iso + ' (UTC)' },
      d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' }));
  }
  const GOOD = new Set(['ok', 'CAPTURED', 'SETTLED', 'COMPLETED', 'active', 'APPROVED', 'CONFIRMED', 'completed', 'captured']);
  const BAD = new Set(['FAILED', 'dead', 'revoked', 'unavailable', 'failing']);
  const WARN = new Set(['PENDING_APPROVAL', 'PENDING', 'VOIDED', 'EXPIRED', 'LOCKED', 'SUBMITTED', 'expiring', 'pending', 'not run']);
  function badge(text) {
    const cls = GOOD.has(text) ? 'ok' : BAD.has(text) ? 'bad' : WARN.has(text) ? 'warn' : '';
    return h('span', { class: 'badge ' + cls }, text);
  }
  function short(id) { return h('span', { class: 'mono', title: id }, id); }

  // ---- the API
  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.message || body.error)) || ('HTTP ' + status));
      this.status = status;
      this.body = body;
    }
  }
  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  function newIdempotencyKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return 'console-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }
  async function api(method, path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    if (opts.auth !== false) headers.Authorization = 'Bearer ' + token();
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    // Every POST the console sends is safe to repeat: one key per action.
    if (method === 'POST') headers['Idempotency-Key'] = opts.idempotencyKey || newIdempotencyKey();
    const resp = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'omit' });
    let data = null;
    const text = await resp.text();
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if ((resp.status === 401 || resp.status === 403) && opts.auth !== false) {
      signOut('The admin token was refused (' + resp.status + '). Sign in again.');
      throw new ApiError(resp.status, data);
    }
    if (!resp.ok && !(opts.accept || []).includes(resp.status)) throw new ApiError(resp.status, data);
    return { status: resp.status, data };
  }
  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? '?' + s : '';
  }

  // ---- flash messages
  let flashTimer = null;
  function flash(msg, bad) {
    const f = $('#flash');
    f.textContent = msg;
    f.className = bad ? 'bad' : '';
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { f.textContent = ''; }, bad ? 12000 : 6000);
  }
  function failed(what, e) { flash(what + ': ' + (e && e.message ? e.message : e), true); }

  // A button that asks once more before acting (no modal dialogs).
  function confirmButton(label, confirmLabel, cls, action) {
    const b = h('button', { class: 'small ' + cls, type: 'button' }, label);
    let armed = false;
    b.addEventListener('click', async () => {
      if (!armed) {
        armed = true;
        b.textContent = confirmLabel;
        b.classList.add('confirm');
        setTimeout(() => { if (armed && b.isConnected) { armed = false; b.textContent = label; b.classList.remove('confirm'); } }, 5000);
        return;
      }
      armed = false;
      b.disabled = true;
      try { await action(); } finally { b.disabled = false; b.textContent = label; b.classList.remove('confirm'); }
    });
    return b;
  }
  function actionButton(label, cls, action) {
    const b = h('button', { class: 'small ' + cls, type: 'button' }, label);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try { await action(); } finally { b.disabled = false; }
    });
    return b;
  }

  // ---- a keyset-paginated table: load(after) -> {data, next_after}
  function pagedTable(opts) {
    const wrap = h('div', { class: 'paged' });
    const stack = [];      // cursors of the pages before this one
    let cursor = null;
    let page = 1;
    async function show(after) {
      let res;
      try { res = await opts.load(after); } catch (e) { failed(opts.what || 'Loading', e); return; }
      const rows = res.data || [];
      const table = h('table', { class: opts.tableClass || '' },
        h('thead', {}, h('tr', {}, opts.columns.map((c) => h('th', { class: c.num ? 'num' : '' }, c.title)))),
        h('tbody', {}, rows.length ? rows.map((r) => {
          const tr = h('tr', { class: opts.onRow ? 'clickable' : '', dataset: { id: r.id === undefined ? '' : String(r.id) } },
            opts.columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(r))));
          if (opts.onRow) tr.addEventListener('click', (ev) => {
            if (ev.target.closest('button')) return;
            wrap.querySelectorAll('tr.selected').forEach((x) => x.classList.remove('selected'));
            tr.classList.add('selected');
            opts.onRow(r);
          });
          return tr;
        }) : h('tr', {}, h('td', { class: 'empty', colspan: opts.columns.length }, opts.empty || 'Nothing here.'))));
      const prev = h('button', { class: 'small secondary', type: 'button', disabled: stack.length === 0 }, '← Previous');
      const next = h('button', { class: 'small secondary', type: 'button', disabled: !res.next_after }, 'Next →');
      prev.addEventListener('click', () => { page--; cursor = stack.pop(); show(cursor); });
      next.addEventListener('click', () => { page++; stack.push(cursor); cursor = res.next_after; show(cursor); });
      wrap.replaceChildren(table, h('div', { class: 'pager' }, h('span', {}, 'Page ' + page), prev, next));
    }
    wrap.reload = () => show(cursor);
    wrap.reset = () => { stack.length = 0; cursor = null; page = 1; return show(null); };
    wrap.reset();
    return wrap;
  }

  function kv(pairs) {
    return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  // ---- views
  const views = {};

  views.overview = async function (root) {
    const health = h('div', { class: 'card', id: 'health' }, h('h2', {}, 'Health and readiness'), 'Loading…');
    const recon = h('div', { class: 'card', id: 'reconciliation' }, h('h2', {}, 'Reconciliation'), 'Loading…');
    root.replaceChildren(h('div', { class: 'grid' }, health), recon);

    async function loadHealth() {
      const live = await api('GET', '/healthz', { auth: false, accept: [503] }).catch((e) => ({ status: 0, data: { error: e.message } }));
      const ready = await api('GET', '/health/ready', { auth: false, accept: [503] }).catch((e) => ({ status: 0, data: { error: e.message } }));
      const checks = (ready.data && ready.data.checks) || {};
      health.replaceChildren(h('h2', {}, 'Health and readiness'),
        kv([['Liveness', badge(live.status === 200 ? 'ok' : 'failing')],
          ['Readiness', badge(ready.status === 200 ? 'ok' : 'failing')]]),
        h('table', { id: 'readiness' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Part'), h('th', {}, 'Status'), h('th', {}, 'Details'))),
          h('tbody', {}, Object.entries(checks).map(([name, c]) => h('tr', { dataset: { part: name } },
            h('td', {}, name), h('td', {}, badge(c.status || (c.ok ? 'ok' : 'failing'))),
            h('td', { class: 'muted' }, Object.entries(c).filter(([k]) => k !== 'status')
              .map(([k, v]) => k + ': ' + (typeof v === 'object' ? JSON.stringify(v) : v)).join(', ')))))));
    }

    function checkRow(name, c) {
      const details = Object.entries(c).filter(([k]) => k !== 'ok' && k !== 'examples')
        .map(([k, v]) => k.replace(/_/g, ' ') + ': ' + (/(amount|sum|total)$/.test(k) ? money(v) : v)).join(' · ');
      const ex = c.examples ? h('div', { class: 'mono muted' }, 'e.g. ' + JSON.stringify(c.examples)) : null;
      return h('tr', { dataset: { check: name } }, h('td', {}, name.replace(/_/g, ' ')),
        h('td', {}, badge(c.ok ? 'ok' : 'FAILED')), h('td', {}, details, ex));
    }
    function showReport(rep) {
      const run = actionButton('Run now', '', async () => {
        try { showReport((await api('POST', '/api/admin/reconciliation')).data); flash('Reconciliation ran.'); }
        catch (e) { failed('Reconciliation', e); }
      });
      run.id = 'run-reconciliation';
      if (!rep) {
        recon.replaceChildren(h('h2', {}, 'Reconciliation'), h('p', {}, badge('not run'), ' No report yet.'), run);
        return;
      }
      const counts = rep.counts || {};
      recon.replaceChildren(h('div', { class: 'row' }, h('h2', {}, 'Reconciliation'), h('span', { class: 'spacer' }), run),
        kv([['Result', h('span', { id: 'recon-result' }, badge(rep.ok ? 'ok' : 'FAILED'), ' ', rep.problems + ' problem(s)')],
          ['Ran at', when(rep.ran_at)],
          ['Imbalance', money(rep.imbalance)],
          ['Accounts', counts.accounts], ['Transactions', counts.transactions],
          ['Held', money(counts.held_total)], ['Dead jobs', counts.dlq_jobs]]),
        h('h3', {}, 'Checks'),
        h('table', { id: 'checks' }, h('tbody', {}, Object.entries(rep.checks || {}).map(([n, c]) => checkRow(n, c)))));
    }
    await loadHealth();
    try {
      const r = await api('GET', '/api/admin/reconciliation', { accept: [404] });
      showReport(r.status === 404 ? null : r.data);
    } catch (e) { failed('Reconciliation', e); }
  };

  views.intents = async function (root) {
    const q = h('input', { id: 'intent-search', placeholder: 'intent id (int_…) or wallet (0x…)', class: 'wide', spellcheck: 'false' });
    const status = h('select', { id: 'intent-status' }, h('option', { value: '' }, 'any status'),
      ['PENDING', 'LOCKED', 'SUBMITTED', 'CONFIRMED', 'SETTLED', 'FAILED'].map((s) => h('option', { value: s }, s)));
    const list = h('div', { id: 'intent-list' });
    const detail = h('div', { class: 'card', id: 'intent-detail', hidden: true });
    const form = h('form', { class: 'row' }, q, status, h('button', { type: 'submit' }, 'Search'));
    root.replaceChildren(h('div', { class: 'card' }, h('h2', {}, 'Intents'), form, list), detail);

    async function showIntent(id) {
      try {
        const it = (await api('GET', '/api/v2/intents/' + encodeURIComponent(id), { accept: [404] }));
        if (it.status === 404) { flash('No intent has the id ' + id, true); return; }
        const d = it.data;
        detail.hidden = false;
        detail.replaceChildren(h('h2', {}, 'Intent ', short(d.id)),
          kv([['Status', badge(d.status)], ['Kind', d.kind], ['Wallet', short(d.wallet)], ['Amount', money(d.amount)],
            ['Transaction', d.tx_hash ? short(d.tx_hash) : '—'], d.failure_reason && ['Failure', d.failure_reason],
            ['Hold', d.hold ? [short(d.hold.id), ' ', badge(d.hold.status)] : '—'],
            ['Created', when(d.created_at)], ['Updated', when(d.updated_at)]]),
          h('h3', {}, 'Transitions'),
          h('table', { id: 'transitions' }, h('thead', {}, h('tr', {}, h('th', {}, 'When'), h('th', {}, 'From'), h('th', {}, 'To'), h('th', {}, 'By'))),
            h('tbody', {}, (d.transitions || []).map((t) => h('tr', {}, h('td', {}, when(t.at)),
              h('td', {}, t.from ? badge(t.from) : '—'), h('td', {}, badge(t.to)), h('td', { class: 'mono' }, t.actor || ''))))));
      } catch (e) { failed('Intent', e); }
    }
    let table = null;
    function search() {
      const v = q.value.trim();
      detail.hidden = true;
      if (/^int_/.test(v)) { list.replaceChildren(); showIntent(v); return; }
      const wallet = /^0[xX][0-9a-fA-F]{40}$/.test(v) ? v : '';
      if (v && !wallet) { flash('Search by an intent id (int_…) or a wallet address (0x + 40 hex digits).', true); return; }
      table = pagedTable({
        what: 'Intents',
        load: (after) => api('GET', '/api/admin/intents' + qs({ wallet, status: status.value, after, limit: PAGE })).then((r) => r.data),
        columns: [
          { title: 'Created', cell: (r) => when(r.created_at) },
          { title: 'Intent', cell: (r) => short(r.id) },
          { title: 'Kind', cell: (r) => r.kind },
          { title: 'Wallet', cell: (r) => short(r.wallet) },
          { title: 'Amount', num: true, cell: (r) => money(r.amount) },
          { title: 'Status', cell: (r) => badge(r.status) },
        ],
        empty: 'No intents match.',
        onRow: (r) => showIntent(r.id),
      });
      list.replaceChildren(table);
    }
    form.addEventListener('submit', (ev) => { ev.preventDefault(); search(); });
    status.addEventListener('change', search);
    search();
  };

  views.accounts = async function (root) {
    const q = h('input', { id: 'account-search', placeholder: 'wallet (0x…) or system account (treasury, external, …)', class: 'wide', spellcheck: 'false' });
    const form = h('form', { class: 'row' }, q, h('button', { type: 'submit' }, 'Look up'));
    const out = h('div', { id: 'account-detail' });
    const lists = h('div', { id: 'account-lists' });
    root.replaceChildren(h('div', { class: 'card' }, h('h2', {}, 'Accounts and holds'), form, out), lists);

    // Lists of accounts and holds (the admin token sees every client's).
    // A server without these routes still has the lookup above.
    const accountPath = (name) => '/api/v2/accounts/' + name.split('/').map(encodeURIComponent).join('/');
    async function showLists() {
      const parts = [];
      const acc = await api('GET', '/api/v2/accounts' + qs({ limit: 1 }), { accept: [404, 405] }).catch(() => null);
      if (acc && acc.status === 200) {
        parts.push(h('div', { class: 'card' }, h('h2', {}, 'Client accounts'), h('div', { id: 'account-list' }, pagedTable({
          what: 'Accounts',
          load: (after) => api('GET', '/api/v2/accounts' + qs({ after, limit: PAGE })).then((r) => r.data),
          columns: [
            { title: 'Account', cell: (r) => short(r.name || r.wallet || r.id) },
            { title: 'Kind', cell: (r) => r.kind },
            { title: 'Balance', num: true, cell: (r) => money(r.balance) },
            { title: 'Held', num: true, cell: (r) => money(r.held) },
            { title: 'Available', num: true, cell: (r) => money(r.available) },
            { title: 'Overdraft', cell: (r) => (r.overdraft || r.may_go_negative ? 'allowed' : '—') },
          ],
          empty: 'No client accounts yet.',
          onRow: (r) => { q.value = r.name || r.wallet || r.id; lookup(); },
        }))));
      }
      const holds = await api('GET', '/api/v2/holds' + qs({ limit: 1 }), { accept: [404, 405] }).catch(() => null);
      if (holds && holds.status === 200) {
        const state = h('select', { id: 'hold-state' }, h('option', { value: '' }, 'any state'),
          ['PENDING', 'CAPTURED', 'VOIDED', 'EXPIRED'].map((x) => h('option', { value: x }, x)));
        const box = h('div', { id: 'hold-list' });
        const load = () => box.replaceChildren(pagedTable({
          what: 'Holds',
          load: (after) => api('GET', '/api/v2/holds' + qs({ state: state.value, after, limit: PAGE })).then((r) => r.data),
          columns: [
            { title: 'Created', cell: (r) => when(r.created_at) },
            { title: 'Hold', cell: (r) => short(r.id) },
            { title: 'From', cell: (r) => short(r.from || '') },
            { title: 'To', cell: (r) => (r.to ? short(r.to) : '—') },
            { title: 'Amount', num: true, cell: (r) => money(r.amount) },
            { title: 'Captured', num: true, cell: (r) => money(r.captured) },
            { title: 'State', cell: (r) => badge(r.state || r.status) },
            { title: 'Expires', cell: (r) => when(r.expires_at) },
          ],
          empty: 'No holds.',
        }));
        state.addEventListener('change', load);
        load();
        parts.push(h('div', { class: 'card' }, h('div', { class: 'row' }, h('h2', {}, 'Holds'), h('span', { class: 'spacer' }),
          h('label', { for: 'hold-state' }, 'State'), state), box));
      }
      if (!parts.length) parts.push(h('p', { class: 'muted' }, 'This server has no account or hold listing; look an account up by its wallet or name.'));
      lists.replaceChildren(...parts);
    }

    async function lookup() {
      const v = q.value.trim();
      if (!v) return;
      try {
        const r = await api('GET', accountPath(v), { accept: [404, 400] });
        if (r.status !== 200) { out.replaceChildren(h('p', { class: 'error' }, (r.data && r.data.message) || 'Not found')); return; }
        const a = r.data;
        const account = a.wallet || a.name || a.id || v;
        out.replaceChildren(h('div', { class: 'grid' },
          h('div', {}, h('div', { class: 'muted' }, 'Balance'), h('div', { class: 'big', id: 'account-balance' }, money(a.balance))),
          h('div', {}, h('div', { class: 'muted' }, 'Held'), h('div', { class: 'big' }, money(a.held))),
          h('div', {}, h('div', { class: 'muted' }, 'Available'), h('div', { class: 'big' }, money(a.available)))),
        h('h3', {}, 'Ledger entries'),
        pagedTable({
          what: 'Entries',
          load: (after) => api('GET', '/api/v2/ledger/transactions' + qs({ account: v, after, limit: PAGE })).then((x) => x.data),
          columns: [
            { title: 'When', cell: (e) => when(e.created_at) },
            { title: 'Transaction', cell: (e) => short(e.tx_id || e.id) },
            { title: 'Kind', cell: (e) => e.kind || e.memo || '' },
            { title: 'Amount', num: true, cell: (e) => money(e.amount) },
          ],
          empty: 'No entries for ' + account + '.',
        }));
      } catch (e) { failed('Account', e); }
    }
    form.addEventListener('submit', (ev) => { ev.preventDefault(); lookup(); });
    await showLists();
  };

  views.payouts = async function (root) {
    const status = h('select', { id: 'batch-status' },
      ['PENDING_APPROVAL', 'APPROVED', 'COMPLETED'].map((s) => h('option', { value: s }, s)), h('option', { value: '' }, 'any status'));
    const list = h('div', { id: 'batch-list' });
    const detail = h('div', { class: 'card', id: 'batch-detail', hidden: true });
    root.replaceChildren(h('div', { class: 'card' }, h('div', { class: 'row' }, h('h2', {}, 'Payout batches'),
      h('span', { class: 'spacer' }), h('label', { for: 'batch-status' }, 'Status'), status), list), detail);

    async function showBatch(id) {
      try {
        const b = (await api('GET', '/api/v2/payouts/batch/' + encodeURIComponent(id))).data;
        detail.hidden = false;
        const items = b.items || [];
        detail.replaceChildren(h('h2', {}, 'Batch ', short(b.id)),
          kv([['Status', badge(b.status)], ['Reference', b.reference], ['Items', b.item_count],
            ['Total', money(b.total_amount)], ['Created', when(b.created_at)], ['Approved', when(b.approved_at)]]),
          h('h3', {}, 'Items'),
          h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, '#'), h('th', {}, 'Wallet'), h('th', { class: 'num' }, 'Amount'), h('th', {}, 'Status'))),
            h('tbody', {}, items.slice(0, 200).map((it) => h('tr', {}, h('td', {}, it.index !== undefined ? it.index : it.idx),
              h('td', {}, short(it.wallet)), h('td', { class: 'num' }, money(it.amount)), h('td', {}, badge(it.status)))))),
          items.length > 200 ? h('p', { class: 'muted' }, 'First 200 of ' + items.length + ' items.') : null);
      } catch (e) { failed('Batch', e); }
    }
    let table;
    function load() {
      detail.hidden = true;
      table = pagedTable({
        what: 'Batches',
        load: (after) => api('GET', '/api/admin/payouts/batches' + qs({ status: status.value, after, limit: PAGE })).then((r) => r.data),
        columns: [
          { title: 'Created', cell: (r) => when(r.created_at) },
          { title: 'Batch', cell: (r) => short(r.id) },
          { title: 'Reference', cell: (r) => r.reference },
          { title: 'Client', cell: (r) => short(r.client_id) },
          { title: 'Items', num: true, cell: (r) => r.item_count },
          { title: 'Total', num: true, cell: (r) => money(r.total_amount) },
          { title: 'Status', cell: (r) => badge(r.status) },
          { title: '', cell: (r) => r.status === 'PENDING_APPROVAL' ? confirmButton('Approve', 'Confirm approval', 'approve', async () => {
            try {
              await api('POST', '/api/v2/payouts/batch/' + encodeURIComponent(r.id) + '/approve');
              flash('Batch ' + r.id + ' approved: its payouts are queued.');
              table.reload();
            } catch (e) { failed('Approval', e); }
          }) : '' },
        ],
        empty: 'No batches.',
        onRow: (r) => showBatch(r.id),
      });
      list.replaceChildren(table);
    }
    status.addEventListener('change', load);
    load();
  };

  views.dlq = async function (root) {
    const list = h('div', { id: 'dlq-list' });
    root.replaceChildren(h('div', { class: 'card' }, h('h2', {}, 'Dead-letter queue'),
      h('p', { class: 'muted' }, 'Jobs that failed every attempt. Retry runs one again now with its attempts reset; delete drops it.'), list));
    const table = pagedTable({
      what: 'Dead jobs',
      load: (after) => api('GET', '/api/admin/dlq' + qs({ after, limit: PAGE })).then((r) => r.data),
      columns: [
        { title: 'Job', cell: (j) => String(j.id) },
        { title: 'Kind', cell: (j) => h('span', { class: 'mono' }, j.kind) },
        { title: 'Attempts', num: true, cell: (j) => j.attempts + ' / ' + j.max_attempts },
        { title: 'Last error', cell: (j) => h('span', { class: 'mono' }, j.last_error || '') },
        { title: 'Failed', cell: (j) => when(j.finished_at || j.updated_at) },
        { title: '', cell: (j) => h('span', { class: 'row' },
          actionButton('Retry', 'retry', async () => {
            try { await api('POST', '/api/admin/dlq/' + j.id + '/retry'); flash('Job ' + j.id + ' queued again.'); table.reload(); }
            catch (e) { failed('Retry', e); }
          }),
          confirmButton('Delete', 'Confirm delete', 'danger', async () => {
            try { await api('DELETE', '/api/admin/dlq/' + j.id); flash('Job ' + j.id + ' deleted.'); table.reload(); }
            catch (e) { failed('Delete', e); }
          })) },
      ],
      empty: 'The dead-letter queue is empty.',
    });
    list.replaceChildren(table);
  };

  views.keys = async function (root) {
    const name = h('input', { id: 'key-name', placeholder: 'name, e.g. partner-acme', required: true, maxlength: 100 });
    const form = h('form', { class: 'row', id: 'key-create' }, name, h('button', { type: 'submit' }, 'Create key'));
    const secret = h('div', { id: 'key-secret' });
    const list = h('div', { id: 'key-list' });
    root.replaceChildren(h('div', { class: 'card' }, h('h2', {}, 'API keys'), form, secret, list));

    function showSecret(what, k) {
      secret.replaceChildren(h('div', { class: 'card' },
        h('p', {}, h('strong', {}, what), ' Copy it now: it is shown once and cannot be read back.'),
        h('div', { class: 'secret', id: 'new-key' }, k.key),
        k.expires_at ? h('p', { class: 'muted' }, 'The replaced key keeps working until ', when(k.expires_at), '.') : null,
        h('button', { class: 'small secondary', type: 'button', onclick: () => secret.replaceChildren() }, 'I have copied it')));
    }
    function state(k) {
      if (k.revoked_at) return 'revoked';
      if (k.expires_at) return new Date(k.expires_at) > new Date() ? 'expiring' : 'revoked';
      return 'active';
    }
    const table = pagedTable({
      what: 'API keys',
      load: (after) => api('GET', '/api/admin/api-keys' + qs({ after, limit: PAGE })).then((r) => r.data),
      columns: [
        { title: 'Name', cell: (k) => k.name },
        { title: 'Key', cell: (k) => h('span', { class: 'mono' }, 'sk_live_' + k.prefix + '_…') },
        { title: 'Id', cell: (k) => short(k.id) },
        { title: 'Created', cell: (k) => when(k.created_at) },
        { title: 'State', cell: (k) => [badge(state(k)), k.expires_at && !k.revoked_at ? [' until ', when(k.expires_at)] : null] },
        { title: '', cell: (k) => state(k) === 'active' ? h('span', { class: 'row' },
          confirmButton('Rotate', 'Confirm rotate', 'rotate', async () => {
            try { showSecret('New key for ' + k.name + '.', (await api('POST', '/api/admin/api-keys/' + k.id + '/rotate')).data); table.reload(); }
            catch (e) { failed('Rotate', e); }
          }),
          confirmButton('Revoke', 'Confirm revoke', 'danger', async () => {
            try { await api('DELETE', '/api/admin/api-keys/' + k.id); flash('Key ' + k.name + ' revoked.'); table.reload(); }
            catch (e) { failed('Revoke', e); }
          })) : '' },
      ],
      empty: 'No API keys yet.',
    });
    list.replaceChildren(table);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const k = (await api('POST', '/api/admin/api-keys', { body: { name: name.value.trim() } })).data;
        name.value = '';
        showSecret('Key ' + k.name + ' created.', k);
        table.reset();
      } catch (e) { failed('Create key', e); }
    });
  };

  // ---- routing and sign-in
  let lastView = null;
  function viewChanged(name) {
    const changed = lastView !== null && lastView !== name;
    lastView = name;
    return changed;
  }
  function current() {
    const v = location.hash.replace(/^#/, '');
    return views[v] ? v : 'overview';
  }
  async function render() {
    if (!token()) return showLogin();
    $('#login').hidden = true;
    $('#nav').hidden = false;
    $('#logout').hidden = false;
    const name = current();
    if (viewChanged(name)) $('#flash').textContent = '';
    document.querySelectorAll('#nav a').forEach((a) => a.classList.toggle('active', a.dataset.view === name));
    const root = $('#view');
    root.hidden = false;
    root.dataset.view = name;
    root.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    try { await views[name](root); } catch (e) { if (token()) failed(name, e); }
    root.dataset.ready = name;
  }
  function showLogin(message) {
    $('#view').hidden = true;
    $('#nav').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = message || '';
    $('#token').focus();
  }
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }
  document.addEventListener('DOMContentLoaded', () => {
    $('#login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = $('#token').value;
      // Checked against an admin route before it is kept.
      const r = await fetch('/api/admin/reconciliation', { headers: { Authorization: 'Bearer ' + t }, cache: 'no-store', credentials: 'omit' })
        .catch(() => null);
      if (!r || r.status === 401 || r.status === 403) {
        $('#login-error').textContent = r ? 'That token is not the admin token.' : 'The server cannot be reached.';
        return;
      }
      $('#token').value = '';
      sessionStorage.setItem(TOKEN_KEY, t);
      render();
    });
    $('#logout').addEventListener('click', () => signOut('Signed out.'));
    window.addEventListener('hashchange', render);
    render();
  });
})();
