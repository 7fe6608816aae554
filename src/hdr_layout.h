/* hdr_layout.h — what libmicrohttpd 0.9.75 hides in a request's header
 * section, found from where it left the bytes.
 *
 * libmicrohttpd 0.9.75 parses the header section in place: it turns each
 * line's CR LF (or a bare LF) into NUL bytes, the colon after a field name
 * into a NUL, and hands out pointers into that buffer, measuring names and
 * values with strlen(). So, as the parsed fields show them:
 *   - a folded line (obs-fold, "Content-Length:\r\n 79") is appended to the
 *     field's NAME, which is moved to a new block outside the buffer: the
 *     field becomes "Content-Length79" with an empty value, and
 *     Content-Length is gone (request smuggling);
 *   - a NUL inside a line ends the value early ("ab\0cd" reads "ab");
 *   - a bare LF ends a line (a proxy may not agree);
 *   - a bare CR stays inside the value.
 * None of these shows in the names and values themselves, but all of them
 * show in the layout: in a clean section every field line is
 *     name NUL(colon) [SP/HTAB]* value NUL(CR) NUL(LF)
 * and the next line starts right after it; the section ends with one more
 * NUL NUL (the empty line). The checker walks the fields in arrival order
 * and compares. docs/internals/http-framing.md has the whole story.
 *
 * It is pure (no libmicrohttpd calls) so it can be unit-tested and fuzzed
 * against a model of the parser. It reads only bytes inside the section. */
#ifndef SETTLED_HDR_LAYOUT_H
#define SETTLED_HDR_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>

enum hdr_fault {
	HDR_OK = 0,
	HDR_FOLDED,  /* a field line continued on the next line (obs-fold) */
	HDR_NUL,     /* a NUL byte inside a line */
	HDR_BARE_CR, /* a CR not followed by LF */
	HDR_BARE_LF, /* a line ended by LF alone */
	HDR_LAYOUT,  /* anything else that does not add up: refused too */
};

/* The walk's state; fill with hdr_layout_begin. */
struct hdr_layout {
	const char *start;  /* the request line's first byte */
	const char *end;    /* one past the empty line that ends the section */
	const char *next;   /* where the next field line must start; NULL: unknown yet */
	const char *q;      /* the next query argument's place; NULL: no query */
	const char *qend;   /* the query's end (the NUL that was the space) */
	enum hdr_fault fault;
};

/* section: the request line's first byte (the method libmicrohttpd hands
 * the handler); size: MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE. */
void hdr_layout_begin(struct hdr_layout *l, const char *section, size_t size);

/* The request line (optional; before any field): the method is the
 * section's first byte; url and version as libmicrohttpd hands them to
 * the handler, url undecoded (http.c keeps it so). In a clean line
 *     method NUL url [NUL(?) query] NUL(space) version
 * lie back to back, one space apart, and the query's arguments follow each
 * other: key [NUL(=) value], NUL(&) between. A NUL in the method, the path
 * or the query, or a second space, breaks that (HDR_NUL / HDR_LAYOUT);
 * after it the first field is checked against the version's end. */
void hdr_layout_request(struct hdr_layout *l, const char *url, const char *version);

/* One query argument as libmicrohttpd stored it (value NULL for "?flag"),
 * in order, after hdr_layout_request and before the fields. */
void hdr_layout_arg(struct hdr_layout *l, const char *key, size_t key_len, const char *value,
		    size_t value_len);

/* One header field as libmicrohttpd stored it, in arrival order. The first
 * fault found is kept; later calls then do nothing. */
void hdr_layout_field(struct hdr_layout *l, const char *name, size_t name_len, const char *value,
		      size_t value_len);

/* The verdict once every field was given. */
enum hdr_fault hdr_layout_end(struct hdr_layout *l);

/* "obs-fold", "NUL", ...: for the error message. */
const char *hdr_fault_str(enum hdr_fault f);

#endif
