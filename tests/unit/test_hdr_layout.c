/* test_hdr_layout.c — hdr_layout (src/hdr_layout.h) on header sections
 * parsed by a model of libmicrohttpd 0.9.75 (tests/fuzz/mhd_model.h): clean
 * sections pass, each hidden fault is named. The integration side (the real
 * library) is tests/integration/test_framing.py. */
#include <criterion/criterion.h>
#include <string.h>

#include "hdr_layout.h"

#include "../fuzz/mhd_model.h"

#include "banned.h"

/* Parses raw like the library and walks the result. */
static enum hdr_fault check(const char *raw, size_t len)
{
	static char mem[8192];
	struct model m = { .buf = mem, .len = len, .cap = sizeof(mem) };
	struct hdr_layout l;

	cr_assert(len < sizeof(mem) / 2);
	memcpy(mem, raw, len);
	cr_assert(model_parse(&m), "the model refused %s", raw);
	hdr_layout_begin(&l, m.buf, m.section);
	for (size_t i = 0; i < m.n; i++)
		hdr_layout_field(&l, m.f[i].name, m.f[i].name_len, m.f[i].value, m.f[i].value_len);
	return hdr_layout_end(&l);
}

#define CHECK(lit) check(lit, sizeof(lit) - 1)

Test(hdr_layout, clean_sections_pass)
{
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\n\r\nbody after"), HDR_OK);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost:a\r\nX-E:\r\nX-B:   \r\nX-T:\t v \r\n\r\n"), HDR_OK);
	cr_assert_eq(CHECK("POST /x?a=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
			   "Content-Type: application/json\r\nCookie: a=b; c=d\r\n\r\n{}"),
		     HDR_OK);
	cr_assert_eq(CHECK("GET / HTTP/1.0\r\n\r\n"), HDR_OK); /* no field: nothing to walk */
}

Test(hdr_layout, fold_is_found)
{
	/* The finding: Content-Length becomes "Content-Length79". */
	cr_assert_eq(CHECK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 79\r\n\r\n"), HDR_FOLDED);
	cr_assert_eq(CHECK("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\t79\r\n\r\n"), HDR_FOLDED);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n c\r\nHost: a\r\n\r\n"), HDR_FOLDED);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n"), HDR_FOLDED);
}

Test(hdr_layout, nul_is_found)
{
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n"), HDR_NUL);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nX-A: a\0b\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nX-A: ab\0\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nX-A: \0Content-Length: 5\r\nHost: a\r\n\r\n"), HDR_NUL);
	/* A line made of a NUL ends the section early for the library. */
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\n\0X: 1\r\n\r\n"), HDR_NUL);
}

Test(hdr_layout, bare_cr_and_lf_are_found)
{
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"), HDR_BARE_CR);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\r\n\r\n"), HDR_BARE_CR);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n"), HDR_BARE_LF);
	cr_assert_eq(CHECK("GET / HTTP/1.1\nHost: a\r\n\r\n"), HDR_BARE_LF);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\n\n"), HDR_BARE_LF);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\r\n\n"), HDR_BARE_LF);
	cr_assert_eq(CHECK("GET / HTTP/1.1\r\nHost: a\n\r\n"), HDR_BARE_LF);
}

Test(hdr_layout, names_outside_or_out_of_order_are_refused)
{
	char sec[] = "GET / HTTP/1.1\0\0A\0 1\0\0B\0 2\0\0\0\0";
	char elsewhere[] = "A";
	struct hdr_layout l;

	hdr_layout_begin(&l, sec, sizeof(sec) - 1);
	hdr_layout_field(&l, sec + 16, 1, sec + 19, 1);
	hdr_layout_field(&l, sec + 22, 1, sec + 25, 1);
	cr_assert_eq(hdr_layout_end(&l), HDR_OK);

	hdr_layout_begin(&l, sec, sizeof(sec) - 1);
	hdr_layout_field(&l, sec + 22, 1, sec + 25, 1);
	hdr_layout_field(&l, sec + 16, 1, sec + 19, 1);
	cr_assert_neq(hdr_layout_end(&l), HDR_OK);

	hdr_layout_begin(&l, sec, sizeof(sec) - 1);
	hdr_layout_field(&l, elsewhere, 1, sec + 19, 1);
	cr_assert_eq(hdr_layout_end(&l), HDR_FOLDED);

	/* A value that runs to the end of the section: no line end left. */
	hdr_layout_begin(&l, sec, sizeof(sec) - 1);
	hdr_layout_field(&l, sec + 16, 1, sec + 19, sizeof(sec) - 1 - 19);
	cr_assert_neq(hdr_layout_end(&l), HDR_OK);
	cr_assert_str_eq(hdr_fault_str(HDR_FOLDED), "a folded header line (obs-fold)");
}

/* The request line walked as well: method, path and query back to back. */
static enum hdr_fault check_line(const char *raw, size_t len)
{
	static char mem[8192];
	struct model m = { .buf = mem, .len = len, .cap = sizeof(mem) };
	struct hdr_layout l;

	memcpy(mem, raw, len);
	cr_assert(model_parse(&m), "the model refused %s", raw);
	hdr_layout_begin(&l, m.buf, m.section);
	hdr_layout_request(&l, m.url, m.version);
	for (size_t i = 0; i < m.nargs; i++)
		hdr_layout_arg(&l, m.arg[i].name, m.arg[i].name_len, m.arg[i].value, m.arg[i].value_len);
	for (size_t i = 0; i < m.n; i++)
		hdr_layout_field(&l, m.f[i].name, m.f[i].name_len, m.f[i].value, m.f[i].value_len);
	return hdr_layout_end(&l);
}

#define LINE(lit) check_line(lit, sizeof(lit) - 1)

Test(hdr_layout, clean_request_lines_pass)
{
	cr_assert_eq(LINE("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
	cr_assert_eq(LINE("GET /healthz HTTP/1.0\r\n\r\n"), HDR_OK);
	cr_assert_eq(LINE("GET /h? HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
	cr_assert_eq(LINE("GET /h?a=1&b&c=&=d&& HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
	cr_assert_eq(LINE("GET /h?a=1=2+3&x=%41 HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
	cr_assert_eq(LINE("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_OK);
}

Test(hdr_layout, nul_in_the_request_line_is_found)
{
	cr_assert_eq(LINE("GET /healthz\0/admin HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET /h\0x?a=1 HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET /h?a=1\0b HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET /h?\0a=1 HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET /h?a=1&b=2\0c HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET\0X /h HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET /h HTTP/1.1\0\r\nHost: a\r\n\r\n"), HDR_NUL);
	cr_assert_eq(LINE("GET  /h HTTP/1.1\r\nHost: a\r\n\r\n"), HDR_LAYOUT);
	cr_assert_eq(LINE("GET /h HTTP/1.1\nHost: a\r\n\r\n"), HDR_BARE_LF);
}
