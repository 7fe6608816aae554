/* routes.c — every route settled serves, in one table (SPEC section 8).
 * The dispatcher in http.c applies the flags and limits, so handlers never
 * repeat authentication, rate limiting or idempotency. */
#include "routes.h"

#include "settled.h"
#include "banned.h"

#define LIMIT(pol, src) { .policy = (pol), .key = (src) }

const struct route settled_routes[] = {
	{ "GET", "/healthz", route_healthz, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) } },
	{ "GET", "/health/live", route_healthz, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) } },
	{ "GET", "/health/ready", route_health_ready, 0, { LIMIT(RLP_HEALTH, RL_KEY_CLIENT_IP) } },
	{ "GET", "/metrics", route_metrics, 0, { { 0 } } },
	{ "POST", "/api/register", route_register, ROUTE_JSON_BODY | ROUTE_IDEMPOTENT,
	  { LIMIT(RLP_REGISTER_IP, RL_KEY_CLIENT_IP), LIMIT(RLP_REGISTER_WALLET, RL_KEY_BODY_WALLET) } },
	{ "POST", "/api/claim/prepare", route_claim_prepare, ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { LIMIT(RLP_CLAIM_WALLET, RL_KEY_BODY_WALLET) } },
	{ "POST", "/api/claim/record", route_claim_record, ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { { 0 } } },
	{ "GET", "/api/v2/intents/{id}", route_intent_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	/* The Ledger API (SPEC section 13): accounts. */
	{ "POST", "/api/v2/accounts", route_account_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/accounts", route_account_list, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/accounts/{account}", route_account_get, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/accounts/{client}/{name}", route_account_get_qualified, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "POST", "/api/v2/transfers", route_transfer_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/transfers/{id}", route_transfer_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/ledger/transactions", route_ledger_transactions, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	/* Webhooks: not ROUTE_IDEMPOTENT, the provider's event id is the key. */
	/* The signature is checked first (ROUTE_SIGNED); only signed deliveries
	 * are charged to the per-address webhook limit, failures to auth_fail. */
	{ "POST", "/api/commerce/webhook", route_webhook_coinbase, ROUTE_JSON_BODY | ROUTE_SIGNED,
	  { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) } },
	{ "POST", "/api/webhooks/stripe", route_webhook_stripe, ROUTE_JSON_BODY | ROUTE_SIGNED,
	  { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) } },
	{ "POST", "/api/webhooks/standard", route_webhook_standard, ROUTE_JSON_BODY | ROUTE_SIGNED,
	  { LIMIT(RLP_WEBHOOK, RL_KEY_CLIENT_IP) } },
	{ "GET", "/api/admin/dlq", route_admin_dlq_list, ROUTE_ADMIN, { { 0 } } },
	{ "POST", "/api/admin/dlq/{job}/retry", route_admin_dlq_retry, ROUTE_ADMIN | ROUTE_IDEMPOTENT, { { 0 } } },
	{ "DELETE", "/api/admin/dlq/{job}", route_admin_dlq_delete, ROUTE_ADMIN, { { 0 } } },
	{ "GET", "/api/admin/reconciliation", route_admin_reconciliation, ROUTE_ADMIN, { { 0 } } },
	{ "POST", "/api/admin/reconciliation", route_admin_reconcile_now, ROUTE_ADMIN | ROUTE_IDEMPOTENT, { { 0 } } },
	/* API keys (issue 9): a new key is shown once, never replayed. */
	{ "POST", "/api/admin/api-keys", route_apikey_create, ROUTE_ADMIN | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT,
	  { { 0 } } },
	{ "POST", "/api/admin/api-keys/{id}/rotate", route_apikey_rotate, ROUTE_ADMIN | ROUTE_IDEMPOTENT,
	  { { 0 } } },
	{ "DELETE", "/api/admin/api-keys/{id}", route_apikey_revoke, ROUTE_ADMIN, { { 0 } } },
	/* The partner API (issue 9): per-client v2 limit; v2 claims also count
	 * against the per-wallet claim limit, like /api/claim/prepare. */
	{ "POST", "/api/v2/claims", route_v2_claim,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY), LIMIT(RLP_CLAIM_WALLET, RL_KEY_BODY_WALLET) } },
	{ "POST", "/api/v2/payouts/batch", route_payout_batch_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "POST", "/api/v2/payouts/batch/{id}/approve", route_payout_batch_approve,
	  ROUTE_ADMIN | ROUTE_IDEMPOTENT | ROUTE_MONEY, { { 0 } } },
	{ "GET", "/api/v2/payouts/batch/{id}", route_payout_batch_get, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	/* Holds of the Ledger API (SPEC section 13): money-moving, per-client. */
	{ "POST", "/api/v2/holds", route_hold_create,
	  ROUTE_API_KEY | ROUTE_JSON_BODY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/holds", route_hold_list, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "POST", "/api/v2/holds/{id}/capture", route_hold_capture,
	  ROUTE_API_KEY | ROUTE_IDEMPOTENT | ROUTE_MONEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "POST", "/api/v2/holds/{id}/void", route_hold_void, ROUTE_API_KEY | ROUTE_IDEMPOTENT | ROUTE_MONEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/holds/{id}", route_hold_get, ROUTE_API_KEY, { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	/* The OpenAPI document of this table (docs/openapi.json, built in; issue 12). */
	{ "GET", "/api/docs/openapi.json", route_openapi, 0, { { 0 } } },
	/* The operator console and the API reference rendered from the
	 * document above (console/, built in), and the admin lists it reads. */
	{ "GET", "/console", route_console_index, 0, { { 0 } } },
	{ "GET", "/console/{asset}", route_console_asset, 0, { { 0 } } },
	{ "GET", "/api/docs", route_api_docs, 0, { { 0 } } },
	{ "GET", "/api/admin/intents", route_admin_intents, ROUTE_ADMIN, { { 0 } } },
	{ "GET", "/api/admin/payouts/batches", route_admin_payout_batches, ROUTE_ADMIN, { { 0 } } },
	{ "GET", "/api/admin/api-keys", route_admin_api_keys, ROUTE_ADMIN, { { 0 } } },
};

const size_t settled_nroutes = sizeof(settled_routes) / sizeof(settled_routes[0]);
