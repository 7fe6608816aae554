/* job_kinds.h — the registered job kinds: one table that the worker engine
 * (worker.c) reads, as the dispatcher reads the route table. Adding a kind
 * is one line in job_kinds.c and touches no engine code. */
#ifndef SETTLED_JOB_KINDS_H
#define SETTLED_JOB_KINDS_H

#include <stddef.h>

#include "worker.h"

extern const struct job_kind settled_job_kinds[];
extern const size_t settled_njob_kinds;

#endif
