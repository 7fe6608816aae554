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

/* Copies s into out with e-mail addresses replaced by "[email]" and phone
 * numbers by "[phone]". A phone number is 7-15 digits that either start
 * with '+' or are split into groups by spaces, '-', '.' or parentheses
 * ("+44 20 7946 0958", "(555) 123-4567"). A bare run of digits is not one:
 * amounts and ids stay readable. Hex strings such as wallets (0x...) and tx
 * hashes are kept. Returns ST_OK or the buf error. */
enum st_rc log_redact(const char *s, struct buf *out);

#endif
