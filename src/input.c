/* input.c — see input.h. */
#include "input.h"

#include "banned.h"

enum st_rc input_wallet(const json_t *v, char out[WALLET_LEN + 1])
{
	if (!json_is_string(v))
		return ST_INVALID;
	return parse_wallet(json_string_value(v), json_string_length(v), out);
}

enum st_rc input_amount(const json_t *v, int64_t *out)
{
	if (!json_is_string(v))
		return ST_INVALID;
	return parse_amount(json_string_value(v), json_string_length(v), out);
}

enum st_rc input_tx_hash(const json_t *v, char out[TX_HASH_LEN + 1])
{
	if (!json_is_string(v))
		return ST_INVALID;
	return parse_tx_hash(json_string_value(v), json_string_length(v), out);
}
