// deltajobs' dashboard: a little JavaScript for the parts that move (no build step; uPlot vendored).
"use strict";
const deltajobs = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const $ = (sel) => document.querySelector(sel);
  const get = async (url) => {
    const reply = await fetch(url, { credentials: "same-origin" });
    if (!reply.ok) throw new Error(`${url}: ${reply.status}`);
    return reply.json();
  };
  const post = async (url) => {
    const reply = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } });
    const body = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(body.error || `${reply.status}`);
    return body;
  };
  const text = (value) => (value === null || value === undefined ? "" : String(value));
  const duration = (s) => {
    if (s === null || s === undefined) return "";
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}` : `${m}:${String(sec).padStart(2, "0")}`;
  };
  const su = (row) => (row.su === null || row.su === undefined ? "" : (row.su_estimated ? "~" : "") + row.su.toFixed(3));
  const stamp = () => { const u = $("#updated"); if (u) u.textContent = "updated " + new Date().toLocaleTimeString(); };
  const cell = (tr, value, cls) => { const td = tr.insertCell(); td.textContent = text(value); if (cls) td.className = cls; return td; };
  // Every `ms` after the last one ended (never two at once), paused while the tab is hidden.
  const every = (ms, work) => {
    const loop = async () => {
      if (!document.hidden) { try { await work(); } catch (e) { /* said by `work` */ } }
      setTimeout(loop, ms);
    };
    loop();
  };
  // The token opened this page and set its cookie: out of the address bar, so a copied link has none.
  if (new URLSearchParams(location.search).has("token")) {
    const params = new URLSearchParams(location.search);
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  }

  function runsPage() {
    let page = 1, pages = 1;
    const picked = new Set();
    const query = () => {
      const p = new URLSearchParams({ page });
      for (const id of ["state", "account", "days", "q"]) { const v = $("#f-" + id).value; if (v) p.set(id, v); }
      return p.toString();
    };
    const draw = (data) => {
      const body = $("#runs tbody");
      body.textContent = "";
      for (const row of data.rows) {
        const tr = body.insertRow();
        tr.dataset.job = row.job_id;
        const box = document.createElement("input");
        box.type = "checkbox"; box.checked = picked.has(row.job_id);
        box.onchange = () => (box.checked ? picked.add(row.job_id) : picked.delete(row.job_id));
        tr.insertCell().appendChild(box);
        const link = document.createElement("a");
        link.href = "/run/" + encodeURIComponent(row.job_id); link.textContent = row.job_id;
        tr.insertCell().appendChild(link);
        cell(tr, row.name);
        cell(tr, row.payload);
        cell(tr, row.state + (row.reason ? ` (${row.reason})` : ""), "state state-" + row.state);
        cell(tr, row.partition); cell(tr, row.gpus); cell(tr, duration(row.elapsed_s)); cell(tr, su(row));
        cell(tr, row.gpu_util === null ? "" : row.gpu_util.toFixed(0) + "%");
      }
      const select = $("#f-account");
      for (const a of data.accounts) {
        if (![...select.options].some((o) => o.value === a)) select.add(new Option(a, a));
      }
      pages = data.pages;
      $("#pageinfo").textContent = `page ${data.page} of ${data.pages} · ${data.total} runs`;
      const warn = $("#warning"); warn.hidden = !data.warning; warn.textContent = text(data.warning);
      stamp();
    };
    let asked = 0;  // the newest request: an older reply (other filters, another page) is dropped
    const load = async () => {
      const mine = ++asked;
      try {
        const data = await get("/api/runs?" + query());
        if (mine === asked) draw(data);
      } catch (e) { if (mine === asked) { $("#warning").hidden = false; $("#warning").textContent = e.message; } }
    };
    let typing = null;
    for (const id of ["state", "account", "days"]) $("#f-" + id).onchange = () => { page = 1; load(); };
    $("#f-q").oninput = () => { clearTimeout(typing); typing = setTimeout(() => { page = 1; load(); }, 300); };
    $("#prev").onclick = () => { if (page > 1) { page--; load(); } };
    $("#next").onclick = () => { if (page < pages) { page++; load(); } };
    $("#compare").onclick = () => { if (picked.size > 1) location.href = "/compare?ids=" + [...picked].join(","); };
    every(2000, load);
  }

  const charts = new WeakMap();  // target -> its uPlot: destroyed before another is drawn there
  function chart(target, x, series, xLabel) {
    const keys = Object.keys(series);
    if (charts.has(target)) { charts.get(target).destroy(); charts.delete(target); }
    target.textContent = "";
    target.dataset.points = String(keys.length ? x.length : 0);  // what is drawn, for a reader (and the tests)
    if (!x.length || !keys.length) { target.textContent = "no metrics reported yet"; return null; }
    const colors = ["#13294b", "#ff5f05", "#0a7d2c", "#8a2be2", "#b00020", "#008b8b", "#8a6d00"];
    const opts = {
      width: Math.min(900, document.body.clientWidth - 40), height: 280,
      scales: { x: { time: false } }, cursor: { drag: { x: true, y: true } },
      series: [{ label: xLabel }, ...keys.map((k, i) => ({ label: k, stroke: colors[i % colors.length], width: 2, spanGaps: true }))],
      axes: [{ label: xLabel }, {}],
    };
    const plot = new uPlot(opts, [x, ...keys.map((k) => series[k])], target);
    charts.set(target, plot);
    return plot;
  }

  function runPage(jobId, final) {
    let offset = 0, err = false, ended = final, plotted = "", logDone = false, generation = 0;
    const base = "/api/run/" + encodeURIComponent(jobId);
    const log = $("#log");
    const pollLog = async () => {
      if (logDone) return;
      const mine = generation;  // a reply for another rank or stream, or from before a switch, is dropped
      const rank = Number($("#rank").value || 0);
      const data = await get(`${base}/log?offset=${offset}&err=${err ? 1 : 0}&rank=${rank}`);
      if (mine !== generation) return;
      if (data.text) { log.textContent += data.text; log.scrollTop = log.scrollHeight; }
      offset = data.offset;
      if (data.more) return pollLog();  // a long log: the rest at once
      if (data.final) logDone = true;
    };
    const pollCurves = async () => {
      const data = await get(base + "/curves");
      const key = JSON.stringify(data);
      if (key === plotted) return;
      plotted = key;
      $("#keys").textContent = Object.keys(data.series).join(", ");
      chart($("#chart"), data.x, data.series, data.x_label);
    };
    const pollState = async () => {
      const row = await get(base);
      $("#state").textContent = row.state; $("#state").className = "state state-" + row.state;
      $("#reason").textContent = row.reason ? `(${row.reason})` : "";
      $("#elapsed").textContent = duration(row.elapsed_s);
      $("#su").textContent = row.su === null ? "" : su(row) + " SU" + (row.su_estimated ? " so far (estimated)" : "");
      if (!busy) { $("#cancel").disabled = row.final; $("#resume").disabled = !row.final; }
      if (row.final && !ended) { ended = true; setTimeout(() => location.reload(), 1500); }
      stamp();
    };
    let busy = false;  // a cancel or resume on its way: the buttons stay off
    const act = async (what, done) => {
      busy = true; $("#cancel").disabled = true; $("#resume").disabled = true;
      try { done(await post(`${base}/${what}`)); }
      catch (e) { $("#action-result").textContent = `not ${what === "cancel" ? "cancelled" : "resumed"}: ${e.message}`; }
      finally { busy = false; }
    };
    const restart = () => { generation++; offset = 0; logDone = false; log.textContent = ""; };
    $("#stderr").onchange = (e) => { err = e.target.checked; restart(); pollLog(); };
    $("#rank").onchange = () => { restart(); pollLog(); };
    $("#cancel").onclick = async () => {
      if (!confirm(`Cancel job ${jobId}?`)) return;
      await act("cancel", (r) => {
        $("#action-result").textContent = r.cancelled.length ? "cancelled" : Object.values(r.refused).join("; ") || "already ended";
      });
      pollState();
    };
    $("#resume").onclick = async () => {
      if (!confirm(`Resume job ${jobId} as a new job in its run directory?`)) return;
      await act("resume", (r) => { location.href = "/run/" + encodeURIComponent(r.job_id); });
    };
    const tick = async () => {
      try { await Promise.all([pollLog(), pollCurves(), pollState()]); }
      catch (e) { $("#action-result").textContent = e.message; }
    };
    every(1000, async () => { if (!ended || !logDone) await tick(); });
  }

  function sortable(table) {
    const heads = [...table.tHead.rows[0].cells];
    heads.forEach((th, column) => {
      th.onclick = () => {
        const asc = !th.classList.contains("sorted-asc");
        heads.forEach((h) => h.classList.remove("sorted-asc", "sorted-desc"));
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        const rows = [...table.tBodies[0].rows];
        const texts = rows.map((tr) => tr.cells[column].textContent.trim()).filter((t) => t !== "");
        const num = texts.every((t) => !isNaN(Number(t)));  // numbers where every value is one, else text
        const value = (tr) => { const t = tr.cells[column].textContent.trim(); return num ? (t === "" ? NaN : Number(t)) : t; };
        rows.sort((a, b) => {
          const x = value(a), y = value(b);
          if (num) { if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x; }
          return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
        });
        rows.forEach((tr) => table.tBodies[0].appendChild(tr));
      };
    });
  }

  function sweepPage(sweep) {
    sortable($("#points"));
    const longest = Math.max(0, ...sweep.points.map((p) => p.curve.length));
    const x = Array.from({ length: longest }, (_, i) => i + 1);
    const series = {};
    for (const p of sweep.points) {
      const label = `#${p.index}` + (p.index === sweep.best ? " (best)" : "");
      series[label] = x.map((_, i) => (i < p.curve.length ? p.curve[i] : null));
    }
    chart($("#chart"), x, series, "report");
    const h = sweep.history;
    chart($("#history"), h.x, { [sweep.metric || "metric"]: h.value, "best so far": h.best }, "point");
  }

  function comparePage(curves) {
    const ids = Object.keys(curves);
    const longest = Math.max(0, ...ids.map((id) => curves[id].x.length));
    const x = Array.from({ length: longest }, (_, i) => i + 1);
    const series = {};
    for (const id of ids) {
      for (const [key, values] of Object.entries(curves[id].series)) {
        series[`${id} ${key}`] = x.map((_, i) => (i < values.length ? values[i] : null));
      }
    }
    chart($("#chart"), x, series, "report");
  }

  return { runsPage, runPage, sweepPage, comparePage, sortable };
})();
