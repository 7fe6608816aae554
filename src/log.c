/* log.c — structured logs: one JSON object per line, one write(2) per line.
 *
 * A line is built in a heap buf capped at LOG_LINE_MAX bytes (newline
 * included) and handed to write(2) whole, so lines from concurrent threads
 * never interleave. When a line would not fit, the msg is cut (on a
 * character boundary, marked "truncated":true) rather than the line being
 * dropped; caller fields that alone overflow the cap are dropped and marked
 * "fields_dropped":true. Strings are escaped per RFC 8259 and invalid UTF-8
 * becomes U+FFFD, so every line parses as JSON whatever a caller passes.
 *
 * Redaction (log_redact) runs over the whole msg before it is cut, so a
 * cut can never leave half an address unredacted. It is two passes: e-mail
 * addresses, then phone numbers (the rule is documented in log.h).
 *
 * Workload: a few lines per request on the hot path. The cost is one
 * malloc'd line buf and one redaction copy per line; no locks, no globals. */
#include "log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

#define LOG_LINE_MAX 16384 /* bytes in one line, '\n' included */
#define LOG_ID_MAX 256     /* escaped bytes kept of request_id / trace_id */
#define PHONE_MAX_DIGITS 15 /* E.164 */

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_init(struct logger *lg, int fd, enum log_level min)
{
	lg->fd = fd;
	lg->min = min;
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

/* ---- JSON strings ------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s (1..4), 0 when invalid
 * (stray continuation, overlong form, surrogate, past U+10FFFF, cut). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	unsigned long cp;
	size_t need;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if ((c & 0xf0) == 0xe0)
		need = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4;
	else
		return 0;
	if (n < need)
		return 0;
	for (size_t k = 1; k < need; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
	}
	if (need == 3) {
		cp = (c & 0x0fUL) << 12 | (s[1] & 0x3fUL) << 6 | (s[2] & 0x3fUL);
		if (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	} else if (need == 4) {
		cp = (c & 0x07UL) << 18 | (s[1] & 0x3fUL) << 12 | (s[2] & 0x3fUL) << 6 |
		     (s[3] & 0x3fUL);
		if (cp < 0x10000 || cp > 0x10ffff)
			return 0;
	}
	return need;
}

/* Appends s[0..n) as the inside of a JSON string, stopping before the first
 * character that would take b->len past limit. Returns true when all of s
 * went in, false when it stopped (limit, cap or memory). */
static bool put_json(struct buf *b, const char *s, size_t n, size_t limit)
{
	static const char hex[] = "0123456789abcdef";
	size_t i = 0;

	while (i < n) {
		size_t ul = utf8_len((const unsigned char *)s + i, n - i);
		unsigned char c = (unsigned char)s[i];
		const char *out = s + i;
		size_t outlen = ul;
		char esc[7];

		if (ul == 0) {
			out = "\\ufffd";
			outlen = 6;
			ul = 1;
		} else if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			out = esc;
			outlen = 2;
		} else if (c < 0x20) {
			static const char named[] = { ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n',
						      ['\r'] = 'r', ['\t'] = 't' };

			out = esc;
			if (c < sizeof(named) && named[c]) {
				esc[0] = '\\';
				esc[1] = named[c];
				outlen = 2;
			} else {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				outlen = 6;
			}
		}
		if (b->len + outlen > limit || buf_append(b, out, outlen))
			return false;
		i += ul;
	}
	return true;
}

static void buf_truncate(struct buf *b, size_t len)
{
	b->len = len;
	if (b->alloc)
		b->ptr[len] = '\0';
}

/* ---- redaction --------------------------------------------------------- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_alnum(char c)
{
	return is_digit(c) || is_alpha(c);
}

static bool is_email_local(char c)
{
	return is_alnum(c) || (c && strchr("._%+-", c));
}

/* End of the domain starting at s[d] when it makes s[..d-1] an address:
 * labels of letters, digits and '-', at least one dot, no empty label, and
 * a last label of 2+ characters with a letter in it (so "pkg@1.2.3" is not
 * an address). A trailing '.' or '-' is the sentence's, not the domain's.
 * Returns 0 when it is no domain. */
static size_t email_domain_end(const char *s, size_t n, size_t d)
{
	size_t e = d, last_dot = 0;
	bool letter = false;

	while (e < n && (is_alnum(s[e]) || s[e] == '-' || s[e] == '.'))
		e++;
	while (e > d && (s[e - 1] == '.' || s[e - 1] == '-'))
		e--;
	if (e == d || !is_alnum(s[d]))
		return 0;
	for (size_t k = d; k < e; k++) {
		if (s[k] == '.') {
			if (s[k - 1] == '.')
				return 0;
			last_dot = k;
		}
	}
	if (!last_dot || e - last_dot - 1 < 2)
		return 0;
	for (size_t k = last_dot + 1; k < e; k++)
		letter = letter || is_alpha(s[k]);
	return letter ? e : 0;
}

static enum st_rc redact_emails(const char *s, size_t n, struct buf *out)
{
	size_t copied = 0;
	enum st_rc rc = ST_OK;

	for (size_t i = 0; i < n && !rc; i++) {
		size_t ls = i, e;

		if (s[i] != '@')
			continue;
		/* Never reach back into text already replaced. */
		while (ls > copied && is_email_local(s[ls - 1]))
			ls--;
		while (ls < i && s[ls] == '.')
			ls++;
		if (ls == i || !(e = email_domain_end(s, n, i + 1)))
			continue;
		rc = buf_append(out, s + copied, ls - copied);
		if (!rc)
			rc = buf_puts(out, "[email]");
		copied = e;
		i = e - 1;
	}
	if (!rc)
		rc = buf_append(out, s + copied, n - copied);
	return rc;
}

/* A character that, right before a candidate, makes it part of a larger
 * token: an identifier, a negative number, a dotted or dashed id, a path. */
static bool phone_glued_before(char c)
{
	return is_alnum(c) || (c && strchr("_-./+@", c));
}

/* Whether the text at s[e] continues the token that ends a candidate
 * there: a letter or digit, "_:/@+", or '-'/'.' followed by a digit (the
 * candidate would be cut out of a date, an IP address or a UUID). A space
 * or other punctuation ends it. */
static bool phone_glued_after(const char *s, size_t n, size_t e)
{
	if (e >= n)
		return false;
	if (is_alnum(s[e]) || strchr("_:/@+", s[e]))
		return true;
	return (s[e] == '-' || s[e] == '.') && e + 1 < n && is_digit(s[e + 1]);
}

struct phone_shape {
	bool plus, paren, mixed;
	char sep;              /* first separator seen */
	unsigned digits, groups, widest;
};

static bool phone_shape_ok(const struct phone_shape *p)
{
	if (p->digits < 7 || p->digits > PHONE_MAX_DIGITS)
		return false;
	if (p->plus)
		return true;
	/* Without '+' ask for 9 digits, which keeps dates (8) out. */
	if (p->digits < 9)
		return false;
	if (p->paren)
		return true;
	if (p->groups < 3 || p->mixed)
		return false;
	/* A dotted quad is an IPv4 address. */
	return !(p->sep == '.' && p->groups == 4 && p->widest <= 3);
}

/* Length of the longest phone number starting at s[p], 0 if none. Groups
 * are digit runs, or 1-5 digits in parentheses, joined by one ' ', '-' or
 * '.'; a parenthesised group may be followed by digits directly ("(0)20"). */
static size_t phone_len(const char *s, size_t n, size_t p)
{
	struct phone_shape sh = { 0 };
	size_t i = p, best = 0;

	if (p > 0 && phone_glued_before(s[p - 1]))
		return 0;
	if (s[i] == '+') {
		sh.plus = true;
		i++;
	}
	for (;;) {
		bool pg = i < n && s[i] == '(';
		unsigned gd = 0;

		if (pg)
			i++;
		while (i < n && is_digit(s[i])) {
			i++;
			gd++;
		}
		if (gd == 0)
			break;
		if (pg) {
			if (i >= n || s[i] != ')' || gd > 5)
				break;
			i++;
			sh.paren = true;
		}
		sh.digits += gd;
		sh.groups++;
		if (gd > sh.widest)
			sh.widest = gd;
		if (sh.digits > PHONE_MAX_DIGITS)
			break;
		if (phone_shape_ok(&sh) && !phone_glued_after(s, n, i))
			best = i - p;
		if (i + 1 < n && (s[i] == ' ' || s[i] == '-' || s[i] == '.') &&
		    (is_digit(s[i + 1]) || s[i + 1] == '(')) {
			if (!sh.sep)
				sh.sep = s[i];
			else if (s[i] != sh.sep)
				sh.mixed = true;
			i++;
		} else if (!(pg && i < n && is_digit(s[i]))) {
			break;
		}
	}
	return best;
}

static enum st_rc redact_phones(const char *s, size_t n, struct buf *out)
{
	size_t copied = 0, i = 0;
	enum st_rc rc = ST_OK;

	while (i < n && !rc) {
		size_t m = 0;

		if (is_digit(s[i]) || ((s[i] == '+' || s[i] == '(') && i + 1 < n &&
				       (is_digit(s[i + 1]) || s[i + 1] == '(')))
			m = phone_len(s, n, i);
		if (!m) {
			i++;
			continue;
		}
		rc = buf_append(out, s + copied, i - copied);
		if (!rc)
			rc = buf_puts(out, "[phone]");
		i += m;
		copied = i;
	}
	if (!rc)
		rc = buf_append(out, s + copied, n - copied);
	return rc;
}

enum st_rc log_redact(const char *s, struct buf *out)
{
	size_t start = out->len, n = strlen(s);
	/* "[email]" is at most 2 bytes longer than what it replaces. */
	struct buf mid = BUF_INIT(n > (SIZE_MAX - 64) / 2 ? SIZE_MAX / 2 : n * 2 + 64);
	enum st_rc rc = redact_emails(s, n, &mid);

	if (!rc)
		rc = redact_phones(mid.ptr, mid.len, out);
	buf_release(&mid);
	if (rc)
		buf_truncate(out, start);
	return rc;
}

/* ---- fields ------------------------------------------------------------ */

static enum st_rc put_key(struct buf *fields, const char *key)
{
	enum st_rc rc = buf_puts(fields, ",\"");

	if (!rc && !put_json(fields, key, strlen(key), SIZE_MAX))
		rc = ST_TOO_LARGE;
	if (!rc)
		rc = buf_puts(fields, "\":");
	return rc;
}

void log_field_str(struct buf *fields, const char *key, const char *val)
{
	struct buf red = BUF_INIT(fields->max);
	size_t start = fields->len;
	enum st_rc rc = put_key(fields, key);

	if (!rc && !val) {
		rc = buf_puts(fields, "null");
	} else if (!rc) {
		rc = log_redact(val, &red);
		if (!rc)
			rc = buf_putc(fields, '"');
		if (!rc && !put_json(fields, red.ptr, red.len, SIZE_MAX))
			rc = ST_TOO_LARGE;
		if (!rc)
			rc = buf_putc(fields, '"');
	}
	buf_release(&red);
	if (rc)
		buf_truncate(fields, start);
}

void log_field_int(struct buf *fields, const char *key, int64_t val)
{
	size_t start = fields->len;

	if (put_key(fields, key) || buf_printf(fields, "%lld", (long long)val))
		buf_truncate(fields, start);
}

void log_field_num(struct buf *fields, const char *key, double val)
{
	size_t start = fields->len;
	enum st_rc rc = put_key(fields, key);

	/* JSON has no NaN or infinity; six significant digits are plenty for
	 * durations and rates, and keep lines short. */
	if (!rc)
		rc = isfinite(val) ? buf_printf(fields, "%.6g", val) : buf_puts(fields, "null");
	if (rc)
		buf_truncate(fields, start);
}

/* ---- lines ------------------------------------------------------------- */

/* RFC 3339 UTC with milliseconds: 2026-11-25T18:55:28.123Z */
static void fmt_ts(char *out, size_t n)
{
	struct timespec now;
	struct tm tm;
	size_t k;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + k, n - k, ".%03dZ", (int)(now.tv_nsec / 1000000));
}

/* Writes all of p; a pipe or file takes a line this small in one write(2)
 * in practice, the loop only covers signals and short writes. */
static void write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		len -= (size_t)w;
	}
}

/* request_id, trace_id and the caller's fields, then "}\n". */
static enum st_rc build_tail(struct buf *t, const char *request_id, const char *trace_id,
			     const struct buf *fields, bool with_fields)
{
	static const char *const names[] = { ",\"request_id\":\"", ",\"trace_id\":\"" };
	const char *ids[] = { request_id, trace_id };
	enum st_rc rc = ST_OK;

	for (int k = 0; k < 2 && !rc; k++) {
		if (!ids[k])
			continue;
		rc = buf_puts(t, names[k]);
		if (!rc)
			put_json(t, ids[k], strlen(ids[k]), t->len + LOG_ID_MAX);
		if (!rc)
			rc = buf_putc(t, '"');
	}
	if (!rc && fields && fields->len)
		rc = with_fields ? buf_append(t, fields->ptr, fields->len)
				 : buf_puts(t, ",\"fields_dropped\":true");
	if (!rc)
		rc = buf_puts(t, "}\n");
	return rc;
}

void log_emit(const struct logger *lg, enum log_level lvl, const char *request_id,
	      const char *trace_id, const char *msg, const struct buf *fields)
{
	static const char oom_line[] = "{\"level\":\"error\",\"msg\":\"log: out of memory\"}\n";
	static const char trunc[] = "\",\"truncated\":true";
	struct buf line = BUF_INIT(LOG_LINE_MAX);
	struct buf tail = BUF_INIT(LOG_LINE_MAX);
	struct buf red = BUF_INIT(SIZE_MAX / 2);
	char ts[40];
	enum st_rc rc;

	if (!lg || lvl < lg->min)
		return;
	if ((unsigned)lvl > LOG_ERROR)
		lvl = LOG_ERROR;
	fmt_ts(ts, sizeof(ts));
	rc = buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
			level_names[lvl]);
	if (!rc)
		rc = build_tail(&tail, request_id, trace_id, fields, true);
	if (rc == ST_TOO_LARGE ||
	    (!rc && line.len + sizeof(trunc) + tail.len > LOG_LINE_MAX)) {
		buf_reset(&tail);
		rc = build_tail(&tail, request_id, trace_id, fields, false);
	}
	/* Never fall back to the unredacted text. */
	if (!rc && log_redact(msg ? msg : "", &red))
		rc = buf_puts(&red, "[message not logged: redaction failed]");
	if (!rc) {
		if (put_json(&line, red.ptr, red.len, LOG_LINE_MAX - tail.len - sizeof(trunc)))
			rc = buf_putc(&line, '"');
		else
			rc = buf_puts(&line, trunc);
	}
	if (!rc)
		rc = buf_append(&line, tail.ptr, tail.len);
	if (rc)
		write_all(lg->fd, oom_line, sizeof(oom_line) - 1);
	else
		write_all(lg->fd, line.ptr, line.len);
	buf_release(&red);
	buf_release(&tail);
	buf_release(&line);
}

void log_msg(const struct logger *lg, enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	char *msg;
	int n;

	if (!lg || lvl < lg->min)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* The whole message, not a prefix: a cut could split an address that
	 * redaction would then miss. log_emit bounds the line. */
	msg = malloc((size_t)n + 1);
	if (!msg) {
		log_emit(lg, lvl, NULL, NULL, "log: out of memory", NULL);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, (size_t)n + 1, fmt, ap);
	va_end(ap);
	log_emit(lg, lvl, NULL, NULL, msg, NULL);
	free(msg);
}
