/* json_out.h — compact JSON text of a jansson value, appended to a buf.
 *
 * Byte for byte what json_dumps(v, JSON_COMPACT) writes (tests/unit/
 * test_json_out.c compares the two on random values), without its cost:
 * jansson 2.14 guards every object and array against reference loops by
 * formatting the node's address with snprintf("%p") into a hashtable, and
 * builds the text in a strbuffer that is then copied once more. callgrind
 * put json_dumps at ~14,000 instructions for a 200-byte response, a tenth
 * of a registration. Values here are trees built by settled itself, so a
 * depth limit replaces the loop check. */
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

/* An object written member by member straight into a buf: the answers of
 * the write paths, which run inside the single writer's transaction, where
 * building a jansson tree only to serialise it was ~11,000 instructions of
 * a registration's ~50,000. The bytes are json_out's for the same members
 * in the same order. Errors stick (the calls after one do nothing) and
 * jw_end reports the first, leaving out as it was before jw_begin. */
struct json_writer {
	struct buf *out;
	size_t start;
	enum st_rc rc;
	int depth;
	bool more[JSON_OUT_MAX_DEPTH]; /* a member already written at depth */
};

void jw_begin(struct json_writer *w, struct buf *out); /* '{' */
void jw_str(struct json_writer *w, const char *key, const char *v); /* null when v is NULL */
void jw_i64(struct json_writer *w, const char *key, int64_t v);
void jw_null(struct json_writer *w, const char *key);
void jw_bool(struct json_writer *w, const char *key, bool v);
void jw_object(struct json_writer *w, const char *key); /* opens "key":{ */
void jw_close(struct json_writer *w);                   /* closes it */
enum st_rc jw_end(struct json_writer *w);              /* the final '}' */

#endif
