-- Views for dashboards (the read-only dashboard user queries these). Each reads deduplicated
-- rows, so replays and restarts never double-count.
CREATE VIEW IF NOT EXISTS {db}.v_checkins AS
SELECT * FROM {db}.checkins FINAL;

CREATE VIEW IF NOT EXISTS {db}.v_alerts AS
SELECT * FROM {db}.alerts FINAL;

-- Attendance rate by office and day: present (or excused) share of working ASN.
CREATE VIEW IF NOT EXISTS {db}.v_attendance_by_office_day AS
SELECT office_id, date,
       count() AS asn,
       sum(present) AS present_asn,
       sum(excuse != '') AS excused_asn,
       sum(tk) AS tk_asn,
       round(sum(present) / count(), 4) AS attendance_rate
FROM {db}.attendance_daily FINAL
WHERE working = 1
GROUP BY office_id, date;

-- Fraud alerts by rule and day.
CREATE VIEW IF NOT EXISTS {db}.v_alerts_by_rule_day AS
SELECT rule, severity, local_date, count() AS alert_count, uniqExact(nip) AS asn
FROM {db}.alerts FINAL
GROUP BY rule, severity, local_date;

-- TPP cut by office and month.
CREATE VIEW IF NOT EXISTS {db}.v_tpp_by_office_month AS
SELECT month, office_id, count() AS asn,
       sum(tpp_base_idr) AS base_idr,
       sum(tpp_cut_idr) AS cut_idr,
       sum(tpp_paid_idr) AS paid_idr,
       round(avg(cut_pct), 3) AS avg_cut_pct
FROM {db}.tpp_monthly FINAL
GROUP BY month, office_id
