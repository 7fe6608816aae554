/* randpool.h — random bytes for identifiers, drawn from OpenSSL's CSPRNG a
 * block at a time.
 *
 * Why: every request and most write units need a few random bytes (request,
 * trace and span ids; account, transaction and hold ids). One RAND_bytes
 * call costs ~7,500 instructions whatever its size (provider lookups and a
 * DRBG reseed check), which callgrind showed as 8% of a registration. The
 * pool asks for 4 KiB at once and hands it out in slices under a mutex.
 *
 * The bytes are the CSPRNG's own, only fetched early, so identifiers stay
 * unpredictable. Secrets (API keys, their salts) do not come from here:
 * they call RAND_bytes directly so that no copy of them ever sits in a
 * buffer that outlives the call. */
#ifndef SETTLED_RANDPOOL_H
#define SETTLED_RANDPOOL_H

#include <pthread.h>
#include <stddef.h>

#include "rc.h"

#define RANDPOOL_BLOCK 4096

struct randpool {
	pthread_mutex_t mu;
	size_t pos;                           /* next unused byte of block */
	unsigned char block[RANDPOOL_BLOCK];
};

enum st_rc randpool_init(struct randpool *rp);
void randpool_destroy(struct randpool *rp);

/* Fills out with n random bytes. ST_UNAVAILABLE when the CSPRNG fails
 * (no entropy source at all); out is then zeroed. */
enum st_rc randpool_bytes(struct randpool *rp, void *out, size_t n);

#endif
