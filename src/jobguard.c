/* jobguard.c — the crash guard's file: see jobguard.h for why it exists.
 *
 * Layout (native byte order: the file never leaves the machine that
 * wrote it, and one of another order fails the version check):
 *
 *   0   magic "settled-inflight" (16 bytes)
 *   16  u32 version, u32 slot size, u32 slot count, u32 zero
 *   32  u64 check of the above (header_check)
 *   40  zero up to 64
 *   64  slot i at 64 + 32 i: i64 id, i64 updated_at, i64 attempts, u64 check
 *
 * A slot is written in the mapping by its own worker only (one slot per
 * worker thread; the writer thread writes a worker's slot while that
 * worker waits for it in store_run). Order of a mark: check = 0, the
 * fields, then the new check (release); of a clear: check = 0, id = 0. A
 * process killed between any two of those stores leaves either the old
 * record, an empty one, or one whose check does not match its fields
 * (ignored): never a valid record naming a job it was not marking. */
#include "jobguard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storelock.h"
#include "banned.h"

#define CHECK_SEED 0x5e771ed1f11e0001ULL

struct jobguard_slot {
	_Atomic int64_t id;
	_Atomic int64_t updated_at;
	_Atomic int64_t attempts;
	_Atomic uint64_t check;
};

_Static_assert(sizeof(struct jobguard_slot) == JOBGUARD_SLOT, "a slot is 32 bytes");
_Static_assert(sizeof(JOBGUARD_MAGIC) - 1 == 16, "the magic is 16 bytes");

struct jobguard {
	int fd;
	char *path;
	struct jobguard_mark *prev;   /* what the previous process left */
	int nprev, invalid;
	struct jobguard_slot *slots;  /* the mapping's slots; NULL until armed */
	void *map;
	size_t map_len;
	unsigned nslots;
};

/* splitmix64's finalizer: a check against torn and random bytes, not
 * against an adversary (the file is the server's own, mode 0600). */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t slot_check(unsigned slot, int64_t id, int64_t updated_at, int64_t attempts)
{
	uint64_t h = mix(CHECK_SEED ^ slot);

	h = mix(h ^ (uint64_t)id);
	h = mix(h ^ (uint64_t)updated_at);
	h = mix(h ^ (uint64_t)attempts);
	return h ? h : 1; /* 0 means "being written" */
}

static uint64_t header_check(uint32_t version, uint32_t slot_size, uint32_t nslots)
{
	return mix(mix(mix(CHECK_SEED ^ version) ^ slot_size) ^ nslots);
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

void jobguard_header(unsigned char hdr[JOBGUARD_HEADER], unsigned nslots)
{
	uint32_t f[4] = { JOBGUARD_VERSION, JOBGUARD_SLOT, nslots, 0 };
	uint64_t check = header_check(f[0], f[1], f[2]);

	memset(hdr, 0, JOBGUARD_HEADER);
	memcpy(hdr, JOBGUARD_MAGIC, 16);
	memcpy(hdr + 16, f, sizeof(f));
	memcpy(hdr + 32, &check, sizeof(check));
}

void jobguard_slot_bytes(unsigned char out[JOBGUARD_SLOT], unsigned slot,
			 const struct jobguard_mark *m)
{
	int64_t v[3] = { m->id, m->updated_at, m->attempts };
	uint64_t check = slot_check(slot, v[0], v[1], v[2]);

	memcpy(out, v, sizeof(v));
	memcpy(out + 24, &check, sizeof(check));
}

int jobguard_parse(const unsigned char *data, size_t len, struct jobguard_mark *out, int max,
		   int *invalid)
{
	uint32_t version, slot_size, nslots;
	int n = 0, bad = 0;

	if (invalid)
		*invalid = 0;
	if (!data || len < JOBGUARD_HEADER || memcmp(data, JOBGUARD_MAGIC, 16))
		return 0;
	version = get_u32(data + 16);
	slot_size = get_u32(data + 20);
	nslots = get_u32(data + 24);
	if (version != JOBGUARD_VERSION || slot_size != JOBGUARD_SLOT ||
	    nslots > JOBGUARD_SLOTS_MAX || get_u64(data + 32) != header_check(version, slot_size, nslots))
		return 0;
	for (uint32_t i = 0; i < nslots; i++) {
		size_t off = JOBGUARD_HEADER + (size_t)i * JOBGUARD_SLOT;
		int64_t id, updated_at, attempts;

		if (off + JOBGUARD_SLOT > len) {
			/* Truncated: what is missing names nothing we can trust.
			 * Count only the slots that were not empty as far as we
			 * can tell (any byte not zero). */
			for (size_t b = off; b < len; b++)
				if (data[b]) {
					bad++;
					break;
				}
			break;
		}
		memcpy(&id, data + off, 8);
		memcpy(&updated_at, data + off + 8, 8);
		memcpy(&attempts, data + off + 16, 8);
		if (id == 0 && get_u64(data + off + 24) == 0)
			continue; /* empty */
		if (id <= 0 || updated_at <= 0 || attempts < 0 || attempts > INT32_MAX ||
		    get_u64(data + off + 24) != slot_check(i, id, updated_at, attempts)) {
			bad++;
			continue;
		}
		if (n < max)
			out[n++] = (struct jobguard_mark){ .id = id, .updated_at = updated_at,
							  .attempts = (int)attempts };
	}
	if (invalid)
		*invalid = bad;
	return n;
}

/* Reads the whole file (at most a full file's size: a bigger one is not
 * ours to trust past that) into a new buffer. */
static enum st_rc read_all(int fd, unsigned char **out, size_t *len)
{
	size_t cap = JOBGUARD_HEADER + (size_t)JOBGUARD_SLOTS_MAX * JOBGUARD_SLOT, n = 0;
	unsigned char *b = malloc(cap);

	if (!b)
		return ST_NOMEM;
	while (n < cap) {
		ssize_t r = pread(fd, b + n, cap - n, (off_t)n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(b);
			return ST_UNAVAILABLE;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*out = b;
	*len = n;
	return ST_OK;
}

enum st_rc jobguard_open(const char *db_path, struct jobguard **out, struct buf *err)
{
	struct jobguard *g = NULL;
	unsigned char *data = NULL;
	struct buf path = BUF_INIT(PATH_MAX + 64);
	size_t len = 0;
	enum st_rc rc = ST_NOMEM;

	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (!g)
		goto out;
	g->fd = -1;
	/* Beside the database's real file, as its -wal, -shm and -lock are
	 * (storelock.h): a symlinked --db must not put it by the link. */
	rc = storelock_sidecar_path(db_path, JOBGUARD_SUFFIX, &path);
	if (rc) {
		buf_printf(err, "cannot name the guard file of %s: %s", db_path, st_rc_str(rc));
		goto out;
	}
	rc = ST_NOMEM;
	g->path = strdup(path.ptr);
	if (!g->path)
		goto out;
	g->fd = open(g->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (g->fd < 0) {
		buf_printf(err, "cannot open %s: %s", g->path, strerror(errno));
		rc = ST_UNAVAILABLE;
		goto out;
	}
	if (flock(g->fd, LOCK_EX | LOCK_NB)) {
		buf_printf(err, "%s is locked by another process on the same database", g->path);
		rc = ST_CONFLICT;
		goto out;
	}
	rc = read_all(g->fd, &data, &len);
	if (rc) {
		buf_printf(err, "cannot read %s: %s", g->path, st_rc_str(rc));
		goto out;
	}
	g->prev = calloc(JOBGUARD_SLOTS_MAX, sizeof(*g->prev));
	if (!g->prev) {
		rc = ST_NOMEM;
		goto out;
	}
	g->nprev = jobguard_parse(data, len, g->prev, (int)JOBGUARD_SLOTS_MAX, &g->invalid);
	rc = ST_OK;
out:
	free(data);
	buf_release(&path);
	if (rc) {
		jobguard_close(g); /* unlocks; the file is left as it was read */
		return rc;
	}
	*out = g;
	return ST_OK;
}

const struct jobguard_mark *jobguard_previous(const struct jobguard *g, int *n, int *invalid)
{
	*n = g->nprev;
	if (invalid)
		*invalid = g->invalid;
	return g->prev;
}

enum st_rc jobguard_arm(struct jobguard *g, unsigned nslots, struct buf *err)
{
	unsigned char hdr[JOBGUARD_HEADER];
	size_t len = JOBGUARD_HEADER + (size_t)nslots * JOBGUARD_SLOT;
	void *map;

	if (nslots == 0 || nslots > JOBGUARD_SLOTS_MAX || g->map)
		return ST_INVALID;
	/* Truncated to nothing first, so every slot reads back as zeros (an
	 * empty slot) whatever the previous process left. */
	if (ftruncate(g->fd, 0) || ftruncate(g->fd, (off_t)len)) {
		buf_printf(err, "cannot size %s: %s", g->path, strerror(errno));
		return ST_UNAVAILABLE;
	}
	jobguard_header(hdr, nslots);
	if (pwrite(g->fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
		buf_printf(err, "cannot write %s: %s", g->path, strerror(errno));
		return ST_UNAVAILABLE;
	}
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
	if (map == MAP_FAILED) {
		buf_printf(err, "cannot map %s: %s", g->path, strerror(errno));
		return ST_UNAVAILABLE;
	}
	g->map = map;
	g->map_len = len;
	g->slots = (struct jobguard_slot *)((unsigned char *)map + JOBGUARD_HEADER);
	g->nslots = nslots;
	return ST_OK;
}

void jobguard_mark(struct jobguard *g, unsigned slot, int64_t id, int attempts,
		   int64_t updated_at)
{
	struct jobguard_slot *s;

	if (!g || slot >= g->nslots)
		return;
	s = &g->slots[slot];
	atomic_store_explicit(&s->check, 0, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst); /* check = 0 before the fields */
	atomic_store_explicit(&s->id, id, memory_order_relaxed);
	atomic_store_explicit(&s->updated_at, updated_at, memory_order_relaxed);
	atomic_store_explicit(&s->attempts, attempts, memory_order_relaxed);
	atomic_store_explicit(&s->check, slot_check(slot, id, updated_at, attempts),
			      memory_order_release);
}

void jobguard_clear(struct jobguard *g, unsigned slot)
{
	struct jobguard_slot *s;

	if (!g || slot >= g->nslots)
		return;
	s = &g->slots[slot];
	atomic_store_explicit(&s->check, 0, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst);
	atomic_store_explicit(&s->id, 0, memory_order_relaxed);
}

void jobguard_close(struct jobguard *g)
{
	if (!g)
		return;
	if (g->map) {
		munmap(g->map, g->map_len);
		/* Nothing is in flight after a clean stop: an empty file. */
		if (ftruncate(g->fd, 0))
			(void)0; /* the slots are all clear anyway */
	}
	if (g->fd >= 0)
		close(g->fd); /* and with it the lock */
	free(g->prev);
	free(g->path);
	free(g);
}
