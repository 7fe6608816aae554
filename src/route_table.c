/* route_table.c — every route settled serves, in one table (SPEC section 8).
 * The dispatcher (dispatch.c) applies the flags, limits and body fields, so
 * handlers never repeat authentication, rate limiting, idempotency or the
 * refusal of an unknown field (route_match.h says how a route declares them). */
#include "route_table.h"

#include "settled.h"
#include "banned.h"

#define LIMIT(pol, src) { .policy = (pol), .key = (src) }

/* The members each body may carry (route_match.h). */
static const struct route_field register_fields[] = {
	ROUTE_FIELD("wallet"), ROUTE_FIELD("referrer"), ROUTE_FIELDS_END };
static const struct route_field claim_prepare_fields[] = {
	ROUTE_FIELD("wallet"), ROUTE_FIELD("amount"), ROUTE_FIELDS_END };
static const struct route_field claim_record_fields[] = {
	ROUTE_FIELD("intent_id"), ROUTE_FIELD("tx_hash"), ROUTE_FIELDS_END };
static const struct route_field v2_claim_fields[] = {
	ROUTE_FIELD("wallet"), ROUTE_FIELD("amount"), ROUTE_FIELD("tx_hash"), ROUTE_FIELDS_END };
static const struct route_field apikey_create_fields[] = {
	ROUTE_FIELD("name"), ROUTE_FIELD("client_id"), ROUTE_FIELDS_END };
static const struct route_field account_create_fields[] = {
	ROUTE_FIELD("name"), ROUTE_FIELD("overdraft"), ROUTE_FIELD("metadata"), ROUTE_FIELDS_END };
/* a transfer is postings[] or one posting's members at the top */
static const struct route_field posting_fields[] = {
	ROUTE_FIELD("from"), ROUTE_FIELD("to"), ROUTE_FIELD("amount"), ROUTE_FIELDS_END };
static const struct route_field transfer_fields[] = {
	ROUTE_SHAPE("postings", posting_fields), ROUTE_FIELD("from"), ROUTE_FIELD("to"),
	ROUTE_FIELD("amount"), ROUTE_FIELD("description"), ROUTE_FIELD("metadata"), ROUTE_FIELDS_END };
static const struct route_field hold_create_fields[] = {
	ROUTE_FIELD("from"), ROUTE_FIELD("to"), ROUTE_FIELD("amount"), ROUTE_FIELD("expires_in"),
	ROUTE_FIELD("metadata"), ROUTE_FIELDS_END };
static const struct route_field hold_capture_fields[] = { ROUTE_FIELD("amount"), ROUTE_FIELDS_END };
static const struct route_field payout_item_fields[] = {
	ROUTE_FIELD("wallet"), ROUTE_FIELD("amount"), ROUTE_FIELDS_END };
static const struct route_field payout_batch_fields[] = {
	ROUTE_FIELD("reference"), ROUTE_SHAPE("items", payout_item_fields), ROUTE_FIELDS_END };

const struct route settled_routes[] = {
	{ "GET", "/healthz", route_healthz, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) }, NULL },
	{ "GET", "/health/live", route_healthz, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) }, NULL },
	{ "GET", "/health/ready", route_health_ready, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) },
	  NULL },
	{ "GET", "/metrics", route_metrics, 0, { { 0 } }, NULL },
	{ "POST", "/api/register", route_register,
	  ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_CREATED | ROUTE_KEY_CHECK_IN_UNIT,
	  { LIMIT(RLP_REGISTER_IP, RL_KEY_CLIENT_IP), LIMIT(RLP_REGISTER_WALLET, RL_KEY_BODY_WALLET) },
	  register_fields },
	{ "POST", "/api/claim/prepare", route_claim_prepare,
	  ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED |
	  ROUTE_KEY_CHECK_BY_RECORD,
	  { LIMIT(RLP_CLAIM_WALLET, RL_KEY_BODY_WALLET) }, claim_prepare_fields },
	{ "POST", "/api/claim/record", route_claim_record, ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { { 0 } }, claim_record_fields },
	{ "GET", "/api/v2/intents/{id}", route_intent_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  NULL },
	/* The Ledger API (SPEC section 13): accounts. */
	{ "POST", "/api/v2/accounts", route_account_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  account_create_fields },
	{ "GET", "/api/v2/accounts", route_account_list, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  NULL },
	{ "GET", "/api/v2/accounts/{account}", route_account_get, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	{ "GET", "/api/v2/accounts/{client}/{name}", route_account_get_qualified, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	{ "POST", "/api/v2/transfers", route_transfer_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED |
	  ROUTE_KEY_CHECK_BY_RECORD,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  transfer_fields },
	{ "GET", "/api/v2/transfers/{id}", route_transfer_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  NULL },
	{ "GET", "/api/v2/ledger/transactions", route_ledger_transactions, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	/* Webhooks: not ROUTE_IDEMPOTENT, the provider's event id is the key. */
	/* The signature is checked first (ROUTE_SIGNED); only signed deliveries
	 * are charged to the per-address webhook limit, failures to auth_fail. */
	{ "POST", "/api/commerce/webhook", route_webhook_coinbase,
	  ROUTE_JSON_BODY | ROUTE_SIGNED | ROUTE_FOREIGN_BODY, { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) }, NULL },
	{ "POST", "/api/webhooks/stripe", route_webhook_stripe,
	  ROUTE_JSON_BODY | ROUTE_SIGNED | ROUTE_FOREIGN_BODY, { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) }, NULL },
	{ "POST", "/api/webhooks/standard", route_webhook_standard,
	  ROUTE_JSON_BODY | ROUTE_SIGNED | ROUTE_FOREIGN_BODY, { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) }, NULL },
	{ "GET", "/api/admin/dlq", route_admin_dlq_list, ROUTE_ADMIN, { { 0 } }, NULL },
	{ "POST", "/api/admin/dlq/{job}/retry", route_admin_dlq_retry, ROUTE_ADMIN | ROUTE_IDEMPOTENT, { { 0 } },
	  NULL },
	{ "DELETE", "/api/admin/dlq/{job}", route_admin_dlq_delete, ROUTE_ADMIN, { { 0 } }, NULL },
	{ "GET", "/api/admin/reconciliation", route_admin_reconciliation, ROUTE_ADMIN, { { 0 } }, NULL },
	{ "POST", "/api/admin/reconciliation", route_admin_reconcile_now, ROUTE_ADMIN | ROUTE_IDEMPOTENT,
	  { { 0 } }, NULL },
	/* API keys: a new key is shown once, never replayed. */
	{ "POST", "/api/admin/api-keys", route_apikey_create,
	  ROUTE_ADMIN | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_CREATED, { { 0 } }, apikey_create_fields },
	{ "POST", "/api/admin/api-keys/{id}/rotate", route_apikey_rotate,
	  ROUTE_ADMIN | ROUTE_IDEMPOTENT | ROUTE_CREATED, { { 0 } }, NULL },
	{ "DELETE", "/api/admin/api-keys/{id}", route_apikey_revoke, ROUTE_ADMIN, { { 0 } }, NULL },
	/* The partner API: per-client v2 limit; v2 claims also count
	 * against the per-wallet claim limit, like /api/claim/prepare. */
	{ "POST", "/api/v2/claims", route_v2_claim,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED |
	  ROUTE_KEY_CHECK_BY_RECORD,
	  { LIMIT(RLP_API, RL_KEY_API_KEY), LIMIT(RLP_CLAIM_WALLET, RL_KEY_BODY_WALLET) },
	  v2_claim_fields },
	{ "POST", "/api/v2/payouts/batch", route_payout_batch_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  payout_batch_fields },
	{ "POST", "/api/v2/payouts/batch/{id}/approve", route_payout_batch_approve,
	  ROUTE_ADMIN | ROUTE_IDEMPOTENT | ROUTE_MONEY, { { 0 } }, NULL },
	{ "GET", "/api/v2/payouts/batch/{id}", route_payout_batch_get, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	/* Holds of the Ledger API (SPEC section 13): money-moving, per-client. */
	{ "POST", "/api/v2/holds", route_hold_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY | ROUTE_CREATED |
	  ROUTE_KEY_CHECK_BY_RECORD,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  hold_create_fields },
	{ "GET", "/api/v2/holds", route_hold_list, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	{ "POST", "/api/v2/holds/{id}/capture", route_hold_capture,
	  ROUTE_API_KEY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  hold_capture_fields },
	{ "POST", "/api/v2/holds/{id}/void", route_hold_void, ROUTE_API_KEY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) }, NULL },
	{ "GET", "/api/v2/holds/{id}", route_hold_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) },
	  NULL },
	/* The OpenAPI document of this table (docs/openapi.json, built in). */
	{ "GET", "/api/docs/openapi.json", route_openapi, 0, { { 0 } }, NULL },
	/* The operator console and the API reference rendered from the
	 * document above (console/, built in), and the admin lists it reads. */
	{ "GET", "/console", route_console_index, 0, { { 0 } }, NULL },
	{ "GET", "/console/{asset}", route_console_asset, 0, { { 0 } }, NULL },
	{ "GET", "/api/docs", route_api_docs, 0, { { 0 } }, NULL },
	{ "GET", "/api/admin/intents", route_admin_intents, ROUTE_ADMIN, { { 0 } }, NULL },
	{ "GET", "/api/admin/payouts/batches", route_admin_payout_batches, ROUTE_ADMIN, { { 0 } }, NULL },
	{ "GET", "/api/admin/api-keys", route_admin_api_keys, ROUTE_ADMIN, { { 0 } }, NULL },
};

const size_t settled_nroutes = sizeof(settled_routes) / sizeof(settled_routes[0]);
