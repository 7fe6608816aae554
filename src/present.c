/* present.c — see present.h. */
#include "present.h"

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

void jw_intent_members(struct json_writer *w, const struct intent *it)
{
	jw_str(w, "id", it->id);
	jw_str(w, "kind", it->kind);
	jw_str(w, "status", intent_status_str(it->status));
	jw_str(w, "wallet", it->wallet);
	jw_amount(w, "amount", it->amount);
	jw_opt_str(w, "tx_hash", it->tx_hash);
	jw_str(w, "hold_id", it->hold_id);
	jw_opt_str(w, "ledger_tx_id", it->ledger_tx_id);
	jw_opt_str(w, "failure_reason", it->failure_reason);
	jw_time(w, "created_at", it->created_at);
	jw_time(w, "updated_at", it->updated_at);
}

json_t *present_intent(const struct intent *it)
{
	struct buf text = BUF_INIT(1 << 20);
	struct json_writer w;
	json_t *v = NULL;

	jw_begin(&w, &text);
	jw_intent_members(&w, it);
	if (jw_end(&w) == ST_OK)
		v = json_loadb(text.ptr, text.len, 0, NULL);
	buf_release(&text);
	return v;
}
