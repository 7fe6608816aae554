/* test_client_addr.c — who the client is (client_addr.h): canonical
 * spellings, the socket peer formatted straight from its sockaddr (checked
 * against inet_ntop on random addresses, and the IPv4-mapped case a v6-only
 * listener never sees), and the X-Forwarded-For walk behind trusted proxies:
 * the right-most hop not written by a trusted proxy, ports and brackets,
 * several field lines, garbage, and an untrusted peer whose header counts
 * for nothing. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "client_addr.h"

#include "banned.h"

static const char *canon(const char *s)
{
	static char out[CLIENT_ADDR_LEN];

	return client_addr_canon(s, strlen(s), out) ? out : NULL;
}

Test(client_addr, canonical_spellings)
{
	cr_assert_str_eq(canon("127.0.0.1"), "127.0.0.1");
	cr_assert_str_eq(canon("::1"), "::1");
	cr_assert_str_eq(canon("0:0:0:0:0:0:0:1"), "::1");
	cr_assert_str_eq(canon("2001:DB8::0:1"), "2001:db8::1");
	cr_assert_str_eq(canon("::ffff:10.0.0.1"), "10.0.0.1");
	cr_assert_str_eq(canon("::FFFF:a00:1"), "10.0.0.1");
	cr_assert_null(canon(""));
	cr_assert_null(canon("unknown"));
	cr_assert_null(canon("1.2.3"));
	cr_assert_null(canon("256.1.1.1"));
	cr_assert_null(canon("1.2.3.4:80")); /* a port is a hop's business, not an address's */
	cr_assert_null(canon("0000:0000:0000:0000:0000:0000:0000:0000:0000:0001")); /* too long */
}

static struct sockaddr_in v4(uint32_t host_order)
{
	struct sockaddr_in a = { .sin_family = AF_INET };

	a.sin_addr.s_addr = htonl(host_order);
	return a;
}

Test(client_addr, ipv4_peers_match_inet_ntop)
{
	static const uint32_t edges[] = { 0, 1, 0x7f000001, 0x0a000001, 0xc0a80001, 0xffffffff,
					  0x01020304, 0x64646464 };
	char got[CLIENT_ADDR_LEN], want[CLIENT_ADDR_LEN];
	unsigned seed = 2026;

	for (size_t i = 0; i < 10000 + sizeof(edges) / sizeof(edges[0]); i++) {
		uint32_t ip = i < sizeof(edges) / sizeof(edges[0])
				      ? edges[i]
				      : (uint32_t)rand_r(&seed) ^ ((uint32_t)rand_r(&seed) << 16);
		struct sockaddr_in a = v4(ip);

		cr_assert(client_addr_of_peer((const struct sockaddr *)&a, got));
		cr_assert_not_null(inet_ntop(AF_INET, &a.sin_addr, want, sizeof(want)));
		cr_assert_str_eq(got, want, "0x%08x", ip);
	}
}

Test(client_addr, ipv6_peers)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	char out[CLIENT_ADDR_LEN];

	cr_assert_eq(inet_pton(AF_INET6, "::1", &a.sin6_addr), 1);
	cr_assert(client_addr_of_peer((const struct sockaddr *)&a, out));
	cr_assert_str_eq(out, "::1");
	cr_assert_eq(inet_pton(AF_INET6, "2001:db8:0:0:0:0:2:1", &a.sin6_addr), 1);
	cr_assert(client_addr_of_peer((const struct sockaddr *)&a, out));
	cr_assert_str_eq(out, "2001:db8::2:1");
	/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: the same
	 * key as the same client over IPv4. */
	cr_assert_eq(inet_pton(AF_INET6, "::ffff:192.0.2.7", &a.sin6_addr), 1);
	cr_assert(client_addr_of_peer((const struct sockaddr *)&a, out));
	cr_assert_str_eq(out, "192.0.2.7");
}

Test(client_addr, other_peers_are_not_addresses)
{
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	char out[CLIENT_ADDR_LEN];

	cr_assert_not(client_addr_of_peer(NULL, out));
	cr_assert_not(client_addr_of_peer((const struct sockaddr *)&u, out));
	client_addr_resolve((const struct sockaddr *)&u, NULL, 0, NULL, 0, out);
	cr_assert_str_eq(out, "unknown");
	client_addr_resolve(NULL, NULL, 0, NULL, 0, out);
	cr_assert_str_eq(out, "unknown");
}

/* resolve() from a peer given as text and the header lines. */
static const char *resolve(const char *peer, const char *const *xff, size_t n_xff,
			   const char *const *trusted, size_t n_trusted)
{
	static char out[CLIENT_ADDR_LEN];
	struct sockaddr_in a = { .sin_family = AF_INET };

	cr_assert_eq(inet_pton(AF_INET, peer, &a.sin_addr), 1);
	client_addr_resolve((const struct sockaddr *)&a, xff, n_xff, trusted, n_trusted, out);
	return out;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

Test(client_addr, no_trusted_proxy_means_the_peer)
{
	const char *xff[] = { "203.0.113.9" };

	cr_assert_str_eq(resolve("198.51.100.1", xff, N(xff), NULL, 0), "198.51.100.1");
}

Test(client_addr, an_untrusted_peers_header_counts_for_nothing)
{
	const char *xff[] = { "203.0.113.9" };
	const char *trusted[] = { "10.0.0.1" };

	cr_assert_str_eq(resolve("198.51.100.1", xff, N(xff), trusted, N(trusted)), "198.51.100.1");
}

Test(client_addr, behind_a_trusted_proxy_the_right_most_hop)
{
	const char *xff[] = { "1.1.1.1, 203.0.113.9" }; /* the client may have written 1.1.1.1 */
	const char *trusted[] = { "10.0.0.1" };

	cr_assert_str_eq(resolve("10.0.0.1", xff, N(xff), trusted, N(trusted)), "203.0.113.9");
}

Test(client_addr, a_chain_of_trusted_proxies_is_walked)
{
	const char *xff[] = { "203.0.113.9,10.0.0.2 ,\t10.0.0.3" };
	const char *trusted[] = { "10.0.0.1", "10.0.0.2", "::ffff:10.0.0.3" };

	cr_assert_str_eq(resolve("10.0.0.1", xff, N(xff), trusted, N(trusted)), "203.0.113.9");
}

Test(client_addr, every_hop_trusted_gives_the_left_most)
{
	const char *xff[] = { "10.0.0.2, 10.0.0.3" };
	const char *trusted[] = { "10.0.0.1", "10.0.0.2", "10.0.0.3" };

	cr_assert_str_eq(resolve("10.0.0.1", xff, N(xff), trusted, N(trusted)), "10.0.0.2");
}

Test(client_addr, several_field_lines_are_one_list)
{
	const char *xff[] = { "1.1.1.1", "203.0.113.9, 10.0.0.2" };
	const char *trusted[] = { "10.0.0.1", "10.0.0.2" };

	cr_assert_str_eq(resolve("10.0.0.1", xff, N(xff), trusted, N(trusted)), "203.0.113.9");
	{
		const char *xff2[] = { "203.0.113.9", "10.0.0.2" }; /* crosses the line */

		cr_assert_str_eq(resolve("10.0.0.1", xff2, N(xff2), trusted, N(trusted)), "203.0.113.9");
	}
}

Test(client_addr, ports_and_brackets_are_not_part_of_the_key)
{
	const char *trusted[] = { "10.0.0.1" };
	const char *v4port[] = { "203.0.113.9:4711" };
	const char *v6port[] = { "[2001:DB8::1]:443" };
	const char *v6br[] = { "[2001:db8::1]" };
	const char *v6bare[] = { "2001:db8:0::1" };

	cr_assert_str_eq(resolve("10.0.0.1", v4port, 1, trusted, 1), "203.0.113.9");
	cr_assert_str_eq(resolve("10.0.0.1", v6port, 1, trusted, 1), "2001:db8::1");
	cr_assert_str_eq(resolve("10.0.0.1", v6br, 1, trusted, 1), "2001:db8::1");
	cr_assert_str_eq(resolve("10.0.0.1", v6bare, 1, trusted, 1), "2001:db8::1");
}

Test(client_addr, garbage_stops_the_walk_at_the_last_trustworthy_answer)
{
	const char *trusted[] = { "10.0.0.1", "10.0.0.2" };
	static const char *const garbage[] = { "unknown", "", "1.2.3.4:http", "[::1", "[1.2.3.4]",
					       "1.2.3.4:123456", "[::1]x", "_hidden" };

	for (size_t i = 0; i < N(garbage); i++) {
		char line[64];
		const char *xff[] = { line };

		/* garbage right of a trusted hop: the trusted hop is the answer */
		snprintf(line, sizeof(line), "203.0.113.9, %s, 10.0.0.2", garbage[i]);
		cr_assert_str_eq(resolve("10.0.0.1", xff, 1, trusted, N(trusted)), "10.0.0.2", "%s",
				 garbage[i]);
		/* garbage as the only hop: the peer stays the answer */
		snprintf(line, sizeof(line), "%s", garbage[i]);
		cr_assert_str_eq(resolve("10.0.0.1", xff, 1, trusted, N(trusted)), "10.0.0.1", "%s",
				 garbage[i]);
	}
}

/* Per-address rate limits key IPv6 by /64: a host given a /64 cannot rotate
 * through its 2^64 addresses to escape a limit. */
Test(client_addr, rate_limit_key_is_the_ipv6_64_prefix)
{
	static const struct {
		const char *in, *want;
	} t[] = {
		{ "203.0.113.7", "203.0.113.7" },
		{ "2001:db8:1:2::1", "2001:db8:1:2::/64" },
		{ "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64" },
		{ "2001:db8:1:3::1", "2001:db8:1:3::/64" },
		{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff::/64" },
		{ "::1", "::/64" },
		{ "fe80::1", "fe80::/64" },
		{ "2001:db8::", "2001:db8::/64" },
		{ "unknown", "unknown" },
	};
	char out[CLIENT_ADDR_LEN];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(out, 'z', sizeof(out));
		client_addr_rl_key(t[i].in, out);
		cr_expect_str_eq(out, t[i].want, "%s", t[i].in);
	}
}

/* Through the resolver: an IPv4-mapped peer keys as its IPv4 address (the
 * same key as a plain IPv4 peer), two addresses of one /64 share a key, a
 * neighbouring /64 does not. */
Test(client_addr, rate_limit_keys_of_resolved_peers)
{
	char ip[CLIENT_ADDR_LEN], k1[CLIENT_ADDR_LEN], k2[CLIENT_ADDR_LEN], k3[CLIENT_ADDR_LEN];
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in s4 = { .sin_family = AF_INET };

	inet_pton(AF_INET6, "::ffff:198.51.100.9", &s6.sin6_addr);
	client_addr_resolve((struct sockaddr *)&s6, NULL, 0, NULL, 0, ip);
	client_addr_rl_key(ip, k1);
	inet_pton(AF_INET, "198.51.100.9", &s4.sin_addr);
	client_addr_resolve((struct sockaddr *)&s4, NULL, 0, NULL, 0, ip);
	client_addr_rl_key(ip, k2);
	cr_expect_str_eq(k1, "198.51.100.9");
	cr_expect_str_eq(k1, k2);

	inet_pton(AF_INET6, "2001:db8:aa:bb:1:2:3:4", &s6.sin6_addr);
	client_addr_resolve((struct sockaddr *)&s6, NULL, 0, NULL, 0, ip);
	cr_expect_str_eq(ip, "2001:db8:aa:bb:1:2:3:4", "the logged address stays whole");
	client_addr_rl_key(ip, k1);
	inet_pton(AF_INET6, "2001:db8:aa:bb:9:9:9:9", &s6.sin6_addr);
	client_addr_resolve((struct sockaddr *)&s6, NULL, 0, NULL, 0, ip);
	client_addr_rl_key(ip, k2);
	inet_pton(AF_INET6, "2001:db8:aa:bc:1:2:3:4", &s6.sin6_addr);
	client_addr_resolve((struct sockaddr *)&s6, NULL, 0, NULL, 0, ip);
	client_addr_rl_key(ip, k3);
	cr_expect_str_eq(k1, k2);
	cr_expect_str_neq(k1, k3);
}
