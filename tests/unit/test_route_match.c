/* test_route_match.c — route_match / route_param against a realistic
 * table.
 *
 * The table mirrors SPEC section 8 (a subset, including every shape: bare
 * literal, one and two parameters, a parameter in the middle, the same
 * template under several methods). Handlers are never called, so they are
 * NULL; each route is identified by its index. */
#include <criterion/criterion.h>
#include <string.h>

#include "buf.h"
#include "route_match.h"
#include "route_table.h"

#include "banned.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const struct route table[] = {
	/*  0 */ { "GET", "/healthz", NULL, 0, { { 0 } }, NULL },
	/*  1 */ { "GET", "/metrics", NULL, 0, { { 0 } }, NULL },
	/*  2 */ { "POST", "/api/register", NULL, ROUTE_JSON_BODY | ROUTE_IDEMPOTENT, { { 0 } }, NULL },
	/*  3 */ { "GET", "/api/v2/intents/{id}", NULL, ROUTE_API_KEY, { { 0 } }, NULL },
	/*  4 */ { "POST", "/api/v2/payouts/batch", NULL, ROUTE_API_KEY | ROUTE_MONEY, { { 0 } }, NULL },
	/*  5 */ { "POST", "/api/v2/payouts/batch/{id}/approve", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/*  6 */ { "GET", "/api/v2/payouts/batch/{id}", NULL, ROUTE_API_KEY, { { 0 } }, NULL },
	/*  7 */ { "DELETE", "/api/admin/api-keys/{id}", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/*  8 */ { "POST", "/api/admin/api-keys/{id}/rotate", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/*  9 */ { "GET", "/api/admin/dlq", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/* 10 */ { "POST", "/api/admin/dlq/{job}/retry", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/* 11 */ { "DELETE", "/api/admin/dlq/{job}", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/* 12 */ { "GET", "/api/v2/accounts/{wallet}", NULL, ROUTE_API_KEY, { { 0 } }, NULL },
	/* 13 */ { "POST", "/api/admin/api-keys", NULL, ROUTE_ADMIN, { { 0 } }, NULL },
	/* 14 */ { "GET", "/t/{a}/x/{b}/{c}/{d}", NULL, 0, { { 0 } }, NULL },
};

static struct buf allow;

static void setup(void)
{
	buf_init(&allow, 256);
}

static void teardown(void)
{
	buf_release(&allow);
	cr_expect_eq(allow.alloc, 0);
}

TestSuite(route, .init = setup, .fini = teardown);

static enum route_result match(const char *method, const char *path, const struct route **r,
			       struct route_params *pp)
{
	buf_reset(&allow);
	return route_match(table, NELEM(table), method, path, r, pp, &allow);
}

Test(route, found)
{
	static const struct {
		const char *method, *path;
		int idx;
	} t[] = {
		{ "GET", "/healthz", 0 },
		{ "GET", "/metrics", 1 },
		{ "POST", "/api/register", 2 },
		{ "GET", "/api/v2/intents/123", 3 },
		{ "GET", "/api/v2/intents/int_01HX", 3 },
		{ "POST", "/api/v2/payouts/batch", 4 },
		{ "POST", "/api/v2/payouts/batch/b1/approve", 5 },
		{ "GET", "/api/v2/payouts/batch/b1", 6 },
		{ "DELETE", "/api/admin/api-keys/k1", 7 },
		{ "POST", "/api/admin/api-keys/k1/rotate", 8 },
		{ "GET", "/api/admin/dlq", 9 },
		{ "POST", "/api/admin/dlq/42/retry", 10 },
		{ "DELETE", "/api/admin/dlq/42", 11 },
		{ "GET", "/api/v2/accounts/0xabc", 12 },
		{ "POST", "/api/admin/api-keys", 13 },
		/* a parameter segment whose value looks like a literal elsewhere */
		{ "GET", "/api/v2/payouts/batch/approve", 6 },
		{ "DELETE", "/api/admin/dlq/retry", 11 },
		/* percent-encoding is matched literally, not decoded */
		{ "GET", "/api/v2/intents/a%2Fb", 3 },
		{ "GET", "/api/v2/intents/%20", 3 },
		/* HEAD matches GET routes */
		{ "HEAD", "/healthz", 0 },
		{ "HEAD", "/api/v2/intents/7", 3 },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		const struct route *r = NULL;
		struct route_params pp;

		cr_expect_eq(match(t[i].method, t[i].path, &r, &pp), ROUTE_FOUND, "case %zu %s %s", i,
			     t[i].method, t[i].path);
		cr_expect_eq(r, &table[t[i].idx], "case %zu %s %s: got route %td", i, t[i].method,
			     t[i].path, r ? r - table : -1);
		cr_expect_eq(allow.len, 0, "case %zu: allow written on FOUND", i);
	}
}

Test(route, not_found)
{
	static const struct {
		const char *method, *path;
	} t[] = {
		{ "GET", "" },
		{ "GET", "/" },
		{ "GET", "healthz" },              /* not absolute */
		{ "GET", "/nope" },
		{ "GET", "/healthz/" },            /* trailing slash is not stripped */
		{ "GET", "/healthz/x" },
		{ "GET", "/Healthz" },             /* case-sensitive literals */
		{ "GET", "/HEALTHZ" },
		{ "GET", "/healthzz" },
		{ "GET", "/health" },
		{ "GET", "/healthz?x=1" },         /* the query is the caller's to strip */
		{ "GET", "//healthz" },            /* double slashes never match */
		{ "GET", "/api//register" },
		{ "GET", "/api/v2/intents//" },
		{ "GET", "/api/v2/intents/1//" },
		{ "GET", "/api/v2/intents" },
		{ "GET", "/api/v2/intents/" },     /* {id} needs a non-empty segment */
		{ "GET", "/api/v2/intents/1/" },
		{ "GET", "/api/v2/intents/1/2" },
		{ "POST", "/api/v2/payouts/batch//approve" },
		{ "POST", "/api/v2/payouts/batch/b1/approve/" },
		{ "POST", "/api/v2/payouts/batch/b1/approvee" },
		{ "GET", "/api/v2/payouts" },
		{ "GET", "/api/admin/dlq/1/retry/again" },
		{ "GET", "/api/v2/intents/%2F/x" },
		{ "GET", "/api/./register" },      /* no dot-segment normalisation */
		{ "GET", "/api/v2/../register" },
		{ "GET", "/t/1/x/2/3" },
		{ "GET", "/t/1/x/2/3/4/5" },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		const struct route *r = (const struct route *)&allow; /* sentinel */
		struct route_params pp = { .n = 99 };

		cr_expect_eq(match(t[i].method, t[i].path, &r, &pp), ROUTE_NOT_FOUND,
			     "case %zu %s \"%s\"", i, t[i].method, t[i].path);
		cr_expect_eq(r, (const struct route *)&allow, "case %zu: found set", i);
		cr_expect_eq(pp.n, 99, "case %zu: params set", i);
		cr_expect_eq(allow.len, 0, "case %zu: allow written on 404", i);
	}
}

Test(route, method_not_allowed)
{
	static const struct {
		const char *method, *path, *allow;
	} t[] = {
		{ "POST", "/healthz", "GET" },
		{ "DELETE", "/metrics", "GET" },
		{ "GET", "/api/register", "POST" },
		{ "HEAD", "/api/register", "POST" },       /* HEAD only borrows GET */
		{ "PUT", "/api/v2/intents/1", "GET" },
		{ "GET", "/api/v2/payouts/batch", "POST" },
		{ "GET", "/api/v2/payouts/batch/b1/approve", "POST" },
		{ "POST", "/api/v2/payouts/batch/b1", "GET" },
		{ "GET", "/api/admin/api-keys/k1", "DELETE" },
		{ "DELETE", "/api/admin/api-keys", "POST" },
		{ "POST", "/api/admin/dlq", "GET" },
		{ "GET", "/api/admin/dlq/42", "DELETE" },
		{ "DELETE", "/api/admin/dlq/42/retry", "POST" },
		{ "get", "/healthz", "GET" },              /* methods are case-sensitive */
		{ "OPTIONS", "/healthz", "GET" },
		{ "", "/healthz", "GET" },
	};

	for (size_t i = 0; i < NELEM(t); i++) {
		const struct route *r = NULL;
		struct route_params pp = { .n = 99 };

		cr_expect_eq(match(t[i].method, t[i].path, &r, &pp), ROUTE_METHOD_NOT_ALLOWED,
			     "case %zu %s %s", i, t[i].method, t[i].path);
		cr_expect_str_eq(allow.ptr, t[i].allow, "case %zu %s %s", i, t[i].method, t[i].path);
		cr_expect_null(r, "case %zu: found set on 405", i);
		cr_expect_eq(pp.n, 99, "case %zu: params set on 405", i);
	}
}

/* Several methods on one path: the list is in table order, without repeats,
 * and a parameterised template and a literal one both count. */
Test(route, allow_lists_every_method_once)
{
	static const struct route multi[] = {
		{ "GET", "/things/{id}", NULL, 0, { { 0 } }, NULL },
		{ "POST", "/things/special", NULL, 0, { { 0 } }, NULL },
		{ "DELETE", "/things/{id}", NULL, 0, { { 0 } }, NULL },
		{ "GET", "/things/special", NULL, 0, { { 0 } }, NULL },  /* GET again: no repeat */
		{ "PATCH", "/other/{id}", NULL, 0, { { 0 } }, NULL },
		{ "POST", "/things/{x}", NULL, 0, { { 0 } }, NULL },      /* POST again */
	};
	const struct route *r = NULL;

	cr_expect_eq(route_match(multi, NELEM(multi), "PUT", "/things/special", &r, NULL, &allow),
		     ROUTE_METHOD_NOT_ALLOWED);
	cr_expect_str_eq(allow.ptr, "GET, POST, DELETE");

	buf_reset(&allow);
	cr_expect_eq(route_match(multi, NELEM(multi), "PUT", "/things/7", &r, NULL, &allow),
		     ROUTE_METHOD_NOT_ALLOWED);
	cr_expect_str_eq(allow.ptr, "GET, DELETE, POST");

	/* the first matching route in table order wins */
	cr_expect_eq(route_match(multi, NELEM(multi), "GET", "/things/special", &r, NULL, &allow),
		     ROUTE_FOUND);
	cr_expect_eq(r, &multi[0]);
	cr_expect_eq(route_match(multi, NELEM(multi), "POST", "/things/special", &r, NULL, &allow),
		     ROUTE_FOUND);
	cr_expect_eq(r, &multi[1]);
}

Test(route, allow_appends_and_is_all_or_nothing)
{
	struct buf small;

	/* "appends": existing contents are kept */
	cr_assert_eq(buf_puts(&allow, "Allow: "), ST_OK);
	cr_expect_eq(route_match(table, NELEM(table), "PUT", "/healthz", NULL, NULL, &allow),
		     ROUTE_METHOD_NOT_ALLOWED);
	cr_expect_str_eq(allow.ptr, "Allow: GET");

	/* a buffer too small for the list is left as it was, not truncated */
	static const struct route multi[] = {
		{ "GET", "/x", NULL, 0, { { 0 } }, NULL },
		{ "POST", "/x", NULL, 0, { { 0 } }, NULL },
	};
	buf_init(&small, 5);
	cr_assert_eq(buf_puts(&small, "A:"), ST_OK);
	cr_expect_eq(route_match(multi, 2, "PUT", "/x", NULL, NULL, &small),
		     ROUTE_METHOD_NOT_ALLOWED);
	cr_expect_str_eq(small.ptr, "A:");
	cr_expect_eq(small.len, 2);
	buf_release(&small);
	cr_expect_eq(small.alloc, 0);

	/* allow may be NULL */
	cr_expect_eq(route_match(multi, 2, "PUT", "/x", NULL, NULL, NULL),
		     ROUTE_METHOD_NOT_ALLOWED);
}

Test(route, params_extracted)
{
	const struct route *r = NULL;
	struct route_params pp;
	const char *v;
	size_t len = 12345;
	const char *path = "/api/v2/payouts/batch/batch_9f/approve";

	cr_assert_eq(match("POST", path, &r, &pp), ROUTE_FOUND);
	cr_expect_eq(r, &table[5]);
	cr_expect_eq(pp.n, 1);
	v = route_param(&pp, "id", &len);
	cr_assert_not_null(v);
	cr_expect_eq(len, 8);
	cr_expect_eq(memcmp(v, "batch_9f", 8), 0);
	cr_expect_eq(v, path + strlen("/api/v2/payouts/batch/"), "value borrows from the path");

	/* absent names: NULL, *len_out untouched */
	len = 777;
	cr_expect_null(route_param(&pp, "job", &len));
	cr_expect_null(route_param(&pp, "i", &len));
	cr_expect_null(route_param(&pp, "idx", &len));
	cr_expect_null(route_param(&pp, "", &len));
	cr_expect_eq(len, 777);
	cr_expect_not_null(route_param(&pp, "id", NULL));
	cr_expect_null(route_param(NULL, "id", &len));

	cr_assert_eq(match("DELETE", "/api/admin/dlq/job-42", &r, &pp), ROUTE_FOUND);
	v = route_param(&pp, "job", &len);
	cr_assert_not_null(v);
	cr_expect_eq(len, 6);
	cr_expect_eq(memcmp(v, "job-42", 6), 0);
	cr_expect_null(route_param(&pp, "id", &len));

	/* literal routes have no params */
	cr_assert_eq(match("GET", "/healthz", &r, &pp), ROUTE_FOUND);
	cr_expect_eq(pp.n, 0);
	cr_expect_null(route_param(&pp, "id", &len));

	/* percent-encoded values are handed over undecoded */
	cr_assert_eq(match("GET", "/api/v2/accounts/0x%41b", &r, &pp), ROUTE_FOUND);
	v = route_param(&pp, "wallet", &len);
	cr_assert_not_null(v);
	cr_expect_eq(len, 6);
	cr_expect_eq(memcmp(v, "0x%41b", 6), 0);
}

Test(route, four_params)
{
	const struct route *r = NULL;
	struct route_params pp;
	static const char *const names[] = { "a", "b", "c", "d" };
	static const char *const vals[] = { "1", "22", "333", "4444" };
	size_t len;

	cr_assert_eq(match("GET", "/t/1/x/22/333/4444", &r, &pp), ROUTE_FOUND);
	cr_expect_eq(r, &table[14]);
	cr_assert_eq(pp.n, 4);
	for (size_t i = 0; i < 4; i++) {
		const char *v = route_param(&pp, names[i], &len);

		cr_assert_not_null(v, "param %s", names[i]);
		cr_expect_eq(len, strlen(vals[i]));
		cr_expect_eq(memcmp(v, vals[i], len), 0, "param %s", names[i]);
	}
}

Test(route, long_path)
{
	static char path[4096];
	const struct route *r = NULL;
	struct route_params pp;
	const char *prefix = "/api/v2/intents/";
	size_t plen = strlen(prefix);
	size_t len = 0;

	/* exactly 2048 bytes: still matches */
	memcpy(path, prefix, plen);
	memset(path + plen, 'a', 2048 - plen);
	path[2048] = '\0';
	cr_expect_eq(match("GET", path, &r, &pp), ROUTE_FOUND);
	cr_expect_not_null(route_param(&pp, "id", &len));
	cr_expect_eq(len, 2048 - plen);

	/* 2049 bytes: never matches, not even as a 405 */
	path[2048] = 'a';
	path[2049] = '\0';
	cr_expect_eq(match("GET", path, &r, &pp), ROUTE_NOT_FOUND);
	cr_expect_eq(match("POST", path, &r, &pp), ROUTE_NOT_FOUND);
	cr_expect_eq(allow.len, 0);

	/* far longer, with no NUL until the end */
	memset(path + plen, 'a', sizeof(path) - plen - 1);
	path[sizeof(path) - 1] = '\0';
	cr_expect_eq(match("GET", path, &r, &pp), ROUTE_NOT_FOUND);

	/* many segments */
	for (size_t i = 0; i + 2 < sizeof(path); i += 2) {
		path[i] = '/';
		path[i + 1] = 'a';
	}
	path[sizeof(path) - 1] = '\0';
	cr_expect_eq(match("GET", path, &r, &pp), ROUTE_NOT_FOUND);
	path[200] = '\0';
	cr_expect_eq(match("GET", path, &r, &pp), ROUTE_NOT_FOUND);
}

Test(route, degenerate_inputs)
{
	const struct route *r = NULL;
	struct route_params pp;

	cr_expect_eq(route_match(table, 0, "GET", "/healthz", &r, &pp, &allow), ROUTE_NOT_FOUND);
	cr_expect_eq(route_match(NULL, 0, "GET", "/healthz", &r, &pp, &allow), ROUTE_NOT_FOUND);
	cr_expect_eq(route_match(table, NELEM(table), NULL, "/healthz", &r, &pp, &allow),
		     ROUTE_NOT_FOUND);
	cr_expect_eq(route_match(table, NELEM(table), "GET", NULL, &r, &pp, &allow),
		     ROUTE_NOT_FOUND);
	/* "//" is refused before any template is looked at, even one that
	 * (wrongly) contains it */
	static const struct route odd[] = { { "GET", "/x//y", NULL, 0, { { 0 } }, NULL } };
	cr_expect_eq(route_match(odd, 1, "GET", "/x//y", &r, &pp, &allow), ROUTE_NOT_FOUND);
	/* found and params may be NULL */
	cr_expect_eq(route_match(table, NELEM(table), "GET", "/api/v2/intents/9", NULL, NULL, NULL),
		     ROUTE_FOUND);
}

/* The path as sent is checked before matching: what a decoder and a proxy
 * could split or end differently is refused. */
Test(route, path_check_refuses_nul_encoded_slash_and_raw_bytes)
{
	static const char *const ok[] = {
		"/healthz", "/api/v2/accounts/tre%61sury", "/a/%25/b", "/a/%7e%7E", "/x/+306912345678",
		"/a;b=c/d:e@f", "/%C3%A9",
	};
	static const char *const bad[] = {
		"/api/v2/accounts/treasury%00", "/a%2Fb", "/a%2fb", "/a%2", "/a%", "/a%zz", "/a%0g",
		"/a b", "/a\tb", "/a\x7f", "/caf\xc3\xa9", "/a\x01",
	};

	for (size_t i = 0; i < NELEM(ok); i++)
		cr_expect_eq(route_path_check(ok[i]), ST_OK, "%s", ok[i]);
	for (size_t i = 0; i < NELEM(bad); i++)
		cr_expect_eq(route_path_check(bad[i]), ST_INVALID, "%s", bad[i]);
	cr_expect_eq(route_path_check(NULL), ST_INVALID);
}

/* Parameters are matched raw and decoded after: an encoded admin segment
 * never reaches the admin route, a decoded parameter never holds a
 * control character or invalid UTF-8. */
Test(route, match_is_raw_and_parameters_decode_after)
{
	const struct route *r = NULL;
	struct route_params pp;
	char out[64];
	size_t n = 0;

	cr_expect_eq(match("GET", "/api/%61dmin/dlq", &r, &pp), ROUTE_NOT_FOUND);
	cr_assert_eq(match("GET", "/api/v2/accounts/tre%61sury", &r, &pp), ROUTE_FOUND);
	cr_assert_eq(route_decode(pp.p[0].value, pp.p[0].value_len, out, &n), ST_OK);
	cr_expect_str_eq(out, "treasury");
	cr_expect_eq(n, 8);
	cr_assert_eq(route_decode("a%25b%C3%A9+", 12, out, &n), ST_OK);
	cr_expect_str_eq(out, "a%b\xc3\xa9+");
	cr_expect_eq(n, 6);
	cr_expect_eq(route_decode("%00", 3, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("a%0Ab", 5, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("a%7f", 4, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("a\tb", 3, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("%ff", 3, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("%C3", 3, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("%4", 2, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("%4", 1, out, NULL), ST_INVALID);
	cr_expect_eq(route_decode("ab%41", 4, out, &n), ST_INVALID); /* n cuts the escape */
	cr_expect_eq(route_decode("", 0, out, &n), ST_OK);
	cr_expect_eq(n, 0);
}

/* ---------------------------------------------------------------- body fields */

static const struct route_field t_item[] = { ROUTE_FIELD("wallet"), ROUTE_FIELD("amount"),
					     ROUTE_FIELDS_END };
static const struct route_field t_body[] = { ROUTE_FIELD("reference"), ROUTE_SHAPE("items", t_item),
					     ROUTE_SHAPE("one", t_item), ROUTE_FIELD("metadata"),
					     ROUTE_FIELDS_END };

/* "ok" when every member is declared, else the named path. */
static const char *unknown(const struct route_field *fields, const char *doc)
{
	static char out[256];
	struct buf path = BUF_INIT(256);
	json_t *j = json_loads(doc, JSON_REJECT_DUPLICATES, NULL);
	enum st_rc rc;

	cr_assert(j, "bad test JSON %s", doc);
	rc = route_unknown_field(fields, j, &path);
	cr_assert(rc == ST_OK || rc == ST_INVALID, "%s: rc %d", doc, rc);
	cr_assert(rc == ST_INVALID || path.len == 0, "%s: path '%s' with rc %d", doc, path.ptr, rc);
	snprintf(out, sizeof(out), "%s", rc == ST_OK ? "ok" : path.ptr);
	buf_release(&path);
	json_decref(j);
	return out;
}

Test(route, body_fields)
{
	static const struct {
		const char *doc, *want;
	} t[] = {
		{ "{}", "ok" },
		{ "{\"reference\":\"r\",\"items\":[{\"wallet\":\"w\",\"amount\":\"1\"}]}", "ok" },
		{ "{\"bogus\":1}", "bogus" },
		{ "{\"reference\":\"r\",\"bogus\":1,\"later\":2}", "bogus" },   /* the first, in body order */
		{ "{\"items\":[{\"wallet\":\"w\"},{\"amount\":\"1\",\"memo\":\"x\"}]}", "items[1].memo" },
		{ "{\"items\":[1,\"x\",null,[{\"memo\":1}],{\"bad\":1}]}", "items[4].bad" }, /* non-objects: the handler's */
		{ "{\"one\":{\"wallet\":\"w\",\"x\":{\"y\":1}}}", "one.x" },
		{ "{\"one\":\"not an object\"}", "ok" },
		{ "{\"metadata\":{\"anything\":{\"goes\":[1]}}}", "ok" },   /* free-form */
		{ "{\"Reference\":\"r\"}", "Reference" },                   /* names are exact */
		{ "{\"\":1}", "" },                                       /* an empty name is a name too */
		{ "{\"items\":[]}", "ok" },
	};

	for (size_t i = 0; i < NELEM(t); i++)
		cr_expect_str_eq(unknown(t_body, t[i].doc), t[i].want, "case %zu: %s", i, t[i].doc);
	/* NULL: no member at all; a body that is no object is the handler's */
	cr_expect_str_eq(unknown(NULL, "{}"), "ok");
	cr_expect_str_eq(unknown(NULL, "{\"a\":1}"), "a");
	cr_expect_str_eq(unknown(NULL, "[1]"), "ok");
}

Test(route, body_fields_path_cap)
{
	struct buf path = BUF_INIT(4);
	json_t *j = json_loads("{\"longer_than_four\":1}", 0, NULL);

	/* the path buffer is the caller's cap: too small is an error, not a
	 * truncated name */
	cr_expect_eq(route_unknown_field(t_item, j, &path), ST_TOO_LARGE);
	buf_release(&path);
	json_decref(j);
}

/* The segment-by-segment matcher route_match had before it compared a
 * template's literal prefix first, kept here as the reference: the first
 * route it matches and its parameters must be route_match's. */
static bool ref_tpl_match(const char *tpl, const char *path, size_t plen, struct route_params *pp)
{
	const char *t = tpl, *p = path, *pend = path + plen;

	pp->n = 0;
	while (*t == '/' && p < pend && *p == '/') {
		const char *tseg = ++t, *pseg = ++p;
		size_t tlen, slen;

		while (*t && *t != '/')
			t++;
		while (p < pend && *p != '/')
			p++;
		tlen = (size_t)(t - tseg);
		slen = (size_t)(p - pseg);
		if (tlen >= 3 && tseg[0] == '{' && tseg[tlen - 1] == '}') {
			if (slen == 0 || pp->n >= ROUTE_MAX_PARAMS)
				return false;
			pp->p[pp->n].name = tseg + 1;
			pp->p[pp->n].name_len = tlen - 2;
			pp->p[pp->n].value = pseg;
			pp->p[pp->n].value_len = slen;
			pp->n++;
		} else if (tlen != slen || memcmp(tseg, pseg, tlen) != 0) {
			return false;
		}
	}
	return *t == '\0' && p == pend;
}

/* Paths made from the test table's templates and settled's own (parameters filled, then bytes
 * changed, cut or added at random, including '{' and '}'), and from
 * templates with a literal '{' inside a segment: route_match finds the
 * route (or none) the reference finds first, with the same parameters. */
Test(route, literal_prefix_check_changes_no_match)
{
	static const struct route odd[] = {
		{ "GET", "/a{b/c", NULL, 0, { { 0 } }, NULL },
		{ "GET", "/a/{x}y", NULL, 0, { { 0 } }, NULL },
		{ "GET", "/{}/z", NULL, 0, { { 0 } }, NULL },
		{ "GET", "/a/{b}", NULL, 0, { { 0 } }, NULL },
		{ "GET", "/a", NULL, 0, { { 0 } }, NULL },
	};
	static const char alphabet[] = "/{}abxyz-_.0123456789api";
	unsigned seed = 99;

	for (int pass = 0; pass < 3; pass++) {
		const struct route *tab = pass == 2 ? settled_routes : pass ? odd : table;
		size_t ntab = pass == 2 ? settled_nroutes : pass ? NELEM(odd) : NELEM(table);

		for (int iter = 0; iter < 20000; iter++) {
			unsigned r = seed = seed * 1103515245u + 12345u;
			const char *tpl = tab[(r >> 8) % ntab].path;
			char path[128];
			size_t n = 0;
			const struct route *got = NULL;
			struct route_params gp, wp;
			size_t want = ntab;
			enum route_result res;

			/* The template with each {param} filled by 1-3 bytes. */
			for (const char *t = tpl; *t && n < sizeof(path) - 8; t++) {
				if (*t == '{' && t > tpl && t[-1] == '/' && strchr(t, '}') && strchr(t, '}') - t >= 2 &&
				    (strchr(t, '}')[1] == '/' || strchr(t, '}')[1] == '\0')) {
					int k = 1 + (int)((r >> (t - tpl) % 16) % 3);

					while (k--)
						path[n++] = "p9Q"[k];
					t = strchr(t, '}');
				} else {
					path[n++] = *t;
				}
			}
			seed = seed * 1103515245u + 12345u;
			switch ((seed >> 12) % 5) {
			case 0:
				break;
			case 1:
				if (n)
					path[(seed >> 4) % n] = alphabet[(seed >> 9) % (sizeof(alphabet) - 1)];
				break;
			case 2:
				n = n ? (seed >> 4) % n : 0;
				break;
			case 3:
				path[n++] = alphabet[(seed >> 9) % (sizeof(alphabet) - 1)];
				break;
			default:
				path[n++] = '/';
				break;
			}
			path[n] = '\0';
			for (size_t i = 0; i < ntab && want == ntab; i++)
				if (ref_tpl_match(tab[i].path, path, n, &wp) &&
				    !strcmp(tab[i].method, "GET"))
					want = i;
			buf_reset(&allow);
			res = route_match(tab, ntab, "GET", path, &got, &gp, &allow);
			if (want == ntab || strstr(path, "//") || n == 0 || path[0] != '/') {
				cr_assert_neq(res, ROUTE_FOUND, "%s: found %s", path, got ? got->path : "?");
				continue;
			}
			cr_assert_eq(res, ROUTE_FOUND, "%s: want %s", path, tab[want].path);
			cr_assert_eq(got, &tab[want], "%s: got %s, want %s", path, got->path, tab[want].path);
			cr_assert_eq(gp.n, wp.n);
			for (size_t k = 0; k < wp.n; k++) {
				cr_assert_eq(gp.p[k].value, wp.p[k].value);
				cr_assert_eq(gp.p[k].value_len, wp.p[k].value_len);
				cr_assert_eq(gp.p[k].name_len, wp.p[k].name_len);
			}
		}
	}
}
