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

#include "buf.h"

#define JSON_OUT_MAX_DEPTH 64

/* Appends v's text to out. ST_INVALID when v nests deeper than
 * JSON_OUT_MAX_DEPTH (a loop), the buf's error when it is full; out is
 * then left as it was. */
enum st_rc json_out(struct buf *out, const json_t *v);

#endif
