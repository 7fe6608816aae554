/* rail_evm.h — the `evm` rail: a claim's tx_hash verified on an EVM chain.
 *
 * An intent is confirmed only when its tx_hash is, on the configured chain
 * (SETTLED_EVM_CHAIN_ID; every provider's eth_chainId is checked before
 * use), a successful transaction (receipt status 1) with at least
 * SETTLED_EVM_CONFIRMATIONS confirmations (head - block + 1) whose block is
 * still the canonical block at that height (re-fetched by number at
 * confirmation time: a reorg that dropped it leaves the intent pending),
 * and that pays exactly amount x 10^SETTLED_EVM_DECIMALS to the intent's
 * wallet: as native value (tx.to, tx.value) when SETTLED_EVM_TOKEN is
 * unset, else as a Transfer(from, to, value) log emitted by that token
 * contract. Quantities are 256-bit and parsed exactly; no floating point.
 *
 * Verdicts and the intent's failure reasons (docs/internals/rail-evm.md):
 *   evm_wrong_chain      the transaction names another chain id
 *   evm_tx_failed        receipt status 0 (reverted)
 *   evm_wrong_recipient  it pays someone else
 *   evm_wrong_amount     it pays the wallet another amount
 *   evm_wrong_token      token rail: no Transfer of the configured token
 *   evm_tx_not_found     (pending) no provider knows the hash
 *   evm_not_confirmed    (pending) not mined, short of confirmations, or
 *                        its block was reorganised away
 * Pending ones are checked again (claim_job.c) and fail with their reason
 * once the intent has been SUBMITTED for SETTLED_STUCK_AFTER. */
#ifndef SETTLED_RAIL_EVM_H
#define SETTLED_RAIL_EVM_H

#include <jansson.h>
#include <stdint.h>

#include "buf.h"
#include "rail.h"
#include "rc.h"

struct config;
struct logger;
struct metrics;

/* An unsigned 256-bit number; w[0] is the least significant word. */
struct u256 {
	uint64_t w[4];
};

/* A JSON-RPC QUANTITY or DATA word: "0x" + 1..64 significant hex digits
 * (leading zeros allowed, any case). ST_INVALID when malformed, ST_TOO_LARGE
 * when it does not fit 256 bits. */
enum st_rc u256_from_hex(const char *s, struct u256 *out);
/* amount x 10^decimals; ST_INVALID for amount < 0, ST_TOO_LARGE on overflow. */
enum st_rc u256_scaled(int64_t amount, unsigned decimals, struct u256 *out);
int u256_cmp(const struct u256 *a, const struct u256 *b);
/* Decimal digits of a into out (at most 78 + NUL). */
void u256_dec(const struct u256 *a, char out[80]);

/* What a paying transaction must look like. */
struct evm_expect {
	uint64_t chain_id;
	const char *wallet;     /* 0x + 40 hex, any case */
	const char *token;      /* NULL or "": native value */
	struct u256 value;      /* amount x 10^decimals */
};

/* Checks a mined transaction (tx: eth_getTransactionByHash's result,
 * receipt: eth_getTransactionReceipt's) against e: RAIL_CONFIRMED, or
 * RAIL_REJECTED with *reason (one of the codes above) and why. Pure: no
 * I/O, for the unit tests. */
enum rail_result rail_evm_verify(const struct evm_expect *e, const json_t *tx,
				 const json_t *receipt, const char **reason, struct buf *why);

/* The rail from cfg (SETTLED_EVM_*): creates the provider pool and checks
 * the providers' chain ids. metrics and log borrowed for the rail's life. */
enum st_rc rail_evm_new(const struct config *cfg, struct metrics *metrics,
			const struct logger *log, struct rail **out, struct buf *err);

#endif
