/* rail_http.h — the `http` payout rail: the operator's payout service pays.
 *
 * Each payout item is sent, when its payout.confirm job runs, as a POST of
 * {"type": "payout.requested", "timestamp": ..., "data": {"item_id",
 * "batch_id", "idx", "intent_id", "wallet", "amount" (string), "asset"}}
 * to SETTLED_PAYOUT_URL, signed as a Standard Webhooks sender signs
 * (webhook-id = the item id "<batch>:<idx>", webhook-timestamp,
 * webhook-signature v1 with SETTLED_PAYOUT_SECRET). The webhook-id stays
 * the same on every retry, so the service pays an item at most once by
 * deduplicating on it. The answer decides:
 *   2xx                         paid: the intent and the item settle
 *   4xx but 408, 425 and 429    a definite refusal: the item fails with
 *                               "payout_rejected" (the service's
 *                               {"reason": "..."} is logged with the job)
 *   anything else, a timeout    not known: RAIL_ERROR, the job's retry and
 *                               backoff, then the DLQ (the funds stay held)
 * The URL is secret (it may carry a key) and never logged. */
#ifndef SETTLED_RAIL_HTTP_H
#define SETTLED_RAIL_HTTP_H

#include "buf.h"
#include "rail.h"
#include "rc.h"

struct config;

enum st_rc rail_http_new(const struct config *cfg, struct rail **out, struct buf *err);

#endif
