/* fuzz_route.c — route_match (src/route_match.h) over the server's real
 * table, settled_routes (src/route_table.c). The first byte picks the method (the
 * table's methods, HEAD, OPTIONS, odd spellings, or a method made of the
 * next few bytes); the rest is the path, NUL-terminated as libmicrohttpd
 * hands it over.
 *
 * Oracles:
 *   - ROUTE_FOUND: the route is in the table, its method matches (HEAD
 *     also GET), and substituting the returned parameters into its
 *     template rebuilds the path exactly; every parameter is a non-empty
 *     run without '/' that lies inside the path; route_param finds each.
 *     No earlier route in the table matches the path and method.
 *   - ROUTE_METHOD_NOT_ALLOWED: the Allow list is non-empty (or the cap
 *     was hit), holds no repeats and only methods of the table.
 *   - A path over 2048 bytes, with "//", or not starting with '/' never
 *     matches.
 *   - route_path_check (the path as sent, before matching) accepts iff
 *     every byte is visible ASCII and every '%' starts two hex digits that
 *     are not 00 or 2F; a path it accepts never decodes to a '/' or a NUL
 *     that was not there raw.
 *   - route_decode (parameters and query values, after matching) agrees
 *     with a decoder written here, and refuses iff an escape is malformed,
 *     a decoded byte is a control character, or the result is not UTF-8;
 *     every parameter of a match decodes the same way. */
#include <stdbool.h>

#include "buf.h"
#include "fuzz.h"
#include "route_match.h"
#include "route_table.h"

static const char *const methods[] = {
	"GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH", "get", "post", "", "GET ",
	"CONNECT", "TRACE",
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

static bool method_ok(const char *route_method, const char *method)
{
	return !strcmp(route_method, method) || (!strcmp(method, "HEAD") && !strcmp(route_method, "GET"));
}

/* Rebuilds the path from a template and parameters; true when equal. */
static bool rebuild_equals(const char *tpl, const struct route_params *p, const char *path)
{
	struct buf b = BUF_INIT(1 << 16);
	size_t k = 0;
	bool eq;

	for (const char *t = tpl; *t;) {
		if (*t == '{') {
			const char *close = strchr(t, '}');

			FUZZ_CHECK(close && k < p->n);
			FUZZ_CHECK(p->p[k].name == t + 1 && p->p[k].name_len == (size_t)(close - t - 1));
			buf_append(&b, p->p[k].value, p->p[k].value_len);
			k++;
			t = close + 1;
		} else {
			buf_putc(&b, *t++);
		}
	}
	eq = k == p->n && !strcmp(b.ptr, path);
	buf_release(&b);
	return eq;
}

static int hexdigit(uint8_t c)
{
	static const char digits[] = "0123456789abcdefABCDEF";
	const char *p = c ? strchr(digits, c) : NULL;

	if (!p)
		return -1;
	return p - digits < 16 ? (int)(p - digits) : (int)(p - digits) - 6;
}

static bool ref_path_ok(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
		if (s[i] == '%') {
			int v;

			if (i + 2 >= n)
				return false;
			if (hexdigit(s[i + 1]) < 0 || hexdigit(s[i + 2]) < 0)
				return false;
			v = hexdigit(s[i + 1]) * 16 + hexdigit(s[i + 2]);
			if (v == 0 || v == '/')
				return false;
			i += 2;
		}
	}
	return true;
}

/* Decodes into out (n + 1 bytes); -1 when it must be refused. */
static long ref_decode(const uint8_t *s, size_t n, uint8_t *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c == '%') {
			if (i + 2 >= n)
				return -1;
			if (hexdigit(s[i + 1]) < 0 || hexdigit(s[i + 2]) < 0)
				return -1;
			c = (uint8_t)(hexdigit(s[i + 1]) * 16 + hexdigit(s[i + 2]));
			i += 2;
		}
		if (c < 0x20 || c == 0x7f)
			return -1;
		out[o++] = c;
	}
	return fuzz_utf8_valid(out, o) ? (long)o : -1;
}

static void check_decode(const char *s, size_t n)
{
	char *got = malloc(n + 1);
	uint8_t *want = malloc(n + 1);
	size_t glen = 0;
	long wlen;
	bool ok;

	if (!got || !want)
		abort();
	ok = route_decode(s, n, got, &glen) == ST_OK;
	wlen = ref_decode((const uint8_t *)s, n, want);
	FUZZ_CHECK(ok == (wlen >= 0));
	if (ok) {
		FUZZ_CHECK(glen == (size_t)wlen && !memcmp(got, want, glen) && got[glen] == '\0');
		FUZZ_CHECK(!memchr(got, '\0', glen));
	}
	free(got);
	free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct route *found = NULL;
	struct route_params params;
	struct buf allow = BUF_INIT(256);
	char own_method[8];
	const char *method;
	char *path;
	size_t plen;
	enum route_result res;

	if (size < 1)
		return 0;
	if (data[0] < 0xf0) {
		method = methods[data[0] % NMETHODS];
		data++;
		size--;
	} else {
		size_t n = data[0] & 7;

		if (n > size - 1)
			n = size - 1;
		memcpy(own_method, data + 1, n);
		own_method[n] = '\0';
		method = own_method;
		data += 1 + n;
		size -= 1 + n;
	}
	path = fuzz_strndup(data, size);
	plen = strlen(path);
	memset(&params, 0xa5, sizeof(params));
	res = route_match(settled_routes, settled_nroutes, method, path, &found, &params, &allow);

	if (plen == 0 || plen > 2048 || path[0] != '/' || strstr(path, "//"))
		FUZZ_CHECK(res == ROUTE_NOT_FOUND);
	{
		bool ok = route_path_check(path) == ST_OK;

		FUZZ_CHECK(ok == ref_path_ok((const uint8_t *)path, plen));
		check_decode(path, plen);
		if (ok) {
			/* An accepted path has no slash or NUL hidden in escapes. */
			uint8_t *dec = malloc(plen + 1);
			long n;
			size_t raw_slashes = 0, dec_slashes = 0;

			if (!dec)
				abort();
			n = ref_decode((const uint8_t *)path, plen, dec);
			for (size_t i = 0; i < plen; i++)
				raw_slashes += path[i] == '/';
			for (long i = 0; i < n; i++)
				dec_slashes += dec[i] == '/';
			FUZZ_CHECK(n < 0 || raw_slashes == dec_slashes);
			free(dec);
		}
	}
	switch (res) {
	case ROUTE_FOUND:
		FUZZ_CHECK(found >= settled_routes && found < settled_routes + settled_nroutes);
		FUZZ_CHECK(method_ok(found->method, method));
		FUZZ_CHECK(params.n <= ROUTE_MAX_PARAMS);
		for (size_t i = 0; i < params.n; i++) {
			char name[64];
			size_t vlen = 0;
			const char *v;

			FUZZ_CHECK(params.p[i].value >= path && params.p[i].value_len > 0);
			FUZZ_CHECK(params.p[i].value + params.p[i].value_len <= path + plen);
			FUZZ_CHECK(!memchr(params.p[i].value, '/', params.p[i].value_len));
			FUZZ_CHECK(params.p[i].name_len < sizeof(name));
			memcpy(name, params.p[i].name, params.p[i].name_len);
			name[params.p[i].name_len] = '\0';
			v = route_param(&params, name, &vlen);
			FUZZ_CHECK(v == params.p[i].value && vlen == params.p[i].value_len);
			check_decode(params.p[i].value, params.p[i].value_len);
		}
		FUZZ_CHECK(rebuild_equals(found->path, &params, path));
		/* First match wins: nothing earlier matches too. */
		for (const struct route *r = settled_routes; r < found; r++) {
			struct route_params p2;
			const struct route *f2 = NULL;

			if (!method_ok(r->method, method))
				continue;
			FUZZ_CHECK(route_match(r, 1, method, path, &f2, &p2, NULL) != ROUTE_FOUND);
		}
		FUZZ_CHECK(allow.len == 0);
		break;
	case ROUTE_METHOD_NOT_ALLOWED: {
		/* Allow is "M1, M2": each a table method, no repeats. */
		char *copy = fuzz_strndup((const uint8_t *)allow.ptr, allow.len);
		char *save = NULL;
		const char *seen[16];
		size_t nseen = 0;

		FUZZ_CHECK(allow.len > 0);
		for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			bool known = false;

			while (*tok == ' ')
				tok++;
			for (size_t i = 0; i < settled_nroutes; i++)
				known |= !strcmp(settled_routes[i].method, tok);
			FUZZ_CHECK(known);
			for (size_t i = 0; i < nseen; i++)
				FUZZ_CHECK(strcmp(seen[i], tok));
			FUZZ_CHECK(nseen < 16);
			seen[nseen++] = tok;
			FUZZ_CHECK(!method_ok(tok, method));
		}
		free(copy);
		break;
	}
	case ROUTE_NOT_FOUND:
		FUZZ_CHECK(allow.len == 0);
		break;
	default:
		FUZZ_CHECK(!"unknown route_result");
	}
	buf_release(&allow);
	free(path);
	return 0;
}
