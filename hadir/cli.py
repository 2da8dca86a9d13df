"""The ``hadir`` command line. Each command's work lives in its own module; this file only parses
arguments, calls it, prints the result and turns known failures into one clear message."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import date
from pathlib import Path
from typing import Any

from hadir.output import FORMATS, emit, emit_object


def _month(text: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}", text) or text.startswith("0000"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month like 2026-03")
    month = int(text[5:])
    if not 1 <= month <= 12:
        raise argparse.ArgumentTypeError(f"{text!r}: month must be 01..12")
    return date(int(text[:4]), month, 1)


def _year(text: str) -> int:
    if not re.fullmatch(r"\d{4}", text) or text == "0000":
        raise argparse.ArgumentTypeError(f"{text!r} is not a year like 2026")
    return int(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _benchmarks(text: str) -> str:
    from hadir.bench import choose

    try:
        choose(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _nip(text: str) -> str:
    from processors.erasure import check_nip

    try:
        return check_nip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def _settings() -> Any:
    from hadir import config

    return config.load()


# --- commands ------------------------------------------------------------------------------


def cmd_infra(args: argparse.Namespace) -> int:
    from hadir.infra import stack

    settings = _settings()
    if args.action == "up":
        if args.format == "table":
            print("Starting the local stack (state in "
                  f"{settings.infra.home_path}):", flush=True)
        rows = [vars(s) for s in stack.up(settings, progress=args.format == "table")]
    elif args.action == "down":
        from hadir import workers

        stopped = workers.stop(settings) + stack.down(settings)
        emit_object({"stopped": stopped}, args.format)
        return 0
    else:
        rows = [vars(s) for s in stack.status(settings)]
    emit(rows, args.format, title="Hadir services",
         columns=["name", "address", "healthy", "pid", "log"])
    return 0 if all(r["healthy"] for r in rows) else 1


def cmd_config(args: argparse.Namespace) -> int:
    from hadir import config

    settings = _settings()
    values = config.as_dict(settings)
    if args.format == "table":
        rows = [{"setting": f"HADIR_{section}_{key}".upper(), "value": value}
                for section, fields in values.items() for key, value in fields.items()]
        emit(rows, "table", title="Effective settings")
    else:
        emit_object(values, args.format)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hadir import workers
    from hadir.infra import stack

    settings = _settings()
    if args.stop:
        emit_object({"stopped": workers.stop(settings)}, args.format)
        return 0
    if args.status:
        emit([vars(w) for w in workers.status(settings)], args.format, title="Workers",
             columns=["name", "pid", "log"])
        return 0
    workers.check_counts(settings, args.intake, args.sinks, args.core)  # before the stack starts
    stack.up(settings, progress=args.format == "table")
    if args.detach:
        started = workers.start_detached(settings, args.intake, args.sinks, args.core)
        emit([vars(w) for w in started], args.format, title="Workers started",
             columns=["name", "pid", "log"])
        return 0
    return workers.foreground(settings, args.intake, args.sinks, args.core)


def cmd_gateway(args: argparse.Namespace) -> int:
    from hadir.gateway.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return serve(_settings())


def cmd_dashboard(args: argparse.Namespace) -> int:
    from hadir.dashboard.app import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return serve(_settings())


def cmd_users(args: argparse.Namespace) -> int:
    from hadir import users

    settings = _settings()
    if args.action == "add":
        password = sys.stdin.readline().rstrip("\n")
        emit_object(users.add(settings, args.name, args.role, args.office, password),
                    args.format, title="Account saved")
    else:
        emit(users.listing(settings), args.format, title="Dashboard accounts",
             columns=["username", "role", "office_id", "disabled"])
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    from hadir import devices

    settings = _settings()
    if args.action == "issue":
        emit_object(devices.issue_codes(settings, [args.nip])[0], args.format,
                    title=f"Activation code for {args.nip}")
    elif args.action == "revoke":
        if (args.key_id is None) == (args.nip is None):
            raise SystemExit("hadir device revoke: give a KEY_ID or --nip NIP (one of them)")
        emit_object({"revoked": devices.revoke(settings, args.key_id, args.nip)}, args.format)
    else:
        emit([devices.key_row(k) for k in devices.keys(settings, args.nip)], args.format,
             title="Device keys", columns=["key_id", "nip", "device_id", "platform", "model",
                                           "registered_at", "revoked_at"])
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from hadir import review
    from processors.review import DecisionKind

    settings = _settings()
    if args.action == "queue":
        emit(review.queue(settings, office=args.office, rule=args.rule, limit=args.limit),
             args.format, title="Review queue (oldest first)", columns=review.QUEUE_COLUMNS)
    elif args.action == "decide":
        kind = DecisionKind.CLEAR if args.clear else DecisionKind.CONFIRM
        emit_object(review.decide(settings, args.event_id, kind, args.by, args.note or ""),
                    args.format, title="Decision published")
    else:
        emit(review.history(settings, args.event_id), args.format,
             title=f"Decisions on {args.event_id} (the last one stands)",
             columns=review.HISTORY_COLUMNS)
    return 0


def cmd_excuse(args: argparse.Namespace) -> int:
    from hadir import review

    settings = _settings()
    if args.action == "requests":
        emit(review.requests(settings, None if args.status == "ALL" else args.status,
                             args.office), args.format, title="Excuse requests",
             columns=review.REQUEST_COLUMNS)
    else:
        emit_object(review.decide_excuse(settings, args.request_id, args.action == "approve",
                                         args.by), args.format)
    return 0


def cmd_month(args: argparse.Namespace) -> int:
    from hadir import review

    emit_object(review.set_month(_settings(), args.month, args.action == "close", args.by),
                args.format, title=f"Month {args.month:%Y-%m}")
    return 0


def cmd_deadletters(args: argparse.Namespace) -> int:
    from hadir import deadletters

    settings = _settings()
    if args.action == "replay":
        if not args.event_ids and not args.all:
            raise SystemExit("hadir deadletters replay: name EVENT_IDs or give --all")
        emit_object(deadletters.replay(settings, None if args.all else set(args.event_ids)),
                    args.format, title="Dead letters sent again")
    else:
        emit(deadletters.listing(settings, args.stage, args.limit), args.format,
             title="Dead letters (newest first)", columns=deadletters.COLUMNS)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from hadir import replay

    summary = replay.replay(_settings(), args.dir, timeout=args.timeout,
                            progress=args.format == "table")
    replay.print_summary(summary, args.format)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hadir import demo

    return demo.run(_settings(), out=args.out, asn=args.asn, seed=args.seed,
                    month=args.month, fmt=args.format)


def cmd_report(args: argparse.Namespace) -> int:
    from hadir import reports

    settings = _settings()
    if args.kind == "tpp":
        rows = reports.tpp(settings, args.month, office=args.office)
        emit([r.as_row() for r in rows], args.format,
             title=f"TPP {args.month:%Y-%m}", columns=reports.TPP_COLUMNS)
    else:
        lines = reports.discipline(settings, args.year, office=args.office)
        emit(lines, args.format, title=f"Discipline {args.year} (PP 94/2021)",
             columns=reports.DISCIPLINE_COLUMNS)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from hadir import queries

    settings = _settings()
    if args.follow:
        return queries.follow_alerts(settings, args.format, rule=args.rule, nip=args.nip)
    emit(queries.alerts(settings, rule=args.rule, nip=args.nip, limit=args.limit),
         args.format, title="Fraud alerts", columns=queries.ALERT_COLUMNS)
    return 0


def cmd_checkins(args: argparse.Namespace) -> int:
    from hadir import queries

    emit(queries.checkins(_settings(), nip=args.nip, verdict=args.verdict, limit=args.limit),
         args.format, title="Check-in verdicts", columns=queries.CHECKIN_COLUMNS)
    return 0


def cmd_face(args: argparse.Namespace) -> int:
    from hadir import faces

    settings = _settings()
    if args.action == "compare":
        emit_object(faces.compare(settings, args.a, args.b), args.format,
                    title=f"{args.a} vs {args.b}")
    elif args.action == "rekey":
        from hadir import rekey

        emit_object(rekey.rekey(settings, new_key=not args.keep_key), args.format,
                    title="Face templates sealed with the current key")
    else:
        emit_object(faces.enroll(settings, args.nip, args.images), args.format,
                    title=f"Enrolled {args.nip}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hadir import export
    from hadir.output import to_json

    data = export.export(_settings(), args.nip)
    if args.format == "json":
        print(to_json(data))
    else:
        emit(export.summary(data), "table",
             title=f"What Hadir holds about {args.nip} (--format json for the records)",
             columns=export.SUMMARY_COLUMNS)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from hadir import erase

    if not args.yes:
        raise SystemExit(f"hadir erase: this deletes what Hadir holds about {args.nip} but "
                         "their paid TPP lines, and cannot be undone; give --yes to go ahead")
    emit(erase.erase(_settings(), args.nip, force=args.force), args.format,
         title=f"Erased {args.nip} (count: what each step changed now; 0: nothing was left)",
         columns=erase.COLUMNS)
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from hadir import retention

    emit(retention.run(_settings()), args.format, title="Retention run",
         columns=retention.COLUMNS)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from hadir import bench

    results = bench.run(_settings(), only=args.only, out=args.out,
                        progress=args.format == "table", intake=args.intake, core=args.core)
    bench.print_results(results, args.format)
    return 0


# --- parser --------------------------------------------------------------------------------


def _fmt(p: argparse.ArgumentParser, csv: bool = False) -> None:
    p.add_argument("--format", choices=FORMATS if csv else ("table", "json"), default="table",
                   help="table for people (default), json%s for programs" %
                   (" or csv" if csv else ""))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hadir",
        description="Hadir: ASN attendance with face, location and fraud checks, streamed "
                    "through Kafka into ClickHouse, and the TPP report that follows.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("infra", help="start, stop or show the local Kafka, registry, ClickHouse")
    s.add_argument("action", choices=("up", "down", "status"))
    _fmt(s)
    s.set_defaults(func=cmd_infra)

    s = sub.add_parser("config", help="show the effective settings (HADIR_* and hadir.toml)")
    _fmt(s)
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("run", help="start the stream workers (foreground unless --detach)")
    s.add_argument("--detach", action="store_true", help="start in the background and return")
    s.add_argument("--intake", type=_positive, default=1,
                   help="intake (face) workers, at most the raw topic's partitions")
    s.add_argument("--core", type=_positive, default=1,
                   help="core (person and device state) workers, at most the raw topic's "
                        "partitions")
    s.add_argument("--sinks", type=_positive, default=1,
                   help="ClickHouse sink processes, at most the event topics' partitions")
    s.add_argument("--stop", action="store_true",
                   help="stop the background supervisor and every worker")
    s.add_argument("--status", action="store_true", help="list running workers")
    s.add_argument("--supervisor", help=argparse.SUPPRESS)  # marks --detach's own process
    _fmt(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("gateway", help="serve the phone edge (HTTP; also started by hadir run)")
    s.add_argument("--hadir-worker", help=argparse.SUPPRESS)  # marks hadir run's own process
    s.set_defaults(func=cmd_gateway)

    s = sub.add_parser("dashboard", help="serve the web dashboard (also started by hadir run)")
    s.add_argument("--hadir-worker", help=argparse.SUPPRESS)  # marks hadir run's own process
    s.set_defaults(func=cmd_dashboard)

    s = sub.add_parser("users", help="dashboard accounts")
    us = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    u = us.add_parser("add", help="add or replace an account (password on standard input)")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=("admin", "reviewer", "office_head"))
    u.add_argument("--office", help="the office of an office_head")
    _fmt(u)
    u.set_defaults(func=cmd_users)
    u = us.add_parser("list", help="the accounts")
    _fmt(u, csv=True)
    u.set_defaults(func=cmd_users)

    s = sub.add_parser("device", help="phone registration: activation codes and device keys")
    ds = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = ds.add_parser("issue", help="a one-time activation code for an ASN's phone")
    d.add_argument("nip")
    _fmt(d)
    d.set_defaults(func=cmd_device)
    d = ds.add_parser("revoke", help="end a device key (or every key of --nip) at once")
    d.add_argument("key_id", nargs="?")
    d.add_argument("--nip")
    _fmt(d)
    d.set_defaults(func=cmd_device)
    d = ds.add_parser("list", help="registered device keys")
    d.add_argument("--nip")
    _fmt(d, csv=True)
    d.set_defaults(func=cmd_device)

    s = sub.add_parser("review", help="the review queue, reviewer decisions and their history")
    rv = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rv.add_parser("queue", help="REVIEW verdicts and appealed rejections without a decision")
    r.add_argument("--office", help="only this office_id")
    r.add_argument("--rule", help="only check-ins with this reason, e.g. SHARED_DEVICE")
    r.add_argument("--limit", type=_positive, default=200, help="the oldest this many")
    _fmt(r, csv=True)
    r.set_defaults(func=cmd_review)
    r = rv.add_parser("decide", help="CLEAR (counts) or CONFIRM (does not count) a check-in")
    r.add_argument("event_id")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--clear", action="store_true", help="the check-in counts")
    which.add_argument("--confirm", action="store_true", help="the finding stands")
    r.add_argument("--by", required=True, help="the reviewer's name")
    r.add_argument("--note", help="why (kept with the decision)")
    _fmt(r)
    r.set_defaults(func=cmd_review)
    r = rv.add_parser("history", help="every decision on a check-in")
    r.add_argument("event_id")
    _fmt(r, csv=True)
    r.set_defaults(func=cmd_review)

    s = sub.add_parser("excuse", help="excuse requests from the phones: list, approve, reject")
    ex = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = ex.add_parser("requests", help="excuse requests (pending unless --status)")
    e.add_argument("--status", choices=("PENDING", "APPROVED", "REJECTED", "ALL"),
                   default="PENDING")
    e.add_argument("--office", help="only this office_id")
    _fmt(e, csv=True)
    e.set_defaults(func=cmd_excuse)
    for verb in ("approve", "reject"):
        e = ex.add_parser(verb, help=f"{verb} a pending request")
        e.add_argument("request_id")
        e.add_argument("--by", required=True, help="the head of office or BKPSDM officer")
        _fmt(e)
        e.set_defaults(func=cmd_excuse)

    s = sub.add_parser("month", help="close a month's TPP (frozen as paid) or reopen it")
    s.add_argument("action", choices=("close", "reopen"))
    s.add_argument("month", type=_month, help="YYYY-MM")
    s.add_argument("--by", default="BKPSDM", help="who (default BKPSDM)")
    _fmt(s)
    s.set_defaults(func=cmd_month)

    s = sub.add_parser("deadletters", help="what could not be processed; send it again")
    dl = s.add_subparsers(dest="action", metavar="ACTION")
    s.add_argument("--stage", help="only this stage (intake, person, device, clickhouse-sink)")
    s.add_argument("--limit", type=_positive, default=50, help="the newest this many")
    _fmt(s, csv=True)
    s.set_defaults(func=cmd_deadletters)
    d = dl.add_parser("replay", help="publish dead-lettered check-ins to the raw topic again")
    d.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    d.add_argument("--all", action="store_true", help="every dead-lettered raw check-in")
    _fmt(d)
    d.set_defaults(func=cmd_deadletters)

    s = sub.add_parser("replay", help="replay a scenario folder end to end")
    s.add_argument("dir", type=Path, help="scenario folder (format in DESIGN.md)")
    s.add_argument("--timeout", type=_positive, default=900,
                   help="seconds to wait for every verdict (default 900)")
    _fmt(s)
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("demo", help="generate a Bangka Tengah month with fraud and replay it")
    s.add_argument("--asn", type=_positive, default=300, help="number of ASN (default 300)")
    s.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    s.add_argument("--month", type=_month, default=None,
                   help="month to simulate, YYYY-MM (default: last full month)")
    s.add_argument("--out", type=Path, default=Path("out/demo"),
                   help="where the scenario and the reports go (default out/demo)")
    _fmt(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("report", help="TPP and discipline reports from ClickHouse")
    rs = s.add_subparsers(dest="kind", required=True, metavar="REPORT")
    r = rs.add_parser("tpp", help="monthly TPP cut per ASN")
    r.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    r.add_argument("--office", help="only this office_id")
    _fmt(r, csv=True)
    r.set_defaults(func=cmd_report)
    r = rs.add_parser("discipline", help="TK days per ASN and the PP 94/2021 level reached")
    r.add_argument("--year", type=_year, required=True, help="YYYY")
    r.add_argument("--office", help="only this office_id")
    _fmt(r, csv=True)
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("alerts", help="fraud alerts (--follow tails the topic)")
    s.add_argument("--follow", action="store_true", help="show alerts as they happen")
    s.add_argument("--rule", help="only this rule, e.g. SHARED_DEVICE")
    s.add_argument("--nip", help="only this NIP")
    s.add_argument("--limit", type=_positive, default=50,
                   help="the newest this many (default 50; not with --follow)")
    _fmt(s, csv=True)
    s.set_defaults(func=cmd_alerts)

    s = sub.add_parser("checkins", help="check-in verdicts")
    s.add_argument("--nip", help="only this NIP")
    s.add_argument("--verdict", choices=("ACCEPTED", "REVIEW", "REJECTED"))
    s.add_argument("--limit", type=_positive, default=50, help="the newest this many (default 50)")
    _fmt(s, csv=True)
    s.set_defaults(func=cmd_checkins)

    s = sub.add_parser("face", help="compare two face images, enroll an ASN, rekey templates")
    fs = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    f = fs.add_parser("compare", help="similarity of the faces in two images")
    f.add_argument("a", type=_file)
    f.add_argument("b", type=_file)
    _fmt(f)
    f.set_defaults(func=cmd_face)
    f = fs.add_parser("enroll", help="enroll an ASN's face from one or more photos")
    f.add_argument("nip")
    f.add_argument("images", type=_file, nargs="+")
    _fmt(f)
    f.set_defaults(func=cmd_face)
    f = fs.add_parser("rekey", help="rotate the template key and seal every template with it")
    f.add_argument("--keep-key", action="store_true",
                   help="no new key: only seal again what an older key sealed (a configured "
                        "key is rotated in the configuration)")
    _fmt(f)
    f.set_defaults(func=cmd_face)

    s = sub.add_parser("export", help="everything Hadir holds about one ASN (right of access)")
    s.add_argument("nip", type=_nip)
    s.add_argument("--format", choices=("json", "table"), default="json",
                   help="json (default): the records, for a program or a handover; table: "
                        "what there is, for people")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("erase", help="offboarding: erase an ASN's data but their paid TPP lines")
    s.add_argument("nip", type=_nip)
    s.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    s.add_argument("--force", action="store_true",
                   help="even with attendance in months not closed yet (it is lost for them)")
    _fmt(s)
    s.set_defaults(func=cmd_erase)

    s = sub.add_parser("retention", help="apply the retention rules (schedule daily)")
    rt = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = rt.add_parser("run", help="coarsen old positions, set the selfie topics' retention")
    _fmt(r)
    r.set_defaults(func=cmd_retention)

    s = sub.add_parser("bench", help="run the benchmarks, results as JSON")
    s.add_argument("--only", type=_benchmarks,
                   help="comma-separated: geo,face,pipeline,sink,report")
    s.add_argument("--out", type=Path, default=Path("out/bench.json"))
    s.add_argument("--intake", type=_positive, default=1,
                   help="intake workers in the pipeline benchmark (as hadir run --intake)")
    s.add_argument("--core", type=_positive, default=1,
                   help="core workers in the pipeline benchmark (as hadir run --core)")
    _fmt(s)
    s.set_defaults(func=cmd_bench)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from clickhouse_driver.errors import Error as ClickHouseError
    from confluent_kafka import KafkaException

    from hadir.config import ConfigError
    from hadir.erase import ErasureRefused
    from hadir.infra.process import InfraError
    from hadir.reports import ReportError
    from hadir.scenario import ScenarioError
    from hadir.serde import RegistryError, SerdeError
    from processors.events import InvalidCheckin
    from processors.face import EnrollmentError, FaceModelError
    from processors.review import ReviewError
    from processors.templates import TemplateError

    return (ConfigError, InfraError, ScenarioError, RegistryError, SerdeError, InvalidCheckin,
            FaceModelError, EnrollmentError, TemplateError, FileNotFoundError, PermissionError,
            TimeoutError, ClickHouseError, KafkaException, ReportError, ReviewError,
            ErasureRefused)


def _unreachable(exc: BaseException) -> bool:
    """The error says a service did not answer (rather than refused what was asked)."""
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(exc, KafkaException):
        return exc.args[0].code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                      KafkaError._TIMED_OUT, KafkaError._MSG_TIMED_OUT)
    return type(exc).__name__ in ("NetworkError", "SocketTimeoutError", "RegistryUnreachable")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # clickhouse-driver logs each failed connection with its traceback; the error that
    # follows says the same in one line.
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("hadir: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _known_errors()):
            raise
        print(f"hadir: error: {exc}", file=sys.stderr)
        if _unreachable(exc):
            print("hadir: is the stack running? `hadir infra status` says; "
                  "`hadir infra up` starts it", file=sys.stderr)
        return 1
