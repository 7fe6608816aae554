/* log_redact.c — masks e-mail addresses and phone numbers in log text.
 *
 * The rules are log.h's (log_redact). Two passes: e-mail addresses, then
 * phone numbers over the first pass's output. Most log text (paths, ids,
 * IP addresses, fixed messages) matches neither, so a pass is skipped when
 * a quick scan shows it cannot match — no '@' for the e-mail pass, no run
 * of phone characters with enough digits for the phone pass — and
 * log_redact_view() hands such text back where it lies instead of copying
 * it. An intermediate buf is needed only when an address was found and
 * the text may also hold a phone number. log_redact_full() runs both
 * passes with none of these shortcuts; the unit tests hold the two to the
 * same output byte for byte.
 *
 * Request targets (log_redact_target) are split first: each path segment
 * and query name or value is percent-decoded on its own and replaced as a
 * whole when it holds an address or a number, since in a URL they are
 * glued by '/' and hidden by escapes ("/x/+306912345678",
 * "?email=bob%40example.org") where the free-text rules would not look.
 *
 * Workload: every string a log line carries (msg and each string field)
 * passes through here, a handful per request; nothing matches in the
 * common case. */
#include "log_redact.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "hex.h"
#include "log.h"
#include "banned.h"

#define PHONE_MAX_DIGITS 15 /* E.164 */

static void buf_truncate(struct buf *b, size_t len)
{
	b->len = len;
	if (b->alloc)
		b->ptr[len] = '\0';
}

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

/* The first e-mail address in s[from..n) as [*ms, *me). Its local part
 * never reaches back before from, where the text already replaced ends. */
static bool email_find(const char *s, size_t n, size_t from, size_t *ms, size_t *me)
{
	size_t i = from;

	while (i < n) {
		const char *at = memchr(s + i, '@', n - i);
		size_t a, ls, e;

		if (!at)
			return false;
		a = (size_t)(at - s);
		ls = a;
		while (ls > from && is_email_local(s[ls - 1]))
			ls--;
		while (ls < a && s[ls] == '.')
			ls++;
		if (ls != a && (e = email_domain_end(s, n, a + 1)) != 0) {
			*ms = ls;
			*me = e;
			return true;
		}
		i = a + 1;
	}
	return false;
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

/* The first phone number in s[from..n) as [*ms, *me). */
static bool phone_find(const char *s, size_t n, size_t from, size_t *ms, size_t *me)
{
	for (size_t i = from; i < n; i++) {
		size_t m;

		if (!is_digit(s[i]) && !((s[i] == '+' || s[i] == '(') && i + 1 < n &&
					 (is_digit(s[i + 1]) || s[i + 1] == '(')))
			continue;
		m = phone_len(s, n, i);
		if (m) {
			*ms = i;
			*me = i + m;
			return true;
		}
	}
	return false;
}

/* Whether s can hold a phone number at all. A number's characters are
 * digits, "+()" and the separators " -.", so it lies inside one run of
 * those, and it has 9+ digits or 7+ after a '+' (log.h rules 1-3). Paths,
 * ids, IPv4 addresses and most prose fail this in one cheap scan. It is
 * also true of the e-mail pass's output only if it is true of its input:
 * "[email]" holds none of those characters, so runs never merge. */
static bool phone_possible(const char *s, size_t n)
{
	unsigned digits = 0;
	bool plus = false;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (is_digit(c)) {
			if (++digits >= 9 || (digits >= 7 && plus))
				return true;
		} else if (c == '+') {
			plus = true;
		} else if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')') {
			digits = 0;
			plus = false;
		}
	}
	return false;
}

/* What each byte from 0x20 to 0x7e is to log_text_plain, one letter a
 * byte: 'o' other (ends a run of phone characters), 'd' digit, 'r' a run
 * character (" -.()"), 'p' '+', 'b' refused ('"', '\\', '@'), '%' '%'. */
static const char text_class[] =
	"roboo%oorroporroddddddddddoooooo"  /* 0x20 ' ' to 0x3f '?' */
	"booooooooooooooooooooooooooobooo"  /* 0x40 '@' to 0x5f '_' */
	"ooooooooooooooooooooooooooooooo";  /* 0x60 '`' to 0x7e '~' */

bool log_text_plain(const char *s, size_t n, bool target)
{
	unsigned digits = 0;
	bool plus = false;

	/* phone_possible's walk, with the bytes that need escaping or could
	 * start an e-mail address (or an escape in a target) refused on the
	 * way. */
	for (size_t i = 0; i < n; i++) {
		unsigned c = (unsigned char)s[i] - 0x20u;
		char k;

		if (c >= sizeof(text_class) - 1)
			return false; /* control, DEL, not ASCII */
		k = text_class[c];
		if (k == 'o') {
			digits = 0;
			plus = false;
		} else if (k == 'd') {
			if (++digits >= 9 || (digits >= 7 && plus))
				return false;
		} else if (k == 'p') {
			plus = true;
		} else if (k == 'b' || (k == '%' && target)) {
			return false;
		} else if (k == '%') {
			digits = 0; /* a '%' outside a target is other text */
			plus = false;
		}
	}
	return true;
}

enum redact_kind { REDACT_EMAIL, REDACT_PHONE };

/* Appends s[0..n) to out with every match of kind replaced, the first
 * match being [ms, me) (already found). */
static enum st_rc redact_pass(enum redact_kind kind, const char *s, size_t n, size_t ms,
			      size_t me, struct buf *out)
{
	static const char *const label[] = { "[email]", "[phone]" };
	size_t copied = 0;
	enum st_rc rc;
	bool more;

	do {
		rc = buf_append(out, s + copied, ms - copied);
		if (!rc)
			rc = buf_append(out, label[kind], 7);
		copied = me;
		more = kind == REDACT_EMAIL ? email_find(s, n, copied, &ms, &me)
					    : phone_find(s, n, copied, &ms, &me);
	} while (!rc && more);
	if (!rc)
		rc = buf_append(out, s + copied, n - copied);
	return rc;
}

/* The e-mail pass's output is at most 2 bytes longer per address. */
static size_t mid_cap(size_t n)
{
	return n > (SIZE_MAX - 64) / 2 ? SIZE_MAX / 2 : n * 2 + 64;
}

/* Redacts s[0..n). The result is appended to out and *res points at it
 * there — except, when view is set and nothing matched, *res is s itself
 * and out is untouched (no copy). Only text that holds an e-mail address
 * and may hold a phone number needs an intermediate buf. On error out is
 * left as it was. */
static enum st_rc redact(const char *s, size_t n, bool view, struct buf *out, const char **res,
			 size_t *res_n)
{
	size_t start = out->len, ms = 0, me = 0;
	bool email = memchr(s, '@', n) && email_find(s, n, 0, &ms, &me);
	bool phone = phone_possible(s, n);
	struct buf mid = BUF_INIT(mid_cap(n));
	const char *t = s;
	size_t tn = n;
	enum st_rc rc = ST_OK;

	if (email && !phone) {
		rc = redact_pass(REDACT_EMAIL, s, n, ms, me, out);
	} else {
		if (email) {
			rc = redact_pass(REDACT_EMAIL, s, n, ms, me, &mid);
			t = mid.ptr;
			tn = mid.len;
		}
		if (rc) {
			/* reported below */
		} else if (phone && phone_find(t, tn, 0, &ms, &me)) {
			rc = redact_pass(REDACT_PHONE, t, tn, ms, me, out);
		} else if (view && !email) {
			*res = s;
			*res_n = n;
			return ST_OK; /* mid was never used */
		} else {
			rc = buf_append(out, t, tn);
		}
	}
	buf_release(&mid);
	if (rc) {
		buf_truncate(out, start);
		return rc;
	}
	*res = out->ptr + start;
	*res_n = out->len - start;
	return ST_OK;
}

enum st_rc log_redact(const char *s, struct buf *out)
{
	const char *res;
	size_t res_n;

	return redact(s, strlen(s), false, out, &res, &res_n);
}

enum st_rc log_redact_view(const char *s, size_t n, struct buf *scratch, const char **res,
			   size_t *res_n)
{
	return redact(s, n, true, scratch, res, res_n);
}

enum st_rc log_redact_full(const char *s, struct buf *out)
{
	size_t start = out->len, n = strlen(s), ms, me;
	struct buf mid = BUF_INIT(mid_cap(n));
	enum st_rc rc;

	if (email_find(s, n, 0, &ms, &me))
		rc = redact_pass(REDACT_EMAIL, s, n, ms, me, &mid);
	else
		rc = buf_append(&mid, s, n);
	if (!rc && phone_find(mid.ptr, mid.len, 0, &ms, &me))
		rc = redact_pass(REDACT_PHONE, mid.ptr, mid.len, ms, me, out);
	else if (!rc)
		rc = buf_append(out, mid.ptr, mid.len);
	buf_release(&mid);
	if (rc)
		buf_truncate(out, start);
	return rc;
}

/* ---------------------------------------------------------------- targets */

/* What one component of a target (a path segment, a query name or value)
 * holds once percent-decoded ('+' a space in the query): -1 nothing, else
 * the redact_kind. Malformed escapes stay as they are. */
static int component_pii(const char *s, size_t n, bool plus_space, struct buf *dec)
{
	size_t ms, me;

	buf_reset(dec);
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%' && i + 2 < n && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
			c = (char)(hex_digit(s[i + 1]) << 4 | hex_digit(s[i + 2]));
			i += 2;
		} else if (c == '+' && plus_space) {
			c = ' ';
		}
		if (buf_putc(dec, c))
			return -1;
	}
	if (!dec->len)
		return -1;
	if (memchr(dec->ptr, '@', dec->len) && email_find(dec->ptr, dec->len, 0, &ms, &me))
		return REDACT_EMAIL;
	if (phone_possible(dec->ptr, dec->len) && phone_find(dec->ptr, dec->len, 0, &ms, &me))
		return REDACT_PHONE;
	return -1;
}

/* Appends s[0..n) split at each of seps, every piece that holds PII
 * replaced by its label. */
static enum st_rc redact_pieces(const char *s, size_t n, const char *seps, bool plus_space,
				struct buf *dec, struct buf *out)
{
	static const char *const label[] = { "[email]", "[phone]" };
	enum st_rc rc = ST_OK;

	for (size_t i = 0; i <= n && !rc;) {
		size_t e = i;
		int kind;

		while (e < n && !strchr(seps, s[e]))
			e++;
		kind = component_pii(s + i, e - i, plus_space, dec);
		rc = kind < 0 ? buf_append(out, s + i, e - i) : buf_append(out, label[kind], 7);
		if (!rc && e < n)
			rc = buf_putc(out, s[e]);
		i = e + 1;
	}
	return rc;
}

/* Whether a target needs no piece replaced: the shortcut of
 * log_redact_target, shared with log_redact_target_view. */
static bool target_plain(const char *target, size_t n)
{
	return !memchr(target, '%', n) && !memchr(target, '@', n) && !phone_possible(target, n);
}

enum st_rc log_redact_target_view(const char *target, size_t n, struct buf *scratch,
				  const char **res, size_t *res_n)
{
	size_t start = scratch->len;
	enum st_rc rc;

	if (target_plain(target, n)) {
		*res = target;
		*res_n = n;
		return ST_OK;
	}
	rc = log_redact_target(target, scratch);
	if (rc)
		return rc;
	*res = scratch->ptr + start;
	*res_n = scratch->len - start;
	return ST_OK;
}

enum st_rc log_redact_target(const char *target, struct buf *out)
{
	size_t start = out->len, n = strlen(target);
	const char *q = memchr(target, '?', n);
	size_t pn = q ? (size_t)(q - target) : n;
	struct buf dec = BUF_INIT(n + 1);
	enum st_rc rc;

	/* Most paths have no escape, no '@' and no run of phone characters:
	 * copied as they are. */
	if (target_plain(target, n))
		return buf_append(out, target, n);
	rc = redact_pieces(target, pn, "/", false, &dec, out);
	if (!rc && q) {
		rc = buf_putc(out, '?');
		if (!rc)
			rc = redact_pieces(q + 1, n - pn - 1, "&=;", true, &dec, out);
	}
	buf_release(&dec);
	if (rc)
		buf_truncate(out, start);
	return rc;
}
