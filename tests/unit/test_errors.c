/* test_errors.c — the error catalogue (errors.def): rows well formed and
 * distinct, one status per wire code, every code SPEC.md names with the
 * status it gives, and the answers made from a row (body members, their
 * order, the field a caller names at run time, the unit's result code). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "errors.h"
#include "http.h"

#include "banned.h"

static bool snake_case(const char *s)
{
	if (!*s || *s < 'a' || *s > 'z')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

Test(errors, rows_are_well_formed)
{
	for (int e = 0; e < ERR_COUNT; e++) {
		const struct err_row *r = err_row(e);

		cr_assert(r->name && r->code && r->message, "row %d incomplete", e);
		cr_assert(snake_case(r->code), "%s: code %s is not snake_case", r->name, r->code);
		cr_assert(r->status >= 400 && r->status <= 599, "%s: status %d is no error", r->name,
			  r->status);
		cr_assert(strlen(r->message) > 0, "%s: empty message", r->name);
		cr_assert(!r->field || snake_case(r->field), "%s: field %s", r->name, r->field);
	}
}

Test(errors, ids_and_rows_are_distinct)
{
	for (int a = 0; a < ERR_COUNT; a++)
		for (int b = a + 1; b < ERR_COUNT; b++) {
			const struct err_row *x = err_row(a), *y = err_row(b);

			cr_assert(strcmp(x->name, y->name), "id %s twice", x->name);
			/* Two rows that answer the same thing are one row. */
			cr_assert(strcmp(x->code, y->code) || strcmp(x->message, y->message) ||
					  (x->field != y->field &&
					   (!x->field || !y->field || strcmp(x->field, y->field))),
				  "%s and %s answer the same", x->name, y->name);
		}
}

Test(errors, a_code_has_one_status)
{
	for (int a = 0; a < ERR_COUNT; a++)
		for (int b = a + 1; b < ERR_COUNT; b++) {
			const struct err_row *x = err_row(a), *y = err_row(b);

			if (!strcmp(x->code, y->code))
				cr_assert_eq(x->status, y->status, "%s is %d in %s but %d in %s", x->code,
					     x->status, x->name, y->status, y->name);
		}
}

/* The codes SPEC.md names (sections 3-9, 13) and the status it gives each. */
Test(errors, every_code_in_the_spec_is_catalogued_with_its_status)
{
	static const struct {
		const char *code;
		int status;
	} spec[] = {
		{ "invalid_json", 400 },	     { "unknown_field", 400 },
		{ "invalid_amount", 400 },	     { "invalid_wallet", 400 },
		{ "invalid_idempotency_key", 400 },  { "idempotency_key_required", 400 },
		{ "invalid_tx_hash", 400 },	     { "stale_webhook", 401 },
		{ "not_found", 404 },		     { "method_not_allowed", 405 },
		{ "already_registered", 409 },	     { "idempotency_key_in_use", 409 },
		{ "invalid_transition", 409 },	     { "account_exists", 409 },
		{ "hold_not_pending", 409 },	     { "payload_too_large", 413 },
		{ "unsupported_media_type", 415 },   { "idempotency_key_reused", 422 },
		{ "insufficient_funds", 422 },	     { "claim_too_large", 422 },
		{ "rate_limited", 429 },
	};

	for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
		bool found = false;

		for (int e = 0; e < ERR_COUNT && !found; e++)
			found = !strcmp(err_row(e)->code, spec[i].code) && err_row(e)->status == spec[i].status;
		cr_assert(found, "SPEC's %d %s is not in errors.def", spec[i].status, spec[i].code);
	}
}

/* A unit that answers a row returns a result code that, answered bare,
 * has the row's status again: the two maps agree. Except a refusal
 * (400, 409, 413, 422): answered bare, that is a path nobody answered,
 * 500; the row's own answer is the only 4xx it has. */
Test(errors, a_unit_rolls_back_with_the_rows_class)
{
	for (int e = 0; e < ERR_COUNT; e++) {
		enum st_rc rc = err_rc(e);
		int status = err_row(e)->status;
		int back = err_row(err_of_rc(rc))->status;
		bool refusal = status == 400 || status == 409 || status == 413 || status == 414 ||
			       status == 422 || status == 431;

		cr_assert(rc != ST_OK && rc != ST_BUSY, "%s: unit rc %s", err_row(e)->name, st_rc_str(rc));
		if (status != 405) /* the dispatcher's alone, never a unit's */
			cr_assert_eq(back, refusal ? 500 : status, "%s: %s answers %d, the row %d",
				     err_row(e)->name, st_rc_str(rc), back, status);
	}
	cr_assert_eq(err_rc(ERR_HOLD_NOT_FOUND), ST_NOT_FOUND);
	cr_assert_eq(err_rc(ERR_OUT_OF_MEMORY), ST_UNAVAILABLE);
}

/* What a handler's bare result code answers. A refusal with no answer of
 * its own (invalid, conflict, unprocessable, too large, unique) is a path
 * nobody answered: 500 internal_error, never a 4xx code the contract does
 * not name (test_openapi.py checks every one of these rows is documented). */
Test(errors, every_result_code_answers_a_row_of_its_status)
{
	static const int status[ST_RC_COUNT] = {
		[ST_NOMEM] = 503,	  [ST_INVALID] = 500,	 [ST_UNAUTHORIZED] = 401,
		[ST_FORBIDDEN] = 403,	  [ST_NOT_FOUND] = 404,	 [ST_CONFLICT] = 500,
		[ST_UNPROCESSABLE] = 500, [ST_TOO_LARGE] = 500,	 [ST_UNSUPPORTED] = 415,
		[ST_LIMITED] = 429,	  [ST_UNIQUE] = 500,	 [ST_BUSY] = 503,
		[ST_UNAVAILABLE] = 503,	  [ST_INTERNAL] = 500,
	};
	static const enum st_rc refusals[] = { ST_INVALID, ST_CONFLICT, ST_UNPROCESSABLE,
					       ST_TOO_LARGE, ST_UNIQUE };

	for (int rc = ST_NOMEM; rc < ST_RC_COUNT; rc++) {
		cr_assert_eq(err_row(err_of_rc(rc))->status, status[rc], "%s", st_rc_str(rc));
		cr_assert_str_eq(err_row(err_of_rc(rc))->message, "the request could not be completed");
	}
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
		cr_assert_eq(err_of_rc(refusals[i]), ERR_INTERNAL, "%s", st_rc_str(refusals[i]));
	cr_assert_eq(err_of_rc(ST_INTERNAL), ERR_INTERNAL);
	cr_assert_eq(err_of_rc(ST_RC_COUNT), ERR_INTERNAL);
	cr_assert_str_eq(err_row(err_of_rc(ST_NOT_FOUND))->code, "not_found");
	cr_assert_str_eq(err_row(err_of_rc(ST_BUSY))->code, "busy");
}

static json_t *body_of(const struct resp *r)
{
	json_t *o = json_loadb(r->body.ptr, r->body.len, JSON_PRESERVE_ORDER, NULL);

	cr_assert(o, "body %.*s", (int)r->body.len, r->body.ptr);
	return o;
}

Test(errors, an_answer_is_code_message_field_then_extra)
{
	struct resp r = { 0 };
	json_t *o;
	const char *key;
	json_t *v;
	const char *const order[] = { "error", "message", "field", "account" };
	size_t i = 0;

	resp_release(&r);
	cr_assert_eq(unit_error(&r, ERR_HOLD_FROM_UNKNOWN, json_pack("{s:s}", "account", "shop:1")),
		     ST_UNPROCESSABLE);
	cr_assert_eq(r.status, 422);
	o = body_of(&r);
	json_object_foreach(o, key, v) {
		cr_assert(i < 4 && !strcmp(key, order[i]), "member %zu is %s", i, key);
		i++;
	}
	cr_assert_eq(i, 4);
	cr_assert_str_eq(json_string_value(json_object_get(o, "error")), "unknown_account");
	cr_assert_str_eq(json_string_value(json_object_get(o, "message")), "no such account to hold on");
	cr_assert_str_eq(json_string_value(json_object_get(o, "field")), "from");
	json_decref(o);
	resp_release(&r);
}

Test(errors, a_field_named_at_run_time_replaces_the_rows_in_place)
{
	struct resp r = { 0 };
	json_t *o;

	resp_release(&r);
	resp_location(&r, "/left/over");
	cr_assert_eq(resp_set_error(&r, ERR_INVALID_AMOUNT,
				    json_pack("{s:s, s:i}", "field", "items[3].amount", "index", 3)),
		     ST_OK);
	cr_assert_eq(r.status, 400);
	cr_assert_null(r.location, "the answer before the error is dropped");
	o = body_of(&r);
	cr_assert_str_eq(json_string_value(json_object_get(o, "field")), "items[3].amount");
	cr_assert_eq(json_object_size(o), 4);
	cr_assert_str_eq(json_object_iter_key(json_object_iter_next(o, json_object_iter_next(
							     o, json_object_iter(o)))),
			 "field");
	json_decref(o);

	/* No field in the row, none given: no member. */
	cr_assert_eq(unit_error(&r, ERR_HOLD_NOT_FOUND, NULL), ST_NOT_FOUND);
	o = body_of(&r);
	cr_assert_eq(json_object_size(o), 2);
	cr_assert_eq(r.status, 404);
	json_decref(o);
	resp_release(&r);
}

Test(errors, a_success_answers_the_routes_status_and_an_error_its_rows)
{
	struct resp r = { 0 };

	resp_release(&r);
	cr_assert_eq(resp_ok(&r, json_pack("{s:s}", "id", "x")), ST_OK);
	cr_assert_eq(r.status, 200, "a resp of no route answers 200");
	r.ok_status = 201; /* what the dispatcher sets for a ROUTE_CREATED route */
	resp_location(&r, "/x");
	resp_release(&r);
	cr_assert_eq(r.ok_status, 201, "kept across a release (a unit's re-run)");
	cr_assert_eq(resp_ok(&r, json_pack("{s:s}", "id", "x")), ST_OK);
	cr_assert_eq(r.status, 201);
	cr_assert_eq(unit_error(&r, ERR_ACCOUNT_EXISTS, NULL), ST_CONFLICT);
	cr_assert_eq(r.status, 409);
	resp_ok_body(&r);
	cr_assert_eq(r.status, 201);
	resp_release(&r);
}
