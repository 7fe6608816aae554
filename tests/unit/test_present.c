/* test_present.c — how answers show values (present.h). The intent's shape
 * is pinned here field by field: every route that shows an intent goes
 * through jw_intent_members or present_intent, which walk one table. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "intent.h"
#include "json_out.h"
#include "present.h"

#include "banned.h"

static void intent_text(const struct intent *it, struct buf *out)
{
	json_t *v = present_intent(it);

	cr_assert_not_null(v);
	cr_assert_eq(json_out(out, v), ST_OK);
	json_decref(v);
}

Test(present, a_new_claim_intent)
{
	struct intent it = { .id = "int_0001", .kind = "claim", .wallet = "0xabc", .amount = 1500,
			     .status = INTENT_PENDING, .hold_id = "hold_0001",
			     .created_at = 1795654486123, .updated_at = 1795654486123 };
	struct buf out = BUF_INIT(1 << 16);

	intent_text(&it, &out);
	cr_assert_str_eq(out.ptr, "{\"id\":\"int_0001\",\"kind\":\"claim\",\"status\":\"PENDING\","
				  "\"wallet\":\"0xabc\",\"amount\":\"1500\",\"tx_hash\":null,"
				  "\"hold_id\":\"hold_0001\",\"ledger_tx_id\":null,\"failure_reason\":null,"
				  "\"created_at\":\"2026-11-26T00:54:46.123Z\","
				  "\"updated_at\":\"2026-11-26T00:54:46.123Z\"}");
	buf_release(&out);
}

Test(present, a_failed_intent_shows_every_field)
{
	struct intent it = { .id = "int_2", .kind = "claim", .wallet = "0xdef", .amount = 9,
			     .status = INTENT_FAILED, .tx_hash = "0xfeed", .hold_id = "hold_2",
			     .ledger_tx_id = "ltx_2", .failure_reason = "rail said \"no\"",
			     .created_at = 1000, .updated_at = 0 };
	struct buf out = BUF_INIT(1 << 16);

	intent_text(&it, &out);
	cr_assert_str_eq(out.ptr, "{\"id\":\"int_2\",\"kind\":\"claim\",\"status\":\"FAILED\","
				  "\"wallet\":\"0xdef\",\"amount\":\"9\",\"tx_hash\":\"0xfeed\","
				  "\"hold_id\":\"hold_2\",\"ledger_tx_id\":\"ltx_2\","
				  "\"failure_reason\":\"rail said \\\"no\\\"\","
				  "\"created_at\":\"1970-01-01T00:00:01.000Z\",\"updated_at\":null}");
	buf_release(&out);
}

Test(present, members_written_into_a_larger_answer)
{
	struct intent it = { .id = "int_3", .kind = "claim", .wallet = "0x1", .amount = 1,
			     .status = INTENT_PENDING, .hold_id = "h", .created_at = 1, .updated_at = 1 };
	struct buf out = BUF_INIT(1 << 16), alone = BUF_INIT(1 << 16);
	struct json_writer w;

	jw_begin(&w, &out);
	jw_intent_members(&w, &it);
	jw_time(&w, "expires_at", 2000);
	cr_assert_eq(jw_end(&w), ST_OK);
	intent_text(&it, &alone);
	/* the intent's text with one more member before its closing brace */
	cr_assert_eq(out.len, alone.len + strlen(",\"expires_at\":\"1970-01-01T00:00:02.000Z\""));
	cr_assert_eq(memcmp(out.ptr, alone.ptr, alone.len - 1), 0);
	cr_assert_str_eq(out.ptr + alone.len - 1, ",\"expires_at\":\"1970-01-01T00:00:02.000Z\"}");
	buf_release(&out);
	buf_release(&alone);
}

Test(present, amounts_are_strings_of_base_units)
{
	static const struct {
		int64_t v;
		const char *want;
	} cases[] = { { 0, "0" }, { 1, "1" }, { 100, "100" }, { INT64_MAX, "9223372036854775807" },
		      { -5, "-5" } };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *v = present_amount(cases[i].v);
		struct buf out = BUF_INIT(64);
		struct json_writer w;
		char want[64];

		cr_assert_str_eq(json_string_value(v), cases[i].want);
		json_decref(v);
		/* the writer form says the same */
		jw_begin(&w, &out);
		jw_amount(&w, "a", cases[i].v);
		cr_assert_eq(jw_end(&w), ST_OK);
		snprintf(want, sizeof(want), "{\"a\":\"%s\"}", cases[i].want);
		cr_assert_str_eq(out.ptr, want);
		buf_release(&out);
	}
}

/* The tree and the writer say the same bytes for every status, with every
 * optional member set or empty. */
Test(present, the_tree_and_the_writer_agree)
{
	for (int st = INTENT_PENDING; st <= INTENT_FAILED; st++) {
		for (int set = 0; set < 2; set++) {
			struct intent it = { .id = "int_9", .kind = "payout", .wallet = "0x9",
					     .amount = INT64_MAX, .status = (enum intent_status)st,
					     .hold_id = "hold_9", .created_at = 5, .updated_at = set ? 7 : 0 };
			struct buf tree = BUF_INIT(1 << 16), text = BUF_INIT(1 << 16);
			struct json_writer w;

			if (set) {
				snprintf(it.tx_hash, sizeof(it.tx_hash), "0xab");
				snprintf(it.ledger_tx_id, sizeof(it.ledger_tx_id), "ltx_9");
				snprintf(it.failure_reason, sizeof(it.failure_reason), "%s", "\x01 \"why\" \xc3\xa9");
			}
			intent_text(&it, &tree);
			jw_begin(&w, &text);
			jw_intent_members(&w, &it);
			cr_assert_eq(jw_end(&w), ST_OK);
			cr_assert_str_eq(tree.ptr, text.ptr);
			buf_release(&tree);
			buf_release(&text);
		}
	}
}

/* ---- the 201 of POST /api/register ---- */

/* What register_answer wrote before present_registered: the json_writer. */
static void registered_by_writer(struct buf *out, const char *id, const char *wallet,
				 const char *referrer, int64_t created_at)
{
	struct json_writer w;

	jw_begin(&w, out);
	jw_str(&w, "id", id);
	jw_str(&w, "wallet", wallet);
	jw_str(&w, "referrer", referrer);
	jw_time(&w, "created_at", created_at);
	cr_assert_eq(jw_end(&w), ST_OK);
}

Test(present, registered_is_the_writers_bytes)
{
	static const char *const ids[] = { "acct_0192a3b4c5d6e7f8a9b0c1d2", "acct_", "a", "A-Z_a.z-09" };
	static const char *const wallets[] = { "0x00000000000000000000000000000000000000ab",
					       "0xffffffffffffffffffffffffffffffffffffffff" };
	static const int64_t times[] = { 1, 999, 1700000000000, INT64_C(1796679159123),
					 INT64_C(253402300799999) };
	int checked = 0;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		for (size_t k = 0; k < sizeof(wallets) / sizeof(wallets[0]); k++)
			for (int r = 0; r < 3; r++)
				for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
					const char *ref = r == 0 ? NULL : wallets[(k + r) % 2];
					struct buf fast = BUF_INIT(1 << 20), slow = BUF_INIT(1 << 20);

					cr_assert(present_registered(&fast, ids[i], wallets[k], ref, times[t]));
					registered_by_writer(&slow, ids[i], wallets[k], ref, times[t]);
					cr_assert_eq(fast.len, slow.len);
					cr_assert_str_eq(fast.ptr, slow.ptr);
					buf_release(&fast);
					buf_release(&slow);
					checked++;
				}
	cr_assert_eq(checked, 4 * 2 * 3 * 5);
}

Test(present, registered_leaves_what_needs_escaping_or_no_time_to_the_writer)
{
	static const char *const bad[] = { "a\"b", "a\\b", "a/b", "a b", "\x01", "\xc3\xa9",
					   "0123456789012345678901234567890123456789012345678901234567890123456789" };
	const char *w = "0x00000000000000000000000000000000000000ab";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct buf out = BUF_INIT(1 << 20);

		cr_assert(buf_append(&out, "x", 1) == ST_OK);
		cr_assert_not(present_registered(&out, bad[i], w, NULL, 1), "id %zu", i);
		cr_assert_not(present_registered(&out, "acct_1", bad[i], NULL, 1), "wallet %zu", i);
		cr_assert_not(present_registered(&out, "acct_1", w, bad[i], 1), "referrer %zu", i);
		cr_assert_eq(out.len, 1);
		cr_assert_str_eq(out.ptr, "x");
		buf_release(&out);
	}
	{
		struct buf out = BUF_INIT(1 << 20);

		cr_assert_not(present_registered(&out, "acct_1", w, NULL, 0));
		cr_assert_not(present_registered(&out, "acct_1", w, NULL, -5));
		cr_assert_eq(out.len, 0);
		buf_release(&out);
	}
}
