#!/usr/bin/env bash
# A settled client in bash + curl: register a wallet, claim (prepare +
# record) and poll the intent until it is SETTLED. No jq: the few fields it
# needs are read with grep from the server's compact JSON.
#
# A claim is the wallet withdrawing what it is owed: the wallet must have
# been credited first (a webhook payment, a client's transfer or an
# operator's allocation), and it can claim at most its available balance
# (else 422 insufficient_funds).
#
#   SETTLED_URL=http://127.0.0.1:8080 SETTLED_API_KEY=sk_live_... \
#   SETTLED_WALLET=0x... examples/claim.sh
#
# Environment:
#   SETTLED_URL           server (default http://127.0.0.1:8080)
#   SETTLED_API_KEY       bearer for GET /api/v2/intents/{id} (an API key or
#                         the admin token); required
#   SETTLED_WALLET        wallet to claim for, credited with at least
#                         CLAIM_AMOUNT; required
#   CLAIM_AMOUNT          base units (default 100)
#   SETTLED_TIMEOUT       seconds per HTTP attempt (default 10)
#   SETTLED_MAX_ATTEMPTS  attempts per call before giving up (default 8)
#   SETTLED_POLL_TIMEOUT  seconds to wait for SETTLED (default 120)
#
# Retrying safely: every POST carries an Idempotency-Key chosen once per
# logical operation and reused by all its attempts, so an attempt whose
# answer was lost (timeout, dropped connection) is repeated without a second
# effect: the server replays the first answer (X-Idempotency: HIT).
# Retried: network errors and timeouts (curl exit codes), 409
# idempotency_key_in_use, 429 and 5xx; the wait is exponential backoff with
# full jitter, never shorter than Retry-After (delta-seconds). Other
# statuses are answers, not transient failures.
#
# One line per step on stdout, retries on stderr; the last line is
# "SETTLED <intent id>". Exit 0 when the claim settled, 1 otherwise.
set -euo pipefail

BASE=${SETTLED_URL:-http://127.0.0.1:8080}
BASE=${BASE%/}
API_KEY=${SETTLED_API_KEY:-}
AMOUNT=${CLAIM_AMOUNT:-100}
TIMEOUT=${SETTLED_TIMEOUT:-10}
MAX_ATTEMPTS=${SETTLED_MAX_ATTEMPTS:-8}
POLL_TIMEOUT=${SETTLED_POLL_TIMEOUT:-120}
BACKOFF_BASE_MS=250    # the first retry waits up to this
BACKOFF_CAP_MS=8000    # no single wait is longer (unless Retry-After says so)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

die() { echo "claim.sh: $*" >&2; exit 1; }
rand_hex() { od -An -v -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
rand_u32() { od -An -v -tu4 -N4 /dev/urandom | tr -d ' \n'; }

WALLET=${SETTLED_WALLET:-}

# json_str NAME: the first "NAME": "value" of the body in $BODY (top-level
# fields come first in settled's answers; values hold no quotes).
json_str() {
	{ grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" <<<"$BODY" || true; } | head -n 1 |
		sed 's/^[^:]*:[[:space:]]*"\(.*\)"$/\1/'
}

# backoff ATTEMPT RETRY_AFTER_S -> prints the delay in seconds (3 decimals)
backoff() {
	local attempt=$1 retry_after=$2 cap ms
	cap=$((BACKOFF_BASE_MS << attempt))
	((cap > BACKOFF_CAP_MS || cap <= 0)) && cap=$BACKOFF_CAP_MS
	ms=$(($(rand_u32) % (cap + 1)))
	[[ -n $retry_after ]] && ((retry_after * 1000 > ms)) && ms=$((retry_after * 1000))
	printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# call METHOD PATH [BODY] [IDEMPOTENCY_KEY] [BEARER]: one logical call,
# retried as described above; sets STATUS and BODY.
call() {
	local method=$1 path=$2 body=${3:-} key=${4:-} auth=${5:-}
	local attempt=0 why retry_after delay args
	while :; do
		args=(-sS --max-time "$TIMEOUT" -X "$method" -o "$tmp/body" -D "$tmp/headers"
			-w '%{http_code}' -H 'Accept: application/json'
			-H "X-Request-Id: example-sh-$(rand_hex 6)")
		[[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
		[[ -n $key ]] && args+=(-H "Idempotency-Key: $key")
		[[ -n $auth ]] && args+=(-H "Authorization: Bearer $auth")
		: >"$tmp/body"
		: >"$tmp/headers"
		STATUS=$(curl "${args[@]}" "$BASE$path" 2>"$tmp/err") || STATUS=000
		BODY=$(cat "$tmp/body")
		case $STATUS in
		000) why="network error: $(tr -d '\r\n' <"$tmp/err")" ;;
		429 | 500 | 502 | 503 | 504) why="$STATUS $(json_str error)" ;;
		409) [[ $(json_str error) == idempotency_key_in_use ]] || return 0
			why="409 idempotency_key_in_use" ;;
		*) return 0 ;;
		esac
		attempt=$((attempt + 1))
		((attempt >= MAX_ATTEMPTS)) && die "$method $path: giving up after $attempt attempts ($why)"
		retry_after=$({ grep -i '^retry-after:' "$tmp/headers" || true; } | tail -n 1 | tr -d '\r' |
			sed -n 's/^[^:]*:[[:space:]]*\([0-9][0-9]*\)[[:space:]]*$/\1/p')
		delay=$(backoff $((attempt - 1)) "$retry_after")
		echo "$method $path: $why; retrying in ${delay}s${key:+ with the same Idempotency-Key}" >&2
		sleep "$delay"
	done
}

[[ -n $API_KEY ]] || die "set SETTLED_API_KEY (an API key or the admin token) to read intents"
[[ -n $WALLET ]] || die "set SETTLED_WALLET (a wallet credited with at least $AMOUNT)"

# 1. Register (idempotent by key; an already registered wallet is fine).
call POST /api/register "{\"wallet\":\"$WALLET\"}" "register-$(rand_hex 12)"
if [[ $STATUS == 409 && $(json_str error) == already_registered ]]; then
	echo "registered $WALLET (already)"
elif [[ $STATUS == 201 ]]; then
	echo "registered $(json_str wallet)"
else
	die "register: HTTP $STATUS $BODY"
fi

# 2. Prepare: the claim intent and a hold on the wallet's own account.
call POST /api/claim/prepare "{\"wallet\":\"$WALLET\",\"amount\":\"$AMOUNT\"}" "prepare-$(rand_hex 12)"
[[ $STATUS == 201 ]] || die "prepare: HTTP $STATUS $BODY"
INTENT=$(json_str id)
echo "prepared $INTENT $(json_str status) amount $(json_str amount)"

# 3. Record the chain transaction (here a random hash): PENDING -> SUBMITTED.
TX_HASH=0x$(rand_hex 32)
call POST /api/claim/record "{\"intent_id\":\"$INTENT\",\"tx_hash\":\"$TX_HASH\"}" "record-$(rand_hex 12)"
[[ $STATUS == 200 ]] || die "record: HTTP $STATUS $BODY"
echo "recorded $INTENT $(json_str status) tx $TX_HASH"

# 4. Poll until the confirmation job settles it.
deadline=$((SECONDS + POLL_TIMEOUT))
wait_ms=100
while :; do
	call GET "/api/v2/intents/$INTENT" "" "" "$API_KEY"
	[[ $STATUS == 200 ]] || die "read the intent: HTTP $STATUS $BODY"
	case $(json_str status) in
	SETTLED) echo "SETTLED $INTENT ledger_tx $(json_str ledger_tx_id)"; exit 0 ;;
	FAILED) die "intent $INTENT FAILED: $(json_str failure_reason)" ;;
	esac
	((SECONDS > deadline)) && die "intent $INTENT still $(json_str status) after ${POLL_TIMEOUT}s"
	sleep "$(printf '%d.%03d' $((wait_ms / 1000)) $((wait_ms % 1000)))"
	wait_ms=$((wait_ms * 2 > 2000 ? 2000 : wait_ms * 2))
done
