/* json_out.c — see json_out.h. */
#include "json_out.h"

#include <stdlib.h>
#include <string.h>

#include "fmt.h"
#include "banned.h"

/* The string's text between quotes, escaped as jansson escapes it: '"',
 * '\\' and the control characters (short forms where JSON has them, else
 * \u00XX in upper case); everything else, UTF-8 included, as it is.
 * Runs that need no escaping are copied whole. */
static enum st_rc put_string(struct buf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	enum st_rc rc = buf_putc(out, '"');
	size_t run = 0;

	for (size_t i = 0; i < n && !rc; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = { '\\', 0 };
		size_t esc_len = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		rc = buf_append(out, s + run, i - run);
		run = i + 1;
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			esc_len = 6;
		}
		if (!rc)
			rc = buf_append(out, esc, esc_len);
	}
	if (!rc)
		rc = buf_append(out, s + run, n - run);
	if (!rc)
		rc = buf_putc(out, '"');
	return rc;
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
			if (!first)
				rc = buf_putc(out, ',');
			first = 0;
			if (!rc)
				rc = put_string(out, key, strlen(key));
			if (!rc)
				rc = buf_putc(out, ':');
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
		return put_string(out, json_string_value(v), json_string_length(v));
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

void jw_begin(struct json_writer *w, struct buf *out)
{
	w->out = out;
	w->start = out->len;
	w->depth = 0;
	w->more[0] = false;
	w->rc = buf_putc(out, '{');
}

/* The separator and "key": of the next member. */
static bool jw_key(struct json_writer *w, const char *key)
{
	if (w->rc)
		return false;
	if (w->more[w->depth])
		w->rc = buf_putc(w->out, ',');
	w->more[w->depth] = true;
	if (!w->rc)
		w->rc = put_string(w->out, key, strlen(key));
	if (!w->rc)
		w->rc = buf_putc(w->out, ':');
	return !w->rc;
}

void jw_str(struct json_writer *w, const char *key, const char *v)
{
	if (jw_key(w, key))
		w->rc = v ? put_string(w->out, v, strlen(v)) : buf_puts(w->out, "null");
}

void jw_i64(struct json_writer *w, const char *key, int64_t v)
{
	char num[FMT_I64_LEN];

	if (jw_key(w, key))
		w->rc = buf_append(w->out, num, fmt_i64(num, v));
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

void jw_object(struct json_writer *w, const char *key)
{
	if (!jw_key(w, key))
		return;
	if (w->depth + 1 >= JSON_OUT_MAX_DEPTH) {
		w->rc = ST_INVALID;
		return;
	}
	w->more[++w->depth] = false;
	w->rc = buf_putc(w->out, '{');
}

void jw_close(struct json_writer *w)
{
	if (w->rc)
		return;
	if (w->depth == 0) {
		w->rc = ST_INVALID; /* more closes than opens: jw_end closes the outermost */
		return;
	}
	w->depth--;
	w->rc = buf_putc(w->out, '}');
}

enum st_rc jw_end(struct json_writer *w)
{
	if (!w->rc && w->depth != 0)
		w->rc = ST_INVALID;
	if (!w->rc)
		w->rc = buf_putc(w->out, '}');
	if (w->rc) {
		w->out->len = w->start;
		if (w->out->alloc)
			w->out->ptr[w->start] = '\0';
	}
	return w->rc;
}
