/* rail_evm.c — the `evm` rail (see rail_evm.h).
 *
 * One check is at most two provider calls: a batch of
 * eth_getTransactionReceipt + eth_getTransactionByHash + eth_blockNumber
 * (one round trip, one provider, so the three agree), and, once the
 * transaction has its confirmations, eth_getBlockByNumber at the receipt's
 * height to see that the receipt's block is still the canonical one there.
 * The content (chain, status, recipient, amount) is verified only then, so
 * a verdict is never given on a receipt a reorg could still replace. */
#include "rail_evm.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "hex.h"
#include "rpc_pool.h"
#include "banned.h"

/* keccak256("Transfer(address,address,uint256)") */
#define TRANSFER_TOPIC "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

/* ---- 256-bit numbers ---- */

enum st_rc u256_from_hex(const char *s, struct u256 *out)
{
	size_t n, i;

	memset(out, 0, sizeof(*out));
	if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || !s[2])
		return ST_INVALID;
	s += 2;
	if (!hex_all(s, strlen(s)))
		return ST_INVALID;
	while (*s == '0' && s[1])
		s++;
	n = strlen(s);
	if (n > 64)
		return ST_TOO_LARGE;
	for (i = 0; i < n; i++) {
		size_t bit = (n - 1 - i) * 4; /* of the digit s[i] */

		out->w[bit / 64] |= (uint64_t)hex_digit(s[i]) << (bit % 64);
	}
	return ST_OK;
}

static bool u256_mul10(struct u256 *a)
{
	unsigned __int128 carry = 0;

	for (int i = 0; i < 4; i++) {
		unsigned __int128 v = (unsigned __int128)a->w[i] * 10 + carry;

		a->w[i] = (uint64_t)v;
		carry = v >> 64;
	}
	return carry == 0;
}

enum st_rc u256_scaled(int64_t amount, unsigned decimals, struct u256 *out)
{
	memset(out, 0, sizeof(*out));
	if (amount < 0)
		return ST_INVALID;
	out->w[0] = (uint64_t)amount;
	for (unsigned i = 0; i < decimals; i++)
		if (!u256_mul10(out))
			return ST_TOO_LARGE;
	return ST_OK;
}

int u256_cmp(const struct u256 *a, const struct u256 *b)
{
	for (int i = 3; i >= 0; i--)
		if (a->w[i] != b->w[i])
			return a->w[i] < b->w[i] ? -1 : 1;
	return 0;
}

void u256_dec(const struct u256 *a, char out[80])
{
	struct u256 v = *a;
	char tmp[80];
	size_t n = 0;
	bool zero;

	do {
		unsigned __int128 rem = 0;

		for (int i = 3; i >= 0; i--) {
			unsigned __int128 cur = (rem << 64) | v.w[i];

			v.w[i] = (uint64_t)(cur / 10);
			rem = cur % 10;
		}
		tmp[n++] = (char)('0' + (int)rem);
		zero = !v.w[0] && !v.w[1] && !v.w[2] && !v.w[3];
	} while (!zero && n < 79);
	for (size_t i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n] = '\0';
}

/* ---- small JSON helpers ---- */

static const char *str_of(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A QUANTITY that fits 64 bits. */
static bool u64_of(const json_t *o, const char *key, uint64_t *out)
{
	struct u256 v;

	if (u256_from_hex(str_of(o, key), &v) || v.w[1] || v.w[2] || v.w[3])
		return false;
	*out = v.w[0];
	return true;
}

static bool is_hex_of(const char *s, size_t digits)
{
	return s && strlen(s) == digits + 2 && s[0] == '0' && s[1] == 'x' && hex_all(s + 2, digits);
}

/* An address as a log topic: 12 zero bytes then the address. */
static bool topic_is_address(const char *topic, const char *addr)
{
	return is_hex_of(topic, 64) && !strncmp(topic + 2, "000000000000000000000000", 24) &&
	       !strcasecmp(topic + 26, addr + 2);
}

/* ---- verification ---- */

static enum rail_result reject(const char **reason, const char *code, struct buf *why,
			       const char *fmt, const char *a, const char *b)
{
	*reason = code;
	buf_printf(why, fmt, a, b);
	return RAIL_REJECTED;
}

static enum rail_result verify_token(const struct evm_expect *e, const json_t *receipt,
				     const char **reason, struct buf *why)
{
	const json_t *logs = json_object_get(receipt, "logs"), *lg;
	bool other_token = false, other_recipient = false, other_amount = false;
	char got[80] = "", want[80];
	size_t i;

	json_array_foreach(logs, i, lg) {
		const json_t *topics = json_object_get(lg, "topics");
		const char *addr = str_of(lg, "address");
		struct u256 v;

		const char *t0 = json_string_value(json_array_get(topics, 0));

		if (json_array_size(topics) != 3 || !t0 || strcasecmp(t0, TRANSFER_TOPIC))
			continue;
		if (!addr || strcasecmp(addr, e->token)) {
			other_token = true;
			continue;
		}
		if (!topic_is_address(json_string_value(json_array_get(topics, 2)), e->wallet)) {
			other_recipient = true;
			continue;
		}
		if (!is_hex_of(str_of(lg, "data"), 64) || u256_from_hex(str_of(lg, "data"), &v)) {
			other_amount = true;
			continue;
		}
		if (!u256_cmp(&v, &e->value))
			return RAIL_CONFIRMED;
		other_amount = true;
		u256_dec(&v, got);
	}
	u256_dec(&e->value, want);
	if (other_amount)
		return reject(reason, "evm_wrong_amount", why,
			      "the token Transfer to the wallet is of %s units, not %s", got, want);
	if (other_recipient)
		return reject(reason, "evm_wrong_recipient", why,
			      "the token Transfer pays another address%s%s", "", "");
	if (other_token)
		return reject(reason, "evm_wrong_token", why,
			      "a Transfer of another token contract, not %s%s", e->token, "");
	return reject(reason, "evm_wrong_token", why,
		      "no Transfer log of the token %s in the transaction%s", e->token, "");
}

enum rail_result rail_evm_verify(const struct evm_expect *e, const json_t *tx,
				 const json_t *receipt, const char **reason, struct buf *why)
{
	const char *status = str_of(receipt, "status"), *to = str_of(tx, "to");
	uint64_t chain;
	struct u256 v;
	char got[80], want[80];

	if (json_object_get(tx, "chainId") && u64_of(tx, "chainId", &chain) && chain != e->chain_id) {
		snprintf(got, sizeof(got), "%" PRIu64, chain);
		snprintf(want, sizeof(want), "%" PRIu64, e->chain_id);
		return reject(reason, "evm_wrong_chain", why,
			      "the transaction is for chain %s, not %s", got, want);
	}
	if (!status || strcmp(status, "0x1"))
		return reject(reason, "evm_tx_failed", why,
			      "the transaction failed on chain (receipt status %s)%s",
			      status ? status : "missing", "");
	if (e->token && e->token[0])
		return verify_token(e, receipt, reason, why);
	if (!to || strcasecmp(to, e->wallet))
		return reject(reason, "evm_wrong_recipient", why, "the transaction pays %s, not %s",
			      to ? to : "no one (contract creation)", e->wallet);
	if (u256_from_hex(str_of(tx, "value"), &v))
		return reject(reason, "evm_wrong_amount", why, "value %s is not a quantity%s",
			      str_of(tx, "value") ? str_of(tx, "value") : "missing", "");
	if (u256_cmp(&v, &e->value)) {
		u256_dec(&v, got);
		u256_dec(&e->value, want);
		return reject(reason, "evm_wrong_amount", why,
			      "the transaction pays %s, not %s (chain units)", got, want);
	}
	return RAIL_CONFIRMED;
}

/* ---- the rail ---- */

struct evm_rail {
	struct rail base;
	struct rpc_pool *pool;
	uint64_t chain_id;
	int confirmations;
	char token[43];     /* lower case; "" = native */
	unsigned decimals;
	int64_t poll_ms;
	atomic_long next_id;
};

static int64_t evm_confirm_delay(const struct rail *r)
{
	return ((const struct evm_rail *)r)->poll_ms;
}

/* The batch's answer, by id: 1 receipt, 2 transaction, 3 head. */
struct batch_view {
	long id0;
	const char *hash;
	const json_t *receipt, *tx;
	uint64_t head;
};

static const json_t *answer_of(const json_t *ans, long id)
{
	size_t i;
	const json_t *a;

	json_array_foreach(ans, i, a)
		if (json_integer_value(json_object_get(a, "id")) == id)
			return json_object_get(a, "result");
	return NULL;
}

/* The shapes the verification relies on; anything else is the provider's
 * fault (a malformed answer) and the pool fails over. */
static bool batch_valid(const json_t *ans, void *arg)
{
	struct batch_view *b = arg;
	const json_t *rc = answer_of(ans, b->id0), *tx = answer_of(ans, b->id0 + 1);
	const json_t *head = answer_of(ans, b->id0 + 2);
	struct u256 v;
	uint64_t n;

	if (!json_is_string(head) || u256_from_hex(json_string_value(head), &v) || v.w[1] || v.w[2] ||
	    v.w[3])
		return false;
	b->head = v.w[0];
	if (!json_is_null(tx)) {
		if (!json_is_object(tx) || !str_of(tx, "hash") || strcasecmp(str_of(tx, "hash"), b->hash))
			return false;
		if (!json_is_null(json_object_get(tx, "to")) && !is_hex_of(str_of(tx, "to"), 40))
			return false;
		if (u256_from_hex(str_of(tx, "value"), &v))
			return false;
	}
	if (!json_is_null(rc)) {
		const json_t *logs = json_object_get(rc, "logs");

		if (!json_is_object(rc) || json_is_null(tx) || !str_of(rc, "transactionHash") ||
		    strcasecmp(str_of(rc, "transactionHash"), b->hash) || !u64_of(rc, "blockNumber", &n) ||
		    !is_hex_of(str_of(rc, "blockHash"), 64) || !str_of(rc, "status") ||
		    !json_is_array(logs))
			return false;
	}
	b->receipt = rc;
	b->tx = tx;
	return true;
}

static bool block_valid(const json_t *ans, void *arg)
{
	const json_t *blk = json_object_get(ans, "result");

	(void)arg;
	return json_is_null(blk) || (json_is_object(blk) && is_hex_of(str_of(blk, "hash"), 64));
}

static json_t *rpc_req(struct evm_rail *e, long id, const char *method, json_t *params)
{
	(void)e;
	return json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id, "method",
			 method, "params", params);
}

static enum rail_result evm_check(struct rail *r, const struct rail_tx *t, const char **reason,
				  struct buf *why)
{
	struct evm_rail *e = (struct evm_rail *)r;
	long id = atomic_fetch_add(&e->next_id, 4);
	struct batch_view b = { .id0 = id, .hash = t->tx_hash };
	json_t *batch = json_array(), *ans = NULL, *bans = NULL, *breq;
	struct evm_expect want = { .chain_id = e->chain_id, .wallet = t->wallet, .token = e->token };
	enum rail_result v = RAIL_ERROR;
	uint64_t blk = 0;
	const char *bhash, *canon;
	char hexn[24];

	json_array_append_new(batch, rpc_req(e, id, "eth_getTransactionReceipt",
					     json_pack("[s]", t->tx_hash)));
	json_array_append_new(batch, rpc_req(e, id + 1, "eth_getTransactionByHash",
					     json_pack("[s]", t->tx_hash)));
	json_array_append_new(batch, rpc_req(e, id + 2, "eth_blockNumber", json_array()));
	if (rpc_pool_call(e->pool, "batch:receipt+tx+head", batch, batch_valid, &b, &ans, why))
		goto out;
	if (json_is_null(b.tx)) {
		*reason = "evm_tx_not_found";
		buf_printf(why, "no provider knows transaction %s", t->tx_hash);
		v = RAIL_PENDING;
		goto out;
	}
	if (json_is_null(b.receipt)) {
		*reason = "evm_not_confirmed";
		buf_printf(why, "transaction %s is not mined yet", t->tx_hash);
		v = RAIL_PENDING;
		goto out;
	}
	u64_of(b.receipt, "blockNumber", &blk);
	if (b.head < blk || b.head - blk + 1 < (uint64_t)e->confirmations) {
		*reason = "evm_not_confirmed";
		buf_printf(why, "transaction %s has %" PRIu64 " of %d confirmations", t->tx_hash,
			   b.head < blk ? 0 : b.head - blk + 1, e->confirmations);
		v = RAIL_PENDING;
		goto out;
	}
	/* Deep enough: is the receipt's block still the chain's block there? */
	snprintf(hexn, sizeof(hexn), "0x%" PRIx64, blk);
	breq = rpc_req(e, id + 3, "eth_getBlockByNumber", json_pack("[s, b]", hexn, 0));
	if (rpc_pool_call(e->pool, "eth_getBlockByNumber", breq, block_valid, NULL, &bans, why)) {
		json_decref(breq);
		goto out;
	}
	json_decref(breq);
	bhash = str_of(b.receipt, "blockHash");
	canon = str_of(json_object_get(bans, "result"), "hash");
	if (!canon || strcasecmp(canon, bhash)) {
		*reason = "evm_not_confirmed";
		buf_printf(why, "block %" PRIu64 " of transaction %s was reorganised away (now %s)", blk,
			   t->tx_hash, canon ? canon : "missing");
		v = RAIL_PENDING;
		goto out;
	}
	if (u256_scaled(t->amount, e->decimals, &want.value)) {
		buf_puts(why, "amount x 10^SETTLED_EVM_DECIMALS does not fit 256 bits");
		*reason = "evm_wrong_amount";
		v = RAIL_REJECTED;
		goto out;
	}
	v = rail_evm_verify(&want, b.tx, b.receipt, reason, why);
out:
	json_decref(batch);
	json_decref(ans);
	json_decref(bans);
	return v;
}

static json_t *evm_health(struct rail *r)
{
	struct evm_rail *e = (struct evm_rail *)r;
	json_t *h = rpc_pool_health(e->pool);

	if (h) {
		json_object_set_new(h, "name", json_string("evm"));
		json_object_set_new(h, "chain_id", json_integer((json_int_t)e->chain_id));
	}
	return h;
}

static void evm_free(struct rail *r)
{
	struct evm_rail *e = (struct evm_rail *)r;

	rpc_pool_free(e->pool);
	free(e);
}

static const struct rail_ops evm_ops = {
	.name = "evm",
	.confirm_delay_ms = evm_confirm_delay,
	.check = evm_check,
	.health = evm_health,
	.free = evm_free,
};

enum st_rc rail_evm_new(const struct config *cfg, struct metrics *metrics,
			const struct logger *log, struct rail **out, struct buf *err)
{
	struct evm_rail *e = calloc(1, sizeof(*e));
	struct rpc_pool_opts o = {
		.urls = cfg->evm_rpc_urls,
		.nurls = cfg->n_evm_rpc_urls,
		.chain_id = (uint64_t)cfg->evm_chain_id,
		.timeout_ms = cfg->evm_rpc_timeout_ms,
		.breaker_failures = cfg->evm_breaker_failures,
		.breaker_cooldown_ms = cfg->evm_breaker_cooldown_ms,
		.metrics = metrics,
		.log = log,
	};
	enum st_rc rc;

	*out = NULL;
	if (!e) {
		buf_puts(err, "out of memory");
		return ST_NOMEM;
	}
	e->base.ops = &evm_ops;
	e->chain_id = (uint64_t)cfg->evm_chain_id;
	e->confirmations = cfg->evm_confirmations > 0 ? cfg->evm_confirmations : 1;
	e->decimals = (unsigned)cfg->evm_decimals;
	e->poll_ms = cfg->evm_poll_ms;
	atomic_init(&e->next_id, 1);
	if (cfg->evm_token)
		for (size_t i = 0; i < 42 && cfg->evm_token[i]; i++) {
			char c = cfg->evm_token[i];

			e->token[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
		}
	rc = rpc_pool_new(&o, &e->pool, err);
	if (rc == ST_OK)
		rc = rpc_pool_check_chains(e->pool, err);
	if (rc) {
		evm_free(&e->base);
		return rc;
	}
	*out = &e->base;
	return ST_OK;
}
