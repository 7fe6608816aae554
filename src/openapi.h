/* openapi.h — the OpenAPI document of every route (docs/openapi.json),
 * embedded at build time by scripts/embed-openapi into $(BUILD)/openapi.c
 * and served by GET /api/docs/openapi.json (routes_ops.c).
 * tests/integration/test_openapi.py keeps it in step with src/route_table.c. */
#ifndef SETTLED_OPENAPI_H
#define SETTLED_OPENAPI_H

#include <stddef.h>

/* The document's bytes (UTF-8 JSON, not NUL-terminated) and their count. */
extern const unsigned char settled_openapi_json[];
extern const size_t settled_openapi_json_len;

#endif
