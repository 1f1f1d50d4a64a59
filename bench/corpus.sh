#!/usr/bin/env bash
# The corpus of real databases, measured: for each, its tables, rows and foreign-key links, and
# how long `schema generate --from-source --apply`, `run --goal "migrate everything"` and
# `validate` take with the release build. Prints one Markdown table row per database.
#
#   cargo build --release -p agentctl && bench/corpus.sh
#
# Needs PostgreSQL 15's binaries, ../shared/datasets beside the checkout, and for the Wagtail
# site a Python with Django and Wagtail (/var/tmp/agentctl-django, as .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
bin="${CARGO_TARGET_DIR:-target}/release/agentctl"
[ -x "$bin" ] || { echo "build it first: cargo build --release -p agentctl" >&2; exit 2; }
pg=/usr/lib/postgresql/15/bin
datasets=$here/../shared/datasets
python=${AGENTCTL_DJANGO_PYTHON:-/var/tmp/agentctl-django/bin/python}
port=${BENCH_PORT:-55499}

dir=$(mktemp -d)
as=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; as=(runuser -u postgres --); fi
"${as[@]}" "$pg/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
"${as[@]}" "$pg/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c fsync=off" -l "$dir/log" -w start >/dev/null
trap '"${as[@]}" "$pg/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null; rm -rf "$dir"' EXIT
psql=(psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
url=postgres://postgres@127.0.0.1:$port

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# Tables (not partitions), rows, and the rows each foreign key links to a parent row.
shape() {
  local db=$1 tables rows=0 links=0 t n
  tables=$("${psql[@]}" -d "$db" -c "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'")
  while IFS= read -r t; do rows=$((rows + $("${psql[@]}" -d "$db" -c "SELECT count(*) FROM $t"))); done <<<"$tables"
  for n in $("${psql[@]}" -d "$db" -c "SELECT format('SELECT count(*) FROM %s c WHERE EXISTS (SELECT 1 FROM %s p WHERE (%s) = (%s));',
        con.conrelid::regclass, con.confrelid::regclass,
        (SELECT string_agg('p.' || quote_ident(a.attname), ', ' ORDER BY k.o) FROM unnest(con.confkey) WITH ORDINALITY k(x, o) JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.x),
        (SELECT string_agg('c.' || quote_ident(a.attname), ', ' ORDER BY k.o) FROM unnest(con.conkey) WITH ORDINALITY k(x, o) JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.x))
      FROM pg_constraint con WHERE con.contype = 'f' AND con.conparentid = 0" | "${psql[@]}" -d "$db"); do
    links=$((links + n))
  done
  echo "$(echo "$tables" | grep -c .) $rows $links"
}

# measure NAME DB [MAPPING]: the mapping file the corpus test gives that database, if any.
measure() {
  local name=$1 db=$2 target="${2}_target" t0 t1 t2 t3 shape_ mapping=()
  [ -n "${3:-}" ] && mapping=(--mapping "$3")
  "${psql[@]}" -d postgres -c "CREATE DATABASE $target"
  shape_=$(shape "$db")
  t0=$(now)
  "$bin" --source "$url/$db" --target "$url/$target" schema generate --from-source --apply "${mapping[@]}" >/dev/null 2>&1
  t1=$(now)
  "$bin" --source "$url/$db" --target "$url/$target" run --goal "migrate everything" --yes --skip-validation "${mapping[@]}" >/dev/null
  t2=$(now)
  "$bin" --source "$url/$db" --target "$url/$target" validate "${mapping[@]}" >/dev/null
  t3=$(now)
  read -r tables rows links <<<"$shape_"
  echo "| $name | $tables | $rows | $links | $(seconds "$t0" "$t1") | $(seconds "$t1" "$t2") | $(seconds "$t2" "$t3") |"
}

echo "| database | tables | rows | FK links | schema generate s | run s | validate s |"
echo "| --- | --- | --- | --- | --- | --- | --- |"

"${psql[@]}" -d postgres -c "CREATE DATABASE chinook"
grep -viE '^\s*(DROP DATABASE|CREATE DATABASE|\\c)' "$datasets/chinook/Chinook_PostgreSql.sql" | "${psql[@]}" -d chinook >/dev/null
measure Chinook chinook

"${psql[@]}" -d postgres -c "CREATE DATABASE employee"
(cd "$datasets/employee" && "${psql[@]}" -d employee -f employee.sql >/dev/null 2>&1)
measure Employee employee

"${psql[@]}" -d postgres -c "CREATE DATABASE northwind"
"${psql[@]}" -d northwind -f "$datasets/northwind/northwind.sql" >/dev/null
measure Northwind northwind

"${psql[@]}" -d postgres -c "CREATE DATABASE iso3166"
"${psql[@]}" -d iso3166 -f "$datasets/iso-3166/iso-3166.sql" >/dev/null
measure iso-3166 iso3166

"${psql[@]}" -d postgres -c "CREATE DATABASE adversarial"
"${psql[@]}" -d adversarial -f "$here/tests/corpus/adversarial.sql" >/dev/null
measure adversarial adversarial "$here/tests/corpus/adversarial.toml"

if "$python" -c "import wagtail, psycopg" 2>/dev/null; then
  "${psql[@]}" -d postgres -c "CREATE DATABASE wagtail"
  (cd "$here/tests/corpus/django" && PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=wagtail DJANGO_SETTINGS_MODULE=settings PYTHONPATH=. \
    sh -c "'$python' -m django migrate -v 0 && '$python' fill.py >/dev/null")
  measure "Wagtail (Django)" wagtail "$here/tests/corpus/django/mapping.toml"
else
  echo "(no Python with Django and Wagtail at $python: the Wagtail site is not measured)" >&2
fi
