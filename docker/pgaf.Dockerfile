# pg_auto_failover's monitor and data nodes for docker-compose.yml (issue 13): PostgreSQL 15 with
# pg_cron and pg_auto_failover (the PGDG packages of the postgres image's apt sources; Debian 12
# has the same packages, which `make cluster` runs). One image, three services: the entrypoint's
# argument says which member it is (docker/pgaf-node.sh).
FROM postgres:15
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15-cron postgresql-15-auto-failover pg-auto-failover-cli \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/pgaf && chown postgres:postgres /var/lib/postgresql/pgaf
COPY docker/pgaf-node.sh /usr/local/bin/pgaf-node
USER postgres
ENTRYPOINT ["pgaf-node"]
