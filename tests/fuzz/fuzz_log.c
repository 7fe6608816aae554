/* fuzz_log.c — log_redact and the log line writer (src/log.h).
 *
 * The input is cut at 0xff bytes into up to four parts: a message, a field
 * value, a request id and the rest (used as prefix/suffix around planted
 * personal data). Checks:
 *   - log_redact never fails on a roomy buf, keeps valid UTF-8 valid, and
 *     on a buf too small for the result fails with the buf as it was;
 *   - a well-formed e-mail address and an international phone number,
 *     planted between blanks in arbitrary text, never survive redaction;
 *   - every line log_emit writes (to a memfd) is one line, at most 16 KiB,
 *     and parses as a JSON object whose msg is the redacted message when
 *     the message was valid UTF-8 and short enough not to be cut — whatever
 *     bytes the caller passed (log.c promises this for hostile paths,
 *     headers and ids);
 *   - log_redact_target (request paths and query strings) never fails on
 *     a roomy buf, leaves a target without '%', '@' or phone characters
 *     as it was, and a planted path segment or query value holding a phone
 *     number or an e-mail address, plain or percent-encoded, between
 *     fuzzed segments, never survives. */
#include <jansson.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buf.h"
#include "fuzz.h"
#include "log.h"

#define LINE_MAX_BYTES 16384

static const char email[] = "john.doe@example.com";
static const char phone[] = "+44 20 7946 0958";

/* The planted data sit between \x01 and \x02, which no fuzzed part holds
 * (they are blanked out), so finding "\x01<address>" in the output means
 * the planted copy itself survived. */
static void check_planted(char *pre, char *post)
{
	struct buf in = BUF_INIT(1 << 20), out = BUF_INIT(1 << 21);

	for (char *p = pre; *p; p++)
		if (*p == '\x01' || *p == '\x02')
			*p = ' ';
	for (char *p = post; *p; p++)
		if (*p == '\x01' || *p == '\x02')
			*p = ' ';
	buf_printf(&in, "%s\x01%s\x02\x01%s\x02%s", pre, email, phone, post);
	FUZZ_CHECK(log_redact(in.ptr, &out) == ST_OK);
	FUZZ_CHECK(!strstr(out.ptr, "\x01john.doe@example.com\x02"));
	FUZZ_CHECK(!strstr(out.ptr, "\x01+44 20 7946 0958\x02"));
	buf_release(&in);
	buf_release(&out);
}

static void check_redact(const char *s)
{
	struct buf out = BUF_INIT(1 << 21), small;
	size_t n = strlen(s);

	FUZZ_CHECK(log_redact(s, &out) == ST_OK);
	if (fuzz_utf8_valid(s, n))
		FUZZ_CHECK(fuzz_utf8_valid(out.ptr, out.len));
	/* A capped buf that already holds something: all or nothing. */
	if (out.len > 4) {
		buf_init(&small, 4 + out.len / 2);
		buf_puts(&small, "abc");
		FUZZ_CHECK(log_redact(s, &small) != ST_OK);
		FUZZ_CHECK(small.len == 3 && !strcmp(small.ptr, "abc"));
		buf_release(&small);
	}
	buf_release(&out);
}

static void check_line(const char *msg, const char *val, const char *rid)
{
	static int fd = -1;
	struct logger lg;
	struct buf fields = BUF_INIT(LINE_MAX_BYTES), red = BUF_INIT(1 << 21);
	char line[LINE_MAX_BYTES + 2];
	off_t end;
	json_t *j;
	json_error_t jerr;

	if (fd < 0)
		fd = memfd_create("fuzz_log", 0);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0);
	log_init(&lg, fd, LOG_DEBUG);
	log_field_str(&fields, "path", val);
	log_field_str(&fields, val, "x");
	log_field_int(&fields, "status", 400);
	log_emit(&lg, LOG_INFO, rid, "4bf92f3577b34da6a3ce929d0e0e4736", msg, &fields);
	end = lseek(fd, 0, SEEK_CUR);
	FUZZ_CHECK(end > 0 && end <= LINE_MAX_BYTES);
	FUZZ_CHECK(pread(fd, line, (size_t)end, 0) == end);
	line[end] = '\0';
	FUZZ_CHECK(line[end - 1] == '\n' && !memchr(line, '\n', (size_t)end - 1));
	j = json_loadb(line, (size_t)end, 0, &jerr);
	if (!j)
		fprintf(stderr, "not JSON (%s): %s\n", jerr.text, line);
	FUZZ_CHECK(json_is_object(j));
	FUZZ_CHECK(log_redact(msg, &red) == ST_OK);
	if (fuzz_utf8_valid(red.ptr, red.len) && !json_object_get(j, "truncated")) {
		json_t *m = json_object_get(j, "msg");

		FUZZ_CHECK(json_is_string(m) && json_string_length(m) == red.len &&
			   !memcmp(json_string_value(m), red.ptr, red.len));
	}
	json_decref(j);
	buf_release(&red);
	buf_release(&fields);
}

/* The planted target components; each decodes to a phone number or an
 * address the rules must catch on its own. */
static const char *const planted_segments[] = {
	"+306912345678", "%2B306912345678", "+44%2020%207946%200958", "020%207946%200958",
	"john.doe%40example.com", "john.doe@example.com",
};
static const char *const planted_values[] = {
	"+30+691+234+5678", "%2B306912345678", "john.doe%40example.com", "555-123-4567",
};

/* a / b: fuzzed text made target-safe ('/', '?', '&', '=', ';' and '%'
 * become '_', so the planted piece stays a component of its own). */
static void check_target(char *a, char *b)
{
	struct buf t = BUF_INIT(1 << 20), out = BUF_INIT(1 << 21);
	size_t pick = (strlen(a) + 3 * strlen(b)) % 6;

	for (char *p = a; *p; p++)
		if (strchr("/?&=;%", *p))
			*p = '_';
	for (char *p = b; *p; p++)
		if (strchr("/?&=;%", *p))
			*p = '_';
	/* Unplanted: never fails; a target redaction cannot touch is kept. */
	buf_puts(&t, "/");
	buf_puts(&t, a);
	FUZZ_CHECK(log_redact_target(t.ptr, &out) == ST_OK);
	if (!strchr(t.ptr, '@') && !strpbrk(t.ptr, "0123456789"))
		FUZZ_CHECK(out.len == t.len && !memcmp(out.ptr, t.ptr, t.len));
	buf_reset(&out);
	/* Planted in the path and in the query. */
	buf_puts(&t, "/");
	buf_puts(&t, planted_segments[pick]);
	buf_puts(&t, "/");
	buf_puts(&t, b);
	buf_puts(&t, "?q=");
	buf_puts(&t, planted_values[pick % 4]);
	buf_puts(&t, "&r=");
	buf_puts(&t, a);
	FUZZ_CHECK(log_redact_target(t.ptr, &out) == ST_OK);
	FUZZ_CHECK(strstr(out.ptr, "/[phone]/") || strstr(out.ptr, "/[email]/"));
	FUZZ_CHECK(strstr(out.ptr, "?q=[phone]&r=") || strstr(out.ptr, "?q=[email]&r="));
	buf_release(&t);
	buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strndup(data, size);
	char *parts[4] = { s, (char *)"", (char *)"", (char *)"" };
	size_t k = 1;

	for (char *p = s; k < 4 && (p = strchr(p, '\xff')); k++) {
		*p++ = '\0';
		parts[k] = p;
	}
	check_redact(parts[0]);
	check_line(parts[0], parts[1], parts[2][0] ? parts[2] : NULL);
	check_planted(parts[3], parts[0]);
	check_target(parts[1], parts[2]);
	free(s);
	return 0;
}
