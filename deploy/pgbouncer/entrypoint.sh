#!/bin/sh
# PgBouncer's userlist holds the role's password; it is written here, at start, from the
# environment, so no password lives in an image or a file in the repository.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
umask 077
printf '"%s" "%s"\n' "${POSTGRES_USER:-smartroute}" "$POSTGRES_PASSWORD" > /run/pgbouncer/userlist.txt
exec pgbouncer "${PGBOUNCER_CONFIG:-/etc/pgbouncer/pgbouncer.ini}"
