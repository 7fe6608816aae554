/* console_assets.h — the operator console's files (console/), built into
 * the binary by scripts/embed-console (see the Makefile), served by
 * routes_console.c. */
#ifndef SETTLED_CONSOLE_ASSETS_H
#define SETTLED_CONSOLE_ASSETS_H

#include <stddef.h>

struct console_asset {
	const char *name;          /* file name, e.g. "app.js" */
	const char *content_type;  /* from the extension */
	const unsigned char *data;
	size_t len;
};

extern const struct console_asset console_assets[];
extern const size_t console_nassets;

#endif
