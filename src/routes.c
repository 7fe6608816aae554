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
	{ "GET", "/api/v2/accounts/{wallet}", route_account_get, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
	{ "GET", "/api/v2/ledger/transactions", route_ledger_transactions, ROUTE_API_KEY,
	  { LIMIT(RLP_API, RL_KEY_API_KEY) } },
};

const size_t settled_nroutes = sizeof(settled_routes) / sizeof(settled_routes[0]);
