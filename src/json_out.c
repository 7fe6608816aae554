/* json_out.c — see json_out.h. */
#include "json_out.h"

#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "hex.h"
#include "validate.h"
#include "banned.h"

/* Bytes that go into a JSON string as they are: printable ASCII and DEL,
 * but not '"' or '\\'. */
static inline bool json_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* End of the run of json_plain bytes starting at u[i]. Eight bytes at a
 * time while none of them is below 0x20, at or above 0x80, '"' or '\\':
 * for bytes that are all plain, x - 0x20, (x ^ '"') - 1 and (x ^ '\\') - 1
 * neither borrow nor set a high bit, while the lowest byte that is not
 * plain sets one (the bit-twiddling "haszero" test). */
static size_t plain_run(const unsigned char *u, size_t i, size_t n)
{
	const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;

	while (n - i >= 8) {
		uint64_t x, q, b;

		memcpy(&x, u + i, 8);
		q = x ^ (ones * '"');
		b = x ^ (ones * '\\');
		if (((x - ones * 0x20) | (q - ones) | (b - ones) | x) & high)
			break;
		i += 8;
	}
	while (i < n && json_plain(u[i]))
		i++;
	return i;
}

/* End of the run starting at u[i] that goes in as it is: plain bytes and
 * bytes from 0x80 up, those only as whole well-formed UTF-8 characters
 * under JSON_ESC_REPAIR. */
static size_t copy_run(const char *s, size_t i, size_t n, unsigned flags)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t k;

	for (;;) {
		i = plain_run(u, i, n);
		if (i == n || u[i] < 0x80)
			return i;
		if (!(flags & JSON_ESC_REPAIR))
			i++;
		else if ((k = utf8_char_len(s + i, n - i)) != 0)
			i += k;
		else
			return i;
	}
}

/* The escaped form of the byte c, which copy_run stopped at, into esc[7]
 * (the NUL hex_encode leaves after it is no part of it); returns its
 * length. */
static size_t escape_one(unsigned char c, unsigned flags, char esc[7])
{
	static const char named[] = { ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
				      ['\t'] = 't', ['"'] = '"', ['\\'] = '\\' };

	esc[0] = '\\';
	if (c >= 0x80) {
		memcpy(esc, "\\ufffd", 6); /* only under JSON_ESC_REPAIR */
		return 6;
	}
	if (c < sizeof(named) && named[c]) {
		esc[1] = named[c];
		return 2;
	}
	memcpy(esc, "\\u00", 4);
	hex_encode(&c, 1, esc + 4);
	/* jansson's upper case: c < 0x20, so only the last digit can be a-f */
	if (!(flags & JSON_ESC_LOWER) && esc[5] >= 'a')
		esc[5] = (char)(esc[5] - 'a' + 'A');
	return 6;
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t n, size_t *pos, unsigned flags)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = *pos, o = 0;

	while (i < n) {
		size_t r = copy_run(s, i, n, flags), k = r - i;
		char esc[7];

		if (k > cap - o) {
			/* Cut between characters, never inside a sequence: back over
			 * at most three continuation bytes to its lead. More (bytes
			 * copied as they are without JSON_ESC_REPAIR) are no
			 * character, and any cut does. */
			size_t cut = cap - o;

			k = cut;
			while (k > 0 && cut - k < 3 && (u[i + k] & 0xc0) == 0x80)
				k--;
			if ((u[i + k] & 0xc0) == 0x80)
				k = cut;
			memcpy(dst + o, s + i, k);
			o += k;
			i += k;
			break;
		}
		memcpy(dst + o, s + i, k);
		o += k;
		i = r;
		if (i == n)
			break;
		k = escape_one(u[i], flags, esc);
		if (k > cap - o)
			break;
		memcpy(dst + o, esc, k);
		o += k;
		i++;
	}
	*pos = i;
	return o;
}

enum st_rc json_escape_buf(struct buf *out, const char *s, size_t n, unsigned flags)
{
	size_t start = out->len, pos = 0;
	enum st_rc rc = ST_OK;

	while (pos < n && !rc) {
		/* Room for the rest as it is and one escape; escaping more grows
		 * the buf again. Near the cap, what is left under it. */
		size_t want = n - pos + 6, k;

		rc = buf_reserve(out, want);
		if (rc == ST_TOO_LARGE && out->max > out->len)
			rc = buf_reserve(out, out->max - out->len);
		if (rc)
			break;
		k = json_escape(out->ptr + out->len, out->alloc - 1 - out->len, s, n, &pos, flags);
		if (!k) {
			rc = ST_TOO_LARGE; /* not even the next character fits under the cap */
			break;
		}
		out->len += k;
		out->ptr[out->len] = '\0';
	}
	if (rc) {
		out->len = start;
		if (out->alloc)
			out->ptr[start] = '\0';
	}
	return rc;
}

/* lead (a separator, or '\0' for none), the quoted string and tail (':',
 * or '\0'). In one reservation and one escaping call when the escaped text
 * fits the room left for it, the common case (keys, ids, short text): the
 * answers and log fields write a handful of strings each. */
static enum st_rc put_string_in(struct buf *out, char lead, const char *s, size_t n, char tail,
				unsigned flags)
{
	size_t start = out->len, pos = 0, k;
	enum st_rc rc;

	if (buf_reserve(out, n + 16) == ST_OK) {
		char *p = out->ptr + out->len;
		size_t o = 0, room = out->alloc - 1 - out->len - 3; /* closing '"', tail */

		if (lead)
			p[o++] = lead;
		p[o++] = '"';
		k = json_escape(p + o, room - o, s, n, &pos, flags);
		if (pos == n) {
			o += k;
			p[o++] = '"';
			if (tail)
				p[o++] = tail;
			out->len += o;
			out->ptr[out->len] = '\0';
			return ST_OK;
		}
	}
	/* Longer once escaped, or near the cap: piece by piece. */
	rc = lead ? buf_putc(out, lead) : ST_OK;
	if (!rc)
		rc = buf_putc(out, '"');
	if (!rc)
		rc = json_escape_buf(out, s, n, flags);
	if (!rc)
		rc = buf_putc(out, '"');
	if (!rc && tail)
		rc = buf_putc(out, tail);
	if (rc) {
		out->len = start;
		if (out->alloc)
			out->ptr[start] = '\0';
	}
	return rc;
}

static enum st_rc put_string(struct buf *out, const char *s, size_t n, unsigned flags)
{
	return put_string_in(out, '\0', s, n, '\0', flags);
}

/* Reals are rare in settled's answers (amounts are integers), and their
 * shortest round-trip text is jansson's business: ask it for that one. */
static enum st_rc put_real(struct buf *out, const json_t *v)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	enum st_rc rc;

	if (!text)
		return ST_NOMEM;
	rc = buf_puts(out, text);
	free(text);
	return rc;
}

static enum st_rc put_value(struct buf *out, const json_t *v, int depth)
{
	enum st_rc rc = ST_OK;
	char num[FMT_I64_LEN];

	if (depth > JSON_OUT_MAX_DEPTH)
		return ST_INVALID;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *key;
		const json_t *member;
		int first = 1;

		rc = buf_putc(out, '{');
		json_object_foreach ((json_t *)v, key, member) {
			if (rc)
				break;
			rc = put_string_in(out, first ? '\0' : ',', key, strlen(key), ':', 0);
			first = 0;
			if (!rc)
				rc = put_value(out, member, depth + 1);
		}
		return rc ? rc : buf_putc(out, '}');
	}
	case JSON_ARRAY:
		rc = buf_putc(out, '[');
		for (size_t i = 0; i < json_array_size(v) && !rc; i++) {
			if (i)
				rc = buf_putc(out, ',');
			if (!rc)
				rc = put_value(out, json_array_get(v, i), depth + 1);
		}
		return rc ? rc : buf_putc(out, ']');
	case JSON_STRING:
		return put_string(out, json_string_value(v), json_string_length(v), 0);
	case JSON_INTEGER:
		return buf_append(out, num, fmt_i64(num, (int64_t)json_integer_value(v)));
	case JSON_REAL:
		return put_real(out, v);
	case JSON_TRUE:
		return buf_puts(out, "true");
	case JSON_FALSE:
		return buf_puts(out, "false");
	case JSON_NULL:
		return buf_puts(out, "null");
	}
	return ST_INVALID;
}

enum st_rc json_out(struct buf *out, const json_t *v)
{
	size_t start = out->len;
	enum st_rc rc = v ? put_value(out, v, 0) : ST_INVALID;

	if (rc) {
		out->len = start;
		if (out->alloc)
			out->ptr[start] = '\0';
	}
	return rc;
}

char *json_out_text(const json_t *v)
{
	struct buf out = BUF_INIT(SIZE_MAX - 1);
	char *text = json_out(&out, v) ? NULL : buf_detach(&out, NULL);

	buf_release(&out);
	return text;
}

void jw_members(struct json_writer *w, struct buf *out, bool more)
{
	w->out = out;
	w->start = out->len;
	w->depth = 0;
	w->esc = 0;
	w->more[0] = more;
	w->closer[0] = '\0';
	w->rc = ST_OK;
}

void jw_begin(struct json_writer *w, struct buf *out)
{
	jw_members(w, out, false);
	w->closer[0] = '}';
	w->rc = buf_putc(out, '{');
}

/* The separator and, in an object, "key": of the next value. */
static bool jw_key(struct json_writer *w, const char *key)
{
	char sep = w->more[w->depth] ? ',' : '\0';

	if (w->rc)
		return false;
	w->more[w->depth] = true;
	if (key)
		w->rc = put_string_in(w->out, sep, key, strlen(key), ':', w->esc);
	else if (sep)
		w->rc = buf_putc(w->out, sep);
	return !w->rc;
}

void jw_str(struct json_writer *w, const char *key, const char *v)
{
	if (v)
		jw_strn(w, key, v, strlen(v));
	else
		jw_null(w, key);
}

void jw_strn(struct json_writer *w, const char *key, const char *v, size_t n)
{
	if (jw_key(w, key))
		w->rc = put_string(w->out, v, n, w->esc);
}

void jw_i64(struct json_writer *w, const char *key, int64_t v)
{
	char num[FMT_I64_LEN];

	if (jw_key(w, key))
		w->rc = buf_append(w->out, num, fmt_i64(num, v));
}

void jw_i64_str(struct json_writer *w, const char *key, int64_t v)
{
	char num[FMT_I64_LEN + 2];
	size_t k = fmt_i64(num + 1, v);

	num[0] = num[k + 1] = '"';
	if (jw_key(w, key))
		w->rc = buf_append(w->out, num, k + 2);
}

void jw_raw(struct json_writer *w, const char *key, const char *text, size_t n)
{
	if (jw_key(w, key))
		w->rc = buf_append(w->out, text, n);
}

void jw_null(struct json_writer *w, const char *key)
{
	if (jw_key(w, key))
		w->rc = buf_puts(w->out, "null");
}

void jw_bool(struct json_writer *w, const char *key, bool v)
{
	if (jw_key(w, key))
		w->rc = buf_puts(w->out, v ? "true" : "false");
}

void jw_json(struct json_writer *w, const char *key, const json_t *v)
{
	if (jw_key(w, key))
		w->rc = json_out(w->out, v);
}

static void jw_open(struct json_writer *w, const char *key, char open, char close)
{
	if (!jw_key(w, key))
		return;
	if (w->depth + 1 >= JSON_OUT_MAX_DEPTH) {
		w->rc = ST_INVALID;
		return;
	}
	w->depth++;
	w->more[w->depth] = false;
	w->closer[w->depth] = close;
	w->rc = buf_putc(w->out, open);
}

void jw_object(struct json_writer *w, const char *key)
{
	jw_open(w, key, '{', '}');
}

void jw_array(struct json_writer *w, const char *key)
{
	jw_open(w, key, '[', ']');
}

void jw_close(struct json_writer *w)
{
	if (w->rc)
		return;
	if (w->depth == 0) {
		w->rc = ST_INVALID; /* more closes than opens: jw_end closes the outermost */
		return;
	}
	w->rc = buf_putc(w->out, w->closer[w->depth--]);
}

void jw_fail(struct json_writer *w, enum st_rc rc)
{
	if (!w->rc)
		w->rc = rc;
}

enum st_rc jw_end(struct json_writer *w)
{
	if (!w->rc && w->depth != 0)
		w->rc = ST_INVALID;
	if (!w->rc && w->closer[0])
		w->rc = buf_putc(w->out, w->closer[0]);
	if (w->rc) {
		w->out->len = w->start;
		if (w->out->alloc)
			w->out->ptr[w->start] = '\0';
	}
	return w->rc;
}

enum st_rc jw_end_copy(struct json_writer *w, char *out)
{
	enum st_rc rc = jw_end(w);

	if (!rc)
		memcpy(out, w->out->ptr, w->out->len + 1);
	buf_release(w->out);
	return rc;
}
