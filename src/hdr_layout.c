/* hdr_layout.c — see hdr_layout.h. Every read is bounds-checked against
 * [start, end): a hostile layout cannot make the walk leave the section. */
#include "hdr_layout.h"

#include <string.h>

#include "banned.h"

void hdr_layout_begin(struct hdr_layout *l, const char *section, size_t size)
{
	l->start = section;
	l->end = section + size;
	l->next = NULL;
	l->q = l->qend = NULL;
	l->fault = HDR_OK;
}

static bool inside(const struct hdr_layout *l, const char *p)
{
	return p >= l->start && p < l->end;
}

/* How the line before a field (or the section's end) was ended, given the
 * position e where its value stopped (strlen) and where the following
 * thing really starts. Clean: NUL NUL (was CR LF) and nothing between. */
static enum hdr_fault line_end(const char *e, const char *following)
{
	if (following == e + 2 && !e[1])
		return HDR_OK;
	if (following == e + 1)
		return HDR_BARE_LF;
	/* More bytes than a line end: the value stopped at a NUL that was
	 * data, and the rest of the line was dropped. */
	return HDR_NUL;
}

void hdr_layout_request(struct hdr_layout *l, const char *url, const char *version)
{
	size_t ulen, vlen;

	if (l->fault || !url || !version)
		return;
	if (!inside(l, url) || !inside(l, version) || url <= l->start || version <= url) {
		l->fault = HDR_LAYOUT;
		return;
	}
	/* Bounded: version lies inside, so both end before l->end. */
	ulen = strnlen(url, (size_t)(l->end - url));
	vlen = strnlen(version, (size_t)(l->end - version));
	if (version + vlen + 1 >= l->end) {
		l->fault = HDR_LAYOUT;
		return;
	}
	/* method NUL url: one byte between, the space (a NUL in the method
	 * makes the method end early, a second space moves the url). */
	if (strnlen(l->start, (size_t)(url - l->start)) + 1 != (size_t)(url - l->start)) {
		l->fault = url[-1] ? HDR_LAYOUT : HDR_NUL;
		return;
	}
	if (url + ulen == version - 1) {
		l->q = NULL; /* no '?' */
	} else if (url + ulen < version - 1) {
		l->q = url + ulen + 1;
		l->qend = version - 1;
	} else {
		l->fault = HDR_LAYOUT;
		return;
	}
	l->next = version + vlen + 2;
}

void hdr_layout_arg(struct hdr_layout *l, const char *key, size_t key_len, const char *value,
		    size_t value_len)
{
	const char *e;

	if (l->fault)
		return;
	if (!l->q || key != l->q) {
		l->fault = HDR_NUL; /* bytes the argument parser never reached */
		return;
	}
	if (value && value != key + key_len + 1) {
		l->fault = HDR_LAYOUT;
		return;
	}
	e = value ? value + value_len : key + key_len;
	if (e > l->qend) {
		l->fault = HDR_LAYOUT;
		return;
	}
	l->q = e + 1;
}

/* After the last argument: the query must be used up (a trailing '&' or
 * '?' leaves one byte). Bytes left are what a NUL hid from the parser. */
static void query_done(struct hdr_layout *l)
{
	if (!l->fault && l->q && l->q != l->qend && l->q != l->qend + 1)
		l->fault = HDR_NUL;
	l->q = NULL;
}

void hdr_layout_field(struct hdr_layout *l, const char *name, size_t name_len, const char *value,
		      size_t value_len)
{
	const char *colon = name + name_len;

	query_done(l);
	if (l->fault)
		return;
	/* A folded line made libmicrohttpd move the name out of the read
	 * buffer to append the continuation to it. Nothing else does. */
	if (!inside(l, name) || name_len >= (size_t)(l->end - name)) {
		l->fault = HDR_FOLDED;
		return;
	}
	if (!l->next) {
		/* The request line (not walked) ends right before: NUL NUL,
		 * or NUL alone for a bare LF. */
		if (name - l->start < 2 || name[-1])
			l->fault = HDR_LAYOUT;
		else if (name[-2])
			l->fault = HDR_BARE_LF;
	} else if (name <= l->next - 2) {
		l->fault = HDR_LAYOUT; /* overlaps the previous line */
	} else {
		l->fault = line_end(l->next - 2, name);
	}
	if (l->fault)
		return;
	/* name NUL(colon) [SP / HTAB]* value */
	if (!value || value <= colon || !inside(l, value) || value_len >= (size_t)(l->end - value)) {
		l->fault = HDR_LAYOUT;
		return;
	}
	for (const char *p = colon + 1; p < value; p++) {
		if (*p != ' ' && *p != '\t') {
			l->fault = HDR_LAYOUT;
			return;
		}
	}
	if (memchr(value, '\r', value_len) || memchr(name, '\r', name_len)) {
		l->fault = HDR_BARE_CR;
		return;
	}
	/* value_len < end - value, so value + value_len is inside; the
	 * comparison in line_end() needs one more byte. */
	if (value + value_len + 1 >= l->end) {
		l->fault = HDR_LAYOUT;
		return;
	}
	l->next = value + value_len + 2;
}

enum hdr_fault hdr_layout_end(struct hdr_layout *l)
{
	const char *e;

	query_done(l);
	if (l->fault || !l->next)
		return l->fault;
	/* After the last line's end, the empty line: NUL NUL, then the end. */
	e = l->next - 2;
	if (l->end == e + 4 && !e[1] && !e[2] && !e[3])
		return HDR_OK;
	if (l->end == e + 2 || l->end == e + 3)
		return l->fault = HDR_BARE_LF;
	return l->fault = HDR_NUL;
}

const char *hdr_fault_str(enum hdr_fault f)
{
	static const char *const names[] = {
		[HDR_OK] = "ok",
		[HDR_FOLDED] = "a folded header line (obs-fold)",
		[HDR_NUL] = "a NUL byte in the request line or a header line",
		[HDR_BARE_CR] = "a CR not followed by LF in a header line",
		[HDR_BARE_LF] = "a header line ended by LF without CR",
		[HDR_LAYOUT] = "a malformed request line or header section",
	};

	return (unsigned)f < sizeof(names) / sizeof(names[0]) ? names[f] : "?";
}
