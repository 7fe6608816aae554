/* job_kinds.c — the job kind table (see job_kinds.h). */
#include "job_kinds.h"

#include "claim_job.h"
#include "payout_job.h"
#include "webhook_job.h"
#include "banned.h"

static job_handler_fn noop_job;

/* max_running caps how many jobs of the kind's queue run (or wait to run)
 * at once on this instance; 0 = the pool's size. Kinds sharing a queue
 * share its cap (the smallest non-zero one wins). in_store: the handler
 * makes no outside call, so in embedded mode its jobs need no lease
 * (worker.h). on_dead: what the handler's last failure would note, for a
 * job dead without it (worker.h). */
const struct job_kind settled_job_kinds[] = {
	{ CLAIM_JOB_KIND, CLAIM_JOB_QUEUE, claim_confirm_job, 0, false, NULL },  /* claim_job.c */
	{ WEBHOOK_JOB_KIND, WEBHOOK_JOB_QUEUE, webhook_process_job, 0, true,
	  webhook_job_dead }, /* webhook_job.c */
	{ PAYOUT_EXECUTE_KIND, PAYOUT_JOB_QUEUE, payout_execute_job, 0, false, NULL },/* payout_job.c */
	{ PAYOUT_CONFIRM_KIND, PAYOUT_JOB_QUEUE, payout_confirm_job, 0, false, NULL },/* payout_job.c */
	{ "noop", "default", noop_job, 0, false, NULL }, /* benchmarks and tests: completes at once */
};
const size_t settled_njob_kinds = sizeof(settled_job_kinds) / sizeof(settled_job_kinds[0]);

static enum st_rc noop_job(struct job_ctx *ctx)
{
	(void)ctx;
	return ST_OK;
}
