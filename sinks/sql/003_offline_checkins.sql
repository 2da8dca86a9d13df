-- Offline check-ins (the phone edge's offline_age_ms): the check-in happened at
-- server_time_ms - offline_age_ms, which the reports use; local_date is that moment's date.
ALTER TABLE {db}.checkins ADD COLUMN offline_age_ms Int64 DEFAULT 0;
