/* input.h — reading the API's scalar fields out of a parsed JSON body.
 *
 * Each takes a borrowed jansson value (NULL when the field is missing) and
 * returns ST_OK with the canonical value, or ST_INVALID for a missing field,
 * a value that is not a JSON string, or one its validate.h parser refuses.
 * Amounts are strings on purpose (SPEC section 3): a JSON number is refused
 * like any other malformed amount. A refusal is answered with the shared
 * rows ERR_INVALID_WALLET, ERR_INVALID_AMOUNT and ERR_INVALID_TX_HASH
 * (errors.def), so every route explains a bad field the same way. */
#ifndef SETTLED_INPUT_H
#define SETTLED_INPUT_H

#include <jansson.h>
#include <stdint.h>

#include "rc.h"
#include "validate.h"

enum st_rc input_wallet(const json_t *v, char out[WALLET_LEN + 1]);
enum st_rc input_amount(const json_t *v, int64_t *out);
enum st_rc input_tx_hash(const json_t *v, char out[TX_HASH_LEN + 1]);

#endif
