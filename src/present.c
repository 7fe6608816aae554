/* present.c — see present.h. */
#include "present.h"

#include <stddef.h>
#include <string.h>

#include "clock.h"
#include "fmt.h"
#include "intent.h"
#include "banned.h"

json_t *present_amount(int64_t base_units)
{
	char s[FMT_I64_LEN];

	fmt_i64(s, base_units);
	return json_string(s);
}

json_t *present_time(int64_t ms)
{
	char t[RFC3339_LEN];

	if (ms <= 0)
		return json_null();
	format_rfc3339(ms, t);
	return json_string(t);
}

json_t *present_opt_str(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

#define REGISTERED_TEXT_MAX 64 /* id, wallet, referrer: longer ones take the writer */

/* Appends s (plain, REGISTERED_TEXT_MAX at most) quoted; false when it is
 * not both. */
static bool put_plain(char **p, const char *s)
{
	size_t n = 0;

	for (; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];

		if (n == REGISTERED_TEXT_MAX ||
		    !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	*(*p)++ = '"';
	memcpy(*p, s, n);
	*p += n;
	*(*p)++ = '"';
	return true;
}

bool present_registered(struct buf *out, const char *id, const char *wallet, const char *referrer,
			int64_t created_at)
{
	char text[3 * (REGISTERED_TEXT_MAX + 2) + RFC3339_LEN + 64], t[RFC3339_LEN];
	char *p = stpcpy(text, "{\"id\":");

	if (created_at <= 0 || !put_plain(&p, id))
		return false;
	p = stpcpy(p, ",\"wallet\":");
	if (!put_plain(&p, wallet))
		return false;
	p = stpcpy(p, ",\"referrer\":");
	if (!referrer)
		p = stpcpy(p, "null");
	else if (!put_plain(&p, referrer))
		return false;
	format_rfc3339(created_at, t);
	p = stpcpy(p, ",\"created_at\":\"");
	p = stpcpy(p, t);
	p = stpcpy(p, "\"}");
	return buf_append(out, text, (size_t)(p - text)) == ST_OK;
}

void jw_amount(struct json_writer *w, const char *key, int64_t base_units)
{
	char s[FMT_I64_LEN];

	fmt_i64(s, base_units);
	jw_str(w, key, s);
}

void jw_time(struct json_writer *w, const char *key, int64_t ms)
{
	char t[RFC3339_LEN];

	if (ms <= 0) {
		jw_null(w, key);
		return;
	}
	format_rfc3339(ms, t);
	jw_str(w, key, t);
}

void jw_opt_str(struct json_writer *w, const char *key, const char *s)
{
	jw_str(w, key, s && *s ? s : NULL);
}

/* ---- the intent's shape -------------------------------------------------- */

/* How a member of an intent is shown. */
enum shown { SHOW_STR, SHOW_OPT_STR, SHOW_AMOUNT, SHOW_STATUS, SHOW_TIME };

/* The shape, written down once: the writer (jw_intent_members) and the
 * tree (present_intent) both walk this table, so the two cannot drift and
 * the tree needs no text to be parsed back from. */
static const struct member {
	const char *key;
	enum shown how;
	size_t off; /* in struct intent */
} intent_shape[] = {
	{ "id", SHOW_STR, offsetof(struct intent, id) },
	{ "kind", SHOW_STR, offsetof(struct intent, kind) },
	{ "status", SHOW_STATUS, offsetof(struct intent, status) },
	{ "wallet", SHOW_STR, offsetof(struct intent, wallet) },
	{ "amount", SHOW_AMOUNT, offsetof(struct intent, amount) },
	{ "tx_hash", SHOW_OPT_STR, offsetof(struct intent, tx_hash) },
	{ "hold_id", SHOW_STR, offsetof(struct intent, hold_id) },
	{ "ledger_tx_id", SHOW_OPT_STR, offsetof(struct intent, ledger_tx_id) },
	{ "failure_reason", SHOW_OPT_STR, offsetof(struct intent, failure_reason) },
	{ "created_at", SHOW_TIME, offsetof(struct intent, created_at) },
	{ "updated_at", SHOW_TIME, offsetof(struct intent, updated_at) },
};

#define N_SHAPE (sizeof(intent_shape) / sizeof(intent_shape[0]))

static const char *text_at(const struct intent *it, const struct member *m)
{
	return (const char *)it + m->off;
}

static int64_t i64_at(const struct intent *it, const struct member *m)
{
	int64_t v;

	memcpy(&v, (const char *)it + m->off, sizeof(v));
	return v;
}

void jw_intent_members(struct json_writer *w, const struct intent *it)
{
	for (size_t i = 0; i < N_SHAPE; i++) {
		const struct member *m = &intent_shape[i];

		switch (m->how) {
		case SHOW_STR:
			jw_str(w, m->key, text_at(it, m));
			break;
		case SHOW_OPT_STR:
			jw_opt_str(w, m->key, text_at(it, m));
			break;
		case SHOW_AMOUNT:
			jw_amount(w, m->key, i64_at(it, m));
			break;
		case SHOW_STATUS:
			jw_str(w, m->key, intent_status_str(it->status));
			break;
		case SHOW_TIME:
			jw_time(w, m->key, i64_at(it, m));
			break;
		}
	}
}

json_t *present_intent(const struct intent *it)
{
	json_t *o = json_object();

	for (size_t i = 0; o && i < N_SHAPE; i++) {
		const struct member *m = &intent_shape[i];
		json_t *v = NULL;

		switch (m->how) {
		case SHOW_STR:
			v = json_string(text_at(it, m));
			break;
		case SHOW_OPT_STR:
			v = present_opt_str(text_at(it, m));
			break;
		case SHOW_AMOUNT:
			v = present_amount(i64_at(it, m));
			break;
		case SHOW_STATUS:
			v = json_string(intent_status_str(it->status));
			break;
		case SHOW_TIME:
			v = present_time(i64_at(it, m));
			break;
		}
		/* json_object_set_new takes v even when it fails. */
		if (!v || json_object_set_new(o, m->key, v)) {
			json_decref(o);
			o = NULL;
		}
	}
	return o;
}
