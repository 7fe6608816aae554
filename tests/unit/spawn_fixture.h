/* spawn_fixture.h — a unit test's second process: this test binary started
 * again (posix_spawn of /proc/self/exe), running one of the file's helper
 * roles from a constructor, before Criterion's main.
 *
 * Why not fork(): the test process has other threads (nanomsg's, BoxFort's)
 * and a forked child inherits whatever lock one of them held at the fork.
 * Under GCC 12's ASan and TSan that includes the stack depot's (no fork
 * handler holds it): a child that then allocates from a new call path,
 * which our code between a fork and _exit does, spins forever
 * (/work/notes/forkhang.md, tests/sanitizers/runner_fork.c for Criterion's
 * own forks). glibc's posix_spawn runs nothing in the child but
 * async-signal-safe calls before execve (clone(CLONE_VM|CLONE_VFORK), no
 * malloc), and the new image starts with fresh locks.
 *
 * Use: define SPAWN_ROLES as a function `int f(const char *role, char **args,
 * int nargs)` returning the helper's exit status (it may also never return:
 * kill itself, pause), include this file, and call spawn_self(role, args).
 * The helper's environment is the test's without BXFI_MAP (BoxFort's mark
 * of a test process), so the new image is not taken for a test to run. */
#ifndef SPAWN_FIXTURE_H
#define SPAWN_FIXTURE_H

#include <criterion/criterion.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPAWN_FLAG "--settled-unit-helper"
#define SPAWN_ARGS_MAX 8
#define SPAWN_ENV_MAX 512

extern char **environ;

static int SPAWN_ROLES(const char *role, char **args, int nargs);

/* glibc calls an executable's constructors with (argc, argv, envp). A
 * helper runs its role and leaves before main: Criterion never starts. */
__attribute__((constructor)) static void spawn_helper_main(int argc, char **argv, char **envp)
{
	(void)envp;
	if (argc < 3 || strcmp(argv[1], SPAWN_FLAG) != 0)
		return;
	_exit(SPAWN_ROLES(argv[2], argv + 3, argc - 3));
}

/* Starts the helper `role` with args (NULL-terminated, at most
 * SPAWN_ARGS_MAX); returns its pid (a failure fails the test). */
static pid_t spawn_self(const char *role, const char *const *args)
{
	char *argv[SPAWN_ARGS_MAX + 4], *envp[SPAWN_ENV_MAX + 1];
	int n = 0, e = 0, rc;
	pid_t pid;

	argv[n++] = (char *)"/proc/self/exe";
	argv[n++] = (char *)SPAWN_FLAG;
	argv[n++] = (char *)role;
	for (; args && *args; args++) {
		cr_assert_lt(n, SPAWN_ARGS_MAX + 3, "too many helper arguments");
		argv[n++] = (char *)*args;
	}
	argv[n] = NULL;
	for (char **v = environ; *v; v++)
		if (strncmp(*v, "BXFI_MAP=", 9) != 0) {
			cr_assert_lt(e, SPAWN_ENV_MAX, "environment too long for a helper");
			envp[e++] = *v;
		}
	envp[e] = NULL;
	rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp);
	cr_assert_eq(rc, 0, "posix_spawn: %s", strerror(rc));
	return pid;
}

#endif
