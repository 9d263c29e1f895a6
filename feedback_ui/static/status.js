// The status page: polls /api/status every 5 seconds.
"use strict";

const pct = (rate, n) => (rate === null ? "-" : `${(100 * rate).toFixed(0)}% of ${n}`);

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

async function refresh() {
  const res = await fetch("/api/status");
  if (res.status === 401) {
    document.getElementById("error").textContent = "Open the labeling page with the token first.";
    return;
  }
  const s = await res.json();
  document.getElementById("error").textContent = "";
  document.getElementById("per-hour").textContent = s.labels_per_hour;
  document.getElementById("queue").textContent = s.queue_depth;
  document.getElementById("human").textContent = s.human_labels;
  document.getElementById("total").textContent = s.labels_total;
  document.getElementById("clips").textContent = s.clips_rendered;
  document.getElementById("gold-every").textContent = s.gold_every || "(off)";
  document.getElementById("model").textContent = s.model_checkpoint
    ? `Reward model: ${s.model_checkpoint}` + (s.model_error ? ` (${s.model_error})` : "")
    : "No reward-model checkpoint yet: agreement with the model appears after the trainer's first checkpoint.";
  const body = document.getElementById("labelers");
  body.replaceChildren();
  for (const l of s.labelers) {
    const row = document.createElement("tr");
    cell(row, l.name);
    cell(row, l.labels);
    cell(row, l.last_hour);
    cell(row, l.skips);
    cell(row, l.mean_watch_seconds === null ? "-" : l.mean_watch_seconds.toFixed(1));
    cell(row, pct(l.model_agreement, l.model_compared));
    cell(row, pct(l.gold_agreement, l.gold_answered));
    body.appendChild(row);
  }
}

refresh();
setInterval(refresh, 5000);
