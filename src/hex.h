/* hex.h — the one hex codec: bytes to lower-case hex text, hex text of
 * either case back to bytes, and the digit tests the parsers of wallets,
 * transaction hashes, trace ids, signatures and percent escapes share.
 *
 * Nothing allocates, nothing reads the locale (<ctype.h>'s isxdigit answers
 * by it), and every input is (pointer, length): a NUL inside the length is
 * just a byte that is not a digit. */
#ifndef SETTLED_HEX_H
#define SETTLED_HEX_H

#include <stdbool.h>
#include <stddef.h>

/* Value of the hex digit c (either case), or -1. */
int hex_digit(int c);

/* Lower-case hex of raw[0..n) into out: 2n characters and a NUL. */
void hex_encode(const void *raw, size_t n, char *out);

/* The 2n hex digits (either case) at s into out[0..n); false, with out
 * unspecified, when len != 2n or a character is not a hex digit. */
bool hex_decode(const char *s, size_t len, void *out, size_t n);

/* Whether s[0..n) are all hex digits: of either case, or lower case only
 * (W3C trace context forbids upper case). */
bool hex_all(const char *s, size_t n);
bool hex_all_lower(const char *s, size_t n);

#endif
