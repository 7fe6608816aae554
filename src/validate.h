/* validate.h — parsers for every untrusted scalar of the API (SPEC section 3).
 *
 * Each takes the raw input and either fills a canonical value or returns
 * ST_INVALID; none allocates. These are the only places that decide what a
 * wallet, an amount or a header value may look like. */
#ifndef SETTLED_VALIDATE_H
#define SETTLED_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rc.h"

#define WALLET_LEN 42    /* "0x" + 40 hex digits */
#define TX_HASH_LEN 66   /* "0x" + 64 hex digits */
#define REQUEST_ID_MAX 128
#define IDEM_KEY_MAX 255

/* Amount: a JSON string of a base-unit integer 1 .. 2^63-1: digits only, no
 * sign, no leading zeros ("0" is also rejected: amounts are positive), no
 * fraction, no exponent, no spaces. */
enum st_rc parse_amount(const char *s, size_t len, int64_t *out);

/* Wallet: "0x" (or "0X") + 40 hex digits, any case. out receives the
 * lower-cased form plus NUL (WALLET_LEN + 1 bytes). */
enum st_rc parse_wallet(const char *s, size_t len, char out[WALLET_LEN + 1]);

/* tx hash: "0x" + 64 hex digits, any case; out lower-cased + NUL.
 * Like parse_wallet, a "0X" prefix is accepted and canonicalised to "0x". */
enum st_rc parse_tx_hash(const char *s, size_t len, char out[TX_HASH_LEN + 1]);

/* Idempotency-Key: 1..255 printable ASCII (0x20..0x7e). */
bool idem_key_valid(const char *s, size_t len);

/* X-Request-Id: 1..128 of [A-Za-z0-9._-]. */
bool request_id_valid(const char *s, size_t len);

/* W3C traceparent "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>",
 * lower-case hex, trace id and parent id not all zeros, version ff invalid;
 * versions above 00 may carry more fields after a '-' (forward compat).
 * On success copies the ids (NUL-terminated) and flags. */
enum st_rc parse_traceparent(const char *s, size_t len, char trace_id[33], char parent_id[17],
			     uint8_t *flags);

/* Decimal money amount ("12.34") to base units with `decimals` fraction
 * digits (USD: 2), exact, no floating point: "12.3" -> 1230, "12" -> 1200;
 * more fraction digits than decimals -> ST_INVALID (SPEC 9: never rounded);
 * a sign, exponent or overflow -> ST_INVALID. Zero is allowed here.
 * Also ST_INVALID: leading zeros ("01", "00.5"; "0.5" is fine), a bare or
 * trailing point (".5", "5."), any other byte, and decimals outside 0..18.
 * Extra fraction digits are rejected even when zero ("12.340" at 2). */
enum st_rc parse_decimal_amount(const char *s, size_t len, int decimals, int64_t *out);

/* Whether s[0..len) is well-formed UTF-8 (RFC 3629): no stray continuation
 * byte, overlong form, surrogate, code point past U+10FFFF or cut sequence.
 * NUL and other control bytes are well-formed UTF-8; callers that refuse
 * them check for them separately. */
bool utf8_valid(const char *s, size_t len);

/* Length (1..4) of the well-formed UTF-8 character at s[0..len), or 0 when
 * there is none: len 0, a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF or a sequence cut by len. The one
 * UTF-8 decoder of the tree: utf8_valid, the log and the trace text walk
 * with it. */
size_t utf8_char_len(const char *s, size_t len);

#endif
