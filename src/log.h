/* log.h — structured logs: one JSON object per line on stdout.
 *
 * Every line carries ts (RFC 3339 UTC with milliseconds), level and msg,
 * plus request_id and trace_id when the caller has them. Callers add fields
 * as already-encoded JSON members built with the log_field_* helpers.
 * Values that may hold personal data pass through log_redact(): e-mail
 * addresses and phone numbers are masked. Authorization headers, secrets
 * and keys are never handed to the logger at all.
 *
 * A line always leaves whole — in one write(2), or inside one larger
 * write(2) of whole lines — so concurrent threads never interleave inside
 * a line.
 *
 * Buffering: a logger is unbuffered after log_init() (every line is its
 * own write(2) from the calling thread; unit tests and tools stay so).
 * log_buffer_start() batches info and debug lines: they reach the fd up to
 * about 20 ms late (LOG_BUFFER_DELAY_MS), and a SIGKILL or a crash loses
 * the info/debug lines of those last milliseconds. warn and error lines are
 * never delayed nor lost that way: each one first writes out what is
 * buffered, then itself, before log_emit returns, so the order of lines is
 * kept. */
#ifndef SETTLED_LOG_H
#define SETTLED_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Buffered info/debug lines go out at most this long after the first of
 * them was logged (or sooner, when 64 KiB have piled up). */
#define LOG_BUFFER_DELAY_MS 20

struct log_buffer; /* opaque: log.c */

struct logger {
	int fd;                     /* where lines go; 1 = stdout */
	enum log_level min;         /* lines below this are dropped */
	struct log_buffer *buffer;  /* NULL = unbuffered; see log_buffer_start() */
};

/* An unbuffered logger writing to fd. Allocates nothing. */
void log_init(struct logger *lg, int fd, enum log_level min);

/* Turns on line batching (see the top of this file): allocates 128 KiB and
 * starts one flusher thread, which blocks every signal and sleeps while
 * nothing is buffered. Call it before other threads log through lg. ST_OK
 * when already on; ST_NOMEM or ST_INTERNAL (thread creation failed) leave
 * lg unbuffered and working. */
enum st_rc log_buffer_start(struct logger *lg);

/* Writes out what is buffered, stops and joins the flusher, frees the
 * buffer; lg is unbuffered (and usable) afterwards. No other thread may log
 * through lg during or after the call, so call it last at shutdown, after
 * the final lines. NULL or an unbuffered lg: no-op. */
void log_buffer_stop(struct logger *lg);

/* Parses "debug", "info", "warn", "error"; -1 when unknown. */
int log_level_parse(const char *s);

/* Builds a line's extra members. Each appends `,"key":value` to fields, or
 * nothing when it would not fit under fields' cap. Strings are redacted
 * (log_redact) and escaped; numbers that are not finite become null.
 * log_field_num prints 6 significant digits ("%.6g"); log_field_fixed
 * prints `decimals` (0-9) digits after the point, rounded half away from
 * zero ("0.015" for a duration in ms with decimals 3) — cheap, no printf
 * (values of 2^53 / 10^decimals or more fall back to "%.6g"). */
void log_field_str(struct buf *fields, const char *key, const char *val);
void log_field_int(struct buf *fields, const char *key, int64_t val);
void log_field_num(struct buf *fields, const char *key, double val);
void log_field_fixed(struct buf *fields, const char *key, double val, unsigned decimals);

/* Writes one line. request_id/trace_id may be NULL; fields may be NULL or
 * hold members made by log_field_* (it is only read). msg is redacted
 * before it is written. Does not allocate unless msg needs redacting. */
void log_emit(const struct logger *lg, enum log_level lvl, const char *request_id,
	      const char *trace_id, const char *msg, const struct buf *fields);

/* The request log line (http.c), one per request. It holds, in this order,
 * the members that log_field_str(method), log_field_str(route),
 * log_field_target(path = target), log_field_int(status),
 * log_field_fixed(duration_ms, 3), log_field_str(client_ip),
 * log_field_str(span_id) and, when idempotency is not NULL,
 * log_field_str(idempotency) add to a fields buf capped at
 * LOG_REQUEST_FIELDS_MAX, and is written as log_emit(lg, lvl, request_id,
 * trace_id, "request", fields) writes it: the same bytes, the same
 * redaction. It is built straight into the line, without the fields buf,
 * the JSON writer or a copy of text that needs no redaction; only a line
 * that would drop a member (over the cap) takes the log_field_* path. */
#define LOG_REQUEST_FIELDS_MAX 4096
struct log_request {
	const char *method, *route, *target, *client_ip, *span_id;
	const char *idempotency; /* NULL: no member */
	int64_t status;
	double duration_ms;
};
void log_emit_request(const struct logger *lg, enum log_level lvl, const char *request_id,
		      const char *trace_id, const struct log_request *r);

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
 *
 * Cost: text without '@' skips the e-mail pass, text without a run of
 * phone characters holding 9 digits (7 after a '+') skips the phone pass,
 * so most log text is one quick scan and one copy.
 * Returns ST_OK or the buf error. */
enum st_rc log_redact(const char *s, struct buf *out);

/* log_redact for a request target: a path as sent (percent-encoded), with
 * or without "?query". Each path segment and each query name and value
 * (split at '&', '=' and ';') is percent-decoded, '+' read as a space in
 * the query, and checked on its own with the rules above; one that holds
 * an e-mail address or a phone number is replaced as a whole:
 *   "/x/+306912345678"                  -> "/x/[phone]"
 *   "/u/alice%40example.com/orders"     -> "/u/[email]/orders"
 *   "/s?tel=%2B44%2020%207946%200958"  -> "/s?tel=[phone]"
 * Ids, wallets, tx hashes and amounts stay (the same rules keep them).
 * A target without '%', '@' or a run of phone characters is copied as is.
 * Appends to out; on error out is left as it was. */
enum st_rc log_redact_target(const char *target, struct buf *out);

/* log_field_str for a request target: log_redact_target, then escaped. */
void log_field_target(struct buf *fields, const char *key, const char *target);

/* log_redact without the shortcuts: both passes over the whole text, the
 * e-mail pass into an intermediate buf. The reference the unit tests hold
 * log_redact to, byte for byte; not for production use. */
enum st_rc log_redact_full(const char *s, struct buf *out);

#endif
