/* route_match.c — matching a request's method and path against the route
 * table.
 *
 * A path and a template are both sequences of '/'-prefixed segments and
 * match when they have the same number of segments and each pair matches:
 * a literal segment byte for byte, a "{name}" segment any non-empty run of
 * bytes other than '/'. Nothing is decoded or normalised: "%2F" is three
 * literal bytes, "/healthz/" has an empty trailing segment and so is not
 * "/healthz", and a path containing "//" is refused outright. Keeping the
 * matcher this literal means the router and any proxy in front of it can
 * never disagree about which route a request reached.
 *
 * The first route in table order whose template and method both match
 * wins, so a literal route meant to shadow a parameterised one goes first.
 * Method names compare case-sensitively (RFC 9110 section 9.1); HEAD also
 * matches GET routes. Workload: one linear scan per request over a few
 * dozen entries, no allocation except the Allow list on the 405 path. */
#include "route_match.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "hex.h"
#include "validate.h"

#include "banned.h"

#define ROUTE_PATH_MAX 2048

/* Matches one template against path[0..plen). Params are written to *pp,
 * which the caller copies out only on a full match. */
static bool tpl_match(const char *tpl, const char *path, size_t plen, struct route_params *pp)
{
	const char *t = tpl, *p = path, *pend = path + plen;

	pp->n = 0;
	/* Up to its first '{' a template is literal, '/'s included, so a
	 * matching path starts with the same bytes. Most templates of the
	 * scan differ from the path within those bytes: this finds it
	 * without cutting either into segments (240 instructions a template
	 * on average -> 120; route_match 4.9k -> 2.7k a webhook delivery,
	 * whose route is the 18th). */
	for (size_t i = 0; tpl[i] && tpl[i] != '{'; i++)
		if (i >= plen || tpl[i] != path[i])
			return false;
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
			if (slen == 0)
				return false;
			/* More parameters than route_params holds is a bug in the
			 * table, not something a request can cause. */
			assert(pp->n < ROUTE_MAX_PARAMS);
			if (pp->n >= ROUTE_MAX_PARAMS)
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
	/* Both must run out together: a leftover on either side means a
	 * different segment count (which is also how "/x/" fails "/x"). */
	return *t == '\0' && p == pend;
}

static bool method_matches(const char *route_method, const char *method)
{
	return strcmp(route_method, method) == 0 ||
	       (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

/* Appends each method of a route whose template matches the path, once,
 * in table order. Dedup re-checks earlier entries instead of keeping a
 * set: this runs only on a 405, over a handful of routes. On failure allow
 * is put back as it was, since a truncated Allow list would be a lie. */
static void build_allow(const struct route *table, size_t n, const char *path, size_t plen,
			struct buf *allow)
{
	struct route_params scratch;
	size_t start = allow->len;
	bool first = true;
	enum st_rc rc = ST_OK;

	for (size_t i = 0; i < n && !rc; i++) {
		bool seen = false;

		if (!tpl_match(table[i].path, path, plen, &scratch))
			continue;
		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(table[j].method, table[i].method) == 0 &&
			       tpl_match(table[j].path, path, plen, &scratch);
		if (seen)
			continue;
		if (!first)
			rc = buf_append(allow, ", ", 2);
		if (!rc)
			rc = buf_puts(allow, table[i].method);
		first = false;
	}
	if (rc) {
		allow->len = start;
		if (allow->alloc)
			allow->ptr[start] = '\0';
	}
}

enum route_result route_match(const struct route *table, size_t n, const char *method,
			      const char *path, const struct route **found,
			      struct route_params *params, struct buf *allow)
{
	struct route_params pp;
	bool path_known = false;
	size_t plen;

	if (!method || !path)
		return ROUTE_NOT_FOUND;
	/* strnlen: never walk further than the cap into a hostile path. */
	plen = strnlen(path, ROUTE_PATH_MAX + 1);
	if (plen == 0 || plen > ROUTE_PATH_MAX || path[0] != '/' || memmem(path, plen, "//", 2))
		return ROUTE_NOT_FOUND;

	for (size_t i = 0; i < n; i++) {
		if (!tpl_match(table[i].path, path, plen, &pp))
			continue;
		if (!method_matches(table[i].method, method)) {
			path_known = true;
			continue;
		}
		if (found)
			*found = &table[i];
		if (params)
			*params = pp;
		return ROUTE_FOUND;
	}
	if (!path_known)
		return ROUTE_NOT_FOUND;
	if (allow)
		build_allow(table, n, path, plen, allow);
	return ROUTE_METHOD_NOT_ALLOWED;
}

const char *route_param(const struct route_params *params, const char *name, size_t *len_out)
{
	size_t nlen;

	if (!params || !name)
		return NULL;
	nlen = strlen(name);
	for (size_t i = 0; i < params->n && i < ROUTE_MAX_PARAMS; i++) {
		if (params->p[i].name_len == nlen && memcmp(params->p[i].name, name, nlen) == 0) {
			if (len_out)
				*len_out = params->p[i].value_len;
			return params->p[i].value;
		}
	}
	return NULL;
}

enum st_rc route_path_check(const char *path)
{
	if (!path)
		return ST_INVALID;
	for (const char *p = path; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c <= 0x20 || c >= 0x7f)
			return ST_INVALID;
		if (c == '%') {
			int hi = hex_digit((unsigned char)p[1]);
			int lo = hi < 0 ? -1 : hex_digit((unsigned char)p[2]);

			if (lo < 0)
				return ST_INVALID;
			if ((hi << 4 | lo) == 0 || (hi << 4 | lo) == '/')
				return ST_INVALID;
			p += 2;
		}
	}
	return ST_OK;
}

enum st_rc route_decode(const char *in, size_t n, char *out, size_t *out_len)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '%') {
			int hi = i + 2 < n ? hex_digit((unsigned char)in[i + 1]) : -1;
			int lo = hi < 0 ? -1 : hex_digit((unsigned char)in[i + 2]);

			if (lo < 0)
				return ST_INVALID;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		}
		if (c < 0x20 || c == 0x7f)
			return ST_INVALID;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	if (!utf8_valid(out, o))
		return ST_INVALID;
	if (out_len)
		*out_len = o;
	return ST_OK;
}

/* ---------------------------------------------------------------- body fields */

static const struct route_field *field_find(const struct route_field *fields, const char *name)
{
	for (const struct route_field *f = fields; f && f->name; f++)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

/* Drops what was appended to path after len. */
static void path_cut(struct buf *path, size_t len)
{
	if (path->len > len) {
		path->len = len;
		path->ptr[len] = '\0';
	}
}

/* Recursion follows the declared shapes, never the document, so its depth
 * is the table's (two levels today) whatever a client nests. */
static enum st_rc unknown_in(const struct route_field *fields, const json_t *obj, struct buf *path)
{
	size_t mark = path->len;
	const char *key;
	json_t *v;

	json_object_foreach ((json_t *)obj, key, v) {
		const struct route_field *f = field_find(fields, key);
		enum st_rc rc = ST_OK;

		if (mark)
			rc = buf_putc(path, '.');
		if (!rc)
			rc = buf_puts(path, key);
		if (rc)
			return rc;
		if (!f)
			return ST_INVALID;
		if (f->members && json_is_object(v)) {
			rc = unknown_in(f->members, v, path);
		} else if (f->members && json_is_array(v)) {
			size_t i, at = path->len;
			json_t *item;

			json_array_foreach (v, i, item) {
				if (!json_is_object(item))
					continue; /* the handler refuses a malformed item */
				rc = buf_printf(path, "[%zu]", i);
				if (!rc)
					rc = unknown_in(f->members, item, path);
				if (rc)
					break;
				path_cut(path, at);
			}
		}
		if (rc)
			return rc;
		path_cut(path, mark);
	}
	return ST_OK;
}

enum st_rc route_unknown_field(const struct route_field *fields, const json_t *body,
			       struct buf *path)
{
	if (!json_is_object(body))
		return ST_OK;
	return unknown_in(fields, body, path);
}
