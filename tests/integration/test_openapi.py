"""The OpenAPI document (docs/openapi.json, served at GET /api/docs/openapi.json)
against the code and the running server.

* The route table: src/route_table.c is parsed as C text (comments stripped, the
  brace groups of `settled_routes[]` split at depth 0), nothing is added to
  the server for it. Every (method, template) must be in the document and
  the document may name nothing else; each route's flags (admin, API key,
  JSON body, idempotent, money, rate limits, path parameters) must show in
  its operation (security, parameters, requestBody, 429, ...).
* The error codes: src/errors.def is the one table of them (id, code,
  status). Every row a handler in src/routes_*.c answers (an ERR_ id in
  the file, or in a helper function it calls: reqcheck.c) must be documented
  with its status on one of that file's operations; every code the request
  pipeline (http.c, dispatch.c, response.c) answers must be documented
  somewhere.
* The running server: a scripted set of good and bad requests per route.
  Each answer's status must be documented for its operation, its error code
  listed for that status, its body valid against the documented schema
  (a small checker of the OpenAPI 3.0 schema subset the document uses) and
  its documented headers well-formed; every operation must be seen with a
  2xx and with a 4xx at least once.
* The document itself is validated by @apidevtools/swagger-parser from the
  npm registry, installed with `npm ci` from tests/openapi/package-lock.json
  into build/openapi-validator/ (once; again only when the lock changes).
"""

import base64
import fcntl
import hashlib
import hmac
import json
import re
import secrets
import shutil
import subprocess
import time

import pytest

from conftest import (ADMIN_TOKEN, ROOT, RawConnection, fund_wallet, new_key, new_wallet,
                      wait_until)

DOC_PATH = ROOT / "docs" / "openapi.json"
ROUTES_C = ROOT / "src" / "route_table.c"
ERRORS_DEF = ROOT / "src" / "errors.def"
MAIN_C = ROOT / "src" / "main.c"
NPM_SRC = ROOT / "tests" / "openapi"
NPM_DIR = ROOT / "build" / "openapi-validator"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def load_doc():
    return json.loads(DOC_PATH.read_text())


# --------------------------------------------------------------------------
# The route table, read from the C source


def strip_c_comments(text):
    """C text without comments; string literals are kept intact."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_top(text, sep=","):
    """Splits at sep outside (), {} and string literals."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def policy_names():
    """RLP_* -> the policy's name, from main.c's policy table."""
    text = strip_c_comments(MAIN_C.read_text())
    found = dict(re.findall(r'policies\[(RLP_\w+)\]\s*=\s*\(struct rl_policy\)\s*\{\s*"(\w+)"', text))
    assert found, "no rate-limit policy names found in src/main.c"
    return found


def parse_routes():
    """[{method, path, handler, flags:set, limits:[policy name]}] in table order."""
    text = strip_c_comments(ROUTES_C.read_text())
    m = re.search(r"settled_routes\s*\[\s*\]\s*=\s*\{", text)
    assert m, "settled_routes[] not found in src/route_table.c"
    depth, i = 1, m.end()
    while depth:
        c = text[i]
        if c == '"':
            i = text.index('"', i + 1) + 1
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        i += 1
    body = text[m.end():i - 1]
    names = policy_names()
    routes = []
    for entry in split_top(body):
        assert entry.startswith("{") and entry.endswith("}"), f"odd route entry {entry!r}"
        fields = split_top(entry[1:-1])
        assert len(fields) >= 4, f"route entry with {len(fields)} fields: {entry!r}"
        method, path = (json.loads(f) for f in fields[:2])
        flags = set(re.findall(r"ROUTE_\w+", fields[3]))
        limits = []
        for pol, _src in re.findall(r"LIMIT\(\s*(RLP_\w+)\s*,\s*(RL_KEY_\w+)\s*\)", ",".join(fields[4:])):
            limits.append(names[pol])
        routes.append({"method": method, "path": path, "handler": fields[2], "flags": flags,
                       "limits": limits})
    assert len(routes) >= 20, f"only {len(routes)} routes parsed from src/route_table.c"
    return routes


def match_template(template, path):
    t, p = template.split("/"), path.split("/")
    if len(t) != len(p):
        return False
    return all(a == b or (a.startswith("{") and a.endswith("}") and b) for a, b in zip(t, p))


# --------------------------------------------------------------------------
# A checker for the OpenAPI 3.0 schema subset the document uses


class SchemaChecker:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, node):
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), f"external $ref {ref}"
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part]
            seen += 1
            assert seen < 20, "a $ref loop"
        return node

    def errors(self, schema, value, where="$"):
        s = self.resolve(schema)
        errs = []
        if value is None:
            if s.get("nullable") or not s or ("type" not in s and not any(
                    k in s for k in ("allOf", "oneOf", "anyOf", "enum", "properties"))):
                return []
            # allOf members may carry nullable on the outer schema only
            return [f"{where}: null is not allowed"]
        for sub in s.get("allOf", []):
            errs += self.errors(sub, value, where)
        if "oneOf" in s:
            ok = [sub for sub in s["oneOf"] if not self.errors(sub, value, where)]
            if len(ok) != 1:
                errs.append(f"{where}: matches {len(ok)} of oneOf, not exactly one")
        if "anyOf" in s and not any(not self.errors(sub, value, where) for sub in s["anyOf"]):
            errs.append(f"{where}: matches none of anyOf")
        t = s.get("type")
        types = {"object": dict, "array": list, "string": str, "boolean": bool}
        if t in types and not isinstance(value, types[t]):
            return errs + [f"{where}: {value!r} is not {t}"]
        if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            return errs + [f"{where}: {value!r} is not integer"]
        if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return errs + [f"{where}: {value!r} is not number"]
        if "enum" in s and value not in s["enum"]:
            errs.append(f"{where}: {value!r} not in {s['enum']}")
        if isinstance(value, str):
            if "pattern" in s and not re.search(s["pattern"], value):
                errs.append(f"{where}: {value!r} does not match {s['pattern']}")
            if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", 1 << 62):
                errs.append(f"{where}: length {len(value)} out of range")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in s and value < s["minimum"]:
                errs.append(f"{where}: {value} < minimum {s['minimum']}")
            if "maximum" in s and value > s["maximum"]:
                errs.append(f"{where}: {value} > maximum {s['maximum']}")
        if isinstance(value, dict):
            props = s.get("properties", {})
            for name in s.get("required", []):
                if name not in value:
                    errs.append(f"{where}: missing required {name!r}")
            extra = s.get("additionalProperties", True)
            for name, v in value.items():
                if name in props:
                    errs += self.errors(props[name], v, f"{where}.{name}")
                elif extra is False and not self._allof_has(s, name):
                    errs.append(f"{where}: unexpected member {name!r}")
                elif isinstance(extra, dict):
                    errs += self.errors(extra, v, f"{where}.{name}")
        if isinstance(value, list):
            if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", 1 << 62):
                errs.append(f"{where}: {len(value)} items out of range")
            if "items" in s:
                for k, v in enumerate(value):
                    errs += self.errors(s["items"], v, f"{where}[{k}]")
        return errs

    def _allof_has(self, s, name):
        return any(name in self.resolve(sub).get("properties", {}) for sub in s.get("allOf", []))

    def header_errors(self, header, value):
        schema = self.resolve(self.resolve(header).get("schema", {}))
        if schema.get("type") == "integer":
            if not re.fullmatch(r"-?[0-9]+", value):
                return [f"{value!r} is not an integer"]
            return self.errors(schema, int(value))
        return self.errors(schema, value)


# --------------------------------------------------------------------------
# The live checker


class Live:
    """Sends requests, checks every answer against the document, records
    which (operation, status) pairs were seen."""

    def __init__(self, srv, doc, routes):
        self.srv = srv
        self.doc = doc
        self.routes = routes
        self.schemas = SchemaChecker(doc)
        self.seen = {}          # (METHOD, template) -> set of statuses

    def template_of(self, method, path):
        path = path.split("?", 1)[0]
        for r in self.routes:
            if r["method"] == method and match_template(r["path"], path):
                return r["path"]
        return None

    def call(self, method, path, status, code=None, json_body=None, body=None, headers=None,
             key=None):
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Idempotency-Key"] = key
        resp = self.srv.request(method, path, json_body=json_body, body=body, headers=hdrs,
                                check=False)
        self.check(resp, method, path, status, code, sent_key=key is not None)
        return resp

    def check(self, resp, method, path, status, code=None, sent_key=False):
        statuses = status if isinstance(status, (set, tuple)) else {status}
        where = f"{method} {path}"
        assert resp.status in statuses, f"{where}: expected {statuses}, got {resp!r}"
        assert resp.headers.get("X-Request-Id"), f"{where}: no X-Request-Id"
        assert resp.headers.get("traceparent"), f"{where}: no traceparent"
        template = self.template_of(method, path)
        if template is None:
            # Unrouted: the generic answers of the whole document.
            if resp.status == 404:
                documented = self.schemas.resolve(self.doc["components"]["responses"]["NotFound"])
            else:
                assert resp.status == 405, f"{where}: unrouted answer {resp!r}"
                ops = self.doc["paths"].get(self._path_template(path), {})
                assert ops, f"{where}: 405 for a path the document does not have"
                allow = {m.strip().lower() for m in resp.headers.get("Allow", "").split(",")}
                assert allow == {m for m in ops if m in METHODS}, \
                    f"{where}: Allow {allow} != the document's methods {sorted(ops)}"
                for m, op in ops.items():
                    assert "405" in op["responses"], f"{m.upper()} {self._path_template(path)}: 405 undocumented"
                documented = self.schemas.resolve(next(iter(ops.values()))["responses"]["405"])
            self._check_response(where, documented, resp, code, None, sent_key)
            return resp
        op = self.doc["paths"][template][method.lower()]
        documented = op["responses"].get(str(resp.status))
        assert documented is not None, \
            f"{method} {template}: status {resp.status} is not documented (answer {resp!r})"
        self._check_response(f"{method} {template}", self.schemas.resolve(documented), resp, code,
                             op, sent_key)
        self.seen.setdefault((method, template), set()).add(resp.status)
        return resp

    def _path_template(self, path):
        for p in self.doc["paths"]:
            if match_template(p, path):
                return p
        return path

    def _check_response(self, where, documented, resp, code, op, sent_key):
        content = documented.get("content", {})
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if resp.body:
            media = {k.split(";")[0].strip().lower(): v for k, v in content.items()}
            assert ctype in media, f"{where}: Content-Type {ctype!r} not documented ({list(media)})"
            if ctype == "application/json":
                assert resp.json is not None, f"{where}: body is not JSON: {resp.body[:200]!r}"
                errs = self.schemas.errors(media[ctype]["schema"], resp.json)
                assert not errs, f"{where} {resp.status}: body does not match the schema:\n  " + \
                    "\n  ".join(errs[:10]) + f"\nbody: {resp.body[:500]!r}"
        if code is not None:
            assert isinstance(resp.json, dict) and resp.json.get("error") == code, \
                f"{where}: expected error {code!r}, got {resp!r}"
        if resp.status >= 400:
            assert isinstance(resp.json, dict) and "error" in resp.json, f"{where}: {resp!r}"
        headers = documented.get("headers", {})
        for name, h in headers.items():
            value = resp.headers.get(name)
            if value is not None:
                errs = self.schemas.header_errors(h, value)
                assert not errs, f"{where}: header {name}: {errs}"
        must = ["X-Request-Id", "traceparent"]
        if resp.status == 201 and "Location" in headers:
            must.append("Location")
        if resp.status in (405,):
            must.append("Allow")
        if resp.status == 429:
            must += ["Retry-After", "RateLimit", "RateLimit-Policy", "X-RateLimit-Reset"]
        if resp.status == 401 and resp.json.get("error") == "unauthorized":
            must.append("WWW-Authenticate")
        if op is not None:
            limits = op.get("x-settled-route", {}).get("rate_limits")
            if limits and 200 <= resp.status < 300:
                must += ["RateLimit", "RateLimit-Policy", "X-RateLimit-Limit",
                         "X-RateLimit-Remaining", "X-RateLimit-Reset"]
            if sent_key and 200 <= resp.status < 300 and "idempotent" in op["x-settled-route"]["flags"]:
                must.append("X-Idempotency")
        for name in must:
            assert name in headers, f"{where} {resp.status}: header {name} sent but not documented"
            assert resp.headers.get(name) is not None, f"{where} {resp.status}: no {name} header"

    def assert_every_operation_answered(self, klass):
        """Every documented operation was seen answering a klass-xx status."""
        missing = []
        for path, ops in self.doc["paths"].items():
            for m in ops:
                if m in METHODS and not any(s // 100 == klass for s in
                                            self.seen.get((m.upper(), path), ())):
                    missing.append(f"{m.upper()} {path}")
        assert not missing, f"operations never answered {klass}xx in the live check: {missing}"


# --------------------------------------------------------------------------
# Static checks: document <-> route table <-> source


def doc_operations(doc):
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in METHODS}


def test_every_route_is_documented_and_the_document_names_no_other():
    doc = load_doc()
    table = {(r["method"], r["path"]) for r in parse_routes()}
    documented = doc_operations(doc)
    missing = sorted(table - documented)
    extra = sorted(documented - table)
    assert not missing, f"routes in src/route_table.c missing from docs/openapi.json: {missing}"
    assert not extra, f"docs/openapi.json documents routes src/route_table.c does not have: {extra}"


def test_each_operation_matches_its_route_flags():
    doc = load_doc()
    checker = SchemaChecker(doc)
    problems = []
    flag_names = {"ROUTE_JSON_BODY": "json", "ROUTE_IDEMPOTENT": "idempotent",
                  "ROUTE_MONEY": "money", "ROUTE_ADMIN": "admin", "ROUTE_API_KEY": "api_key",
                  "ROUTE_SIGNED": "signed"}
    ids = set()
    for r in parse_routes():
        op = doc["paths"].get(r["path"], {}).get(r["method"].lower())
        if op is None:
            continue  # the test above reports it
        name = f"{r['method']} {r['path']}"
        ids.add(op.get("operationId"))
        responses = op["responses"]
        params = [checker.resolve(p) for p in op.get("parameters", [])]
        pnames = {(p["in"], p["name"].lower()) for p in params}

        def want(cond, what):
            if not cond:
                problems.append(f"{name}: {what}")

        success = [s for s in responses if s.startswith("2")]
        # The success status is route data (ROUTE_CREATED), never a handler's.
        want(success == (["201"] if "ROUTE_CREATED" in r["flags"] else ["200"]),
             f"2xx {success}, the table says {'201' if 'ROUTE_CREATED' in r['flags'] else '200'}")
        for st in ("400", "405", "413", "415", "500", "503"):
            want(st in responses, f"no {st} response (every route can answer it)")
        security = op.get("security")
        if "ROUTE_ADMIN" in r["flags"]:
            want(security == [{"adminToken": []}], f"security {security}, want adminToken only")
            want("401" in responses and "403" in responses, "no 401/403")
        elif "ROUTE_API_KEY" in r["flags"]:
            want(security and {"apiKey": []} in security and {"adminToken": []} in security,
                 f"security {security}, want apiKey or adminToken")
            want("401" in responses, "no 401")
        else:
            want(security == [], f"security {security}, want [] (public)")
        idem = "ROUTE_IDEMPOTENT" in r["flags"]
        want((("header", "idempotency-key") in pnames) == idem,
             "Idempotency-Key parameter iff ROUTE_IDEMPOTENT")
        if idem:
            want("409" in responses and "422" in responses, "idempotent but no 409/422")
        # an optional body (hold capture's {amount?}) is a requestBody with
        # required: false on a route without ROUTE_JSON_BODY
        want(bool(op.get("requestBody", {}).get("required")) == ("ROUTE_JSON_BODY" in r["flags"]),
             "requestBody required iff ROUTE_JSON_BODY")
        want((("header", "x-request-id") in pnames) and (("header", "traceparent") in pnames),
             "X-Request-Id / traceparent parameters")
        # Authenticated routes are limited too: failed authentications per
        # address (auth_fail) make them answer 429.
        authed = bool({"ROUTE_ADMIN", "ROUTE_API_KEY", "ROUTE_SIGNED"} & r["flags"])
        if r["limits"]:
            ok = next(v for s, v in responses.items() if s.startswith("2"))
            want("RateLimit" in checker.resolve(ok).get("headers", {}), "no RateLimit header on 2xx")
        if r["limits"] or authed:
            want("429" in responses, "rate limited but no 429")
        else:
            want("429" not in responses, "429 documented but the route has no rate limit")
        if authed:
            for st in ("401", "403"):
                if st in responses:
                    want("RateLimit" in checker.resolve(responses[st]).get("headers", {}),
                         f"no RateLimit header on {st} (auth_fail)")
        tpl_params = set(re.findall(r"\{(\w+)\}", r["path"]))
        doc_params = {p["name"] for p in params if p["in"] == "path"}
        want(tpl_params == doc_params, f"path parameters {doc_params} != template's {tpl_params}")
        ext = op.get("x-settled-route", {})
        want(sorted(flag_names[f] for f in r["flags"] if f in flag_names) == ext.get("flags"),
             f"x-settled-route.flags {ext.get('flags')} != the table's {sorted(r['flags'])}")
        want(r["limits"] == ext.get("rate_limits"),
             f"x-settled-route.rate_limits {ext.get('rate_limits')} != the table's {r['limits']}")
    assert None not in ids
    assert not problems, "docs/openapi.json disagrees with src/route_table.c:\n" + "\n".join(problems)


ERR_ROW_RE = re.compile(r'\bERR\(\s*(\w+)\s*,\s*"([a-z][a-z0-9_]*)"\s*,\s*(\d{3})\s*,')
ERR_USE_RE = re.compile(r'\bERR_([A-Z][A-Z0-9_]*)\b')


def catalogue():
    """{row id: (code, status)} from src/errors.def, the one error table."""
    text = strip_c_comments(ERRORS_DEF.read_text())
    rows = {}
    for rid, code, status in ERR_ROW_RE.findall(text):
        assert rid not in rows, f"src/errors.def: {rid} twice"
        rows[rid] = (code, int(status))
    # Every ERR( that opens a row was read as one (a row the regex missed
    # would go unchecked).
    assert len(rows) == len(re.findall(r"\bERR\(", text)) and len(rows) >= 50, \
        f"only {len(rows)} rows read from src/errors.def"
    return rows


def used_rows(path, rows):
    """{(code, status)} of the catalogue rows one C file answers with."""
    found = set()
    for rid in ERR_USE_RE.findall(strip_c_comments(path.read_text())):
        if rid == "COUNT":
            continue
        assert rid in rows, f"{path.name}: ERR_{rid} is no row of src/errors.def"
        found.add(rows[rid])
    return found


# Helpers that answer for the routes that call them: the rows of each
# function count as those of every file that calls it.
HELPERS = [ROOT / "src" / "reqcheck.c"]
# The request pipeline answers for any route: its codes must be documented
# somewhere.
PIPELINE_C = [ROOT / "src" / name for name in ("http.c", "dispatch.c", "response.c")]


def helper_rows(path, rows):
    """{function: {(code, status)}} of each function a helper file defines."""
    text = strip_c_comments(path.read_text())
    defs = list(re.finditer(r"^[a-z][\w *]*?\b(\w+)\s*\([^;{]*\)\s*\{", text, re.M))
    out = {}
    for i, m in enumerate(defs):
        body = text[m.start():defs[i + 1].start() if i + 1 < len(defs) else len(text)]
        out[m.group(1)] = {rows[r] for r in ERR_USE_RE.findall(body)}
    assert out, f"no functions found in {path.name}"
    return out


def documented_codes(doc, op):
    """{status: set(codes)} of one operation."""
    checker = SchemaChecker(doc)
    out = {}

    def collect(schema, into):
        s = checker.resolve(schema)
        if "enum" in s.get("properties", {}).get("error", {}):
            into.update(s["properties"]["error"]["enum"])
        for key in ("allOf", "oneOf", "anyOf"):
            for sub in s.get(key, []):
                collect(sub, into)

    for st, resp in op["responses"].items():
        codes = set()
        for media in checker.resolve(resp).get("content", {}).values():
            collect(media["schema"], codes)
        out[int(st)] = codes
    return out


def test_every_error_code_in_the_source_is_documented():
    doc = load_doc()
    rows = catalogue()
    routes = parse_routes()
    problems = []
    # Handler files: each row's code with its status on one of the file's operations.
    for path in sorted((ROOT / "src").glob("routes_*.c")):
        text = strip_c_comments(path.read_text())
        handlers = set(re.findall(r"enum\s+st_rc\s+(route_\w+)\s*\(\s*struct\s+req_ctx", text))
        ops = [doc["paths"][r["path"]][r["method"].lower()] for r in routes
               if r["handler"] in handlers and r["path"] in doc["paths"]]
        codes = [documented_codes(doc, op) for op in ops]
        answered = used_rows(path, rows)
        for helper in HELPERS:
            for fn, found in helper_rows(helper, rows).items():
                if re.search(rf"\b{fn}\s*\(", text):
                    answered |= found
        for code, status in sorted(answered):
            if not any(code in d.get(status, ()) for d in codes):
                problems.append(f"{path.name}: {code!r} ({status}) is documented on none of "
                                f"its operations")
    # The dispatcher: every code it answers is documented somewhere.
    everywhere = set()
    for op in (o for ops in doc["paths"].values() for m, o in ops.items() if m in METHODS):
        for c in documented_codes(doc, op).values():
            everywhere |= c
    for name in ("NotFound", "MethodNotAllowed", "PayloadTooLarge", "UnsupportedMediaType"):
        for c in documented_codes(doc, {"responses": {"400": doc["components"]["responses"][name]}}).values():
            everywhere |= c
    for path in PIPELINE_C:
        for code, _status in sorted(used_rows(path, rows)):
            if code not in everywhere:
                problems.append(f"{path.name}: {code!r} is documented nowhere")
    assert not problems, "\n".join(problems)


def test_every_bare_result_code_answers_a_documented_error():
    """A handler or unit that returns a result code without answering is
    answered by err_of_rc()'s row (src/errors.c): that answer reaches the
    wire like any other, so its code must be documented with its status on
    some operation (a client must never see a code the contract does not
    name)."""
    doc = load_doc()
    rows = catalogue()
    documented = {}
    for op in (o for ops in doc["paths"].values() for m, o in ops.items() if m in METHODS):
        for status, codes in documented_codes(doc, op).items():
            documented.setdefault(status, set()).update(codes)
    text = strip_c_comments((ROOT / "src" / "errors.c").read_text())
    table = re.search(r"rc_err\[ST_RC_COUNT\]\s*=\s*\{(.*?)\};", text, re.S)
    assert table, "src/errors.c: no rc_err table"
    mapped = dict(re.findall(r"\[(ST_\w+)\]\s*=\s*ERR_(\w+)", table.group(1)))
    rc_h = strip_c_comments((ROOT / "src" / "rc.h").read_text())
    every_rc = set(re.findall(r"\b(ST_[A-Z_]+)\b", re.search(r"enum st_rc \{(.*?)\};", rc_h, re.S).group(1)))
    assert set(mapped) == every_rc - {"ST_RC_COUNT"}, \
        f"rc_err names {sorted(mapped)}, rc.h has {sorted(every_rc)}"
    problems = [f"{rc} answers {rows[rid][0]!r} ({rows[rid][1]}), documented on no operation"
                for rc, rid in sorted(mapped.items())
                if rows[rid][0] not in documented.get(rows[rid][1], ())]
    assert not problems, "\n".join(problems)


STATUS_SET_RE = re.compile(r"\b\w*resp\w*\s*(?:\([^)]*\))?\s*(?:->|\.)\s*status\s*=(?!=)")
PACKED_CODE_RE = re.compile(r'"error"\s*,\s*"[a-z][a-z0-9_]*"')


def test_handlers_name_no_status_and_write_no_error_body():
    """Statuses are the route table's and the catalogue's: a handler that set
    one, or packed an {"error": "<code>"} body itself, would bypass both."""
    for bad in ('resp->status = 200;', 'req_resp(rq)->status = 201;', 'rq->resp.status = 405;',
                'json_pack("{s:s}", "error", "not_ready")'):
        assert STATUS_SET_RE.search(bad) or PACKED_CODE_RE.search(bad), bad
    assert not STATUS_SET_RE.search("it->status = PAYOUT_ITEM_FAILED;")
    problems = []
    for path in sorted((ROOT / "src").glob("routes_*.c")) + HELPERS:
        text = strip_c_comments(path.read_text())
        for m in list(STATUS_SET_RE.finditer(text)) + list(PACKED_CODE_RE.finditer(text)):
            problems.append(f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}")
    assert not problems, "handlers answering around errors.def / ROUTE_CREATED:\n" + "\n".join(problems)


def test_every_catalogued_error_is_answered_somewhere():
    """A row no C file names is dead: remove it (or the code that should use it is wrong)."""
    rows = catalogue()
    used = set()
    for path in (ROOT / "src").glob("*.c"):
        used |= set(ERR_USE_RE.findall(strip_c_comments(path.read_text())))
    dead = sorted(set(rows) - used)
    assert not dead, f"rows of src/errors.def no source file answers: {dead}"


# --------------------------------------------------------------------------
# The validator from the npm registry


def npm_validator_dir():
    """build/openapi-validator with @apidevtools/swagger-parser installed by
    `npm ci` from the checked-in lock; reinstalled only when the lock changes."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: scripts/deps installs nodejs and npm", pytrace=False)
    lock = (NPM_SRC / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (NPM_SRC / "package.json").read_bytes()).hexdigest()
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    with open(NPM_DIR / ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        stamp = NPM_DIR / ".installed"
        mod = NPM_DIR / "node_modules" / "@apidevtools" / "swagger-parser" / "package.json"
        if not (stamp.exists() and stamp.read_text() == digest and mod.exists()):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NPM_SRC / name, NPM_DIR / name)
            p = subprocess.run(["npm", "ci", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund",
                                "--loglevel=error"], capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                pytest.fail(f"npm ci of the OpenAPI validator failed:\n{p.stdout}\n{p.stderr}",
                            pytrace=False)
            stamp.write_text(digest)
    return NPM_DIR


def run_validator(path):
    d = npm_validator_dir()
    return subprocess.run(["node", str(NPM_SRC / "validate.mjs"), str(d), str(path)],
                          capture_output=True, text=True, timeout=120)


def test_document_is_valid_according_to_swagger_parser(tmp_path):
    p = run_validator(DOC_PATH)
    assert p.returncode == 0, f"swagger-parser refused docs/openapi.json:\n{p.stdout}{p.stderr}"
    ops = len(doc_operations(load_doc()))
    assert f"{ops} operations" in p.stdout, p.stdout
    # And it does refuse a broken document (so a pass above means something).
    broken = load_doc()
    broken["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] = \
        {"$ref": "#/components/schemas/NoSuchSchema"}
    bad = tmp_path / "broken.json"
    bad.write_text(json.dumps(broken))
    p = run_validator(bad)
    assert p.returncode == 1 and "invalid" in p.stderr, (p.stdout, p.stderr)


def test_schema_checker_refuses_what_it_should():
    doc = load_doc()
    c = SchemaChecker(doc)
    intent = {"id": "int_1", "kind": "claim", "status": "PENDING", "wallet": "0x" + "a" * 40,
              "amount": "100", "tx_hash": None, "hold_id": "hold_1", "ledger_tx_id": None,
              "failure_reason": None, "created_at": "2026-01-01T00:00:00.000Z",
              "updated_at": None}
    schema = {"$ref": "#/components/schemas/Intent"}
    assert c.errors(schema, intent) == []
    assert c.errors(schema, {**intent, "status": "DONE"})
    assert c.errors(schema, {**intent, "amount": 100})
    assert c.errors(schema, {k: v for k, v in intent.items() if k != "hold_id"})
    assert c.errors(schema, {**intent, "wallet": "0xABC"})
    err = {"allOf": [{"$ref": "#/components/schemas/Error"},
                     {"properties": {"error": {"type": "string", "enum": ["a_code"]}}}]}
    assert c.errors(err, {"error": "a_code", "message": "m"}) == []
    assert c.errors(err, {"error": "other", "message": "m"})


# --------------------------------------------------------------------------
# The live server


WEBHOOK_ENV = {
    "SETTLED_WEBHOOK_SECRET": "cb-openapi-secret",
    "SETTLED_STRIPE_WEBHOOK_SECRET": "whsec_openapi_stripe",
    "SETTLED_STANDARD_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 24).decode(),
    "SETTLED_SIM_CONFIRM_MS": "20",
    "SETTLED_CLAIM_MAX": "1000000",
}


def hmac_hex(secret, msg):
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def coinbase_delivery(wallet, event_id=None, created=None, secret="cb-openapi-secret"):
    event = {"id": event_id or f"cb-{secrets.token_hex(6)}", "type": "charge:confirmed",
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                         time.gmtime(time.time() if created is None else created)),
             "data": {"metadata": {"wallet": wallet},
                      "pricing": {"local": {"amount": "1.00", "currency": "USD"}}}}
    if event_id == "":
        del event["id"]
    body = json.dumps({"event": event}).encode()
    return body, {"Content-Type": "application/json",
                  "X-CC-Webhook-Signature": hmac_hex(secret, body)}


def stripe_delivery(wallet, t=None, secret="whsec_openapi_stripe"):
    t = int(time.time()) if t is None else t
    body = json.dumps({"id": f"evt_{secrets.token_hex(6)}", "type": "payment_intent.succeeded",
                       "created": t, "data": {"object": {"amount": 100, "currency": "usd",
                                                         "metadata": {"wallet": wallet}}}}).encode()
    return body, {"Content-Type": "application/json",
                  "Stripe-Signature": f"t={t},v1={hmac_hex(secret, f'{t}.'.encode() + body)}"}


def standard_delivery(wallet, key=b"k" * 24):
    mid, ts = f"msg_{secrets.token_hex(6)}", str(int(time.time()))
    body = json.dumps({"type": "payment.confirmed",
                       "data": {"wallet": wallet, "amount": "100", "asset": "USD"}}).encode()
    sig = base64.b64encode(hmac.new(key, f"{mid}.{ts}.".encode() + body, hashlib.sha256).digest())
    return body, {"Content-Type": "application/json", "webhook-id": mid, "webhook-timestamp": ts,
                  "webhook-signature": f"v1,{sig.decode()}"}


def tx_hash():
    return "0x" + secrets.token_hex(32)


def test_served_document_is_the_file(server):
    r = server.get("/api/docs/openapi.json")
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.body == DOC_PATH.read_bytes(), \
        "the served document differs from docs/openapi.json (rebuild: make)"


def test_live_answers_match_the_document(start_server):
    srv = start_server(env=WEBHOOK_ENV)
    doc = load_doc()
    c = Live(srv, doc, parse_routes())

    # ---- ops and the dispatcher's generic answers
    c.call("GET", "/healthz", 200)
    c.call("GET", "/health/live", 200)
    c.call("GET", "/health/ready", 200)
    c.call("GET", "/metrics", 200)
    c.call("GET", "/api/docs/openapi.json", 200)
    c.call("GET", "/no/such/route", 404, "not_found")
    c.call("PUT", "/healthz", 405, "method_not_allowed")
    c.call("GET", "/api/register", 405, "method_not_allowed")
    c.call("GET", "/healthz", 415, "unsupported_media_type", body=b"x",
           headers={"Content-Type": "text/plain"})
    c.call("GET", "/healthz", 400, "invalid_body", body=b"[1]",
           headers={"Content-Type": "application/json"})
    c.call("GET", "/health/live", 400, "invalid_body", body=b"[]",
           headers={"Content-Type": "application/json"})
    c.call("GET", "/health/ready", 415, "unsupported_media_type", body=b"x",
           headers={"Content-Type": "text/plain"})
    c.call("GET", "/metrics", 400, "invalid_json", body=b"{",
           headers={"Content-Type": "application/json"})
    c.call("GET", "/api/docs/openapi.json", 415, "unsupported_media_type", body=b"x",
           headers={"Content-Type": "text/plain"})
    raw = RawConnection(srv.port)
    try:
        raw.send(b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        c.check(raw.read_response(check=False), "POST", "/api/register", 400, "invalid_framing")
    finally:
        raw.close()
    raw = RawConnection(srv.port)
    try:
        raw.send(b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000000\r\n\r\n")
        c.check(raw.read_response(check=False), "POST", "/api/register", 413, "payload_too_large")
    finally:
        raw.close()

    # ---- register
    w, k = new_wallet(), new_key()
    c.call("POST", "/api/register", 201, json_body={"wallet": w}, key=k)
    r = c.call("POST", "/api/register", 201, json_body={"wallet": w}, key=k)
    assert r.headers["X-Idempotency"] == "HIT"
    c.call("POST", "/api/register", 422, "idempotency_key_reused",
           json_body={"wallet": new_wallet()}, key=k)
    c.call("POST", "/api/register", 409, "already_registered", json_body={"wallet": w},
           key=new_key())
    c.call("POST", "/api/register", 400, "invalid_wallet", json_body={"wallet": "0x12"})
    c.call("POST", "/api/register", 404, "unknown_referrer",
           json_body={"wallet": new_wallet(), "referrer": new_wallet()})
    self_ref = new_wallet()
    c.call("POST", "/api/register", 400, "invalid_referrer",
           json_body={"wallet": self_ref, "referrer": self_ref})
    c.call("POST", "/api/register", 400, "invalid_json", body=b"{",
           headers={"Content-Type": "application/json"})
    c.call("POST", "/api/register", 400, "invalid_body", body=b"[]",
           headers={"Content-Type": "application/json"})
    c.call("POST", "/api/register", 400, "invalid_idempotency_key",
           json_body={"wallet": new_wallet()}, key="x" * 256)
    c.call("POST", "/api/register", 415, "unsupported_media_type", body=b"wallet=1",
           headers={"Content-Type": "application/x-www-form-urlencoded"})

    # ---- claims (the wallet claims what it was paid, through the API)
    fund_wallet(srv, w, 1000)
    prep = c.call("POST", "/api/claim/prepare", 201, json_body={"wallet": w, "amount": "100"},
                  key=new_key()).json
    c.call("POST", "/api/claim/prepare", 400, "invalid_amount",
           json_body={"wallet": w, "amount": "1.5"})
    c.call("POST", "/api/claim/prepare", 400, "invalid_wallet",
           json_body={"wallet": "nope", "amount": "1"})
    c.call("POST", "/api/claim/prepare", 404, "unknown_wallet",
           json_body={"wallet": new_wallet(), "amount": "1"})
    c.call("POST", "/api/claim/prepare", 422, "insufficient_funds",
           json_body={"wallet": w, "amount": "1000000"}, key=new_key())
    c.call("POST", "/api/claim/prepare", 422, "claim_too_large",
           json_body={"wallet": w, "amount": "9000000000000000000"})
    h1 = tx_hash()
    c.call("POST", "/api/claim/record", 200, json_body={"intent_id": prep["id"], "tx_hash": h1},
           key=new_key())
    c.call("POST", "/api/claim/record", 409, "invalid_transition",
           json_body={"intent_id": prep["id"], "tx_hash": tx_hash()}, key=new_key())
    c.call("POST", "/api/claim/record", 400, "invalid_intent_id",
           json_body={"intent_id": "", "tx_hash": tx_hash()})
    c.call("POST", "/api/claim/record", 400, "invalid_tx_hash",
           json_body={"intent_id": prep["id"], "tx_hash": "0x1"})
    c.call("POST", "/api/claim/record", 404, "intent_not_found",
           json_body={"intent_id": "int_nope", "tx_hash": tx_hash()})
    prep2 = c.call("POST", "/api/claim/prepare", 201, json_body={"wallet": w, "amount": "1"}).json
    c.call("POST", "/api/claim/record", 409, "tx_hash_already_recorded",
           json_body={"intent_id": prep2["id"], "tx_hash": h1})

    # ---- API keys
    created = c.call("POST", "/api/admin/api-keys", 201, json_body={"name": "openapi"},
                     headers=ADMIN, key=new_key()).json
    K = {"Authorization": f"Bearer {created['key']}"}
    c.call("POST", "/api/admin/api-keys", 400, "invalid_name", json_body={"name": ""},
           headers=ADMIN)
    c.call("POST", "/api/admin/api-keys", 401, "unauthorized", json_body={"name": "x"})
    c.call("POST", "/api/admin/api-keys", 403, "forbidden", json_body={"name": "x"}, headers=K)
    other = c.call("POST", "/api/admin/api-keys", 201, json_body={"name": "other"},
                   headers=ADMIN).json
    K2 = {"Authorization": f"Bearer {other['key']}"}

    # ---- v2 reads
    c.call("GET", f"/api/v2/intents/{prep['id']}", 200, headers=K)
    wait_until(lambda: srv.get(f"/api/v2/intents/{prep['id']}", headers=K).json["status"]
               == "SETTLED", timeout=10, what="the claim to settle")
    c.call("GET", f"/api/v2/intents/{prep['id']}", 200, headers=ADMIN)
    c.call("GET", "/api/v2/intents/int_nope", 404, "intent_not_found", headers=K)
    c.call("GET", f"/api/v2/intents/{prep['id']}", 401, "unauthorized")
    c.call("GET", f"/api/v2/intents/{prep['id']}", 401, "unauthorized",
           headers={"Authorization": "Bearer sk_live_AAAAAAAA_" + "B" * 32})
    c.call("GET", f"/api/v2/accounts/{w}", 200, headers=K)
    c.call("GET", "/api/v2/accounts/treasury", 200, headers=ADMIN)
    c.call("GET", "/api/v2/accounts/treasury", 404, "not_found", headers=K)
    c.call("GET", "/api/v2/accounts/0xzz", 400, "invalid_wallet", headers=K)
    c.call("GET", f"/api/v2/accounts/{new_wallet()}", 404, "not_found", headers=K)
    # ---- the Ledger API: accounts
    c.call("POST", "/api/v2/accounts", 201, json_body={"name": "shop:1", "metadata": {"a": 1}},
           headers=K, key=new_key())
    c.call("POST", "/api/v2/accounts", 409, "account_exists", json_body={"name": "shop:1"}, headers=K)
    c.call("POST", "/api/v2/accounts", 400, "invalid_account_name", json_body={"name": "a b"},
           headers=K)
    c.call("POST", "/api/v2/accounts", 400, "unknown_field", json_body={"name": "a", "x": 1},
           headers=K)
    c.call("POST", "/api/v2/accounts", 403, "forbidden", json_body={"name": "a"}, headers=ADMIN)
    c.call("GET", "/api/v2/accounts", 200, headers=K)
    c.call("GET", "/api/v2/accounts?limit=1", 200, headers=ADMIN)
    c.call("GET", "/api/v2/accounts?limit=x", 400, "invalid_parameter", headers=K)
    c.call("GET", "/api/v2/accounts/shop:1", 200, headers=K)
    c.call("GET", "/api/v2/accounts/shop:1", 404, "not_found", headers=K2)
    c.call("GET", f"/api/v2/accounts/{created['client_id']}/shop:1", 200, headers=ADMIN)
    c.call("GET", f"/api/v2/accounts/{created['client_id']}/shop:1", 404, "not_found", headers=K2)
    # ---- the Ledger API: transfers
    t = c.call("POST", "/api/v2/transfers", 201, json_body={"from": "treasury", "to": f"{created['client_id']}/shop:1",
               "amount": "10"}, headers=ADMIN, key=new_key()).json
    c.call("POST", "/api/v2/transfers", 201, json_body={"postings": [{"from": "shop:1", "to": "revenue",
           "amount": "1"}], "description": "d", "metadata": {"m": 1}}, headers=K, key=new_key())
    c.call("POST", "/api/v2/transfers", 422, "insufficient_funds",
           json_body={"from": "shop:1", "to": "revenue", "amount": "100"}, headers=K)
    c.call("POST", "/api/v2/transfers", 422, "unknown_account",
           json_body={"from": "treasury", "to": "revenue", "amount": "1"}, headers=K)
    c.call("POST", "/api/v2/transfers", 400, "invalid_amount",
           json_body={"from": "shop:1", "to": "revenue", "amount": "1.5"}, headers=K)
    c.call("POST", "/api/v2/transfers", 400, "unknown_field",
           json_body={"from": "shop:1", "to": "revenue", "amount": "1", "x": 1}, headers=K)
    c.call("GET", f"/api/v2/transfers/{t['id']}", 200, headers=ADMIN)
    c.call("GET", f"/api/v2/transfers/{t['id']}", 404, "not_found", headers=K)
    c.call("GET", "/api/v2/ledger/transactions", 200, headers=K)
    c.call("GET", f"/api/v2/ledger/transactions?account={w}&limit=1", 200, headers=K)
    c.call("GET", "/api/v2/ledger/transactions?limit=0", 400, "invalid_parameter", headers=K)
    c.call("GET", "/api/v2/ledger/transactions?account=nope", 404, "account_not_found", headers=K)

    # ---- v2 claims
    c.call("POST", "/api/v2/claims", 201, json_body={"wallet": w, "amount": "5",
                                                    "tx_hash": tx_hash()}, headers=K,
           key=new_key())
    c.call("POST", "/api/v2/claims", 401, "unauthorized",
           json_body={"wallet": w, "amount": "5", "tx_hash": tx_hash()})
    c.call("POST", "/api/v2/claims", 400, "invalid_tx_hash",
           json_body={"wallet": w, "amount": "5", "tx_hash": "zz"}, headers=K)
    c.call("POST", "/api/v2/claims", 404, "unknown_wallet",
           json_body={"wallet": new_wallet(), "amount": "5", "tx_hash": tx_hash()}, headers=K)
    c.call("POST", "/api/v2/claims", 422, "insufficient_funds",
           json_body={"wallet": w, "amount": "1000000", "tx_hash": tx_hash()},
           headers=K)
    c.call("POST", "/api/v2/claims", 422, "claim_too_large",
           json_body={"wallet": w, "amount": "9000000000000000000", "tx_hash": tx_hash()},
           headers=K)
    c.call("POST", "/api/v2/claims", 409, "tx_hash_already_recorded",
           json_body={"wallet": w, "amount": "5", "tx_hash": h1}, headers=K)

    # ---- payouts
    batch = c.call("POST", "/api/v2/payouts/batch", 201,
                   json_body={"reference": "ref-1", "items": [{"wallet": w, "amount": "1"}]},
                   headers=K, key=new_key()).json
    c.call("POST", "/api/v2/payouts/batch", 409, "duplicate_reference",
           json_body={"reference": "ref-1", "items": [{"wallet": w, "amount": "1"}]}, headers=K)
    c.call("POST", "/api/v2/payouts/batch", 400, "invalid_items",
           json_body={"reference": "ref-2", "items": []}, headers=K)
    c.call("POST", "/api/v2/payouts/batch", 400, "invalid_amount",
           json_body={"reference": "ref-3", "items": [{"wallet": w, "amount": "-1"}]}, headers=K)
    c.call("POST", "/api/v2/payouts/batch", 400, "invalid_reference",
           json_body={"reference": "", "items": [{"wallet": w, "amount": "1"}]}, headers=K)
    c.call("GET", f"/api/v2/payouts/batch/{batch['id']}", 200, headers=K)
    c.call("GET", f"/api/v2/payouts/batch/{batch['id']}?limit=0", 400, "invalid_parameter",
           headers=K)
    c.call("GET", f"/api/v2/payouts/batch/{batch['id']}", 404, "batch_not_found", headers=K2)
    c.call("POST", f"/api/v2/payouts/batch/{batch['id']}/approve", 403, "forbidden", headers=K)
    c.call("POST", f"/api/v2/payouts/batch/{batch['id']}/approve", 200, headers=ADMIN,
           key=new_key())
    c.call("POST", f"/api/v2/payouts/batch/{batch['id']}/approve", 409, "invalid_transition",
           headers=ADMIN, key=new_key())
    c.call("POST", "/api/v2/payouts/batch/pb_nope/approve", 404, "batch_not_found",
           headers=ADMIN)

    # ---- holds (SPEC section 13)
    hw = new_wallet()
    c.call("POST", "/api/register", 201, json_body={"wallet": hw}, key=new_key())
    h = c.call("POST", "/api/v2/holds", 201, json_body={"from": "treasury", "to": hw, "amount": "9",
                                                      "metadata": {"job": 1}},
               headers=ADMIN, key=new_key()).json
    c.call("GET", f"/api/v2/holds/{h['id']}", 200, headers=ADMIN)
    c.call("GET", f"/api/v2/holds/{h['id']}", 404, "not_found", headers=K)
    c.call("GET", "/api/v2/holds?state=PENDING&limit=1", 200, headers=ADMIN)
    c.call("GET", "/api/v2/holds?state=nope", 400, "invalid_state", headers=K)
    c.call("POST", f"/api/v2/holds/{h['id']}/capture", 400, "invalid_amount",
           json_body={"amount": "10"}, headers=ADMIN)
    c.call("POST", f"/api/v2/holds/{h['id']}/capture", 200, json_body={"amount": "4"},
           headers=ADMIN, key=new_key())
    c.call("POST", f"/api/v2/holds/{h['id']}/void", 409, "hold_not_pending", headers=ADMIN)
    c.call("POST", f"/api/v2/holds/{h['id']}/capture", 404, "not_found", headers=K)
    h2 = c.call("POST", "/api/v2/holds", 201, json_body={"from": "treasury", "to": hw, "amount": "1",
                                                       "expires_in": 60}, headers=ADMIN).json
    c.call("POST", f"/api/v2/holds/{h2['id']}/void", 200, headers=ADMIN, key=new_key())
    c.call("POST", "/api/v2/holds/hold_nope/void", 404, "not_found", headers=ADMIN)
    c.call("POST", "/api/v2/holds", 400, "invalid_expires_in",
           json_body={"from": "treasury", "to": hw, "amount": "1", "expires_in": 0}, headers=ADMIN)
    c.call("POST", "/api/v2/holds", 422, "unknown_account",
           json_body={"from": "treasury", "to": new_wallet(), "amount": "1"}, headers=ADMIN)
    c.call("POST", "/api/v2/holds", 422, "insufficient_funds",
           json_body={"from": "treasury", "to": hw, "amount": "9000000000000000000"}, headers=ADMIN)
    c.call("POST", "/api/v2/holds", 401, "unauthorized",
           json_body={"from": "treasury", "to": hw, "amount": "1"})

    # ---- API key rotation and revocation
    rot = c.call("POST", f"/api/admin/api-keys/{other['id']}/rotate", 201, headers=ADMIN,
                 key=new_key()).json
    c.call("POST", f"/api/admin/api-keys/{other['id']}/rotate", 409, "already_rotated",
           headers=ADMIN)
    c.call("POST", "/api/admin/api-keys/key_nope/rotate", 404, "key_not_found", headers=ADMIN)
    c.call("DELETE", f"/api/admin/api-keys/{rot['id']}", 200, headers=ADMIN)
    c.call("POST", f"/api/admin/api-keys/{rot['id']}/rotate", 409, "key_inactive",
           headers=ADMIN)
    c.call("DELETE", "/api/admin/api-keys/key_nope", 404, "key_not_found", headers=ADMIN)

    # ---- webhooks (an unregistered wallet's payment ends in the DLQ)
    lost = new_wallet()
    body, hdrs = coinbase_delivery(lost)
    c.call("POST", "/api/commerce/webhook", 200, body=body, headers=hdrs)
    c.call("POST", "/api/commerce/webhook", 200, body=body, headers=hdrs)  # duplicate
    c.call("POST", "/api/commerce/webhook", 401, "invalid_signature", body=body,
           headers={**hdrs, "X-CC-Webhook-Signature": "0" * 64})
    body2, hdrs2 = coinbase_delivery(w, created=time.time() + 3600)
    c.call("POST", "/api/commerce/webhook", 401, "stale_webhook", body=body2, headers=hdrs2)
    body2, hdrs2 = coinbase_delivery(lost, created=time.time() - 3600)   # late: accepted
    c.call("POST", "/api/commerce/webhook", 200, body=body2, headers=hdrs2)
    body3, hdrs3 = coinbase_delivery(w, event_id="")
    c.call("POST", "/api/commerce/webhook", 400, "invalid_event", body=body3, headers=hdrs3)
    c.call("POST", "/api/commerce/webhook", 400, "invalid_json", body=b"",
           headers={"Content-Type": "application/json",
                    "X-CC-Webhook-Signature": hmac_hex("cb-openapi-secret", b"")})
    body, hdrs = stripe_delivery(w)
    c.call("POST", "/api/webhooks/stripe", 200, body=body, headers=hdrs)
    c.call("POST", "/api/webhooks/stripe", 401, "invalid_signature", body=body + b" ",
           headers=hdrs)
    body, hdrs = stripe_delivery(w, t=int(time.time()) - 3600)
    c.call("POST", "/api/webhooks/stripe", 401, "stale_webhook", body=body, headers=hdrs)
    body, hdrs = standard_delivery(w)
    c.call("POST", "/api/webhooks/standard", 200, body=body, headers=hdrs)
    c.call("POST", "/api/webhooks/standard", 401, "invalid_signature", body=body,
           headers={**hdrs, "webhook-signature": "v1," + "A" * 43 + "="})

    # ---- the DLQ
    def dead_jobs():
        r = srv.get("/api/admin/dlq", headers=ADMIN)
        return r.json["data"] if r.status == 200 else None
    dead = wait_until(dead_jobs, timeout=10, what="the webhook job in the DLQ")[0]["id"]
    c.call("GET", "/api/admin/dlq", 200, headers=ADMIN)
    c.call("GET", "/api/admin/dlq?limit=x", 400, "invalid_parameter", headers=ADMIN)
    c.call("GET", "/api/admin/dlq", 401, "unauthorized")
    c.call("GET", "/api/admin/dlq", 403, "forbidden", headers={"Authorization": "Bearer wrong"})
    c.call("POST", f"/api/admin/dlq/{dead}/retry", 200, headers=ADMIN, key=new_key())
    wait_until(lambda: any(j["id"] == dead for j in dead_jobs() or []), timeout=10,
               what="the retried job to be dead again")
    c.call("DELETE", f"/api/admin/dlq/{dead}", 200, headers=ADMIN)
    c.call("DELETE", f"/api/admin/dlq/{dead}", 404, "job_not_found", headers=ADMIN)
    c.call("POST", "/api/admin/dlq/999999999/retry", 404, "job_not_found", headers=ADMIN)
    # A job that is not dead: the claim's confirmation (settled above) or a
    # webhook's processing; ids are small integers.
    for job in range(1, 60):
        r = c.call("POST", f"/api/admin/dlq/{job}/retry", {404, 409}, headers=ADMIN)
        if r.status == 409:
            assert r.json["error"] == "job_not_dead"
            break
    else:
        pytest.fail("no completed job found to retry")

    # ---- reconciliation
    c.call("GET", "/api/admin/reconciliation", 200, headers=ADMIN)
    c.call("POST", "/api/admin/reconciliation", 200, headers=ADMIN, key=new_key())
    c.call("GET", "/api/admin/reconciliation", 401, "unauthorized")
    c.call("POST", "/api/admin/reconciliation", 403, "forbidden",
           headers={"Authorization": "Bearer wrong"})

    # ---- the operator's lists and the console's pages
    page = c.call("GET", f"/api/admin/intents?wallet={w}&limit=1", 200, headers=ADMIN).json
    c.call("GET", f"/api/admin/intents?after={page['next_after']}&status=SETTLED", 200,
           headers=ADMIN)
    c.call("GET", "/api/admin/intents?status=DONE", 400, "invalid_parameter", headers=ADMIN)
    c.call("GET", "/api/admin/intents?wallet=0x12", 400, "invalid_parameter", headers=ADMIN)
    c.call("GET", "/api/admin/intents", 401, "unauthorized")
    c.call("GET", "/api/admin/payouts/batches?status=PENDING_APPROVAL", 200, headers=ADMIN)
    c.call("GET", "/api/admin/payouts/batches?limit=0", 400, "invalid_parameter", headers=ADMIN)
    c.call("GET", "/api/admin/payouts/batches", 403, "forbidden", headers=K2)
    c.call("GET", "/api/admin/api-keys?limit=1", 200, headers=ADMIN)
    c.call("GET", "/api/admin/api-keys?limit=x", 400, "invalid_parameter", headers=ADMIN)
    c.call("GET", "/api/admin/api-keys", 401, "unauthorized")
    c.call("GET", "/console", 200)
    c.call("GET", "/console/app.js", 200)
    c.call("GET", "/console/console.css", 200)
    c.call("GET", "/console/nope.js", 404, "not_found")
    c.call("GET", "/api/docs", 200)
    for path in ("/console", "/console/app.js", "/api/docs"):
        c.call("GET", path, 415, "unsupported_media_type", body=b"x",
               headers={"Content-Type": "text/plain"})

    c.assert_every_operation_answered(2)
    c.assert_every_operation_answered(4)


def test_live_rate_limits_and_required_keys_match_the_document(start_server):
    srv = start_server(env={"RL_HEALTH_PER_MIN": "1", "RL_CLAIM_PER_HOUR": "1",
                            "SETTLED_REQUIRE_IDEMPOTENCY_KEY": "1"})
    c = Live(srv, load_doc(), parse_routes())
    c.call("GET", "/healthz", 200)
    r = c.call("GET", "/healthz", 429, "rate_limited")
    assert r.json["policy"] == "health" and r.json["retry_after"] >= 1
    w = new_wallet()
    c.call("POST", "/api/register", 201, json_body={"wallet": w}, key=new_key())
    fund_wallet(srv, w, 1)
    # The claim limit is per wallet and checked before the key: another wallet.
    c.call("POST", "/api/claim/prepare", 400, "idempotency_key_required",
           json_body={"wallet": new_wallet(), "amount": "1"})
    c.call("POST", "/api/claim/prepare", 201, json_body={"wallet": w, "amount": "1"},
           key=new_key())
    c.call("POST", "/api/claim/prepare", 429, "rate_limited",
           json_body={"wallet": w, "amount": "1"}, key=new_key())
