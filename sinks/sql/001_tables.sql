-- Check-in verdicts: one row per event_id after deduplication (ReplacingMergeTree keeps the
-- newest `version`; queries read through FINAL or the v_ views). Never holds the selfie.
CREATE TABLE IF NOT EXISTS {db}.checkins (
    event_id String,
    nip String,
    device_id String,
    office_id String,
    type String,
    server_time DateTime,
    server_time_ms Int64,
    local_date Date,
    client_time Nullable(DateTime),
    verdict String,
    reasons Array(String),
    face_similarity Nullable(Float32),
    spoof_score Nullable(Float32),
    h3_cell String,
    distance_m Nullable(Float32),
    lat Float64,
    lon Float64,
    accuracy_m Nullable(Float32),
    decided_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(local_date)
ORDER BY (nip, local_date, event_id);

CREATE TABLE IF NOT EXISTS {db}.alerts (
    alert_id String,
    event_id String,
    nip String,
    device_id String,
    office_id String,
    rule String,
    severity String,
    server_time DateTime,
    local_date Date,
    detected_at DateTime,
    evidence String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(local_date)
ORDER BY (rule, local_date, alert_id);

CREATE TABLE IF NOT EXISTS {db}.employees (
    nip String,
    name String,
    office_id String,
    tpp_base_idr Int64,
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY nip;

CREATE TABLE IF NOT EXISTS {db}.offices (
    office_id String,
    name String,
    geometry String,
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY office_id;

CREATE TABLE IF NOT EXISTS {db}.excuses (
    nip String,
    date_from Date,
    date_to Date,
    kind String,
    deleted UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (nip, date_from, kind);

-- The working calendar the reports used (weekday schedule, Ramadan, holidays, overrides),
-- written by `hadir report` so a dashboard sees the same days.
CREATE TABLE IF NOT EXISTS {db}.calendar (
    date Date,
    working UInt8,
    start_minute UInt16,
    end_minute UInt16,
    holiday String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY date;

-- Daily attendance per ASN and monthly TPP per ASN, computed by processors/attendance.py from
-- the tables above and stored by `hadir report tpp` for dashboards.
CREATE TABLE IF NOT EXISTS {db}.attendance_daily (
    nip String,
    office_id String,
    date Date,
    working UInt8,
    excuse String,
    first_in Nullable(DateTime),
    last_out Nullable(DateTime),
    late_min Int32,
    early_min Int32,
    tl_code UInt8,
    psw_code UInt8,
    tk UInt8,
    present UInt8,
    cut_pct Float64,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(date)
ORDER BY (nip, date);

CREATE TABLE IF NOT EXISTS {db}.tpp_monthly (
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
ORDER BY (month, nip)
