/* client_addr.h — who the client is, as the per-IP rate limits and the logs
 * key it (SPEC sections 3 and 5): the socket peer's address, or, when the
 * peer is one of SETTLED_TRUST_PROXY, the right-most X-Forwarded-For hop
 * that is not itself a trusted proxy (everything left of it could have been
 * written by the client). Addresses are canonical text (IPv4 dotted, IPv6
 * as inet_ntop writes it, an IPv4-mapped IPv6 address as the IPv4 one), so
 * that one client is one key whatever the spelling.
 *
 * Pure functions: the HTTP layer hands in the peer's sockaddr and the
 * X-Forwarded-For field lines, so all of it is unit-tested here. */
#ifndef SETTLED_CLIENT_ADDR_H
#define SETTLED_CLIENT_ADDR_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>

#define CLIENT_ADDR_LEN INET6_ADDRSTRLEN
/* X-Forwarded-For field lines looked at (RFC 9110 section 5.3: several lines
 * are one comma-separated list); the walk starts at the right and rarely
 * gets past one, so callers keep the last ones. */
#define CLIENT_XFF_MAX_LINES 16

struct sockaddr;

/* Canonical text of the address in s[0..len); false if it is not one. */
bool client_addr_canon(const char *s, size_t len, char out[CLIENT_ADDR_LEN]);

/* Canonical text of a socket peer; false for NULL or a family other than
 * IPv4/IPv6. */
bool client_addr_of_peer(const struct sockaddr *peer, char out[CLIENT_ADDR_LEN]);

/* The client's address as the header comment says: "unknown" when the peer
 * is not an IP address. xff[0..n_xff) are the X-Forwarded-For field lines
 * in order, trusted[0..n_trusted) the proxies' addresses in any spelling.
 * A hop that is not an address (empty, "unknown", garbage) ends the walk
 * at the last trustworthy answer; if every hop is a trusted proxy, the
 * left-most one is the answer. */
void client_addr_resolve(const struct sockaddr *peer, const char *const *xff, size_t n_xff,
			 const char *const *trusted, size_t n_trusted, char out[CLIENT_ADDR_LEN]);

/* The key per-address rate limits use for the canonical address canon (as
 * client_addr_resolve writes it): an IPv4 address as it is, an IPv6 address
 * as its /64 prefix in canonical text plus "/64" ("2001:db8:1:2::/64"),
 * since one host is routinely given a whole /64 (2^64 addresses to rotate
 * through). IPv4-mapped addresses are already IPv4 in canonical form.
 * Anything that is not an address ("unknown") is copied unchanged. */
void client_addr_rl_key(const char *canon, char out[CLIENT_ADDR_LEN]);

#endif
