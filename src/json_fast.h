/* json_fast.h — a request body's JSON parsed without jansson's lexer, for
 * the plain shapes request bodies have.
 *
 * json_fast_load(p, n) returns what json_loadb(p, n, JSON_REJECT_DUPLICATES)
 * returns for an object whose strings are printable ASCII without escapes,
 * whose numbers are integers of at most 18 digits, nested at most
 * JSON_FAST_MAX_DEPTH deep, with no key twice in an object: the same tree,
 * members in the same order. For anything else it returns NULL and the
 * caller asks jansson, which also words any error; so it never accepts
 * what jansson refuses. The caller owns the result (json_decref).
 *
 * Why: jansson reads a byte at a time through its stream layer and decodes
 * UTF-8 as it goes, ~200 instructions a byte of a webhook delivery (22k of
 * the HTTP thread's ~99k); every JSON route parses its body. */
#ifndef SETTLED_JSON_FAST_H
#define SETTLED_JSON_FAST_H

#include <jansson.h>
#include <stddef.h>

#define JSON_FAST_MAX_DEPTH 16

json_t *json_fast_load(const char *p, size_t n);

#endif
