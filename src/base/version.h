/* version.h — the build's version, as --version, /healthz, the startup
 * lines, the build_info metric and outbound User-Agents report it. The
 * definitions are generated at build time (cmake/version.cmake): an
 * explicit -DRELAY_VERSION, else the tree's VERSION file, else
 * `git describe --always --dirty --tags`, else "dev".
 * Constants: any thread. */
#ifndef RELAY_VERSION_H
#define RELAY_VERSION_H

extern const char relay_version[];    /* e.g. "v1.2.0-3-gabc1234-dirty" */
extern const char relay_user_agent[]; /* "pyrycode-relay/<version>" */

#define RELAY_VERSION relay_version

#endif
