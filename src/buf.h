/* buf.h — bounded, growable byte buffers (after git's strbuf and curl's dynbuf).
 *
 * ptr is never NULL and is always NUL-terminated, so a buf can be handed to
 * C string functions at any time. Every buf has a cap (max): appending past
 * it fails with ST_TOO_LARGE and leaves the contents unchanged. That cap is
 * how request bodies and every other untrusted input are bounded.
 *
 * Ownership: the buf owns ptr. buf_release() frees it; buf_detach() hands it
 * to the caller, who frees it with free(). */
#ifndef SETTLED_BUF_H
#define SETTLED_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

struct buf {
	char *ptr;
	size_t len;
	size_t alloc; /* 0 while ptr points at the shared empty string */
	size_t max;   /* largest len allowed */
};

extern char buf_empty_[]; /* read-only in practice: never written through */
#define BUF_INIT(cap) { buf_empty_, 0, 0, (cap) }

void buf_init(struct buf *b, size_t max);
/* Frees the contents; b is empty and reusable afterwards. */
void buf_release(struct buf *b);
/* Keeps the allocation, drops the contents. */
void buf_reset(struct buf *b);
/* Returns the malloc'd contents (caller frees); b is left empty. Never NULL
 * unless memory runs out. *len_out may be NULL. */
char *buf_detach(struct buf *b, size_t *len_out);

/* Room for extra more bytes after len (and the NUL) without another
 * allocation: ptr[len..alloc - 1) may then be written and len advanced
 * over it, a NUL stored after. ST_TOO_LARGE past max. */
enum st_rc buf_reserve(struct buf *b, size_t extra);
enum st_rc buf_append(struct buf *b, const void *data, size_t len);
enum st_rc buf_puts(struct buf *b, const char *s);
enum st_rc buf_putc(struct buf *b, char c);
enum st_rc buf_printf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
enum st_rc buf_vprintf(struct buf *b, const char *fmt, va_list ap);

/* PostgreSQL array literals built element by element (b starts as "{",
 * the caller closes it with '}'): a text element double-quoted with '"'
 * and '\\' escaped, or NULL when s is; an integer element. Used to pass
 * a merged run's rows as one array a column (unnest). */
enum st_rc buf_pg_array_text(struct buf *b, const char *s, size_t len);
enum st_rc buf_pg_array_int(struct buf *b, int64_t v);



#endif
