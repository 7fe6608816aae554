/* json_fast.c — the plain-shaped JSON object parser (see json_fast.h).
 *
 * A recursive descent over the bytes that gives up (NULL) at the first
 * thing outside its subset: a backslash or a byte outside printable ASCII
 * in a string, a fraction, an exponent, a leading zero or more than 18
 * digits in a number, a duplicate key, more than JSON_FAST_MAX_DEPTH
 * levels, a top-level value that is not an object, anything after it but
 * whitespace. Whatever it gives up on, jansson parses (or refuses) as
 * before. The tree is built with jansson's own constructors. */
#include "json_fast.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "banned.h"

struct scan {
	const unsigned char *p, *end;
	int depth;
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static bool at(const struct scan *s, unsigned char c)
{
	return s->p < s->end && *s->p == c;
}

/* A string of printable ASCII without escapes; *out points into the input. */
static bool plain_string(struct scan *s, const char **out, size_t *len)
{
	const unsigned char *start;

	if (!at(s, '"'))
		return false;
	start = ++s->p;
	while (s->p < s->end && *s->p != '"') {
		if (*s->p < 0x20 || *s->p >= 0x7f || *s->p == '\\')
			return false;
		s->p++;
	}
	if (s->p >= s->end)
		return false;
	*out = (const char *)start;
	*len = (size_t)(s->p - start);
	s->p++;
	return true;
}

static json_t *integer(struct scan *s)
{
	bool neg = at(s, '-');
	json_int_t v = 0;
	int digits = 0;

	if (neg)
		s->p++;
	if (s->p >= s->end || *s->p < '0' || *s->p > '9')
		return NULL;
	if (*s->p == '0') {
		s->p++;
	} else {
		while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
			if (++digits > 18)
				return NULL;
			v = v * 10 + (*s->p - '0');
			s->p++;
		}
	}
	if (s->p < s->end && ((*s->p >= '0' && *s->p <= '9') || *s->p == '.' || *s->p == 'e' ||
			      *s->p == 'E'))
		return NULL; /* a leading zero, a fraction, an exponent */
	return json_integer(neg ? -v : v);
}

static json_t *literal(struct scan *s, const char *word, size_t len, json_t *v)
{
	if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len) != 0)
		return NULL;
	s->p += len;
	return v;
}

static json_t *value(struct scan *s);

/* Where a member or element left the scan: another follows, the
 * container closed, or the text is not the one form this parser reads. */
enum member_end { MEMBER_NEXT, MEMBER_CLOSED, MEMBER_BAD };

/* Past a container's opening byte: true when `closer` follows at once
 * (an empty container, closed). */
static bool open_empty(struct scan *s, char closer)
{
	s->p++;
	skip_ws(s);
	if (!at(s, closer))
		return false;
	s->p++;
	s->depth--;
	return true;
}

/* After a member or element: ',' and the next, or the container's end. */
static enum member_end member_end(struct scan *s, char closer)
{
	skip_ws(s);
	if (at(s, ',')) {
		s->p++;
		skip_ws(s);
		return MEMBER_NEXT;
	}
	if (at(s, closer)) {
		s->p++;
		s->depth--;
		return MEMBER_CLOSED;
	}
	return MEMBER_BAD;
}

static json_t *object(struct scan *s)
{
	enum member_end end = MEMBER_NEXT;
	json_t *o;

	if (++s->depth > JSON_FAST_MAX_DEPTH || !(o = json_object()))
		return NULL;
	if (open_empty(s, '}'))
		return o;
	while (end == MEMBER_NEXT) {
		const char *k;
		size_t klen;
		json_t *v;

		if (!plain_string(s, &k, &klen))
			break;
		skip_ws(s);
		if (!at(s, ':'))
			break;
		s->p++;
		skip_ws(s);
		/* A key twice: JSON_REJECT_DUPLICATES refuses it; jansson says so. */
		if (json_object_getn(o, k, klen) || !(v = value(s)))
			break;
		if (json_object_setn_new_nocheck(o, k, klen, v)) /* takes v, even failing */
			break;
		end = member_end(s, '}');
	}
	if (end == MEMBER_CLOSED)
		return o;
	json_decref(o);
	return NULL;
}

static json_t *array(struct scan *s)
{
	enum member_end end = MEMBER_NEXT;
	json_t *a;

	if (++s->depth > JSON_FAST_MAX_DEPTH || !(a = json_array()))
		return NULL;
	if (open_empty(s, ']'))
		return a;
	while (end == MEMBER_NEXT) {
		json_t *v = value(s);

		if (!v || json_array_append_new(a, v)) /* takes v, even failing */
			break;
		end = member_end(s, ']');
	}
	if (end == MEMBER_CLOSED)
		return a;
	json_decref(a);
	return NULL;
}

static json_t *value(struct scan *s)
{
	const char *str;
	size_t len;

	if (s->p >= s->end)
		return NULL;
	switch (*s->p) {
	case '{':
		return object(s);
	case '[':
		return array(s);
	case '"':
		return plain_string(s, &str, &len) ? json_stringn_nocheck(str, len) : NULL;
	case 't':
		return literal(s, "true", 4, json_true());
	case 'f':
		return literal(s, "false", 5, json_false());
	case 'n':
		return literal(s, "null", 4, json_null());
	default:
		return integer(s);
	}
}

json_t *json_fast_load(const char *p, size_t n)
{
	struct scan s = { .p = (const unsigned char *)p, .end = (const unsigned char *)p + n };
	json_t *v;

	skip_ws(&s);
	if (!at(&s, '{'))
		return NULL;
	v = object(&s);
	if (!v)
		return NULL;
	skip_ws(&s);
	if (s.p != s.end) {
		json_decref(v);
		return NULL;
	}
	return v;
}
