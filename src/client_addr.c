/* client_addr.c — see client_addr.h. */
#include "client_addr.h"

#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "fmt.h"
#include "banned.h"

bool client_addr_canon(const char *s, size_t len, char out[CLIENT_ADDR_LEN])
{
	char tmp[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;

	if (!len || len >= sizeof(tmp))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (inet_pton(AF_INET, tmp, &a4) == 1)
		return inet_ntop(AF_INET, &a4, out, INET6_ADDRSTRLEN) != NULL;
	if (inet_pton(AF_INET6, tmp, &a6) != 1)
		return false;
	if (IN6_IS_ADDR_V4MAPPED(&a6))
		return inet_ntop(AF_INET, &a6.s6_addr[12], out, INET6_ADDRSTRLEN) != NULL;
	return inet_ntop(AF_INET6, &a6, out, INET6_ADDRSTRLEN) != NULL;
}

static bool all_digits(const char *s, size_t len)
{
	if (!len || len > 5)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* One X-Forwarded-For hop: an address, or "[v6]", "[v6]:port", "v4:port"
 * (some proxies append the port, which is not part of the key). */
static bool hop_canon(const char *s, size_t len, char out[CLIENT_ADDR_LEN])
{
	const char *colon;

	if (len && s[0] == '[') {
		const char *rb = memchr(s, ']', len);
		size_t rest;

		if (!rb || memchr(s + 1, ':', (size_t)(rb - s - 1)) == NULL)
			return false; /* no ']' or not IPv6 inside the brackets */
		rest = len - (size_t)(rb + 1 - s);
		if (rest && (rb[1] != ':' || !all_digits(rb + 2, rest - 1)))
			return false;
		return client_addr_canon(s + 1, (size_t)(rb - s - 1), out);
	}
	colon = memchr(s, ':', len);
	if (colon && !memchr(colon + 1, ':', len - (size_t)(colon + 1 - s))) {
		size_t alen = (size_t)(colon - s);

		/* Exactly one colon: IPv4 with a port (no colon left, so the
		 * address part cannot parse as IPv6). */
		if (!all_digits(colon + 1, len - alen - 1))
			return false;
		return client_addr_canon(s, alen, out);
	}
	return client_addr_canon(s, len, out);
}

/* Whether canon (canonical text) is one of trusted, compared as addresses,
 * not strings ("::1" is "0:0:0:0:0:0:0:1"). */
static bool is_trusted(const char *canon, const char *const *trusted, size_t n_trusted)
{
	char t[CLIENT_ADDR_LEN];

	for (size_t i = 0; i < n_trusted; i++)
		if (client_addr_canon(trusted[i], strlen(trusted[i]), t) && !strcmp(t, canon))
			return true;
	return false;
}

/* Dotted quad of the 4 bytes at b, NUL-terminated. */
static void ipv4_text(const uint8_t b[4], char out[CLIENT_ADDR_LEN])
{
	size_t len = 0;

	for (int i = 0; i < 4; i++) {
		if (i)
			out[len++] = '.';
		len += fmt_u64(out + len, b[i]);
	}
}

/* Straight from the sockaddr, not through text: inet_ntop formats IPv4 with
 * sprintf, and the round trip through text (inet_ntop, inet_pton, inet_ntop)
 * cost ~3,500 instructions on every request. */
bool client_addr_of_peer(const struct sockaddr *sa, char out[CLIENT_ADDR_LEN])
{
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		ipv4_text((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr, out);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			ipv4_text(&a6->s6_addr[12], out);
			return true;
		}
		return inet_ntop(AF_INET6, a6, out, INET6_ADDRSTRLEN) != NULL;
	}
	return false;
}

void client_addr_resolve(const struct sockaddr *peer, const char *const *xff, size_t n_xff,
			 const char *const *trusted, size_t n_trusted, char out[CLIENT_ADDR_LEN])
{
	char hop[CLIENT_ADDR_LEN];

	if (!client_addr_of_peer(peer, out))
		memcpy(out, "unknown", sizeof("unknown"));
	if (!is_trusted(out, trusted, n_trusted))
		return;
	for (size_t li = n_xff; li-- > 0;) {
		const char *line = xff[li];
		const char *end = line + strlen(line);

		for (;;) {
			const char *start = end, *s;
			size_t len;

			while (start > line && start[-1] != ',')
				start--;
			s = start;
			len = (size_t)(end - start);
			while (len && (*s == ' ' || *s == '\t')) {
				s++;
				len--;
			}
			while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
				len--;
			if (!hop_canon(s, len, hop))
				return; /* garbage: keep the last trustworthy answer */
			fmt_str(out, CLIENT_ADDR_LEN, hop);
			if (!is_trusted(hop, trusted, n_trusted))
				return;
			if (start == line)
				break;
			end = start - 1; /* the comma before this hop */
		}
	}
	/* Every hop was a trusted proxy: the left-most one seen is the answer. */
}


void client_addr_rl_key(const char *canon, char out[CLIENT_ADDR_LEN])
{
	struct in6_addr a6;
	size_t len;

	/* Canonical IPv4 text has no ':'; only IPv6 is cut to its prefix. */
	if (!strchr(canon, ':') || inet_pton(AF_INET6, canon, &a6) != 1) {
		fmt_str(out, CLIENT_ADDR_LEN, canon);
		return;
	}
	memset(&a6.s6_addr[8], 0, 8);
	/* The longest /64 text, "ffff:ffff:ffff:ffff::", plus "/64" fits. */
	if (!inet_ntop(AF_INET6, &a6, out, CLIENT_ADDR_LEN)) {
		fmt_str(out, CLIENT_ADDR_LEN, canon);
		return;
	}
	len = strlen(out);
	memcpy(out + len, "/64", sizeof("/64"));
}
