// The live feed page: rows from the usage websocket, newest first. A static file (not inline) so the
// Content-Security-Policy can forbid inline scripts; values are set as text, never as HTML.
(function () {
  "use strict";
  const KEEP = 200;
  const body = document.querySelector("#live-table tbody");
  const status = document.getElementById("live-status");
  const columns = ["occurred_at", "request_id", "device", "model", "status", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost", "latency_ms"];
  function addRow(record) {
    const row = document.createElement("tr");
    for (const name of columns) {
      const cell = document.createElement("td");
      let value = record[name];
      if (name === "occurred_at") value = value.replace("T", " ").slice(0, 19);
      if (name === "cost" && value === null) value = "unknown model";
      if (name === "status" && (record.status >= 400 || record.error_type)) cell.className = "error";
      cell.textContent = value === null || value === undefined ? "" : String(value);
      row.appendChild(cell);
    }
    body.insertBefore(row, body.firstChild);
    while (body.children.length > KEEP) body.removeChild(body.lastChild);
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(scheme + "://" + location.host + "/ws/usage/live/");
    socket.onopen = function () { status.textContent = "live"; };
    socket.onmessage = function (message) { JSON.parse(message.data).records.forEach(addRow); };
    socket.onclose = function () { status.textContent = "disconnected; retrying…"; setTimeout(connect, 3000); };
  }
  connect();
})();
