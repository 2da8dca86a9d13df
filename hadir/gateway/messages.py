"""What the phone shows about a check-in's verdict, in Bahasa Indonesia (the ASN read it)."""

from __future__ import annotations

from processors.events import Reason

STATUS = {
    "PENDING": "Presensi sudah diterima server dan sedang diperiksa.",
    "ACCEPTED": "Presensi diterima.",
    "REVIEW": "Presensi tercatat dan akan ditinjau petugas.",
    "REJECTED": "Presensi ditolak.",
}

REASON = {
    Reason.UNKNOWN_EMPLOYEE: "NIP tidak terdaftar sebagai pegawai.",
    Reason.MOCK_LOCATION: "Lokasi palsu (aplikasi fake GPS) terdeteksi.",
    Reason.OUTSIDE_GEOFENCE: "Lokasi berada di luar area kantor.",
    Reason.IMPOSSIBLE_TRAVEL: "Perpindahan lokasi terlalu cepat untuk masuk akal.",
    Reason.NO_SELFIE: "Swafoto wajib dilampirkan.",
    Reason.NO_FACE: "Wajah tidak terlihat pada swafoto.",
    Reason.FACE_MISMATCH: "Wajah pada swafoto tidak cocok dengan wajah terdaftar.",
    Reason.SELFIE_REPLAY: "Swafoto sama dengan swafoto sebelumnya; ambil swafoto baru.",
    Reason.SHARED_DEVICE: "Perangkat ini juga dipakai pegawai lain.",
    Reason.MULTIPLE_FACES: "Lebih dari satu wajah pada swafoto.",
    Reason.CLOCK_SKEW: "Jam pada ponsel tidak sesuai dengan jam server.",
    Reason.LOW_ACCURACY: "Akurasi GPS rendah.",
    Reason.SPOOF: "Swafoto diduga foto dari layar atau cetakan.",
    Reason.NO_TEMPLATE: "Wajah Anda belum terdaftar; hubungi BKPSDM.",
    Reason.OFFLINE_DELAYED: "Presensi dikirim lebih dari 2 jam setelah diambil.",
    Reason.INVALID_INPUT: "Data presensi tidak dapat diproses.",
}


DECISION = {
    "CLEAR": "Petugas telah memeriksa dan menyatakan presensi ini sah.",
    "CONFIRM": "Petugas telah memeriksa dan presensi ini tidak dihitung.",
}


def message(status: str, reasons: list[str], decision: str | None = None) -> str:
    """The status's sentence, then one per reason, then the reviewer's decision if there is
    one; without one, a rejection can be appealed."""
    parts = [STATUS[status], *(REASON[Reason(r)] for r in reasons if r in Reason.__members__)]
    if decision in DECISION:
        parts.append(DECISION[decision])
    elif status == "REJECTED":
        parts.append("Anda dapat mengajukan banding.")
    return " ".join(parts)
