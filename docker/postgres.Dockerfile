# PostgreSQL 15 with pg_cron. (The official image's apt sources carry pg_cron 1.6; the
# project uses only what 1.4, Debian 12's version, has.)
FROM postgres:15
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15-cron \
 && rm -rf /var/lib/apt/lists/*
