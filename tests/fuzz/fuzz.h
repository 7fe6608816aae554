/* fuzz.h — shared bits of the libFuzzer targets in tests/fuzz/.
 *
 * Each target is one file, fuzz_<name>.c, defining LLVMFuzzerTestOneInput.
 * Besides letting ASan/UBSan catch memory errors, every target checks the
 * contract of the code under test against a small reference ("oracle")
 * written differently from the real thing, and fails with FUZZ_CHECK, which
 * prints the broken property and aborts (libFuzzer saves the input). */
#ifndef SETTLED_FUZZ_H
#define SETTLED_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* A NUL-terminated heap copy of data (callers free): the C-string APIs get
 * an exact-size allocation so ASan sees any read past the terminator. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), 0 when invalid
 * (overlongs, surrogates, above U+10FFFF, truncated). Written from RFC 3629
 * section 4, independently of src/log.c's copy. */
static inline size_t fuzz_utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t need;
	unsigned lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 1;
	else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < need + 1)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i <= need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need + 1;
}

static inline int fuzz_utf8_valid(const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n;) {
		size_t k = fuzz_utf8_seq(s + i, n - i);

		if (!k)
			return 0;
		i += k;
	}
	return 1;
}

#endif
