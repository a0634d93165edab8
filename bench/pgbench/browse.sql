-- Browsing: the published list (100 events x 10 ticket types), then one event with live stock.
\set e random(1, 100)
SELECT api.list_published_events(NULL);
SELECT api.get_event('bench-event-' || :e);
