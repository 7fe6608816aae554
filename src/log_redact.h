/* log_redact.h — redaction for the log module's own use (log.c).
 *
 * Not an API for other modules: they call log_redact() (log.h), whose
 * header documents the rules. This is the same without a copy, for the
 * line builder: text in which nothing matched is used where it lies. */
#ifndef SETTLED_LOG_REDACT_H
#define SETTLED_LOG_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* Redacts s[0..n) (no NUL inside). When nothing matched, *res is s itself
 * and scratch is untouched; otherwise the redacted text is appended to
 * scratch and *res points at it there. Either way *res_n is its length and
 * *res stays valid while s and scratch are. The caller releases scratch.
 * Returns ST_OK, or scratch's error with scratch left as it was. */
enum st_rc log_redact_view(const char *s, size_t n, struct buf *scratch, const char **res,
			   size_t *res_n);

/* Whether s[0..n) goes into a line as it is: no byte that JSON escapes
 * (control, '"', '\\', DEL, non-ASCII) and nothing redaction could change
 * (no '@', no run of phone characters that phone_possible would pass, and
 * for a target (target set) no '%'). One pass and no copy: the shortcut
 * for the short ids, addresses and paths of the request line. False says
 * only "take the full path". */
bool log_text_plain(const char *s, size_t n, bool target);

/* log_redact_target (log.h) the same way: a target that needs nothing
 * replaced is handed back where it lies (*res = target); otherwise the
 * result is appended to scratch. Same contract as log_redact_view. */
enum st_rc log_redact_target_view(const char *target, size_t n, struct buf *scratch,
				  const char **res, size_t *res_n);

#endif
