/* present.h — how API responses show values: the one place that decides
 * that amounts are JSON strings of base units, times are RFC 3339 UTC with
 * milliseconds (or null when unset) and absent text is null. Every route
 * that shows an intent shows it through present_intent(), so the shape
 * cannot drift between the claim, v2 and payout routes.
 *
 * The json_t forms return new jansson references (NULL on ENOMEM), ready
 * for the reference-stealing "o" format of json_pack; the jw_ forms write
 * the same member into a json_writer (json_out.h), for the write paths. */
#ifndef SETTLED_PRESENT_H
#define SETTLED_PRESENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"

#include "json_out.h"

struct intent;

json_t *present_amount(int64_t base_units);   /* "1234" */
json_t *present_time(int64_t ms);             /* "2026-11-25T18:55:28.123Z"; null when ms <= 0 */
json_t *present_opt_str(const char *s);       /* null for NULL or "" */
json_t *present_intent(const struct intent *it);

/* The 201 of POST /api/register, {"id":..,"wallet":..,"referrer":..,
 * "created_at":..}, the bytes the json_writer would write (jw_str, jw_time;
 * referrer NULL: null), put together straight into out (appended): it is
 * drawn on the store's one writer thread, once a registration. Only when
 * id, wallet and referrer are short and plain (letters, digits, '_', '-',
 * '.': nothing any escaping changes) and created_at > 0; else false and
 * out is untouched, and the caller writes it through a json_writer. */
bool present_registered(struct buf *out, const char *id, const char *wallet, const char *referrer,
			int64_t created_at);

void jw_amount(struct json_writer *w, const char *key, int64_t base_units);
void jw_time(struct json_writer *w, const char *key, int64_t ms);
void jw_opt_str(struct json_writer *w, const char *key, const char *s);
/* The intent's members, inside an object the caller opened (so that it can
 * add its own, as claim/prepare adds expires_at). present_intent builds the
 * same members as a tree: both walk one table in present.c, so the shape is
 * written down once. */
void jw_intent_members(struct json_writer *w, const struct intent *it);

#endif
