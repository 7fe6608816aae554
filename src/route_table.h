/* route_table.h — the route table (route_table.c) and the handlers behind it,
 * grouped by the routes_*.c file that holds them. The entry type and the
 * matcher are route_match.h's. */
#ifndef SETTLED_ROUTE_TABLE_H
#define SETTLED_ROUTE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "route_match.h"

extern const struct route settled_routes[];
extern const size_t settled_nroutes;

/* Handlers, grouped by file. */
route_handler route_healthz, route_health_ready, route_metrics, route_openapi; /* routes_ops.c */
route_handler route_register;                                     /* routes_register.c */
route_handler route_claim_prepare, route_claim_record, route_v2_claim,
	route_intent_get;                                           /* routes_claims.c */
route_handler route_ledger_transactions;                           /* routes_ledger.c */
route_handler route_account_create, route_account_list, route_account_get,
	route_account_get_qualified;                                /* routes_accounts.c */
route_handler route_transfer_create, route_transfer_get;           /* routes_transfers.c */
route_handler route_admin_dlq_list, route_admin_dlq_retry, route_admin_dlq_delete,
	route_admin_reconciliation, route_admin_reconcile_now;      /* routes_admin.c */
route_handler route_webhook_coinbase, route_webhook_stripe, route_webhook_standard; /* routes_webhooks.c */
route_handler route_apikey_create, route_apikey_rotate, route_apikey_revoke; /* routes_apikeys.c */
route_handler route_payout_batch_create, route_payout_batch_approve,
	route_payout_batch_get;                                     /* routes_payouts.c */
route_handler route_hold_create, route_hold_capture, route_hold_void, route_hold_get,
	route_hold_list;                                            /* routes_holds.c */
route_handler route_admin_intents, route_admin_payout_batches,
	route_admin_api_keys;                                       /* routes_admin_lists.c */
route_handler route_console_index, route_console_asset, route_api_docs; /* routes_console.c */

#endif
