/* reqcheck.c — see reqcheck.h. */
#include "reqcheck.h"

#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "json_out.h"
#include "banned.h"

bool reqcheck_fields(struct req_ctx *rq, const json_t *body, const char *const *fields)
{
	const char *key;
	json_t *v;

	if (!json_is_object(body)) {
		req_error(rq, ERR_BODY_NOT_OBJECT, NULL);
		return true;
	}
	json_object_foreach((json_t *)body, key, v) {
		bool known = false;

		for (const char *const *f = fields; *f && !known; f++)
			known = !strcmp(*f, key);
		if (!known) {
			req_error(rq, ERR_FIELD_NOT_IN_SHAPE, json_pack("{s:s}", "field", key));
			return true;
		}
	}
	return false;
}

bool reqcheck_metadata(struct req_ctx *rq, const json_t *v, char **out)
{
	struct buf text = BUF_INIT(REQCHECK_METADATA_MAX);
	enum st_rc rc;
	char *copy;

	*out = NULL;
	if (!v || json_is_null(v))
		return false;
	/* The text the answers will show: more than the cap, or nested past
	 * what the writer writes (JSON_OUT_MAX_DEPTH), would fail every read. */
	rc = json_is_object(v) ? json_out(&text, v) : ST_INVALID;
	if (rc) {
		buf_release(&text);
		req_error(rq, rc == ST_NOMEM ? ERR_OUT_OF_MEMORY : ERR_INVALID_METADATA, NULL);
		return true;
	}
	copy = req_alloc(rq, text.len + 1);
	if (copy)
		memcpy(copy, text.ptr, text.len + 1);
	buf_release(&text);
	if (!copy) {
		req_error(rq, ERR_OUT_OF_MEMORY, NULL);
		return true;
	}
	*out = copy;
	return false;
}

bool reqcheck_limit(struct req_ctx *rq, const char *s, int max, int *out)
{
	size_t n = strlen(s);
	long v = 0;

	if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
		goto bad;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto bad;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1)
		goto bad;
	*out = v > max ? max : (int)v;
	return false;
bad:
	req_error(rq, ERR_LIMIT_TO_500, NULL);
	return true;
}
