-- The pg_cron job's work, called as often as the weight says.
SELECT api.expire_reservations();
