-- What people decide about what Hadir found (the review workflow), from their topics.

-- Every reviewer decision (the topic is compacted by event_id; this keeps the history).
-- The newest by decided_at_ms stands (ties: the larger decision_id), as processors/review.py
-- `standing` and STANDING_SQL say.
CREATE TABLE IF NOT EXISTS {db}.decisions (
    decision_id String,
    event_id String,
    nip String,
    decision String,
    reviewer String,
    note String,
    decided_at DateTime,
    decided_at_ms Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (event_id, decision_id);

CREATE TABLE IF NOT EXISTS {db}.appeals (
    appeal_id String,
    event_id String,
    nip String,
    note String,
    submitted_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (event_id, appeal_id);

-- The newest record per request_id (PENDING, then APPROVED or REJECTED) stands.
CREATE TABLE IF NOT EXISTS {db}.excuse_requests (
    request_id String,
    nip String,
    kind String,
    date_from Date,
    date_to Date,
    note String,
    submitted_at DateTime,
    status String,
    decided_by String,
    decided_at Nullable(DateTime),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY request_id;

CREATE TABLE IF NOT EXISTS {db}.months (
    month String,
    closed UInt8,
    by String,
    at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY month;

-- What could not be processed: metadata and the error, never the record itself (a check-in's
-- selfie stays on the dead-letter topic, whose retention is the raw topic's).
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    source_topic String,
    source_partition Int32,
    source_offset Int64,
    stage String,
    error String,
    failed_at DateTime,
    event_id String,
    nip String,
    value_bytes UInt32,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (source_topic, source_partition, source_offset);

-- The TPP of a closed month as it was paid: `hadir report tpp` of a closed month reads this.
-- Rows of the newest close (version) of a month are the report.
CREATE TABLE IF NOT EXISTS {db}.tpp_closed (
    month Date,
    nip String,
    name String,
    office_id String,
    working_days UInt16,
    present_days UInt16,
    excused_days UInt16,
    tk_days UInt16,
    tl1 UInt16, tl2 UInt16, tl3 UInt16, tl4 UInt16,
    psw1 UInt16, psw2 UInt16, psw3 UInt16, psw4 UInt16,
    cut_pct Float64,
    tpp_base_idr Int64,
    tpp_cut_idr Int64,
    tpp_paid_idr Int64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (month, version, nip);

-- Each check-in's final status: its verdict, and the newest reviewer decision if any
-- (processors/review.py `counts`: CLEAR counts, CONFIRM does not; without a decision REVIEW
-- counts and REJECTED does not).
CREATE VIEW IF NOT EXISTS {db}.v_checkin_status AS
SELECT event_id, nip, office_id, type, server_time, local_date, verdict, reasons,
       decision, reviewer, decided_at,
       (decision = 'CLEAR') OR (decision != 'CONFIRM' AND verdict IN ('ACCEPTED', 'REVIEW'))
           AS counted
FROM (SELECT * FROM {db}.checkins FINAL) AS c
ANY LEFT JOIN (
    SELECT event_id, argMax(decision, (decided_at_ms, decision_id)) AS decision,
           argMax(reviewer, (decided_at_ms, decision_id)) AS reviewer,
           argMax(decided_at, (decided_at_ms, decision_id)) AS decided_at
    FROM {db}.decisions FINAL GROUP BY event_id
) AS d USING event_id;
