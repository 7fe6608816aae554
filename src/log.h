/* log.h — structured logs: one JSON object per line on stdout.
 *
 * Every line carries ts (RFC 3339 UTC with milliseconds), level and msg,
 * plus request_id and trace_id when the caller has them. Callers add fields
 * as already-encoded JSON members built with the log_field_* helpers.
 * Values that may hold personal data pass through log_redact(): e-mail
 * addresses and phone numbers are masked. Authorization headers, secrets
 * and keys are never handed to the logger at all.
 *
 * A line is written with a single write(2), so concurrent threads never
 * interleave inside a line. */
#ifndef SETTLED_LOG_H
#define SETTLED_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

struct logger {
	int fd;              /* where lines go; 1 = stdout */
	enum log_level min;  /* lines below this are dropped */
};

void log_init(struct logger *lg, int fd, enum log_level min);

/* Parses "debug", "info", "warn", "error"; -1 when unknown. */
int log_level_parse(const char *s);

/* Builds a line's extra members. Each appends `,"key":value` to fields. */
void log_field_str(struct buf *fields, const char *key, const char *val);
void log_field_int(struct buf *fields, const char *key, int64_t val);
void log_field_num(struct buf *fields, const char *key, double val);

/* Writes one line. request_id/trace_id may be NULL; fields may be NULL or
 * hold members made by log_field_*. msg is redacted before it is written. */
void log_emit(const struct logger *lg, enum log_level lvl, const char *request_id,
	      const char *trace_id, const char *msg, const struct buf *fields);

/* printf-style shorthand without request context. */
void log_msg(const struct logger *lg, enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Appends s to out with e-mail addresses replaced by "[email]" and phone
 * numbers by "[phone]". On error out is left as it was.
 *
 * E-mail: local@domain, local of [A-Za-z0-9._%+-], domain of labels of
 * [A-Za-z0-9-] with at least one dot and a last label of 2+ characters
 * holding a letter ("a.b@example.com" yes; "pkg@1.2.3" no).
 *
 * Phone: digit groups, the first optionally led by '+', joined by one
 * ' ', '-' or '.'; a group may be 1-5 digits in parentheses ("(555)",
 * "(0)20"). A candidate is a phone number when it has
 *   1. 7-15 digits and starts with '+':  "+44 20 7946 0958", "+15551234567";
 *   2. 9-15 digits and a parenthesised group:  "(555) 123-4567";
 *   3. 9-15 digits in 3+ groups, one separator throughout, and is not a
 *      dotted quad:  "555-123-4567", "555.123.4567", "020 7946 0958".
 * and it is not glued to a larger token: the character before it is not a
 * letter, digit or one of "_-./+@", and the one after it is not a letter,
 * digit, one of "_:/@+", nor a '-' or '.' followed by a digit. The longest
 * such candidate wins.
 * So these stay readable: bare digit runs ("100000000", unix times), ISO
 * dates ("2026-11-25": 8 digits; "2026-11-25T18:55:28Z": glued to 'T'),
 * IPv4 addresses ("127.0.0.1", "192.168.100.200"), negative numbers,
 * decimals ("1234567.89": 2 groups), UUIDs and request ids (glued by '-'
 * or letters), hex wallets and tx hashes (digits glued to letters).
 * Known misses: 7-8 digit local numbers without '+' ("123-4567") and
 * two-group numbers ("030 1234567"). Known false positives: three or more
 * space separated numbers totalling 9-15 digits ("100 200 300").
 * Returns ST_OK or the buf error. */
enum st_rc log_redact(const char *s, struct buf *out);

#endif
