/* fmt.h — the few number and byte formats the request path writes on every
 * request (header values, ids, timestamps).
 *
 * Why not snprintf: callgrind put snprintf at ~13,000 instructions a
 * registration (locale and format-string machinery for "%lld" and
 * "%02x"); these do the same in a few dozen. Elsewhere snprintf is fine. */
#ifndef SETTLED_FMT_H
#define SETTLED_FMT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_I64_LEN 21 /* "-9223372036854775808" and the NUL */

/* Decimal of v into out, NUL-terminated; returns its length. */
size_t fmt_i64(char out[FMT_I64_LEN], int64_t v);
size_t fmt_u64(char *out, uint64_t v); /* at most FMT_I64_LEN - 1 bytes and a NUL */

/* s into out[0..size), cut to fit and always NUL-terminated (size > 0);
 * returns the length written. snprintf(out, size, "%s", s) without the
 * ~500 instructions of format machinery: the write units copy a few ids
 * and wallets each, inside the single writer's transaction. */
size_t fmt_str(char *out, size_t size, const char *s);

/* v as exactly width digits, zero-padded on the left (higher digits are
 * dropped), no NUL. */
void fmt_pad(char *out, uint64_t v, size_t width);
/* fmt_pad(out, v, 2) by a table lookup, for v < 100 (timestamps). */
void fmt_2(char out[2], unsigned v);

#endif
