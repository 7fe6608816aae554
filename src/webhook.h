/* webhook.h — signed webhook intake: signature verification for the three
 * schemes of SPEC section 9, event and payment extraction, commission math.
 *
 * Everything here is pure: no I/O, no store, no clock (the caller passes
 * now_ms), so every branch is unit-tested (tests/unit/test_webhook.c). The
 * table and the job that use it live in webhook_job.{c,h}; the routes in
 * routes_webhooks.c. docs/internals/webhooks.md has the whole story.
 *
 * Verification rules shared by the three schemes:
 *   - every configured secret is tried (rotation: old and new are active
 *     together), and every candidate signature in the header is compared
 *     with every secret's digest; the result is the OR of all comparisons,
 *     computed without stopping at the first match, so timing says nothing
 *     about which secret or which candidate matched;
 *   - a candidate is decoded to exactly 32 bytes first (hex or base64,
 *     strictly: wrong length, a bad character or bad padding makes it a
 *     non-candidate) and compared with CRYPTO_memcmp over those 32 bytes;
 *   - header values are bounded (WEBHOOK_HEADER_MAX); longer is refused
 *     before any parsing;
 *   - the timestamp is checked only after the signature is valid (an
 *     unsigned timestamp means nothing); it must lie within
 *     WEBHOOK_TOLERANCE_MS of now, in either direction.
 * Secrets are borrowed (the config's arrays); NULL or empty entries are
 * skipped.
 *
 * Pre-keyed states (struct wh_keys): keying HMAC-SHA256 (fetching the
 * digest, hashing the key into the inner and outer pads) costs about as
 * much as hashing a small body, so the server keys each configured
 * secret once at start-up (webhook_keyring_new): two SHA-256 states, the
 * inner and outer pads absorbed (RFC 2104). Every verification copies
 * them into a digest context of its own (EVP_MD_CTX_copy_ex) and hashes
 * there: the shared states are never written after they are keyed, so
 * any number of HTTP threads verify at once. The secrets-array functions
 * key the secrets for the one call (tests, fuzzers, tools). */
#ifndef SETTLED_WEBHOOK_H
#define SETTLED_WEBHOOK_H

#include <jansson.h>
#include <openssl/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "rc.h"
#include "validate.h"

#define WEBHOOK_TOLERANCE_MS (5 * 60 * 1000)  /* both ways */
#define WEBHOOK_HEADER_MAX 4096               /* longest signature header considered */
#define WEBHOOK_MAX_SIGS 16                   /* candidates per header; more -> refused */
#define WEBHOOK_ID_MAX 255                    /* event ids: 1..255 of 0x21..0x7e */
#define WEBHOOK_TYPE_MAX 128                  /* event types: 1..128 of 0x21..0x7e */
#define WEBHOOK_KEY_MAX 256                   /* longest decoded whsec_ key */
#define WEBHOOK_TS_DIGITS_MAX 12              /* unix seconds: up to 12 digits */

enum wh_provider { WH_COINBASE = 0, WH_STRIPE, WH_STANDARD, WH_PROVIDER_COUNT };

/* "coinbase", "stripe", "standard" (the provider column and metric label);
 * never NULL. */
const char *webhook_provider_str(enum wh_provider p);
/* Inverse of webhook_provider_str; -1 when unknown. */
int webhook_provider_parse(const char *s);

enum wh_verdict {
	WH_VALID = 0,
	WH_BAD_SIGNATURE,  /* missing, malformed, or no candidate matches any secret */
	WH_STALE,          /* signature valid, timestamp outside the tolerance */
};

#define WEBHOOK_KEYS_MAX 16   /* secrets per provider (CONFIG_MAX_LIST) */

/* One secret keyed for HMAC-SHA256: the SHA-256 states that absorbed
 * the padded key XOR ipad (inner) and XOR opad (outer), RFC 2104. */
struct wh_key {
	EVP_MD_CTX *inner, *outer;
};

/* One provider's secrets as keyed HMAC-SHA256 states, in the config's
 * order, unusable secrets (empty; Standard: not base64) left out. Owns the
 * states; read-only once webhook_keys_init returned. */
struct wh_keys {
	struct wh_key k[WEBHOOK_KEYS_MAX];
	size_t n;
};

/* Keys p's secrets (Coinbase and Stripe: the string's bytes; Standard: the
 * decoded whsec_ key) into *k, at most WEBHOOK_KEYS_MAX. ST_INTERNAL on an
 * OpenSSL failure (then *k holds nothing). webhook_keys_release frees. */
enum st_rc webhook_keys_init(struct wh_keys *k, enum wh_provider p, char *const *secrets,
			     size_t nsecrets);
void webhook_keys_release(struct wh_keys *k);

/* Every provider's keyed secrets from the config (the server's context
 * owns it: made at start-up, freed at shutdown). NULL on failure. */
struct config;
struct wh_keyring {
	struct wh_keys p[WH_PROVIDER_COUNT];
};
struct wh_keyring *webhook_keyring_new(const struct config *cfg);
void webhook_keyring_free(struct wh_keyring *r);

/* The verifications below with pre-keyed secrets: the same verdicts as
 * the secrets-array forms with the secrets keys was made from. */
enum wh_verdict webhook_verify_coinbase_keyed(const char *sig, const void *body, size_t len,
					      const struct wh_keys *keys);
enum wh_verdict webhook_verify_stripe_keyed(const char *header, const void *body, size_t len,
					    const struct wh_keys *keys, int64_t now_ms,
					    int64_t *ts_ms_out);
enum wh_verdict webhook_verify_standard_keyed(const char *id, const char *ts, const char *sig,
					      const void *body, size_t len,
					      const struct wh_keys *keys, int64_t now_ms);

/* Coinbase Commerce: sig is X-CC-Webhook-Signature, 64 hex digits (either
 * case) of HMAC-SHA256(secret, body). No signed timestamp: the caller checks
 * event.created_at with webhook_fresh() after webhook_event_parse(). Never
 * returns WH_STALE. sig may be NULL (missing header). */
enum wh_verdict webhook_verify_coinbase(const char *sig, const void *body, size_t len,
					char *const *secrets, size_t nsecrets);

/* Stripe: header is Stripe-Signature, "t=<unix seconds>,v1=<64 hex>[,v1=...]"
 * (items separated by ',', optional blanks around them; other schemes such
 * as v0 are ignored; exactly one t). The signed payload is
 * "<t as sent>.<body>". *ts_ms_out (may be NULL) gets t in ms when the
 * signature is valid. header may be NULL. */
enum wh_verdict webhook_verify_stripe(const char *header, const void *body, size_t len,
				      char *const *secrets, size_t nsecrets, int64_t now_ms,
				      int64_t *ts_ms_out);

/* Standard Webhooks: id, ts and sig are the webhook-id, webhook-timestamp
 * and webhook-signature headers (any may be NULL). id must satisfy
 * webhook_std_id_valid() ('.' allowed), ts is unix seconds (digits
 * only), sig is space-separated "v1,<base64 of 32 bytes>" entries (other
 * versions, e.g. v1a, are ignored). Signed content: "<id>.<ts>.<body>".
 * Secrets are "whsec_<base64>" (the prefix may be absent); the decoded
 * bytes are the HMAC key. A secret that does not decode is skipped. */
enum wh_verdict webhook_verify_standard(const char *id, const char *ts, const char *sig,
					const void *body, size_t len, char *const *secrets,
					size_t nsecrets, int64_t now_ms);

/* Signs like a Standard Webhooks sender: out gets "v1,<base64 of
 * HMAC-SHA256(key, "<id>.<ts_s>.<body>")>" with the key decoded from
 * secret (webhook_secret_decode). ST_INVALID when the secret does not
 * decode; ST_INTERNAL on an OpenSSL failure. */
#define WEBHOOK_STD_SIG_MAX 48
enum st_rc webhook_sign_standard(const char *secret, const char *id, int64_t ts_s,
				 const void *body, size_t len, char out[WEBHOOK_STD_SIG_MAX]);

/* |now_ms - ts_ms| <= WEBHOOK_TOLERANCE_MS (overflow-safe). */
bool webhook_fresh(int64_t ts_ms, int64_t now_ms);

/* Decodes a Standard Webhooks secret ("whsec_" + base64, or bare base64;
 * padding optional) into key[0..*key_len). ST_INVALID when it is not
 * base64, empty, or decodes to more than WEBHOOK_KEY_MAX bytes. */
enum st_rc webhook_secret_decode(const char *secret, unsigned char key[WEBHOOK_KEY_MAX],
				 size_t *key_len);

/* RFC 3339 date-time, strictly: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM),
 * 'T'/'Z' in either case, calendar-checked (leap years; second 60 allowed
 * as a leap second), years 0001..9999. *ms_out gets ms since the epoch
 * (fraction truncated to ms). ST_INVALID otherwise. */
enum st_rc webhook_parse_rfc3339(const char *s, size_t len, int64_t *ms_out);

/* 1..WEBHOOK_ID_MAX bytes, each 0x21..0x7e (printable, no blanks). */
bool webhook_id_valid(const char *s, size_t len);

/* A Standard Webhooks id (the webhook-id header): 1..WEBHOOK_ID_MAX bytes
 * of printable ASCII (0x20..0x7e, so '.' and inner blanks too), neither
 * first nor last a blank; control bytes and non-ASCII are refused. */
bool webhook_std_id_valid(const char *s, size_t len);

/* What the intake needs from an event's body. */
struct wh_event {
	char id[WEBHOOK_ID_MAX + 1];
	char type[WEBHOOK_TYPE_MAX + 1];
	int64_t created_ms;   /* Coinbase: event.created_at; else 0 */
	bool pays;            /* the type is this provider's paying event */
};

/* Extracts id, type (and for Coinbase created_at) from a verified body:
 * Coinbase {"event":{"id","type","created_at",...}}, Stripe {"id","type",...},
 * Standard {"type",...} with the id from the webhook-id header (std_id;
 * ignored for the others). ST_INVALID with a reason in err (may be NULL)
 * when a field is missing, not a string, or not valid. */
enum st_rc webhook_event_parse(enum wh_provider p, const json_t *body, const char *std_id,
			       struct wh_event *out, struct buf *err);

/* Is type the paying event of p (charge:confirmed, payment_intent.succeeded,
 * payment.confirmed)? */
bool webhook_type_pays(enum wh_provider p, const char *type);

/* A paying event's payment, in the ledger's base units: to a wallet, or
 * to a client's account (SPEC section 13: a shop buying credits). */
#define WH_ACCOUNT_MAX 169        /* "<client_id>/<name>": 40 + 1 + 128 */
struct wh_payment {
	char wallet[WALLET_LEN + 1];      /* "" when it names an account */
	char account[WH_ACCOUNT_MAX + 1]; /* "<client_id>/<name>", or "" for a wallet */
	int64_t amount;   /* > 0 */
};

/* Extracts the payment from a paying event's body:
 *   Coinbase  event.data.metadata.wallet, event.data.pricing.local.amount
 *             (decimal string) + .currency;
 *   Stripe    data.object.metadata.wallet, data.object.amount_received
 *             (integer, minor units; data.object.amount only when
 *             amount_received is absent; 0 received is invalid_amount) +
 *             data.object.currency;
 *   Standard  data.wallet, data.amount (base-unit string) + data.asset.
 * Instead of the wallet, a payment may name a client's account as
 * metadata.account (Standard: data.account) = "<client_id>/<name>"; an
 * event naming both, or neither, is invalid. The form is checked here,
 * the account's existence when the payment is posted.
 * The currency must equal asset (case-insensitive) and asset must be one
 * webhook_asset_decimals() knows. Decimal amounts convert exactly
 * (parse_decimal_amount): more decimals than the asset has is an error,
 * never a rounding. ST_INVALID with "<code>: <detail>" in err, code one of
 * invalid_wallet, invalid_account, invalid_amount, currency_mismatch,
 * unsupported_asset. */
enum st_rc webhook_payment_parse(enum wh_provider p, const json_t *body, const char *asset,
				 struct wh_payment *out, struct buf *err);

/* Fraction digits of an asset's base unit (USD 2: cents), -1 if unknown. */
int webhook_asset_decimals(const char *asset);

/* Commission of amount at bps basis points: floor(amount * bps / 10000),
 * computed in 128 bits (no overflow for any int64_t inputs). amount >= 0,
 * 0 <= bps <= 10000, else ST_INVALID. The remainder stays with the payer
 * side (the wallet keeps the whole amount; the commission comes from the
 * commissions account), so no unit is created or lost. */
enum st_rc webhook_commission(int64_t amount, int64_t bps, int64_t *out);

#endif
