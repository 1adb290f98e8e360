// medforensics page: upload one image, show the device verdict and (when a forgery model is
// loaded) the forgery result with its heat map. Plain JS, no libraries, no external requests.
// Every value from the server goes into the page as text (textContent), never as HTML:
// header fields of an image are attacker-controlled.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { health: null, file: null, previewSrc: null, overlaySrc: null };

  const VERDICT_CLASS = {
    "consistent": "ok",
    "MISMATCH": "bad",
    "UNKNOWN": "warn",
    "claim-not-in-model": "info",
    "no-header-claim": "info",
    "insufficient-evidence": "info",
    "unreadable": "bad",
  };

  function fmtP(p) {
    if (p === null || p === undefined) return "–";
    return (100 * p).toFixed(p >= 0.995 || p < 0.005 ? 2 : 1) + " %";
  }

  function fmtNum(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  }

  function show(id, on) { $(id).hidden = !on; }

  function setText(id, text) { $(id).textContent = text === null || text === undefined ? "–" : String(text); }

  function authHeaders() {
    const token = $("token").value.trim();
    return token ? { "Authorization": "Bearer " + token } : {};
  }

  function showError(code, detail) {
    setText("error-code", code);
    setText("error-detail", detail);
    show("error", true);
  }

  async function errorOf(resp) {
    try {
      const body = await resp.json();
      return [body.error || ("HTTP " + resp.status), body.detail || resp.statusText];
    } catch (e) {
      return ["HTTP " + resp.status, resp.statusText || "request failed"];
    }
  }

  async function post(endpoint, file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return fetch(endpoint, { method: "POST", body: form, headers: authHeaders() });
  }

  // ------------------------------------------------------------------ start-up
  async function loadHealth() {
    try {
      const resp = await fetch("/health");
      const h = await resp.json();
      state.health = h;
      setText("version", h.version);
      const mb = (h.max_upload_bytes / 1048576).toFixed(0);
      setText("limits", "Up to " + mb + " MB; analysis time limit " + h.timeout_s + " s.");
      show("auth", h.auth_required);
      if (h.auth_required) {
        $("token").value = sessionStorage.getItem("medforensics-token") || "";
      }
      $("status").textContent = "Source model loaded · forgery model " +
        (h.forgery_model ? "loaded" : "not loaded") + (h.auth_required ? " · token required" : "");
      if (!h.report) {
        $("report-btn").disabled = true;
        setText("report-note", "Case reports are not part of this installation.");
      }
      document.body.dataset.state = "ready";
    } catch (e) {
      $("status").textContent = "The service does not answer (" + e + ").";
      $("status").classList.add("bad");
      document.body.dataset.state = "offline";
    }
  }

  // ------------------------------------------------------------------ rendering
  function renderIdentify(r) {
    const v = $("verdict");
    v.textContent = r.verdict;
    v.dataset.verdict = r.verdict;
    v.className = "verdict " + (VERDICT_CLASS[r.verdict] || "info");
    setText("message", r.message);
    setText("filename", r.path);
    setText("claim", r.header_claim || "no device named in the header");
    setText("predicted", r.named ? r.named + " (" + fmtP(r.probability) + ")" +
      (r.named_by === "unit-pattern" ? ", by an enrolled unit's pattern" : "")
      : (r.predicted ? "no device named (nearest: " + r.predicted + ")" : "–"));
    setText("knowledge", r.model_knowledge ? "this model knows only " + r.model_knowledge
      : "real devices");
    setText("threshold", r.unknown_threshold === null ? "none" : fmtP(r.unknown_threshold));
    const hasUnit = r.unit !== undefined;
    show("unit-label", hasUnit);
    show("unit", hasUnit);
    if (hasUnit) {
      setText("unit", (r.unit || "no enrolled unit matches") +
        (r.unit_score !== undefined && r.unit_score !== null ? " (PCE " + fmtNum(r.unit_score, 0) + ")" : ""));
    }
    const body = $("top").querySelector("tbody");
    body.replaceChildren();
    (r.top || []).forEach((t, i) => {
      const tr = document.createElement("tr");
      const c0 = document.createElement("td");
      c0.textContent = String(i + 1);
      const c1 = document.createElement("td");
      c1.textContent = t.label;
      const c2 = document.createElement("td");
      c2.className = "p";
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = Math.max(2, Math.round(120 * (t.probability || 0))) + "px";
      const num = document.createElement("span");
      num.textContent = fmtP(t.probability);
      bar.append(fill, num);
      c2.append(bar);
      tr.append(c0, c1, c2);
      body.append(tr);
    });
    if (r.preview_png_b64) {
      state.previewSrc = "data:image/png;base64," + r.preview_png_b64;
      $("image").src = state.previewSrc;
      setText("image-caption", "Display copy (windowed to 8 bits); the analysis uses the stored values.");
    }
  }

  function forgeryClass(verdict, score) {
    const v = String(verdict || "").toLowerCase();
    if (/(inconclusive|uncertain|unknown)/.test(v)) return "warn";
    if (/(authentic|original|clean|pristine|genuine)/.test(v)) return "ok";
    if (/(forg|tamper|manipul|alter|suspic|splic|copy)/.test(v)) return "bad";
    if (score === null || score === undefined) return "info";
    return score >= 0.5 ? "bad" : "ok";
  }

  function fmtBox(b) {
    return b ? "(" + b[0] + ", " + b[1] + ")–(" + b[2] + ", " + b[3] + ")" : "–";
  }

  // One line per copy-move pair: the pasted area is named only when the detector gives
  // evidence for it; otherwise the direction is shown as undetermined.
  function renderCopyMoves(pairs) {
    const list = $("forgery-copies-list");
    list.replaceChildren();
    pairs.forEach((c) => {
      const li = document.createElement("li");
      const dir = document.createElement("span");
      const text = document.createElement("span");
      if (c.direction === "undetermined" || !c.pasted_bbox) {
        li.dataset.direction = "undetermined";
        dir.className = "direction warn";
        dir.textContent = "direction undetermined";
        text.textContent = ": the same content at " + fmtBox(c.bbox_a) + " and " +
          fmtBox(c.bbox_b) + "; which one was pasted is not known.";
      } else {
        li.dataset.direction = c.direction;
        dir.className = "direction bad";
        dir.textContent = "pasted at " + fmtBox(c.pasted_bbox);
        text.textContent = ", copied from " + fmtBox(c.source_bbox) +
          (c.evidence ? " (evidence: " + c.evidence + ")" : "");
      }
      li.append(dir, text);
      list.append(li);
    });
    show("forgery-copies", pairs.length > 0);
  }

  // One line per flagged area, numbered like the boxes drawn on the heat map: where, how
  // large, which cue, and for a copy-move its partner and which side was pasted (if known).
  function renderRegions(regions) {
    const list = $("forgery-regions-list");
    list.replaceChildren();
    regions.forEach((r) => {
      const li = document.createElement("li");
      const b = r.bbox || [0, 0, 0, 0];
      let text = fmtBox(r.bbox) + ", " + (b[2] - b[0]) + " x " + (b[3] - b[1]) + " px, " +
        fmtNum(r.area_percent, 2) + " % of the image, mean probability " +
        fmtNum(r.mean_prob, 2) + ", cue " + (r.cue || "–");
      const cp = r.copy_of;
      if (cp) {
        text += "; copy-move partner " + fmtBox(cp.partner_bbox) + ", " +
          (cp.role && cp.role !== "undetermined" ? "this area: " + cp.role
            : "direction undetermined (either area could be the paste)");
      }
      li.textContent = text;
      list.append(li);
    });
    show("forgery-regions", regions.length > 0);
  }

  function renderForgery(f) {
    const v = $("forgery-verdict");
    v.textContent = f.verdict || (f.score >= 0.5 ? "suspected alteration" : "no alteration found");
    v.dataset.verdict = f.verdict || "";
    v.className = "verdict " + forgeryClass(f.verdict, f.score);
    show("forgery-values", true);
    setText("forgery-score", fmtNum(f.score, 3));
    setText("forgery-area", f.forged_area_percent === null ? "–" : fmtNum(f.forged_area_percent, 2) + " %");
    setText("forgery-ela", f.ela_score === null || f.ela_score === undefined ? "not run" : fmtNum(f.ela_score, 3));
    show("forgery-reason", Boolean(f.inconclusive_reason));
    setText("forgery-reason", f.inconclusive_reason || "");
    renderRegions(f.regions || []);
    renderCopyMoves(f.copy_moves || []);
    setText("forgery-note", "The heat map shows where the detector suspects alteration (red to yellow = more likely); boxes mark the flagged areas, numbered as listed.");
    if (f.overlay_png_b64) {
      state.overlaySrc = "data:image/png;base64," + f.overlay_png_b64;
      show("overlay-toggle", true);
      $("show-overlay").checked = true;
      $("image").src = state.overlaySrc;
      setText("image-caption", "Forgery heat map over the display copy.");
    }
  }

  function resetResult() {
    show("error", false);
    show("result", false);
    show("overlay-toggle", false);
    show("forgery-values", false);
    show("forgery-regions", false);
    show("forgery-copies", false);
    show("forgery-reason", false);
    state.previewSrc = null;
    state.overlaySrc = null;
    $("image").removeAttribute("src");
    $("forgery-verdict").textContent = "";
    $("verdict").textContent = "";
    $("verdict").dataset.verdict = "";
    setText("image-caption", "");
    $("report-link").hidden = true;
    if (state.health && state.health.report) setText("report-note", "");
    $("dicom-link").hidden = true;
    setText("dicom-note", "");
  }

  // ------------------------------------------------------------------ the analysis
  async function analyse(file) {
    if (!file) return;
    state.file = file;
    resetResult();
    if (state.health && file.size > state.health.max_upload_bytes) {
      showError("too-large-upload", "The file is " + (file.size / 1048576).toFixed(1) +
        " MB; this service accepts up to " + (state.health.max_upload_bytes / 1048576).toFixed(0) + " MB.");
      document.body.dataset.state = "error";
      return;
    }
    if ($("token").value.trim()) sessionStorage.setItem("medforensics-token", $("token").value.trim());
    document.body.dataset.state = "busy";
    setText("busy-text", "Analysing " + file.name + "…");
    show("busy", true);
    try {
      const resp = await post("/v1/identify?preview=true", file);
      if (!resp.ok) {
        const [code, detail] = await errorOf(resp);
        show("busy", false);
        showError(code, detail);
        document.body.dataset.state = "error";
        return;
      }
      renderIdentify(await resp.json());
      show("result", true);
      if (state.health && state.health.forgery_model) {
        setText("busy-text", "Looking for alterations…");
        const fr = await post("/v1/forgery", file);
        if (fr.ok) {
          renderForgery(await fr.json());
        } else {
          const [code, detail] = await errorOf(fr);
          $("forgery-verdict").textContent = code;
          $("forgery-verdict").className = "verdict warn";
          setText("forgery-note", detail);
        }
      } else {
        setText("forgery-note", "No forgery model is loaded on this server " +
          "(start it with --forgery-model to check for alterations).");
      }
      show("busy", false);
      document.body.dataset.state = "done";
    } catch (e) {
      show("busy", false);
      showError("network-error", String(e));
      document.body.dataset.state = "error";
    } finally {
      show("busy", false);
    }
  }

  // One upload, one file back (the HTML case report or the DICOM results), saved through a
  // link the user can click again.
  async function download(what) {
    if (!state.file) return;
    const btn = $(what.id + "-btn"), note = what.id + "-note";
    btn.disabled = true;
    setText(note, what.busy);
    try {
      const resp = await post(what.endpoint, state.file);
      if (!resp.ok) {
        const [code, detail] = await errorOf(resp);
        setText(note, code + ": " + detail);
        return;
      }
      const blob = await resp.blob();
      const link = $(what.id + "-link");
      if (link.href) URL.revokeObjectURL(link.href);
      link.href = URL.createObjectURL(blob);
      link.download = what.prefix + state.file.name.replace(/[^A-Za-z0-9._-]+/g, "_") + what.ext;
      link.textContent = what.again;
      link.hidden = false;
      link.click();
      setText(note, what.done);
    } catch (e) {
      setText(note, "network error: " + e);
    } finally {
      btn.disabled = !what.available();
    }
  }

  const REPORT = {
    id: "report", endpoint: "/v1/report", busy: "Writing the report…",
    prefix: "case-report-", ext: ".html", again: "save the report again",
    done: "Report downloaded.", available: () => !!(state.health && state.health.report),
  };
  const DICOM = {
    id: "dicom", endpoint: "/v1/dicom", busy: "Writing the DICOM results…",
    prefix: "dicom-results-", ext: ".zip", again: "save the DICOM results again",
    done: "DICOM results downloaded (a ZIP of sr.dcm and seg.dcm).", available: () => true,
  };

  // ------------------------------------------------------------------ wiring
  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files && ev.target.files[0];
    ev.target.value = "";  // choosing the same file again (e.g. after entering the token) re-runs
    analyse(f);
  });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (ev) => {
    const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    analyse(f);
  });
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); }
  });
  $("show-overlay").addEventListener("change", (ev) => {
    const src = ev.target.checked ? state.overlaySrc : state.previewSrc;
    if (src) $("image").src = src;
  });
  $("report-btn").addEventListener("click", () => download(REPORT));
  $("dicom-btn").addEventListener("click", () => download(DICOM));
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("medforensics-token", $("token").value.trim());
  });
  loadHealth();
})();
