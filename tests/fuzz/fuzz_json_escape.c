/* fuzz_json_escape.c — buf_json_escape (src/buf.h): appends bytes as the
 * inside of a JSON string.
 *
 * Checks: wrapped in quotes, the output parses with jansson (which insists
 * on RFC 8259: valid UTF-8, no raw control characters) and decodes back to
 * exactly the input, NULs included, whenever the input is valid UTF-8; the
 * output is plain printable text plus the input's own UTF-8 (no raw byte
 * below 0x20); and on a buf too small for the result the call fails and
 * leaves the buf exactly as it was. */
#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf b = BUF_INIT(size * 6 + 16), q = BUF_INIT(size * 6 + 32), small;
	json_t *j;

	FUZZ_CHECK(buf_json_escape(&b, (const char *)data, size) == ST_OK);
	for (size_t i = 0; i < b.len; i++)
		FUZZ_CHECK((unsigned char)b.ptr[i] >= 0x20);
	if (fuzz_utf8_valid(data, size)) {
		json_error_t jerr;

		buf_putc(&q, '"');
		buf_append(&q, b.ptr, b.len);
		buf_putc(&q, '"');
		j = json_loadb(q.ptr, q.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!j)
			fprintf(stderr, "jansson: %s\n", jerr.text);
		FUZZ_CHECK(json_is_string(j));
		FUZZ_CHECK(json_string_length(j) == size && !memcmp(json_string_value(j), data, size));
		json_decref(j);
	}
	if (b.len > 2) {
		buf_init(&small, 2 + b.len - 1);
		buf_puts(&small, "ab");
		FUZZ_CHECK(buf_json_escape(&small, (const char *)data, size) != ST_OK);
		FUZZ_CHECK(small.len == 2 && !strcmp(small.ptr, "ab"));
		buf_release(&small);
	}
	buf_release(&b);
	buf_release(&q);
	return 0;
}
