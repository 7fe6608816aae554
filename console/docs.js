/* settled API reference: renders GET /api/docs/openapi.json (the document
 * the server was built with) in the browser. No external viewer, no
 * network access but this server. Markdown in descriptions is rendered by
 * a small subset renderer (paragraphs, lists, tables, **bold**, `code`,
 * [links](url)) that only ever creates text nodes and elements. */
'use strict';

(function () {
  const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, v);
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // ---- Markdown subset
  function inline(text) {
    const out = [];
    const re = /(\*\*([^*]+)\*\*)|(`([^`]+)`)|(\[([^\]]+)\]\(([^)\s]+)\))/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.push(text.slice(last, m.index));
      if (m[2]) out.push(h('strong', {}, m[2]));
      else if (m[4]) out.push(h('code', {}, m[4]));
      else {
        const href = /^(https?:|#|\/)/.test(m[7]) ? m[7] : null;
        out.push(href ? h('a', { href }, m[6]) : m[6]);
      }
      last = re.lastIndex;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }
  function markdown(src) {
    const frag = h('div', { class: 'md' });
    const blocks = String(src || '').split(/\n\s*\n/);
    for (const block of blocks) {
      const lines = block.split('\n').filter((l) => l.trim() !== '');
      if (!lines.length) continue;
      if (lines.every((l) => l.trim().startsWith('|'))) {
        const cells = (l) => l.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
        const rows = lines.filter((l) => !/^\|?\s*:?-{2,}/.test(l.trim().replace(/^\|/, '')));
        const head = cells(rows[0]);
        frag.append(h('table', {}, h('thead', {}, h('tr', {}, head.map((c) => h('th', {}, inline(c))))),
          h('tbody', {}, rows.slice(1).map((r) => h('tr', {}, cells(r).map((c) => h('td', {}, inline(c))))))));
      } else if (lines.every((l) => /^\s*[-*] /.test(l))) {
        frag.append(h('ul', {}, lines.map((l) => h('li', {}, inline(l.replace(/^\s*[-*] /, ''))))));
      } else {
        frag.append(h('p', {}, inline(lines.join(' '))));
      }
    }
    return frag;
  }

  // ---- schemas
  let doc = null;
  function resolve(obj) {
    let seen = 0;
    while (obj && obj.$ref && seen++ < 20) {
      const path = obj.$ref.replace(/^#\//, '').split('/');
      obj = path.reduce((o, k) => (o ? o[k.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), doc);
    }
    return obj || {};
  }
  function refName(obj) { return obj && obj.$ref ? obj.$ref.split('/').pop() : null; }
  function typeOf(s) {
    const name = refName(s);
    s = resolve(s);
    let t = s.type || (s.properties ? 'object' : s.allOf ? 'object' : s.oneOf ? 'one of' : 'any');
    if (t === 'array') t = 'array of ' + typeOf(s.items || {});
    if (s.format) t += ' (' + s.format + ')';
    if (s.enum) t += ': ' + s.enum.map((v) => JSON.stringify(v)).join(' | ');
    if (s.nullable) t += ', nullable';
    return name ? name + ' — ' + t : t;
  }
  function schemaView(s, depth) {
    depth = depth || 0;
    s = resolve(s);
    if (depth > 4) return h('div', { class: 'muted' }, '…');
    const box = h('div', { class: 'schema' });
    if (s.allOf) s = { type: 'object', properties: Object.assign({}, ...s.allOf.map((x) => resolve(x).properties || {})),
      required: [].concat(...s.allOf.map((x) => resolve(x).required || [])) };
    if (s.type === 'array' && s.items) {
      box.append(h('div', {}, 'array of:'), schemaView(s.items, depth + 1));
      return box;
    }
    const props = s.properties || {};
    const req = new Set(s.required || []);
    if (!Object.keys(props).length) {
      box.append(h('div', {}, typeOf(s)));
      return box;
    }
    for (const [name, p] of Object.entries(props)) {
      const rp = resolve(p);
      box.append(h('div', {}, h('strong', {}, name), req.has(name) ? h('span', { class: 'req' }, ' *') : null, ' ',
        h('span', { class: 'muted' }, typeOf(p)), rp.description ? ' — ' + rp.description : ''));
      if ((rp.properties || (rp.type === 'array' && resolve(rp.items).properties)) && depth < 3) box.append(schemaView(rp, depth + 1));
    }
    return box;
  }

  function operation(path, method, op) {
    const id = op.operationId || (method + path).replace(/[^A-Za-z0-9]+/g, '-');
    const params = (op.parameters || []).map(resolve);
    const sec = op.security === undefined ? doc.security : op.security;
    const auth = sec && sec.length ? sec.map((s) => Object.keys(s).join(' + ')).join(' or ') : 'none';
    const body = op.requestBody ? resolve(op.requestBody) : null;
    const card = h('section', { class: 'card op', id },
      h('div', {}, h('span', { class: 'method ' + method }, method.toUpperCase()), h('span', { class: 'path' }, path)),
      op.summary ? h('h2', {}, op.summary) : null,
      op.description ? markdown(op.description) : null,
      h('p', { class: 'muted' }, 'Authentication: ', auth));
    if (params.length) {
      card.append(h('h3', {}, 'Parameters'), h('table', {},
        h('thead', {}, h('tr', {}, h('th', {}, 'Name'), h('th', {}, 'In'), h('th', {}, 'Type'), h('th', {}, 'Description'))),
        h('tbody', {}, params.map((p) => h('tr', {}, h('td', { class: 'mono' }, p.name, p.required ? h('span', { class: 'req' }, ' *') : null),
          h('td', {}, p.in), h('td', { class: 'muted' }, typeOf(p.schema || {})), h('td', {}, p.description ? markdown(p.description) : ''))))));
    }
    if (body) {
      const media = Object.entries(body.content || {});
      card.append(h('h3', {}, 'Request body', body.required ? h('span', { class: 'req' }, ' *') : null));
      for (const [type, m] of media) card.append(h('div', { class: 'muted' }, type), schemaView(m.schema || {}));
    }
    card.append(h('h3', {}, 'Responses'));
    const rows = Object.entries(op.responses || {}).map(([status, r]) => {
      r = resolve(r);
      const media = Object.entries(r.content || {});
      return h('tr', {}, h('td', { class: 'mono' }, status), h('td', {}, r.description ? markdown(r.description) : '',
        media.map(([type, m]) => status.startsWith('2') ? [h('div', { class: 'muted' }, type), schemaView(m.schema || {})] : null)));
    });
    card.append(h('table', {}, h('tbody', {}, rows)));
    return card;
  }

  function render() {
    const root = document.getElementById('docs');
    const toc = h('nav', { class: 'toc card' });
    const body = h('div', {});
    const info = doc.info || {};
    document.title = (info.title || 'API') + ' · API reference';
    body.append(h('section', { class: 'card', id: 'overview' }, h('h1', {}, (info.title || 'API') + ' ' + (info.version || '')),
      markdown(info.description || '')));
    toc.append(h('a', { href: '#overview' }, 'Overview'));
    const tags = (doc.tags || []).map((t) => t.name);
    const byTag = new Map(tags.map((t) => [t, []]));
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const m of METHODS) {
        if (!item[m]) continue;
        const tag = (item[m].tags && item[m].tags[0]) || 'other';
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([path, m, item[m]]);
      }
    }
    for (const [tag, ops] of byTag) {
      if (!ops.length) continue;
      const t = (doc.tags || []).find((x) => x.name === tag);
      toc.append(h('div', { class: 'tag' }, tag));
      body.append(h('h2', { id: 'tag-' + tag }, tag, t && t.description ? h('span', { class: 'muted' }, ' — ' + t.description) : null));
      for (const [path, m, op] of ops) {
        const card = operation(path, m, op);
        toc.append(h('a', { href: '#' + card.id }, h('span', { class: 'method ' + m }, m.toUpperCase()), path));
        body.append(card);
      }
    }
    root.replaceChildren(toc, body);
    root.dataset.ready = 'true';
    if (location.hash) {
      const target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView();
    }
  }

  document.addEventListener('DOMContentLoaded', async () => {
    try {
      const r = await fetch('/api/docs/openapi.json', { cache: 'no-store', credentials: 'omit' });
      doc = await r.json();
      render();
    } catch (e) {
      document.getElementById('docs').replaceChildren(h('p', { class: 'error' }, 'Cannot load the OpenAPI document: ' + e.message));
    }
  });
})();
