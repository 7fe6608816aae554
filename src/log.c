/* log.c — structured logs: one JSON object per line, written whole.
 *
 * A line is built in a stack array of LOG_LINE_MAX bytes (newline
 * included) and handed on whole, so lines from concurrent threads never
 * interleave. When a line would not fit, the msg is cut (on a character
 * boundary, marked "truncated":true) rather than the line being dropped;
 * caller fields that alone overflow the cap are dropped and marked
 * "fields_dropped":true. Strings are escaped per RFC 8259 and invalid UTF-8
 * becomes U+FFFD, so every line parses as JSON whatever a caller passes.
 *
 * Redaction (log_redact.c; the rules are in log.h) runs over the whole msg
 * before it is cut, so a cut can never leave half an address unredacted.
 * Text in which nothing matched, the common case, is used where it lies,
 * not copied.
 *
 * Output: unbuffered, a line is one write(2) from the calling thread. With
 * log_buffer_start(), info and debug lines are appended under a mutex to a
 * 64 KiB buffer. It goes out in one write(2) when the next line would not
 * fit, or from the flusher thread LOG_BUFFER_DELAY_MS after its first line
 * went in; a warn or error line writes out what is buffered and then
 * itself, at once. Two buffers swap, so appending never waits for the
 * disk; a second mutex, held while writing, keeps the writes in order.
 *
 * Workload: one to a few lines per request on the hot path (the request
 * line of GET /healthz is the common one). Building a line takes no lock,
 * no printf and no malloc unless the text holds something to redact; no
 * globals (the buffer's state hangs off the logger). The request line
 * (log_emit_request) is formatted straight into a stack array: text that
 * log_text_plain passes (no byte to escape, nothing redaction could match:
 * most ids, addresses and paths) is copied after one scan, other text
 * goes through the redaction and the escaper as log_field_* would send it,
 * and the unit tests hold it to the log_field_* line byte for byte. */
#include "log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log_redact.h"
#include "clock.h"
#include "fmt.h"
#include "json_out.h"
#include "banned.h"

#define LOG_LINE_MAX 16384    /* bytes in one line, '\n' included */
#define LOG_ID_MAX 256        /* escaped bytes kept of request_id / trace_id */
#define LOG_BUFFER_SIZE 65536 /* per buffer; a logger has two */
#define LOG_MSG_STACK 1024    /* log_msg formats shorter messages on the stack */
/* A fresh fields buf is sized at once for a request's fields (one 512-byte
 * malloc) instead of growing 64 -> 128 -> 256 -> 512. */
#define LOG_FIELDS_RESERVE 300

/* A string literal and its length, for put(). */
#define LIT(s) (s), (sizeof(s) - 1)

static const char trunc_mark[] = "\",\"truncated\":true";
static const char dropped_mark[] = ",\"fields_dropped\":true";
static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const unsigned char level_len[] = { 5, 4, 4, 5 };

void log_init(struct logger *lg, int fd, enum log_level min)
{
	lg->fd = fd;
	lg->min = min;
	lg->buffer = NULL;
}

int log_level_parse(const char *s)
{
	if (!s)
		return -1;
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, level_names[i]))
			return i;
	}
	if (!strcasecmp(s, "warning"))
		return LOG_WARN;
	return -1;
}

static size_t put(char *dst, const char *s, size_t n)
{
	memcpy(dst, s, n);
	return n;
}

/* ---- numbers and time -------------------------------------------------- */

/* RFC 3339 UTC with milliseconds: 2026-11-25T18:55:28.123Z (24 bytes). */
static size_t fmt_ts(char *out)
{
	struct timespec now;

	/* Straight into the line: it has room for RFC3339_LEN at this point. */
	clock_gettime(CLOCK_REALTIME, &now);
	format_rfc3339((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, out);
	return strlen(out);
}

/* ---- fields ------------------------------------------------------------ */

/* Lines carry text nobody checked (paths, headers, error strings): invalid
 * UTF-8 becomes \ufffd; \u00xx stays in lower case, as lines always had it. */
#define LOG_ESC (JSON_ESC_REPAIR | JSON_ESC_LOWER)

/* Sizes a fresh fields buf for a request's fields in one malloc instead of
 * growing 64 -> 128 -> 256 -> 512. */
static void fields_reserve(struct buf *b)
{
	if (!b->alloc && b->max - b->len >= LOG_FIELDS_RESERVE)
		(void)buf_reserve(b, LOG_FIELDS_RESERVE);
}

/* A field is written as one more member of the line's object (each starts
 * with ','); all of it goes in, or fields is left as it was. */
static void field_begin(struct json_writer *w, struct buf *fields)
{
	fields_reserve(fields);
	jw_members(w, fields, true);
	w->esc = LOG_ESC;
}

void log_field_str(struct buf *fields, const char *key, const char *val)
{
	struct buf red = BUF_INIT(fields->max);
	struct json_writer w;
	const char *v;
	size_t vn;

	field_begin(&w, fields);
	if (!val)
		jw_null(&w, key);
	else if (!log_redact_view(val, strlen(val), &red, &v, &vn))
		jw_strn(&w, key, v, vn);
	jw_end(&w);
	buf_release(&red);
}

void log_field_target(struct buf *fields, const char *key, const char *target)
{
	struct buf red = BUF_INIT(fields->max);
	struct json_writer w;

	field_begin(&w, fields);
	if (!target)
		jw_null(&w, key);
	else if (!log_redact_target(target, &red))
		jw_strn(&w, key, red.len ? red.ptr : "", red.len);
	jw_end(&w);
	buf_release(&red);
}

void log_field_int(struct buf *fields, const char *key, int64_t val)
{
	struct json_writer w;

	field_begin(&w, fields);
	jw_i64(&w, key, val);
	jw_end(&w);
}

void log_field_num(struct buf *fields, const char *key, double val)
{
	struct json_writer w;
	char num[32];
	int k;

	/* JSON has no NaN or infinity; six significant digits are plenty for
	 * rates and the like, and keep lines short. */
	k = isfinite(val) ? snprintf(num, sizeof(num), "%.6g", val) : snprintf(num, sizeof(num), "null");
	field_begin(&w, fields);
	jw_raw(&w, key, num, (size_t)k);
	jw_end(&w);
}

/* val with `decimals` (0-9) digits after the point, as log.h says for
 * log_field_fixed; returns its length (at most 47). */
static size_t fixed_num(char num[48], double val, unsigned decimals)
{
	static const double scale[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9 };
	size_t k = 0;
	double x;

	if (decimals > 9)
		decimals = 9;
	x = val * scale[decimals];
	if (!isfinite(val)) {
		k = put(num, LIT("null"));
	} else if (fabs(x) < 9007199254740992.0) {
		/* Exact in a double below 2^53: round half away from zero. */
		int64_t v = (int64_t)llround(x);
		uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
		uint64_t one = (uint64_t)scale[decimals];

		if (v < 0)
			num[k++] = '-';
		k += fmt_u64(num + k, u / one);
		if (decimals) {
			num[k++] = '.';
			fmt_pad(num + k, u % one, decimals);
			k += decimals;
		}
	} else {
		k = (size_t)snprintf(num, 48, "%.6g", val);
	}
	return k;
}

void log_field_fixed(struct buf *fields, const char *key, double val, unsigned decimals)
{
	struct json_writer w;
	char num[48];
	size_t k = fixed_num(num, val, decimals);

	field_begin(&w, fields);
	jw_raw(&w, key, num, k);
	jw_end(&w);
}

/* ---- output ------------------------------------------------------------ */

/* Writes all of a then all of b (either may be empty) with as few
 * writev(2) calls as the fd allows; the loop only covers signals and short
 * writes. A failing fd loses the rest: there is nowhere to report it. */
static void write2(int fd, const char *a, size_t an, const char *b, size_t bn)
{
	struct iovec iov[2] = { { (void *)a, an }, { (void *)b, bn } };
	struct iovec *v = iov;
	int cnt = 2;

	while (cnt > 0) {
		ssize_t w;

		if (v->iov_len == 0) {
			v++;
			cnt--;
			continue;
		}
		w = writev(fd, v, cnt);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		while (cnt > 0 && (size_t)w >= v->iov_len) {
			w -= (ssize_t)v->iov_len;
			v++;
			cnt--;
		}
		if (cnt > 0) {
			v->iov_base = (char *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
}

struct log_buffer {
	pthread_mutex_t mu;  /* guards buf, len and stop */
	pthread_cond_t wake; /* to the flusher: a first line went in, or stop */
	pthread_mutex_t wmu; /* held while writing, so writes leave in order */
	pthread_t flusher;
	int fd;
	bool stop;
	size_t len;          /* bytes waiting in buf */
	char *buf;           /* whole lines waiting; appended to under mu */
	char *spare;         /* only the holder of wmu touches it */
	char mem[2][LOG_BUFFER_SIZE];
};

/* Writes out what is buffered, then extra (NULL: nothing). Called without
 * mu. The buffers swap under mu, so appending goes on meanwhile; holding
 * wmu across the swap and the write keeps every write after the ones
 * before it. */
static void buffer_drain(struct log_buffer *lb, const char *extra, size_t extra_n)
{
	char *p;
	size_t n;

	pthread_mutex_lock(&lb->wmu);
	pthread_mutex_lock(&lb->mu);
	p = lb->buf;
	n = lb->len;
	lb->buf = lb->spare;
	lb->spare = p;
	lb->len = 0;
	pthread_mutex_unlock(&lb->mu);
	write2(lb->fd, p, n, extra, extra_n);
	pthread_mutex_unlock(&lb->wmu);
}

/* Appends a whole line (n <= LOG_LINE_MAX < LOG_BUFFER_SIZE). */
static void buffer_put(struct log_buffer *lb, const char *line, size_t n)
{
	pthread_mutex_lock(&lb->mu);
	while (lb->len + n > LOG_BUFFER_SIZE) {
		pthread_mutex_unlock(&lb->mu);
		buffer_drain(lb, NULL, 0);
		pthread_mutex_lock(&lb->mu);
	}
	/* Only the first line of a batch wakes the flusher. */
	if (lb->len == 0)
		pthread_cond_signal(&lb->wake);
	memcpy(lb->buf + lb->len, line, n);
	lb->len += n;
	pthread_mutex_unlock(&lb->mu);
}

/* Sleeps until a line is buffered, gives it LOG_BUFFER_DELAY_MS of company,
 * writes the batch out; no wakeups while nothing is buffered. */
static void *flusher_main(void *arg)
{
	struct log_buffer *lb = arg;

	pthread_mutex_lock(&lb->mu);
	while (!lb->stop) {
		struct timespec due;

		if (lb->len == 0) {
			pthread_cond_wait(&lb->wake, &lb->mu);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &due);
		due.tv_nsec += LOG_BUFFER_DELAY_MS * 1000000L;
		if (due.tv_nsec >= 1000000000L) {
			due.tv_sec++;
			due.tv_nsec -= 1000000000L;
		}
		/* A full buffer or a warn line may write the batch out first. */
		while (!lb->stop && lb->len &&
		       pthread_cond_timedwait(&lb->wake, &lb->mu, &due) != ETIMEDOUT)
			;
		if (lb->stop || lb->len == 0)
			continue;
		pthread_mutex_unlock(&lb->mu);
		buffer_drain(lb, NULL, 0);
		pthread_mutex_lock(&lb->mu);
	}
	pthread_mutex_unlock(&lb->mu);
	return NULL;
}

static void buffer_free(struct log_buffer *lb)
{
	pthread_cond_destroy(&lb->wake);
	pthread_mutex_destroy(&lb->wmu);
	pthread_mutex_destroy(&lb->mu);
	free(lb);
}

enum st_rc log_buffer_start(struct logger *lg)
{
	struct log_buffer *lb;
	pthread_condattr_t ca;
	sigset_t all, old;
	int err;

	if (lg->buffer)
		return ST_OK;
	lb = malloc(sizeof(*lb));
	if (!lb)
		return ST_NOMEM;
	lb->fd = lg->fd;
	lb->stop = false;
	lb->len = 0;
	lb->buf = lb->mem[0];
	lb->spare = lb->mem[1];
	pthread_mutex_init(&lb->mu, NULL);
	pthread_mutex_init(&lb->wmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lb->wake, &ca);
	pthread_condattr_destroy(&ca);
	/* The flusher inherits a mask that blocks every signal: signals are
	 * for the threads that wait for them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&lb->flusher, NULL, flusher_main, lb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		buffer_free(lb);
		return ST_INTERNAL;
	}
	pthread_setname_np(lb->flusher, "log-flush"); /* for top and perf */
	lg->buffer = lb;
	return ST_OK;
}

void log_buffer_stop(struct logger *lg)
{
	struct log_buffer *lb = lg ? lg->buffer : NULL;

	if (!lb)
		return;
	pthread_mutex_lock(&lb->mu);
	lb->stop = true;
	pthread_cond_signal(&lb->wake);
	pthread_mutex_unlock(&lb->mu);
	pthread_join(lb->flusher, NULL);
	lg->buffer = NULL;
	buffer_drain(lb, NULL, 0);
	buffer_free(lb);
}

/* ---- lines ------------------------------------------------------------- */

/* log_emit with its fields as bytes (fields_len 0: none). */
static void emit(const struct logger *lg, enum log_level lvl, const char *request_id,
		 const char *trace_id, const char *msg, const char *fields, size_t fields_len)
{
	static const char *const id_keys[] = { ",\"request_id\":\"", ",\"trace_id\":\"" };
	static const unsigned char id_keys_len[] = { 15, 13 };
	const char *ids[] = { request_id, trace_id };
	char line[LOG_LINE_MAX], idesc[2][LOG_ID_MAX];
	size_t pos, tail = 2, idlen[2] = { 0, 0 }, limit, mlen, mpos = 0;
	struct buf scratch = BUF_INIT(SIZE_MAX / 2);
	bool has_fields = fields_len > 0, with_fields;
	const char *m;

	if ((unsigned)lvl > LOG_ERROR)
		lvl = LOG_ERROR;
	pos = put(line, LIT("{\"ts\":\""));
	pos += fmt_ts(line + pos);
	pos += put(line + pos, LIT("\",\"level\":\""));
	pos += put(line + pos, level_names[lvl], level_len[lvl]);
	pos += put(line + pos, LIT("\",\"msg\":\""));

	/* The tail (ids, fields, "}\n") is sized first: the msg gets what is
	 * left. Fields that would leave no room at all are dropped. */
	for (int k = 0; k < 2; k++) {
		size_t p = 0;

		if (!ids[k])
			continue;
		idlen[k] = json_escape(idesc[k], LOG_ID_MAX, ids[k], strlen(ids[k]), &p, LOG_ESC);
		tail += id_keys_len[k] + idlen[k] + 1;
	}
	with_fields = has_fields && pos + sizeof(trunc_mark) + tail + fields_len <= LOG_LINE_MAX;
	if (has_fields)
		tail += with_fields ? fields_len : sizeof(dropped_mark) - 1;

	/* Never fall back to the unredacted text. */
	if (!msg)
		msg = "";
	mlen = strlen(msg);
	if (log_text_plain(msg, mlen, false)) {
		m = msg; /* nothing to redact */
	} else if (log_redact_view(msg, mlen, &scratch, &m, &mlen)) {
		m = "[message not logged: redaction failed]";
		mlen = strlen(m);
	}
	limit = LOG_LINE_MAX - tail - sizeof(trunc_mark);
	pos += json_escape(line + pos, limit > pos ? limit - pos : 0, m, mlen, &mpos, LOG_ESC);
	if (mpos == mlen)
		line[pos++] = '"';
	else
		pos += put(line + pos, LIT(trunc_mark));
	buf_release(&scratch);

	for (int k = 0; k < 2; k++) {
		if (!ids[k])
			continue;
		pos += put(line + pos, id_keys[k], id_keys_len[k]);
		pos += put(line + pos, idesc[k], idlen[k]);
		line[pos++] = '"';
	}
	if (with_fields)
		pos += put(line + pos, fields, fields_len);
	else if (has_fields)
		pos += put(line + pos, LIT(dropped_mark));
	pos += put(line + pos, LIT("}\n"));

	if (!lg->buffer)
		write2(lg->fd, line, pos, NULL, 0);
	else if (lvl >= LOG_WARN)
		buffer_drain(lg->buffer, line, pos);
	else
		buffer_put(lg->buffer, line, pos);
}

void log_emit(const struct logger *lg, enum log_level lvl, const char *request_id,
	      const char *trace_id, const char *msg, const struct buf *fields)
{
	if (!lg || lvl < lg->min)
		return;
	emit(lg, lvl, request_id, trace_id, msg, fields ? fields->ptr : NULL, fields ? fields->len : 0);
}

/* ---- the request line -------------------------------------------------- */

enum member_text { TEXT_STR, TEXT_TARGET };

/* Appends the member log_field_str (TEXT_STR) or log_field_target
 * (TEXT_TARGET) would, `,"key":"val"` or `,"key":null`, to f[*len..cap).
 * False, with *len as it was, when it does not fit or redaction failed:
 * where log_field_* would leave the member out. */
static bool put_member(char *f, size_t cap, size_t *len, const char *key, const char *val,
		       enum member_text kind, struct buf *scratch)
{
	size_t o = *len, pos = 0, klen = strlen(key), vn;
	const char *v;
	enum st_rc rc;

	/* Keys are literals of plain ASCII: nothing to escape. */
	if (cap - o < klen + 4)
		return false;
	f[o++] = ',';
	f[o++] = '"';
	o += put(f + o, key, klen);
	f[o++] = '"';
	f[o++] = ':';
	if (!val) {
		if (cap - o < 4)
			return false;
		o += put(f + o, LIT("null"));
		*len = o;
		return true;
	}
	vn = strlen(val);
	if (vn < cap - o && cap - o - vn >= 2 && log_text_plain(val, vn, kind == TEXT_TARGET)) {
		/* Nothing to redact or escape: the common case. */
		f[o++] = '"';
		o += put(f + o, val, vn);
		f[o++] = '"';
		*len = o;
		return true;
	}
	rc = kind == TEXT_TARGET ? log_redact_target_view(val, vn, scratch, &v, &vn)
				 : log_redact_view(val, vn, scratch, &v, &vn);
	if (rc || cap - o < 2)
		return false;
	f[o++] = '"';
	o += json_escape(f + o, cap - o - 1, v, vn, &pos, LOG_ESC);
	if (pos != vn)
		return false;
	f[o++] = '"';
	*len = o;
	return true;
}

/* Appends `,"key":` and the number text num[0..n). */
static bool put_number(char *f, size_t cap, size_t *len, const char *key, const char *num, size_t n)
{
	size_t o = *len, klen = strlen(key);

	if (cap - o < klen + 4 + n)
		return false;
	f[o++] = ',';
	f[o++] = '"';
	o += put(f + o, key, klen); /* keys are literals of plain ASCII */
	f[o++] = '"';
	f[o++] = ':';
	o += put(f + o, num, n);
	*len = o;
	return true;
}

/* The same line through a fields buf: for the rare request whose members
 * do not all fit, which log_field_* then leave out one by one. */
static void request_via_fields(const struct logger *lg, enum log_level lvl, const char *request_id,
			       const char *trace_id, const struct log_request *r)
{
	struct buf f = BUF_INIT(LOG_REQUEST_FIELDS_MAX);

	log_field_str(&f, "method", r->method);
	log_field_str(&f, "route", r->route);
	log_field_target(&f, "path", r->target);
	log_field_int(&f, "status", r->status);
	log_field_fixed(&f, "duration_ms", r->duration_ms, 3);
	log_field_str(&f, "client_ip", r->client_ip);
	log_field_str(&f, "span_id", r->span_id);
	if (r->idempotency)
		log_field_str(&f, "idempotency", r->idempotency);
	log_emit(lg, lvl, request_id, trace_id, "request", &f);
	buf_release(&f);
}

void log_emit_request(const struct logger *lg, enum log_level lvl, const char *request_id,
		      const char *trace_id, const struct log_request *r)
{
	char f[LOG_REQUEST_FIELDS_MAX], num[48];
	struct buf scratch = BUF_INIT(LOG_REQUEST_FIELDS_MAX);
	size_t len = 0, k;
	bool ok;

	if (!lg || lvl < lg->min)
		return;
	ok = put_member(f, sizeof(f), &len, "method", r->method, TEXT_STR, &scratch) &&
	     put_member(f, sizeof(f), &len, "route", r->route, TEXT_STR, &scratch) &&
	     put_member(f, sizeof(f), &len, "path", r->target, TEXT_TARGET, &scratch);
	if (ok) {
		k = fmt_i64(num, r->status);
		ok = put_number(f, sizeof(f), &len, "status", num, k);
	}
	if (ok) {
		k = fixed_num(num, r->duration_ms, 3);
		ok = put_number(f, sizeof(f), &len, "duration_ms", num, k);
	}
	ok = ok && put_member(f, sizeof(f), &len, "client_ip", r->client_ip, TEXT_STR, &scratch) &&
	     put_member(f, sizeof(f), &len, "span_id", r->span_id, TEXT_STR, &scratch) &&
	     (!r->idempotency ||
	      put_member(f, sizeof(f), &len, "idempotency", r->idempotency, TEXT_STR, &scratch));
	buf_release(&scratch);
	if (ok)
		emit(lg, lvl, request_id, trace_id, "request", f, len);
	else
		request_via_fields(lg, lvl, request_id, trace_id, r);
}

void log_msg(const struct logger *lg, enum log_level lvl, const char *fmt, ...)
{
	char stack[LOG_MSG_STACK], *msg = stack;
	va_list ap;
	int n;

	if (!lg || lvl < lg->min)
		return;
	va_start(ap, fmt);
	n = vsnprintf(stack, sizeof(stack), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* The whole message, not a prefix: a cut could split an address that
	 * redaction would then miss. log_emit bounds the line. */
	if ((size_t)n >= sizeof(stack)) {
		msg = malloc((size_t)n + 1);
		if (!msg) {
			log_emit(lg, lvl, NULL, NULL, "log: out of memory", NULL);
			return;
		}
		va_start(ap, fmt);
		vsnprintf(msg, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	log_emit(lg, lvl, NULL, NULL, msg, NULL);
	if (msg != stack)
		free(msg);
}
