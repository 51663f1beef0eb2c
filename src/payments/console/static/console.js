// The console's only script: the live ledger feed (server-sent events) and the overview's refresh.
// Everything from the server is set as text, never as HTML.
"use strict";

const FEED_ROWS = 50;
const REMEMBERED = 5000;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function link(td, href, text) {
  const a = document.createElement("a");
  const code = document.createElement("code");
  a.href = href;
  code.textContent = text;
  a.appendChild(code);
  td.textContent = "";
  td.appendChild(a);
}

function startFeed(body) {
  const state = document.getElementById("feed-state");
  const to = (template, id) => template.replace(/ID$/, encodeURIComponent(id));
  const shown = new Set();
  const order = [];
  const source = new EventSource(body.dataset.source);
  source.onopen = () => { state.textContent = "live"; state.className = "pill live"; };
  source.onerror = () => { state.textContent = "reconnecting"; state.className = "pill down"; };
  source.addEventListener("entry", (event) => {
    const entry = JSON.parse(event.data);
    // A reconnection resumes below the oldest entry not yet seen: some may come again.
    if (shown.has(entry.id)) return;
    shown.add(entry.id);
    order.push(entry.id);
    if (order.length > REMEMBERED) shown.delete(order.shift());
    const row = body.insertRow(0);
    row.className = "fresh";
    row.dataset.entry = entry.id;
    cell(row, entry.time);
    const kind = document.createElement("span");
    kind.className = "kind kind-" + entry.kind;
    kind.textContent = entry.kind;
    cell(row, "").appendChild(kind);
    link(cell(row, ""), to(body.dataset.accountUrl, entry.account), entry.account);
    const payment = cell(row, entry.payment ? "" : "—", entry.payment ? "" : "quiet");
    if (entry.payment) link(payment, to(body.dataset.paymentUrl, entry.payment), entry.payment);
    cell(row, entry.amount, "num " + (entry.negative ? "negative" : "positive"));
    cell(row, entry.balance, "num");
    while (body.rows.length > FEED_ROWS) body.deleteRow(-1);
  });
}

async function refresh(part) {
  try {
    const response = await fetch(window.location.href, { headers: { accept: "text/html" } });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById(part.id);
    if (fresh) part.replaceWith(fresh);
  } catch (error) {
    // The next refresh tries again; the feed shows whether the console answers.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  if (feed) startFeed(feed);
  const part = document.getElementById("refreshed");
  if (part) {
    setInterval(() => refresh(document.getElementById("refreshed")), Number(part.dataset.refresh));
  }
});
