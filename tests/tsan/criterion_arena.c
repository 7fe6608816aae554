/* Linked into the unit-test binaries of the ThreadSanitizer build only
 * (make tsan): lets Criterion's runner start under TSan.
 *
 * Criterion (its BoxFort sandbox) places each "inheritable arena" at a
 * random address in [0x200000000000, 0x600000000000) with MAP_FIXED, after
 * asking mincore() whether the pages there are free. Under TSan nearly all
 * of that range is TSan's shadow, its metadata or gaps it reserved, so the
 * probe says "mapped" for ~98% of the candidates, BoxFort gives up after ten
 * tries ("Could not initialize inheritable arena") or, for the next arena,
 * does not check and crashes (Criterion issue #274). This file answers
 * BoxFort's probe "free" for the reserved part of that range and moves such a
 * MAP_FIXED mapping to a free place in TSan's application range inside it
 * (the one BoxFort would have been lucky to pick): BoxFort keeps whatever
 * address mmap returns, and the test process it starts maps the arena at
 * that same address.
 *
 * Every other call goes to the next definition (TSan's interceptor, then
 * libc) unchanged. Nothing of settled's code calls mincore, and its mmap
 * calls (SQLite's) never ask for MAP_FIXED in that range. */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* BoxFort's window (boxfort/src/arena.c: mmap_base, mmap_max). */
#define BXF_LO 0x200000000000ULL
#define BXF_HI 0x600000000000ULL
/* TSan's x86_64 application range for PIE binaries (the one part of
 * BoxFort's window that is not TSan's; the runtime reserves the rest). */
#define APP_LO 0x550000000000ULL
#define APP_HI 0x568000000000ULL
/* Where moved arenas go: the top of that range, far above the binary. */
#define MOVE_LO 0x560000000000ULL

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*mincore_fn)(void *, size_t, unsigned char *);

int mincore(void *addr, size_t len, unsigned char *vec);
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);

static int reserved(uintptr_t a, size_t len)
{
    return a >= BXF_LO && a + len <= BXF_HI && !(a >= APP_LO && a + len <= APP_HI);
}

int mincore(void *addr, size_t len, unsigned char *vec)
{
    if (reserved((uintptr_t)addr, len)) {
        errno = ENOMEM;
        return -1;
    }
    mincore_fn next = (mincore_fn)dlsym(RTLD_NEXT, "mincore");
    return next(addr, len, vec);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    mmap_fn next = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
    if (!(flags & MAP_FIXED) || !reserved((uintptr_t)addr, len))
        return next(addr, len, prot, flags, fd, off);
    int moved = (flags & ~MAP_FIXED) | MAP_FIXED_NOREPLACE;
    for (uintptr_t a = MOVE_LO; a + len <= APP_HI; a += (uintptr_t)1 << 32) {
        void *p = next((void *)a, len, prot, moved, fd, off);
        if (p != MAP_FAILED)
            return p;
        if (errno != EEXIST)
            return MAP_FAILED;
    }
    errno = ENOMEM;
    return MAP_FAILED;
}
