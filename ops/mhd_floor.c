/* ops/mhd_floor.c — libmicrohttpd's own cost, as a floor for settled's GET /healthz.
 *
 * A minimal libmicrohttpd program started with the daemon options settled's
 * http_start (src/http.c) uses — epoll internal thread, a thread pool of one
 * thread per core, the same connection limit, timeout, listen backlog and
 * per-connection memory limit, the same unescape callback — that answers
 * GET /healthz with the bytes settled answers: the status line, the same
 * headers in the same order (security headers, a fresh X-Request-Id and
 * traceparent, the five RateLimit headers, Date and Content-Length from
 * libmicrohttpd as in settled) and {"status":"ok"}. Nothing else: no
 * routing table, request checks, logging, metrics, rate limiter, tracing or
 * connection reaper. ops/bench measures it beside settled and nginx
 * ("libmicrohttpd floor, same bytes"), so the table shows how much of the
 * gap to nginx is libmicrohttpd's and how much settled's own. It builds a
 * response and its 13 headers per request, as a straightforward program
 * does; settled reuses a connection's last answer and replaces only its
 * five per-request headers (src/response.c), so it does less
 * libmicrohttpd work an answer than this floor.
 *
 *   build/mhd_floor --port-file PATH [--threads N]
 *
 * Listens on 127.0.0.1, an ephemeral port written to PATH once listening;
 * runs until SIGTERM or SIGINT. Any other path answers 404. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* settled's defaults (src/config.c, src/http.c). */
#define FLOOR_CONN_TIMEOUT_S 30
#define FLOOR_CONN_LIMIT 20000
#define FLOOR_BACKLOG 4096
#define FLOOR_CONN_MEMORY (8 * 1024)

/* RL_HEALTH_PER_MIN as ops/bench sets it: the limiter runs but never says no. */
#define FLOOR_RL_POLICY "1000000000;w=60;name=\"health\""
#define FLOOR_RL_NOW "limit=1000000000, remaining=999999999, reset=1"

static const char body[] = "{\"status\":\"ok\"}";

struct floor {
	atomic_uint_fast64_t seq; /* distinct request ids and trace ids */
};

static void hex64(char *out, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		out[i] = digits[v & 15];
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct floor *f = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	uint64_t n;
	char rid[33], tp[56], reset[24];

	(void)version;
	(void)upload_data;
	if (*upload_data_size) {
		*upload_data_size = 0; /* a body is read and dropped */
		return MHD_YES;
	}
	/* Answered on the second call, once the whole request is in: a response
	 * queued on the first would make libmicrohttpd close the connection. */
	if (!*con_cls) {
		*con_cls = f;
		return MHD_YES;
	}
	if (strcmp(method, "GET") || strcmp(url, "/healthz")) {
		r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
		if (!r)
			return MHD_NO;
		ret = MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, r);
		MHD_destroy_response(r);
		return ret;
	}
	n = atomic_fetch_add(&f->seq, 1) + 1;
	/* 32 hex digits as settled's, and a traceparent of the same shape. */
	hex64(rid, n * 0x9e3779b97f4a7c15u);
	hex64(rid + 16, n);
	rid[32] = '\0';
	memcpy(tp, "00-", 3);
	memcpy(tp + 3, rid, 32);
	tp[35] = '-';
	hex64(tp + 36, n ^ 0x5851f42d4c957f2du);
	memcpy(tp + 52, "-01", 4);
	snprintf(reset, sizeof(reset), "%lld", (long long)time(NULL) + 1);
	r = MHD_create_response_from_buffer(sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "RateLimit-Policy", FLOOR_RL_POLICY);
	MHD_add_response_header(r, "X-RateLimit-Limit", "1000000000");
	MHD_add_response_header(r, "X-Request-Id", rid);
	MHD_add_response_header(r, "traceparent", tp);
	MHD_add_response_header(r, "RateLimit", FLOOR_RL_NOW);
	MHD_add_response_header(r, "X-RateLimit-Remaining", "999999999");
	MHD_add_response_header(r, "X-RateLimit-Reset", reset);
	ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* settled keeps the target's escapes as they came (src/http.c). */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	(void)conn;
	return strlen(s);
}

static void usage(void)
{
	fprintf(stderr, "usage: mhd_floor --port-file PATH [--threads N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct floor f;
	const char *port_file = NULL;
	unsigned threads = 0;
	struct MHD_Daemon *d;
	const union MHD_DaemonInfo *info;
	struct sockaddr_in a4;
	sigset_t stop;
	FILE *pf;
	int sig;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--port-file") && i + 1 < argc)
			port_file = argv[++i];
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = (unsigned)strtoul(argv[++i], NULL, 10);
		else
			usage();
	}
	if (!port_file)
		usage();
	if (!threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		threads = n > 0 ? (unsigned)n : 1;
	}
	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Blocked before the pool's threads start, so only sigwait sees them. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
			     MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, &f,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a4,
			     MHD_OPTION_THREAD_POOL_SIZE, threads,
			     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)FLOOR_CONN_TIMEOUT_S,
			     MHD_OPTION_CONNECTION_LIMIT, (unsigned)FLOOR_CONN_LIMIT,
			     MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)FLOOR_BACKLOG,
			     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)FLOOR_CONN_MEMORY,
			     MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "mhd_floor: cannot start libmicrohttpd\n");
		return 1;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	pf = fopen(port_file, "w");
	if (!info || !pf || fprintf(pf, "%u\n", (unsigned)info->port) < 0 || fclose(pf)) {
		fprintf(stderr, "mhd_floor: cannot write %s\n", port_file);
		MHD_stop_daemon(d);
		return 1;
	}
	sigwait(&stop, &sig);
	MHD_stop_daemon(d);
	return 0;
}
