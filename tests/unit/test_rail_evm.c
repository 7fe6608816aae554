/* test_rail_evm.c — the evm rail's exact arithmetic and verification rules
 * (rail_evm.h), and provider labels (rpc_pool.h). The same rules against a
 * real chain: tests/integration/test_evm_rail.py. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "rail_evm.h"
#include "rpc_pool.h"

#define WALLET "0x1111111111111111111111111111111111111111"
#define OTHER "0x2222222222222222222222222222222222222222"
#define TOKEN "0x3333333333333333333333333333333333333333"
#define TOPIC "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

static void dec(const char *hex, const char *want)
{
	struct u256 v;
	char out[80];

	cr_assert_eq(u256_from_hex(hex, &v), ST_OK, "%s", hex);
	u256_dec(&v, out);
	cr_assert_str_eq(out, want, "%s", hex);
}

Test(u256, parses_quantities_and_data_words_exactly)
{
	struct u256 v;
	char h[80];

	dec("0x0", "0");
	dec("0x1", "1");
	dec("0xde0b6b3a7640000", "1000000000000000000");
	dec("0x00000000000000000000000000000000000000000000000000000000000f4240", "1000000");
	dec("0xFFFFFFFFFFFFFFFF", "18446744073709551615");
	dec("0x10000000000000000", "18446744073709551616");
	/* 2^256 - 1: the largest */
	memset(h, 'f', sizeof(h));
	h[0] = '0';
	h[1] = 'x';
	h[66] = '\0';
	dec(h, "115792089237316195423570985008687907853269984665640564039457584007913129639935");
	/* 65 digits with a leading zero still fit; 65 significant ones do not */
	h[66] = 'f';
	h[67] = '\0';
	h[2] = '1';
	cr_assert_eq(u256_from_hex(h, &v), ST_TOO_LARGE);
	h[2] = '0';
	cr_assert_eq(u256_from_hex(h, &v), ST_OK);
}

Test(u256, refuses_malformed_quantities)
{
	const char *bad[] = { "", "0x", "1", "0xg", "0x 1", "x1", "0x1 ", "-0x1", "0x-1", NULL };
	struct u256 v;

	for (int i = 0; bad[i]; i++)
		cr_assert_eq(u256_from_hex(bad[i], &v), ST_INVALID, "%s", bad[i]);
	cr_assert_eq(u256_from_hex(NULL, &v), ST_INVALID);
}

Test(u256, scales_by_powers_of_ten_without_overflow)
{
	struct u256 v, w;
	char out[80];

	cr_assert_eq(u256_scaled(1234, 4, &v), ST_OK);
	u256_dec(&v, out);
	cr_assert_str_eq(out, "12340000");
	cr_assert_eq(u256_scaled(INT64_MAX, 58, &v), ST_OK, "the largest SETTLED_EVM_DECIMALS fits");
	u256_dec(&v, out);
	cr_assert_str_eq(out, "92233720368547758070000000000000000000000000000000000000000000000000000000000");
	cr_assert_eq(u256_scaled(INT64_MAX, 59, &v), ST_TOO_LARGE);
	cr_assert_eq(u256_scaled(-1, 0, &v), ST_INVALID);
	cr_assert_eq(u256_scaled(1, 18, &v), ST_OK);
	cr_assert_eq(u256_from_hex("0xde0b6b3a7640000", &w), ST_OK);
	cr_assert_eq(u256_cmp(&v, &w), 0);
	cr_assert_eq(u256_from_hex("0xde0b6b3a7640001", &w), ST_OK);
	cr_assert_eq(u256_cmp(&v, &w), -1, "one wei more is another amount");
	cr_assert_eq(u256_cmp(&w, &v), 1);
}

/* ---- verification ---- */

static json_t *native_tx(const char *to, const char *value, const char *chain)
{
	json_t *tx = json_pack("{s:s, s:s}", "hash", "0xaa", "value", value);

	json_object_set_new(tx, "to", to ? json_string(to) : json_null());
	if (chain)
		json_object_set_new(tx, "chainId", json_string(chain));
	return tx;
}

static json_t *receipt(const char *status, json_t *logs)
{
	return json_pack("{s:s, s:o}", "status", status, "logs", logs ? logs : json_array());
}

static char *word_of(const char *addr)
{
	static char w[80];

	snprintf(w, sizeof(w), "0x000000000000000000000000%s", addr + 2);
	return w;
}

static json_t *transfer_log(const char *token, const char *to, const char *data)
{
	char from[80], too[80];

	snprintf(from, sizeof(from), "%s", word_of(OTHER));
	snprintf(too, sizeof(too), "%s", word_of(to));
	return json_pack("{s:s, s:[s, s, s], s:s}", "address", token, "topics", TOPIC, from, too, "data",
			 data);
}

static void expect(struct evm_expect *e, int64_t amount, unsigned decimals, const char *token)
{
	memset(e, 0, sizeof(*e));
	e->chain_id = 31337;
	e->wallet = WALLET;
	e->token = token;
	cr_assert_eq(u256_scaled(amount, decimals, &e->value), ST_OK);
}

static const char *verdict(const struct evm_expect *e, json_t *tx, json_t *rc)
{
	struct buf why = BUF_INIT(512);
	const char *reason = NULL;
	enum rail_result v = rail_evm_verify(e, tx, rc, &reason, &why);

	json_decref(tx);
	json_decref(rc);
	buf_release(&why);
	if (v == RAIL_CONFIRMED) {
		cr_assert_null(reason);
		return "confirmed";
	}
	cr_assert_eq(v, RAIL_REJECTED);
	cr_assert_not_null(reason);
	return reason;
}

Test(rail_evm, native_rules)
{
	struct evm_expect e;

	expect(&e, 1500, 9, NULL); /* 1500 gwei */
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0x15d3ef79800", NULL), receipt("0x1", NULL)),
			 "confirmed");
	cr_assert_str_eq(verdict(&e, native_tx("0x1111111111111111111111111111111111111111",
					       "0x15d3ef79800", "0x7a69"), receipt("0x1", NULL)),
			 "confirmed", "the configured chain id");
	cr_assert_str_eq(verdict(&e, native_tx(OTHER, "0x15d3ef79800", NULL), receipt("0x1", NULL)),
			 "evm_wrong_recipient");
	cr_assert_str_eq(verdict(&e, native_tx(NULL, "0x15d3ef79800", NULL), receipt("0x1", NULL)),
			 "evm_wrong_recipient", "a contract creation pays no one");
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0x15d3ef79801", NULL), receipt("0x1", NULL)),
			 "evm_wrong_amount", "one wei more");
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0x15d3ef797ff", NULL), receipt("0x1", NULL)),
			 "evm_wrong_amount", "one wei less");
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0x15d3ef79800", NULL), receipt("0x0", NULL)),
			 "evm_tx_failed");
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0x15d3ef79800", "0x1"), receipt("0x1", NULL)),
			 "evm_wrong_chain");
	cr_assert_str_eq(verdict(&e, native_tx(OTHER, "0x1", "0x1"), receipt("0x0", NULL)),
			 "evm_wrong_chain", "the chain is checked first");
}

Test(rail_evm, token_rules)
{
	struct evm_expect e;
	const char *amt = "0x0000000000000000000000000000000000000000000000000000000000bc4b20"; /* 12340000 */
	const char *less = "0x0000000000000000000000000000000000000000000000000000000000bc4b1f";

	expect(&e, 1234, 4, TOKEN);
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x1", json_pack("[o]", transfer_log(TOKEN, WALLET, amt)))),
			 "confirmed");
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x1", json_pack("[o, o]", transfer_log(TOKEN, OTHER, amt),
							  transfer_log(TOKEN, WALLET, amt)))),
			 "confirmed", "one of several transfers pays the wallet");
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x1", json_pack("[o]", transfer_log(TOKEN, OTHER, amt)))),
			 "evm_wrong_recipient");
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x1", json_pack("[o]", transfer_log(TOKEN, WALLET, less)))),
			 "evm_wrong_amount");
	cr_assert_str_eq(verdict(&e, native_tx(OTHER, "0x0", NULL),
				 receipt("0x1", json_pack("[o]", transfer_log(OTHER, WALLET, amt)))),
			 "evm_wrong_token");
	cr_assert_str_eq(verdict(&e, native_tx(WALLET, "0xbc4b20", NULL), receipt("0x1", NULL)),
			 "evm_wrong_token", "native value does not pay a token claim");
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x0", json_pack("[o]", transfer_log(TOKEN, WALLET, amt)))),
			 "evm_tx_failed");
	cr_assert_str_eq(verdict(&e, native_tx(TOKEN, "0x0", NULL),
				 receipt("0x1", json_pack("[o]", transfer_log("0x3333333333333333333333333333333333333333",
									       WALLET, "0x1")))),
			 "evm_wrong_amount", "a Transfer's data is one 32-byte word");
}

Test(rpc_pool, labels_never_carry_path_query_or_userinfo)
{
	char l[RPC_LABEL_MAX];

	rpc_provider_label("https://mainnet.example.io/v3/SECRETKEY", 0, l);
	cr_assert_str_eq(l, "rpc0@mainnet.example.io");
	rpc_provider_label("http://user:pass@127.0.0.1:8545/rpc?apikey=SECRET", 2, l);
	cr_assert_str_eq(l, "rpc2@127.0.0.1:8545");
	rpc_provider_label("https://[::1]:9/x#frag", 1, l);
	cr_assert_null(strstr(l, "x#"));
	cr_assert_null(strstr(l, "SECRET"));
	rpc_provider_label("not a url", 3, l);
	cr_assert_str_eq(l, "rpc3");
}
