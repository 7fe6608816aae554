/* json_out.h — the one JSON writer of the tree: compact JSON text of a
 * jansson value (json_out), the one string escaper (json_escape) and a
 * streaming writer (struct json_writer) for text built member by member.
 * Responses, job payloads, log fields, the OTLP export, the config dump and
 * the RPC and rail requests all write through here; jansson only parses.
 *
 * json_out writes byte for byte what json_dumps(v, JSON_COMPACT) writes
 * (tests/unit/test_json_out.c compares the two on random values), without
 * its cost: jansson 2.14 guards every object and array against reference
 * loops by formatting the node's address with snprintf("%p") into a
 * hashtable, and builds the text in a strbuffer that is then copied once
 * more. callgrind put json_dumps at ~14,000 instructions for a 200-byte
 * response, a tenth of a registration. Values here are trees built by
 * settled or parsed by jansson, neither of which makes a loop, so a depth
 * limit replaces the loop check. */
#ifndef SETTLED_JSON_OUT_H
#define SETTLED_JSON_OUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

#define JSON_OUT_MAX_DEPTH 64

/* Appends v's text to out. ST_INVALID when v nests deeper than
 * JSON_OUT_MAX_DEPTH (a loop), the buf's error when it is full; out is
 * then left as it was. */
enum st_rc json_out(struct buf *out, const json_t *v);

/* v's text in a new NUL-terminated string the caller frees: where
 * json_dumps(v, JSON_COMPACT) was used. NULL when v is NULL, nests too deep
 * or memory runs out. */
char *json_out_text(const json_t *v);

/* ---- strings: the one escaper of the tree ----------------------------- */

/* How json_escape writes. Without flags, as jansson does (tests/unit/
 * test_json_out.c holds the two together): '"', '\\' and the control
 * characters escaped (short forms where JSON has them, else \u00XX in upper
 * case), every other byte, UTF-8 or not, as it is. */
enum json_esc_flags {
	/* Invalid UTF-8 as \ufffd, one per byte, so the text parses whatever
	 * it came from: log lines and exports carry text nobody checked. */
	JSON_ESC_REPAIR = 1,
	JSON_ESC_LOWER = 2, /* \u00xx in lower case: the log line's bytes */
};

/* Escapes s[*pos..n) into dst[0..cap) as the inside of a JSON string,
 * stopping before the first character whose escaped form would not fit
 * (so a cut never splits an escape or a UTF-8 sequence). Advances *pos past
 * what went in; returns the bytes written. Runs that need no escaping are
 * measured eight bytes at a time and copied whole. */
size_t json_escape(char *dst, size_t cap, const char *s, size_t n, size_t *pos, unsigned flags);

/* Appends s[0..n) escaped (no quotes) to out, straight into its storage;
 * on an error out is left as it was. */
enum st_rc json_escape_buf(struct buf *out, const char *s, size_t n, unsigned flags);

/* ---- the writer ---------------------------------------------------------- */

/* JSON written value by value straight into a buf: the answers of the
 * write paths, which run inside the single writer's transaction, where
 * building a jansson tree only to serialise it was ~11,000 instructions of
 * a registration's ~50,000; job payloads, the OTLP export, the config dump
 * and log fields. The bytes are json_out's for the same members in the same
 * order. Errors stick (the calls after one do nothing) and jw_end reports
 * the first, leaving out as it was before jw_begin.
 *
 * Every value call takes a key: inside an object the member's name, inside
 * an array NULL (an element). */
struct json_writer {
	struct buf *out;
	size_t start;
	enum st_rc rc;
	int depth;
	unsigned esc;                     /* json_esc_flags of every string */
	bool more[JSON_OUT_MAX_DEPTH];    /* a value already written at depth */
	char closer[JSON_OUT_MAX_DEPTH];  /* '}' or ']' (depth 0: '\0' for jw_members) */
};

void jw_begin(struct json_writer *w, struct buf *out); /* '{' */
/* Members appended to an object whose '{' is already in out, and with it
 * other members when more (then each starts with ','); jw_end writes no
 * '}'. */
void jw_members(struct json_writer *w, struct buf *out, bool more);
void jw_str(struct json_writer *w, const char *key, const char *v); /* null when v is NULL */
void jw_strn(struct json_writer *w, const char *key, const char *v, size_t n);
void jw_i64(struct json_writer *w, const char *key, int64_t v);
void jw_i64_str(struct json_writer *w, const char *key, int64_t v); /* "123": proto3's int64 */
/* text as it is: a number the caller formatted (a double, a fixed-point
 * decimal); the caller answers for it being JSON. */
void jw_raw(struct json_writer *w, const char *key, const char *text, size_t n);
void jw_null(struct json_writer *w, const char *key);
void jw_bool(struct json_writer *w, const char *key, bool v);
void jw_json(struct json_writer *w, const char *key, const json_t *v); /* json_out of v */
void jw_object(struct json_writer *w, const char *key); /* opens "key":{ */
void jw_array(struct json_writer *w, const char *key);  /* opens "key":[ */
void jw_close(struct json_writer *w);                   /* closes the innermost */
void jw_fail(struct json_writer *w, enum st_rc rc);     /* a caller's error: jw_end returns it */
enum st_rc jw_end(struct json_writer *w);              /* the final '}' */
/* jw_end for a writer begun on an empty buf of the caller's (a job
 * payload's): on success the text and its NUL are copied into out, which
 * holds the buf's max + 1 bytes; the buf is released either way. */
enum st_rc jw_end_copy(struct json_writer *w, char *out);

#endif
