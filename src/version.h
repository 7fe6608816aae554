/* version.h — what `settled --version` prints: the release (the VERSION
 * file) and the git commit the binary was built from. The Makefile writes
 * build/version.c at build time; outside a git checkout the commit is
 * "unknown". */
#ifndef SETTLED_VERSION_H
#define SETTLED_VERSION_H

extern const char settled_version[];  /* e.g. "0.9.0" */
extern const char settled_commit[];   /* e.g. "88f0195ab12c" or "88f0195ab12c-dirty" */

#endif
