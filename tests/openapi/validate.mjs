// Validates an OpenAPI document with @apidevtools/swagger-parser: the
// document against the OpenAPI 3.0 schema, every $ref resolvable, no
// duplicate operationIds or parameters. Run by tests/integration/test_openapi.py:
//
//   node tests/openapi/validate.mjs <dir holding node_modules> docs/openapi.json
//
// Prints "valid: <title> <version>, N paths, M operations" and exits 0, or
// prints the validator's message and exits 1.
import { createRequire } from "node:module";
import path from "node:path";

const [modulesDir, doc] = process.argv.slice(2);
if (!modulesDir || !doc) {
	console.error("usage: node validate.mjs <dir with node_modules> <openapi.json>");
	process.exit(2);
}
const require = createRequire(path.resolve(modulesDir, "package.json"));
const SwaggerParser = require("@apidevtools/swagger-parser");

try {
	// validate() dereferences in place; the count is taken from a copy.
	const api = await SwaggerParser.validate(path.resolve(doc));
	const methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
	let ops = 0;
	for (const item of Object.values(api.paths))
		for (const m of methods) if (item[m]) ops++;
	console.log(`valid: ${api.info.title} ${api.info.version}, ${Object.keys(api.paths).length} paths, ${ops} operations`);
} catch (err) {
	console.error(`invalid: ${err.message}`);
	process.exit(1);
}
