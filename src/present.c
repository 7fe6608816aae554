/* present.c — see present.h. */
#include "present.h"

#include <stdio.h>

#include "clock.h"
#include "intent.h"
#include "banned.h"

json_t *present_amount(int64_t base_units)
{
	char s[24];

	snprintf(s, sizeof(s), "%lld", (long long)base_units);
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

json_t *present_intent(const struct intent *it)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:o, s:o, s:o, s:o}", "id", it->id,
			 "kind", it->kind, "status", intent_status_str(it->status), "wallet", it->wallet,
			 "amount", present_amount(it->amount), "tx_hash", present_opt_str(it->tx_hash),
			 "hold_id", it->hold_id, "ledger_tx_id", present_opt_str(it->ledger_tx_id),
			 "failure_reason", present_opt_str(it->failure_reason), "created_at",
			 present_time(it->created_at), "updated_at", present_time(it->updated_at));
}
