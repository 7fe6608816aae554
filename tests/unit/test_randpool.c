/* test_randpool.c — the pool hands out every byte once: slices drawn by
 * many threads at once never repeat, refills happen across block edges,
 * and requests larger than the pool's slice limit go straight to OpenSSL. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "randpool.h"

#include "banned.h"

#define THREADS 8
#define DRAWS 4000 /* per thread: 8 x 4000 x 16 B = 125 blocks of 4 KiB */

struct drawer {
	struct randpool *pool;
	unsigned char ids[DRAWS][16];
};

static void *draw(void *arg)
{
	struct drawer *d = arg;

	for (int i = 0; i < DRAWS; i++)
		cr_assert_eq(randpool_bytes(d->pool, d->ids[i], sizeof(d->ids[i])), ST_OK);
	return NULL;
}

static int cmp16(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

Test(randpool, concurrent_draws_never_repeat)
{
	static struct drawer d[THREADS];
	struct randpool pool;
	pthread_t t[THREADS];
	unsigned char(*all)[16] = malloc(sizeof(unsigned char[16]) * THREADS * DRAWS);

	cr_assert_not_null(all);
	cr_assert_eq(randpool_init(&pool), ST_OK);
	for (int i = 0; i < THREADS; i++) {
		d[i].pool = &pool;
		cr_assert_eq(pthread_create(&t[i], NULL, draw, &d[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		memcpy(all[i * DRAWS], d[i].ids, sizeof(d[i].ids));
	}
	qsort(all, THREADS * DRAWS, 16, cmp16);
	for (int i = 1; i < THREADS * DRAWS; i++)
		cr_assert_neq(memcmp(all[i - 1], all[i], 16), 0, "slice %d handed out twice", i);
	randpool_destroy(&pool);
	free(all);
}

Test(randpool, odd_sizes_cross_block_edges)
{
	struct randpool pool;
	unsigned char prev[40] = { 0 }, cur[40];
	int zero_runs = 0;

	cr_assert_eq(randpool_init(&pool), ST_OK);
	/* 37 does not divide 4096: slices straddle every refill. */
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(randpool_bytes(&pool, cur, 37), ST_OK);
		cr_assert_neq(memcmp(prev, cur, 37), 0);
		zero_runs += !memcmp(cur, (unsigned char[37]){ 0 }, 37);
		memcpy(prev, cur, 37);
	}
	cr_assert_eq(zero_runs, 0, "a slice came out all zero: a byte handed out twice after its wipe");
	randpool_destroy(&pool);
}

Test(randpool, large_requests_bypass_the_pool)
{
	struct randpool pool;
	unsigned char big[RANDPOOL_BLOCK * 2];
	size_t zeros = 0;

	cr_assert_eq(randpool_init(&pool), ST_OK);
	cr_assert_eq(randpool_bytes(&pool, big, sizeof(big)), ST_OK);
	for (size_t i = 0; i < sizeof(big); i++)
		zeros += big[i] == 0;
	/* ~32 expected zero bytes in 8 KiB of random data; 200 would mean a
	 * zeroed (failed) fill. */
	cr_assert_lt(zeros, 200);
	cr_assert_eq(randpool_bytes(&pool, big, 0), ST_OK);
	randpool_destroy(&pool);
}
