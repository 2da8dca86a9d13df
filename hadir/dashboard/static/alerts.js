// The alert page's live feed: each alert the dashboard's Kafka consumer sees is added on top.
"use strict";
(function () {
  const table = document.getElementById("peringatan");
  if (!table || !window.EventSource) return;
  const query = new URLSearchParams();
  if (table.dataset.aturan) query.set("aturan", table.dataset.aturan);
  if (table.dataset.kantor) query.set("kantor", table.dataset.kantor);
  const source = new EventSource("/peringatan/stream?" + query.toString());
  const status = document.getElementById("status-siaran");
  source.onopen = function () { status.textContent = "Tersambung: peringatan baru muncul di atas."; status.dataset.tersambung = "1"; };
  source.onmessage = function (event) {
    const a = JSON.parse(event.data);
    const row = table.tBodies[0].insertRow(0);
    row.className = "baru";
    for (const value of [a.detected_at, a.rule, a.severity, a.nip, a.office_id]) {
      row.insertCell().textContent = value;
    }
    const link = document.createElement("a");
    link.href = "/tinjauan/" + encodeURIComponent(a.event_id);
    link.textContent = a.event_id.slice(0, 8);
    row.insertCell().appendChild(link);
  };
})();
