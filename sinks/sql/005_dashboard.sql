-- The web dashboard: who saw personal data through it (UU 27/2022), and where each judged
-- check-in lies on the raw topic (the dashboard shows a reviewer its selfie from there, while
-- Kafka keeps it).
CREATE TABLE IF NOT EXISTS {db}.access_log (
    entry_id String,
    at DateTime,
    username String,
    role String,
    action String,
    subject String,
    nip String,
    office_id String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(at)
ORDER BY (at, entry_id);

ALTER TABLE {db}.checkins ADD COLUMN source_offset String DEFAULT '';
