/* randpool.c — see randpool.h. */
#include "randpool.h"

#include <openssl/rand.h>
#include <string.h>

#include "banned.h"

enum st_rc randpool_init(struct randpool *rp)
{
	if (pthread_mutex_init(&rp->mu, NULL))
		return ST_NOMEM;
	rp->pos = RANDPOOL_BLOCK; /* empty: the first call fills it */
	return ST_OK;
}

void randpool_destroy(struct randpool *rp)
{
	/* Drawn but unused bytes are not secrets, but there is no reason to
	 * leave them in freed memory either. */
	OPENSSL_cleanse(rp->block, sizeof(rp->block));
	pthread_mutex_destroy(&rp->mu);
}

enum st_rc randpool_bytes(struct randpool *rp, void *out, size_t n)
{
	unsigned char *dst = out;
	enum st_rc rc = ST_OK;

	if (n > RANDPOOL_BLOCK / 4) { /* large requests gain nothing from the pool */
		if (RAND_bytes(dst, (int)n) == 1)
			return ST_OK;
		memset(dst, 0, n);
		return ST_UNAVAILABLE;
	}
	pthread_mutex_lock(&rp->mu);
	if (RANDPOOL_BLOCK - rp->pos < n) {
		if (RAND_bytes(rp->block, RANDPOOL_BLOCK) == 1) {
			rp->pos = 0;
		} else {
			rp->pos = RANDPOOL_BLOCK;
			rc = ST_UNAVAILABLE;
		}
	}
	if (rc == ST_OK) {
		memcpy(dst, rp->block + rp->pos, n);
		/* A byte handed out is never handed out again. */
		memset(rp->block + rp->pos, 0, n);
		rp->pos += n;
	} else {
		memset(dst, 0, n);
	}
	pthread_mutex_unlock(&rp->mu);
	return rc;
}
