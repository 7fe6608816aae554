/* fuzz_json_escape.c — json_escape / json_escape_buf (src/json_out.h), the
 * one JSON string escaper, and utf8_char_len (src/validate.h), the one
 * UTF-8 decoder it leans on.
 *
 * Checks, for the jansson-style flags and for the log's (repair, lower
 * case): wrapped in quotes, the output parses with jansson (which insists
 * on RFC 8259: valid UTF-8, no raw control characters) and decodes back to
 * exactly the input, NULs included, whenever the input is valid UTF-8;
 * with JSON_ESC_REPAIR it parses whatever the input; no raw byte below 0x20
 * ever; json_escape into a small window, called again and again, writes
 * the same bytes as json_escape_buf; and on a buf too small for the result
 * the call fails and leaves the buf exactly as it was. utf8_char_len
 * agrees with the oracle in fuzz.h at every offset. */
#include <jansson.h>
#include <stdbool.h>

#include "buf.h"
#include "fuzz.h"
#include "json_out.h"
#include "validate.h"

static void check(const uint8_t *data, size_t size, unsigned flags)
{
	struct buf b = BUF_INIT(size * 6 + 16), q = BUF_INIT(size * 6 + 32), small;
	bool valid = fuzz_utf8_valid(data, size);
	char window[7];
	size_t pos = 0, at = 0;
	json_t *j;

	FUZZ_CHECK(json_escape_buf(&b, (const char *)data, size, flags) == ST_OK);
	for (size_t i = 0; i < b.len; i++)
		FUZZ_CHECK((unsigned char)b.ptr[i] >= 0x20);
	/* A window of 7 bytes: one escape (6) always fits, so it always moves. */
	while (pos < size) {
		size_t k = json_escape(window, sizeof(window), (const char *)data, size, &pos, flags);

		FUZZ_CHECK(k > 0 && at + k <= b.len && !memcmp(b.ptr + at, window, k));
		at += k;
	}
	FUZZ_CHECK(at == b.len);
	if (valid || (flags & JSON_ESC_REPAIR)) {
		json_error_t jerr;

		buf_putc(&q, '"');
		buf_append(&q, b.ptr, b.len);
		buf_putc(&q, '"');
		j = json_loadb(q.ptr, q.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
		if (!j)
			fprintf(stderr, "jansson: %s\n", jerr.text);
		FUZZ_CHECK(json_is_string(j));
		if (valid)
			FUZZ_CHECK(json_string_length(j) == size &&
				   !memcmp(json_string_value(j), data, size));
		json_decref(j);
	}
	if (b.len > 2) {
		buf_init(&small, 2 + b.len - 1);
		buf_puts(&small, "ab");
		FUZZ_CHECK(json_escape_buf(&small, (const char *)data, size, flags) != ST_OK);
		FUZZ_CHECK(small.len == 2 && !strcmp(small.ptr, "ab"));
		buf_release(&small);
	}
	buf_release(&b);
	buf_release(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check(data, size, 0);
	check(data, size, JSON_ESC_REPAIR | JSON_ESC_LOWER);
	for (size_t i = 0; i < size; i++)
		FUZZ_CHECK(utf8_char_len((const char *)data + i, size - i) ==
			   fuzz_utf8_seq(data + i, size - i));
	FUZZ_CHECK(utf8_valid((const char *)data, size) == (bool)fuzz_utf8_valid(data, size));
	return 0;
}
