/* buf.c — bounded growable buffers. See buf.h for the contract.
 *
 * Growth doubles (amortised O(1) appends) but never past max + 1, so a
 * hostile input can make a buffer at most as large as its cap. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "banned.h"

/* Shared by every empty buf so that ptr is never NULL without allocating;
 * only ever read (buf_grow replaces it before the first write). */
char buf_empty_[1];

void buf_init(struct buf *b, size_t max)
{
	b->ptr = buf_empty_;
	b->len = 0;
	b->alloc = 0;
	b->max = max;
}

void buf_release(struct buf *b)
{
	if (b->alloc)
		free(b->ptr);
	buf_init(b, b->max);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->alloc)
		b->ptr[0] = '\0';
}

char *buf_detach(struct buf *b, size_t *len_out)
{
	char *p;

	if (b->alloc) {
		p = b->ptr;
	} else {
		p = malloc(1);
		if (!p)
			return NULL;
		p[0] = '\0';
	}
	if (len_out)
		*len_out = b->len;
	b->ptr = buf_empty_;
	b->len = 0;
	b->alloc = 0;
	return p;
}

/* Makes room for extra more bytes plus the terminating NUL. */
static enum st_rc buf_grow(struct buf *b, size_t extra)
{
	size_t need, cap;
	char *p;

	if (extra > b->max || b->len > b->max - extra)
		return ST_TOO_LARGE;
	need = b->len + extra + 1;
	if (need <= b->alloc)
		return ST_OK;
	cap = b->alloc ? b->alloc : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	p = realloc(b->alloc ? b->ptr : NULL, cap);
	if (!p)
		return ST_NOMEM;
	if (!b->alloc)
		p[0] = '\0';
	b->ptr = p;
	b->alloc = cap;
	return ST_OK;
}

enum st_rc buf_reserve(struct buf *b, size_t extra)
{
	return buf_grow(b, extra);
}

enum st_rc buf_append(struct buf *b, const void *data, size_t len)
{
	enum st_rc rc = buf_grow(b, len);

	if (rc)
		return rc;
	if (len)
		memcpy(b->ptr + b->len, data, len);
	b->len += len;
	b->ptr[b->len] = '\0';
	return ST_OK;
}

enum st_rc buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

enum st_rc buf_putc(struct buf *b, char c)
{
	return buf_append(b, &c, 1);
}

enum st_rc buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list cp;
	int n;
	enum st_rc rc;

	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return ST_INTERNAL;
	rc = buf_grow(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return ST_OK;
}

enum st_rc buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	enum st_rc rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

/* Appends one element to a PostgreSQL array literal under construction in
 * b ("{" already there): s[0..len) double-quoted with '"' and '\\'
 * escaped, or NULL when s is. Written in place after one reserve: this
 * runs for every byte of every answer a merged run records. */
enum st_rc buf_pg_array_text(struct buf *b, const char *s, size_t len)
{
	enum st_rc rc;
	char *o;

	if (!s)
		return buf_puts(b, b->len > 1 ? ",NULL" : "NULL");
	if (len > (SIZE_MAX - 4) / 2)
		return ST_TOO_LARGE;
	rc = buf_reserve(b, 2 * len + 3); /* ',' '"' every byte escaped '"' */
	if (rc)
		return rc;
	o = b->ptr + b->len;
	if (b->len > 1)
		*o++ = ',';
	*o++ = '"';
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			*o++ = '\\';
		*o++ = s[i];
	}
	*o++ = '"';
	*o = '\0';
	b->len = (size_t)(o - b->ptr);
	return ST_OK;
}

enum st_rc buf_pg_array_int(struct buf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), b->len > 1 ? ",%lld" : "%lld", (long long)v);

	return n > 0 && (size_t)n < sizeof(tmp) ? buf_append(b, tmp, (size_t)n) : ST_INTERNAL;
}
