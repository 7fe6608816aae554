/* routes.h — the route table and the handlers behind it. */
#ifndef SETTLED_ROUTES_H
#define SETTLED_ROUTES_H

#include <stddef.h>

#include "route.h"

extern const struct route settled_routes[];
extern const size_t settled_nroutes;

/* Handlers, grouped by file. */
route_handler route_healthz, route_health_ready, route_metrics;  /* routes_ops.c */
route_handler route_register;                                     /* routes_register.c */
route_handler route_claim_prepare, route_claim_record, route_intent_get; /* routes_claims.c */
route_handler route_account_get, route_ledger_transactions;        /* routes_ledger.c */

#endif
