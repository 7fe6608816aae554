/* mhd_model.h — a model of how libmicrohttpd 0.9.75 parses a header
 * section in place (src/microhttpd/connection.c: get_next_header_line,
 * process_header_line, process_broken_line), for the tests of
 * src/hdr_layout.h (tests/unit/test_hdr_layout.c, tests/fuzz/fuzz_headers.c).
 *
 * Like the library it turns CR LF or a bare LF into NULs, the colon into a
 * NUL, skips SP/HTAB before a value, measures names and values with
 * strlen(), and appends a folded line to the NAME in a new block after the
 * buffer's data (zeroing the old name), as MHD_pool_reallocate does. */
#ifndef SETTLED_MHD_MODEL_H
#define SETTLED_MHD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define MODEL_FIELDS_MAX 256

struct model_field {
	const char *name, *value;
	size_t name_len, value_len;
};

struct model {
	char *buf;          /* input copy, then room for moved names */
	size_t len, cap, top;
	size_t section;     /* bytes of request line + fields + empty line */
	struct model_field f[MODEL_FIELDS_MAX];
	size_t n;
	/* the request line (parse_initial_message_line, MHD_parse_arguments_
	 * with an unescape callback that changes nothing) */
	const char *url, *version;
	struct model_field arg[MODEL_FIELDS_MAX];
	size_t nargs;
	/* More arguments than arg[] holds: the ones past it were parsed but
	 * not recorded, so a walk over arg[] cannot be compared with one over
	 * the whole query (libmicrohttpd itself records them all, or answers
	 * 431 when its pool runs out). */
	bool args_lost;
};

/* Next line from *pos: its start, the line end turned into NULs; NULL when
 * no line end is left. *n (may be NULL) gets the line's length. */
static inline char *model_line_n(struct model *m, size_t *pos, size_t *n)
{
	for (size_t i = *pos; i < m->len; i++) {
		char *line = m->buf + *pos;

		if (n)
			*n = i - *pos;
		if (m->buf[i] == '\r' && i + 1 < m->len && m->buf[i + 1] == '\n') {
			m->buf[i] = m->buf[i + 1] = '\0';
			*pos = i + 2;
			return line;
		}
		if (m->buf[i] == '\n') {
			m->buf[i] = '\0';
			*pos = i + 1;
			return line;
		}
	}
	return NULL;
}

static inline char *model_line(struct model *m, size_t *pos)
{
	return model_line_n(m, pos, NULL);
}

static inline void model_arg(struct model *m, char *key, char *value)
{
	for (char *p = key; *p; p++)
		if (*p == '+')
			*p = ' ';
	for (char *p = value; p && *p; p++)
		if (*p == '+')
			*p = ' ';
	if (m->nargs == MODEL_FIELDS_MAX) {
		m->args_lost = true;
	} else {
		m->arg[m->nargs].name = key;
		m->arg[m->nargs].name_len = strlen(key);
		m->arg[m->nargs].value = value;
		m->arg[m->nargs].value_len = value ? strlen(value) : 0;
		m->nargs++;
	}
}

/* The request line line[0..n): method SP uri SP version, split in place. */
static inline bool model_request_line(struct model *m, char *line, size_t n)
{
	char *uri = memchr(line, ' ', n), *ver, *args;
	size_t ulen;

	m->nargs = 0;
	m->args_lost = false;
	if (!uri || uri == line)
		return false;
	*uri++ = '\0';
	while (*uri == ' ' && (size_t)(uri - line) < n)
		uri++;
	if ((size_t)(uri - line) == n)
		return false;
	ver = line + n - 1;
	while (*ver == ' ' && ver > uri)
		ver--;
	while (*ver != ' ' && ver > uri)
		ver--;
	if (ver <= uri)
		return false;
	*ver = '\0';
	m->version = ver + 1;
	ulen = (size_t)(ver - uri);
	args = memchr(uri, '?', ulen);
	m->url = uri;
	if (!args)
		return true;
	*args++ = '\0';
	while (*args) {
		char *eq = strchr(args, '='), *amp = strchr(args, '&');

		if (!amp) {
			if (eq)
				*eq++ = '\0';
			model_arg(m, args, eq);
			break;
		}
		*amp++ = '\0';
		if (!eq || eq >= amp) {
			model_arg(m, args, NULL);
		} else {
			*eq++ = '\0';
			model_arg(m, args, eq);
		}
		args = amp;
	}
	return true;
}

/* process_header_line: name, value start; false without a colon (C string). */
static inline bool model_split(char *line, char **value)
{
	char *colon = strchr(line, ':');

	if (!colon)
		return false;
	*colon++ = '\0';
	while (*colon == ' ' || *colon == '\t')
		colon++;
	*value = colon;
	return true;
}

/* Parses m->buf[0..len) (cap bytes allocated). True when a whole section
 * was parsed the way the library accepts it; false where it would answer
 * its own error (no colon, too many fields, no room) or wait for more. */
static inline bool model_parse(struct model *m)
{
	size_t pos = 0;
	char *line, *last = NULL, *value = NULL;

	size_t rl;

	m->top = m->len;
	m->n = 0;
	line = model_line_n(m, &pos, &rl);
	if (!line || !*line || !model_request_line(m, line, rl))
		return false;
	for (;;) {
		line = model_line(m, &pos);
		if (!line)
			return false;
		if (last && (line[0] == ' ' || line[0] == '\t')) {
			size_t ll = strlen(last), tl;
			char *moved = m->buf + m->top;

			while (*line == ' ' || *line == '\t')
				line++;
			tl = strlen(line);
			if (m->top + ll + tl + 1 > m->cap)
				return false;
			memmove(moved, last, ll);
			if (last < m->buf + m->len)
				memset(last, 0, ll + 1);
			memcpy(moved + ll, line, tl + 1);
			m->top += ll + tl + 1;
			last = moved;
			continue;
		}
		if (last) {
			if (m->n == MODEL_FIELDS_MAX)
				return false;
			m->f[m->n].name = last;
			m->f[m->n].name_len = strlen(last);
			m->f[m->n].value = value;
			m->f[m->n].value_len = strlen(value);
			m->n++;
			last = NULL;
		}
		if (!line[0])
			break;
		if (!model_split(line, &value))
			return false;
		last = line;
	}
	m->section = pos;
	return true;
}

#endif
