/* Linked into the unit-test binaries of the sanitizer builds (make asan,
 * make tsan): keeps Criterion's runner from starting a test process that
 * can never run.
 *
 * Criterion's runner (BoxFort, bxfi_exec) forks each test's process from a
 * runner that has other threads (nanomsg's poller, BoxFort's child pump and
 * timeout killer), and the child allocates before it execs the test binary
 * again: malloc(20000) and opendir's 32816 bytes while closing inherited
 * descriptors, 344 bytes for the new environment (gdb on a spawn). GCC 12's
 * sanitizer runtimes do not hold their stack depot across fork (libasan has
 * no fork handler at all; libtsan's locks its allocator, not the depot): a
 * child forked while another thread held one of those locks (the depot's
 * trace allocator spins under one while it maps a new chunk) inherits it
 * locked, and every new allocation stack the child records goes through
 * the depot. The child then spins forever before exec; the runner waits
 * for it (BoxFort's wait for the child's SIGSTOP, before any test timeout
 * is set), and `make asan` hangs instead of failing. Seen once in about ten
 * runs of test_rl_redis beside two CPU hogs; forced with one more runner
 * thread storing new stacks: test_hex hung in 3 of 10 runs under ASan and
 * 3 of 20 under TSan, both in StackDepotNode::store <- malloc(20000).
 *
 * In the runner, and only between a fork and its exec, malloc, calloc and
 * realloc are served from a static block and free does nothing: the child
 * touches none of the sanitizer's allocator or depot, so a lock held in the
 * parent at the fork cannot stop it, and exec replaces the whole image a
 * moment later (nothing to free, nothing to check). Everywhere else every
 * call goes to the sanitizer's own function unchanged, so leak checking and
 * the error reports are as strict as without this file (one more frame in
 * their stacks). Test processes (started with BoxFort's BXFI_MAP in their
 * environment) do not install the handler: a test that forks keeps the
 * sanitizer's allocator in its child, so a test needing a second process
 * starts it with posix_spawn instead (tests/unit/spawn_fixture.h).
 *
 * Built without TSan's instrumentation (-fno-sanitize=thread): TSan's own
 * start calls malloc before its per-thread state exists, and an
 * instrumented function entry would crash there. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The sanitizer runtime's own definitions (libasan and libtsan export
 * them; their malloc etc. are weak aliases of them, which the definitions
 * below replace for the whole process). */
void *__interceptor_malloc(size_t size);
void *__interceptor_calloc(size_t n, size_t size);
void *__interceptor_realloc(void *p, size_t size);
void __interceptor_free(void *p);

void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);
void free(void *p);

/* BoxFort's child needs ~53 KiB; four times that leaves room for a longer
 * environment. A child that asks for more exits with a message (the runner
 * then reports that it could not start the test) rather than touching
 * the sanitizer. */
#define CHILD_BLOCK (256 * 1024)
#define ALIGN 16

/* Written only in a forked child of the runner, which has one thread (the
 * fork's), and read by that thread: no other thread ever sees them. */
static int in_child;
static size_t child_used;
static _Alignas(ALIGN) unsigned char child_block[CHILD_BLOCK];

static void child_die(const char *msg)
{
	static const char head[] = "tests/sanitizers/runner_fork.c: ";

	(void)!write(2, head, sizeof(head) - 1);
	(void)!write(2, msg, strlen(msg));
	_exit(127);
}

/* Each piece starts with its size (for realloc), padded to ALIGN. */
static void *child_alloc(size_t size)
{
	size_t need = ALIGN + (size + ALIGN - 1) / ALIGN * ALIGN;
	unsigned char *p;

	if (size > CHILD_BLOCK || need > CHILD_BLOCK - child_used)
		child_die("the runner's child allocated more than its block before exec\n");
	p = child_block + child_used;
	child_used += need;
	memcpy(p, &size, sizeof(size));
	memset(p + ALIGN, 0, size);
	return p + ALIGN;
}

void *malloc(size_t size)
{
	return in_child ? child_alloc(size) : __interceptor_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	if (!in_child)
		return __interceptor_calloc(n, size);
	if (size && n > (size_t)-1 / size)
		return NULL;
	return child_alloc(n * size);
}

void *realloc(void *p, size_t size)
{
	unsigned char *q;
	size_t old;

	if (!in_child)
		return __interceptor_realloc(p, size);
	if (!p)
		return child_alloc(size);
	q = p;
	/* Asking the sanitizer the size of a block from before the fork could
	 * take one of its locks: refuse loudly (BoxFort's child never does it). */
	if (q < child_block + ALIGN || q >= child_block + CHILD_BLOCK)
		child_die("the runner's child reallocated a block from before the fork\n");
	memcpy(&old, q - ALIGN, sizeof(old));
	q = child_alloc(size);
	memcpy(q, p, old < size ? old : size);
	return q;
}

void free(void *p)
{
	if (!in_child)
		__interceptor_free(p);
}

static void enter_child(void)
{
	in_child = 1;
}

/* Registered before main, so before BoxFort's own handler (child handlers
 * run in the order registered): the flag is up before anything of the
 * child's can allocate. */
__attribute__((constructor)) static void runner_fork_init(void)
{
	if (!getenv("BXFI_MAP") && pthread_atfork(NULL, NULL, enter_child))
		abort();
}
