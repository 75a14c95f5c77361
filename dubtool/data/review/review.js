/* dubtool review page: the line list (sort, filter), one line's media in sync, marks in localStorage,
   the marks CSV export. Everything it needs is in #review-data; nothing is fetched. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("review-data").textContent);
  var L = D.lines;
  var STORE = "dubtool-review:" + D.key;
  var COLOURS = ["#e8744f", "#5fb0e8", "#9be36a"];
  var ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  var MARK_COLUMNS = ["source", "dub", "lang", "output", "dub_text", "source_text", "keyframes", "review", "comment"];

  // ---- marks: {line id: {mark: "approve"|"flag"|"", comment, t (s since epoch)}} -------------------
  var marks = {}, storageOk = true;
  try { marks = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { storageOk = false; }
  function saveMarks() {
    try { localStorage.setItem(STORE, JSON.stringify(marks)); } catch (e) { storageOk = false; banner(); }
  }
  function markOf(r) { return (marks[r.id] && marks[r.id].mark) || ""; }
  function stale(r) { var m = marks[r.id]; return !!(m && m.mark && r.updated && m.t < r.updated); }

  // ---- formatting ---------------------------------------------------------------------------------
  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c];
    });
  }
  function f(v, n) { return v == null ? "—" : v.toFixed(n); }
  function pct(v) { return v == null ? "—" : Math.round(v * 100) + "%"; }
  function has(r, flag) { return r.flags.indexOf(flag) >= 0; }

  // Columns: key, header, sort value, cell text, the flag that colours the cell.
  var COLS = [
    ["line", "#", function (r) { return r.line; }, function (r) { return r.line; }],
    ["name", "line", function (r) { return r.name; }, function (r) { return "<span title=\"" + esc(r.id) + "\">" + esc(r.name) + "</span>"; }],
    ["status", "status", function (r) { return r.status; }, function (r) {
      return "<span class=\"st " + r.status + "\">" + r.status + "</span>"; }],
    ["lang", "lang", function (r) { return r.lang; }, function (r) { return esc(r.lang); }],
    ["dur", "dur s", function (r) { return r.dur; }, function (r) { return f(r.dur, 1); }],
    ["stretch", "dub / src", function (r) { return r.stretch; }, function (r) { return f(r.stretch, 2); }],
    ["pstretch", "phrase ×", function (r) { return r.pstretch; }, function (r) { return f(r.pstretch, 2); }, "stretch"],
    ["cost", "align cost", function (r) { return r.cost; }, function (r) { return f(r.cost, 2); }, "alignment"],
    ["closure", "/p b m/", function (r) { return r.closure; }, function (r) {
      return r.closure == null ? "—" : "<span title=\"lips closed on " + pct(r.closure) + " of " + r.bilabials + " /p b m/\">" +
        pct(r.closure) + " <small>/" + r.bilabials + "</small></span>"; }, "bilabials"],
    ["lag", "lag fr", function (r) { return r.lag == null ? null : Math.abs(r.lag); }, function (r) {
      return r.lag == null ? "—" : r.lag; }, "lag"],
    ["jitter", "jitter", function (r) { return r.jitter; }, function (r) { return f(r.jitter, 4); }],
    ["tracked", "tracked", function (r) { return r.tracked; }, function (r) {
      return r.tracked == null ? "—" : pct(r.tracked) + (r.gaps ? " <small>" + r.gaps + " gap" + (r.gaps > 1 ? "s" : "") +
        (r.long_gaps ? ", " + r.long_gaps + " held" : "") + "</small>" : ""); }, "tracking"],
    ["warnings", "warn", function (r) { return r.warnings.length; }, function (r) {
      return r.warnings.length ? "<span title=\"" + esc(r.warnings.join("\n")) + "\">" + r.warnings.length + "</span>" : ""; }, "warning"],
    ["flags", "flags", function (r) { return r.flags.length; }, function (r) {
      return r.flags.map(function (x) { return "<span class=\"flag " + x + "\">" + x + "</span>"; }).join(""); }],
    ["mark", "mark", function (r) { return markOf(r); }, function (r) {
      var m = marks[r.id] || {}, t = m.comment ? " title=\"" + esc(m.comment) + "\"" : "";
      if (!m.mark) return m.comment ? "<span" + t + ">✎</span>" : "";
      return "<span class=\"mk mk-" + m.mark + (stale(r) ? " stale" : "") + "\"" + t + ">" +
        (m.mark === "approve" ? "✓" : "⚑") + (m.comment ? " ✎" : "") + "</span>"; }]
  ];
  var FIGURES = [["dur", "duration s"], ["stretch", "dub/src"], ["pstretch", "phrase ×"], ["cost", "align cost"],
    ["closure", "/p b m/ closure (0..1)"], ["lag", "|lag| frames"], ["jitter", "jitter"], ["tracked", "tracked (0..1)"],
    ["warnings", "warnings"], ["flags", "flags"]];
  var HEAD_TITLES = {line: "line number in the manifest", name: "output CSV", dur: "dub duration (s)",
    stretch: "dub duration / source duration", pstretch: "worst matched phrase: dub span / source span, as a factor >= 1",
    cost: "cost of the worst matched phrase group", closure: "lips closed on the dub's /p b m/ (with a dub_text)",
    lag: "lip-audio lag (frames)", jitter: "mean |second difference| of the blendshape curves",
    tracked: "source frames with a tracked face; gaps (held: too long to interpolate)", warnings: "warnings",
    flags: "what to check first (thresholds above)", mark: "your mark (✓ approved, ⚑ flagged, ✎ comment)"};
  function colByKey(k) { for (var i = 0; i < COLS.length; i++) if (COLS[i][0] === k) return COLS[i]; }

  // ---- page skeleton ------------------------------------------------------------------------------
  var counts = {done: 0, failed: 0, pending: 0}, flagged = 0, langs = {};
  L.forEach(function (r) { counts[r.status]++; if (r.flags.length) flagged++; langs[r.lang] = 1; });
  var flagNames = Object.keys(D.thresholds);
  document.getElementById("app").innerHTML =
    "<header class=\"top\"><h1>" + esc(D.title) + " <small>review</small></h1>" +
    "<div class=\"summary\"><b>" + L.length + "</b> lines · <span class=\"st done\">" + counts.done + " done</span> · " +
    "<span class=\"st failed\">" + counts.failed + " failed</span>" + (counts.pending ? " · " + counts.pending + " not run" : "") +
    " · <b>" + flagged + "</b> flagged by the figures · <span id=\"markcount\"></span></div>" +
    "<div class=\"actions\"><button id=\"export\" title=\"marks CSV: dubtool localize --manifest it to redo the flagged lines\">" +
    "Export marks CSV <kbd>e</kbd></button><button id=\"helpbtn\">Keys <kbd>?</kbd></button></div></header>" +
    "<div id=\"banner\" hidden></div>" +
    "<section class=\"filters\"><input id=\"q\" type=\"search\" placeholder=\"search line / file  (/)\">" +
    "<label>lang <select id=\"flang\"><option value=\"\">all</option>" + Object.keys(langs).sort().map(function (x) {
      return "<option>" + esc(x) + "</option>"; }).join("") + "</select></label>" +
    "<label>flag <select id=\"fflag\"><option value=\"\">all</option><option value=\"*\">any flag</option>" +
    "<option value=\"-\">no flag</option>" + flagNames.map(function (x) { return "<option>" + x + "</option>"; }).join("") +
    "</select></label><label>mark <select id=\"fmark\"><option value=\"\">all</option><option value=\"none\">unmarked</option>" +
    "<option value=\"approve\">approved</option><option value=\"flag\">flagged</option><option value=\"stale\">re-run since marked</option>" +
    "</select></label><label>figure <select id=\"ffig\"><option value=\"\">—</option>" + FIGURES.map(function (x) {
      return "<option value=\"" + x[0] + "\">" + x[1] + "</option>"; }).join("") + "</select></label>" +
    "<select id=\"fop\"><option value=\"ge\">≥</option><option value=\"le\">≤</option></select>" +
    "<input id=\"fval\" type=\"number\" step=\"any\" placeholder=\"value\"><span id=\"shown\"></span></section>" +
    "<section class=\"legend\"><b>Flags</b> " + flagNames.map(function (x) {
      return "<span class=\"flag " + x + "\">" + x + "</span> " + esc(D.thresholds[x]); }).join(" · ") + "</section>" +
    "<main><div class=\"listpane\"><table id=\"list\"><colgroup>" + COLS.map(function (c) {
      return "<col class=\"w-" + c[0] + "\">"; }).join("") + "</colgroup><thead><tr>" + COLS.map(function (c) {
      return "<th data-k=\"" + c[0] + "\" title=\"" + (HEAD_TITLES[c[0]] || "") + " (click to sort)\">" + c[1] + "</th>"; })
      .join("") + "</tr></thead><tbody></tbody></table></div>" +
    "<div id=\"detail\" class=\"detail\"><p class=\"hint\">Select a line (click, or <kbd>j</kbd>/<kbd>k</kbd>).</p></div></main>" +
    "<div id=\"help\" hidden><div><h2>Keys</h2><table>" +
    [["j / ↓", "next line"], ["k / ↑", "previous line"], ["a", "approve, then next line"],
     ["f", "flag, then write a comment (Enter saves and goes on)"], ["u", "clear the mark"], ["c", "comment"],
     ["space", "play / pause (dub audio; the source follows through the time map)"], ["← / →", "back / forward 1 s"],
     ["e", "export the marks CSV"], ["/", "search"], ["Esc", "leave a field, close this"], ["?", "this help"]]
      .map(function (k) { return "<tr><td><kbd>" + k[0] + "</kbd></td><td>" + k[1] + "</td></tr>"; }).join("") +
    "</table><p>Marks are kept in this browser (localStorage, per batch) until you export them: " +
    "<code>dubtool localize --manifest marks.csv</code> redoes the flagged lines and skips the approved ones.</p>" +
    "<p class=\"dim\">Generated " + esc(D.generated) + " by dubtool review.</p></div></div>";
  var $ = function (id) { return document.getElementById(id); };
  var tbody = document.querySelector("#list tbody");
  function banner() {
    if (storageOk) return;
    $("banner").hidden = false;
    $("banner").textContent = "This browser does not keep local storage for file:// pages: marks last until the page " +
      "is closed. Export them before you leave.";
  }
  banner();

  // ---- list: filter, sort, render -----------------------------------------------------------------
  var sortKey = "line", sortDir = 1, view = [], cur = -1;
  function passes(r) {
    var q = $("q").value.trim().toLowerCase(), lang = $("flang").value, fl = $("fflag").value, mk = $("fmark").value;
    if (q && (r.name + " " + r.id + " " + r.line + " " + r.msg).toLowerCase().indexOf(q) < 0) return false;
    if (lang && r.lang !== lang) return false;
    if (fl === "*" && !r.flags.length) return false;
    if (fl === "-" && r.flags.length) return false;
    if (fl && fl !== "*" && fl !== "-" && !has(r, fl)) return false;
    if (mk === "none" && markOf(r)) return false;
    if ((mk === "approve" || mk === "flag") && markOf(r) !== mk) return false;
    if (mk === "stale" && !stale(r)) return false;
    var fig = $("ffig").value, val = parseFloat($("fval").value);
    if (fig && !isNaN(val)) {
      var v = colByKey(fig)[2](r);
      if (v == null) return false;
      if ($("fop").value === "ge" ? v < val : v > val) return false;
    }
    return true;
  }
  function compare(a, b) {
    var get = colByKey(sortKey)[2], x = get(a), y = get(b);
    if (x == null || x === "") return (y == null || y === "") ? a.line - b.line : 1;  // unknown last, either way
    if (y == null || y === "") return -1;
    if (x < y) return -sortDir;
    if (x > y) return sortDir;
    return a.line - b.line;
  }
  function rowHtml(r, i) {
    var cls = "s-" + r.status + (r.flags.length ? " flagged" : "") + (markOf(r) ? " m-" + markOf(r) : "");
    var h = "<tr data-v=\"" + i + "\" class=\"" + cls + "\" title=\"" + (r.flags.length ? "flags: " + r.flags.join(", ") : "") + "\">";
    for (var c = 0; c < COLS.length; c++) {
      var col = COLS[c];
      h += "<td class=\"c-" + col[0] + (col[4] && has(r, col[4]) ? " bad" : "") + "\">" + col[3](r) + "</td>";
    }
    return h + "</tr>";
  }
  // Only the rows in sight (plus a margin) are in the DOM: a 1,000-line batch lays out in a few ms.
  var ROW_H = 22, MARGIN = 30, pane = document.querySelector(".listpane"), drawn = [0, 0], pending = 0;
  function refresh(keepId) {
    var id = keepId !== undefined ? keepId : (view[cur] && view[cur].id);
    view = L.filter(passes).sort(compare);
    cur = -1;
    for (var i = 0; i < view.length; i++) if (view[i].id === id) cur = i;
    draw();
    $("shown").textContent = "showing " + view.length + " of " + L.length;
    document.querySelectorAll("#list th").forEach(function (th) {
      th.className = th.dataset.k === sortKey ? (sortDir > 0 ? "asc" : "desc") : "";
    });
    markCount();
  }
  function draw() {
    var first = Math.max(0, Math.floor(pane.scrollTop / ROW_H) - MARGIN);
    var last = Math.min(view.length, Math.ceil((pane.scrollTop + pane.clientHeight) / ROW_H) + MARGIN);
    var html = ["<tr class=\"pad\" style=\"height:" + first * ROW_H + "px\"></tr>"];
    for (var i = first; i < last; i++) html.push(rowHtml(view[i], i));
    html.push("<tr class=\"pad\" style=\"height:" + (view.length - last) * ROW_H + "px\"></tr>");
    tbody.innerHTML = html.join("");
    drawn = [first, last];
  }
  pane.addEventListener("scroll", function () {
    if (pending) return;
    pending = requestAnimationFrame(function () { pending = 0; draw(); });
  });
  function rowEl(i) { return i >= drawn[0] && i < drawn[1] ? tbody.children[i - drawn[0] + 1] : null; }
  function markCount() {
    var a = 0, fl = 0;
    L.forEach(function (r) { var m = markOf(r); if (m === "approve") a++; else if (m === "flag") fl++; });
    $("markcount").innerHTML = "your marks: <span class=\"mk mk-approve\">✓ " + a + "</span> <span class=\"mk mk-flag\">⚑ " + fl +
      "</span> · " + (L.length - a - fl) + " to review";
  }
  function highlight() {
    if (cur >= 0) {  // scroll the selected row into sight (below the sticky header)
      var head = document.querySelector("#list thead").offsetHeight, top = head + cur * ROW_H;
      if (top - head < pane.scrollTop) pane.scrollTop = top - head;
      else if (top + ROW_H > pane.scrollTop + pane.clientHeight) pane.scrollTop = top + ROW_H - pane.clientHeight;
      if (!rowEl(cur)) draw();
    }
    var old = tbody.querySelector("tr.sel");
    if (old) old.classList.remove("sel");
    var tr = cur >= 0 && rowEl(cur);
    if (tr) tr.classList.add("sel");
  }
  function updateRow(i) {
    var tr = rowEl(i);
    if (tr) {
      var tmp = document.createElement("tbody");
      tmp.innerHTML = rowHtml(view[i], i);
      tbody.replaceChild(tmp.firstChild, tr);
    }
    highlight();
    markCount();
  }

  // ---- one line: media in sync, plots, figures, mark ----------------------------------------------
  var master = null, srcv = null, line = null, raf = 0;
  function srcTime(t) {  // dub time -> source time through the knots [[source_s, dub_s], ...], clamped
    var k = line.knots, n = k.length;
    if (!n) return line.src_dur && line.dur ? t * line.src_dur / line.dur : t;
    if (t <= k[0][1]) return k[0][0];
    if (t >= k[n - 1][1]) return k[n - 1][0];
    var lo = 0, hi = n - 1;
    while (hi - lo > 1) { var mid = (lo + hi) >> 1; if (k[mid][1] <= t) lo = mid; else hi = mid; }
    var a = k[lo], b = k[hi];
    return a[0] + (b[0] - a[0]) * (t - a[1]) / Math.max(b[1] - a[1], 1e-9);
  }
  function slopeAt(t) { var e = 0.02; return Math.max((srcTime(t + e) - srcTime(t - e)) / (2 * e), 0.05); }
  function decode(s) {
    var out = new Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = ALPHABET.indexOf(s.charAt(i)) / 63;
    return out;
  }
  function curvesSvg(r) {
    var W = 640, H = 150, dur = r.dur || 1, fps = r.fps || 30, parts = [];
    r.phrases.forEach(function (p) {
      parts.push("<rect x=\"" + (p[2] / dur * W).toFixed(1) + "\" y=\"0\" width=\"" + ((p[3] - p[2]) / dur * W).toFixed(1) +
        "\" height=\"" + H + "\" class=\"phrase\"/>");
    });
    D.channels.forEach(function (ch, c) {
      var s = r.curves[ch];
      if (!s) return;
      var v = decode(s), pts = [];
      for (var i = 0; i < v.length; i++) pts.push((i / fps / dur * W).toFixed(1) + "," + (H - 4 - v[i] * (H - 8)).toFixed(1));
      parts.push("<polyline fill=\"none\" stroke=\"" + COLOURS[c % COLOURS.length] + "\" stroke-width=\"1.4\" points=\"" +
        pts.join(" ") + "\"/>");
    });
    var legend = D.channels.map(function (ch, c) {
      return "<span style=\"color:" + COLOURS[c % COLOURS.length] + "\">━ " + ch + "</span>"; }).join(" ");
    return "<figure class=\"plot\"><figcaption>Curves on the dub timeline (0..1; shaded: matched phrases) " + legend +
      "</figcaption><svg id=\"curves\" viewBox=\"0 0 " + W + " " + H + "\" preserveAspectRatio=\"none\">" + parts.join("") +
      "<line id=\"ph1\" x1=\"0\" x2=\"0\" y1=\"0\" y2=\"" + H + "\"/></svg></figure>";
  }
  function timemapSvg(r) {
    var W = 300, H = 150, dd = r.dur || 1, sd = r.src_dur || 1, parts = [];
    function X(d) { return (d / dd * W).toFixed(1); }
    function Y(s) { return (H - s / sd * H).toFixed(1); }
    r.phrases.forEach(function (p) {
      parts.push("<rect class=\"phrase\" x=\"" + X(p[2]) + "\" y=\"" + Y(p[1]) + "\" width=\"" + ((p[3] - p[2]) / dd * W).toFixed(1) +
        "\" height=\"" + ((p[1] - p[0]) / sd * H).toFixed(1) + "\"/>");
    });
    parts.push("<line class=\"diag\" x1=\"0\" y1=\"" + H + "\" x2=\"" + W + "\" y2=\"0\"/>");
    if (r.knots.length) parts.push("<polyline class=\"map\" points=\"" + r.knots.map(function (k) { return X(k[1]) + "," + Y(k[0]); }).join(" ") + "\"/>");
    return "<figure class=\"plot\"><figcaption>Time map: dub s → source s (" + esc(r.method || "none") +
      "; dashed: uniform stretch)</figcaption><svg id=\"tmap\" viewBox=\"0 0 " + W + " " + H + "\" preserveAspectRatio=\"none\">" +
      parts.join("") + "<circle id=\"ph2\" r=\"3.5\" cx=\"0\" cy=\"" + H + "\"/></svg></figure>";
  }
  function figuresHtml(r) {
    var rows = [
      ["duration", f(r.dur, 2) + " s (source " + f(r.src_dur, 2) + " s, dub/src " + f(r.stretch, 2) + ")", ""],
      ["worst phrase stretch", f(r.pstretch, 2) + "×", "stretch"],
      ["worst alignment cost", f(r.cost, 2) + " <small>" + r.phrases.length + " matched group(s), " + esc(r.method || "—") + "</small>", "alignment"],
      ["/p b m/ closure", r.closure == null ? "— <small>(no dub_text)</small>" : pct(r.closure) + " of " + r.bilabials, "bilabials"],
      ["lip–audio lag", r.lag == null ? "—" : r.lag + " frame(s)", "lag"],
      ["jitter", f(r.jitter, 4), ""],
      ["source tracking", r.tracked == null ? "—" : pct(r.tracked) + " of frames, " + (r.gaps || 0) + " gap(s), " + (r.long_gaps || 0) + " held", "tracking"]
    ];
    return "<table class=\"figs\">" + rows.map(function (x) {
      return "<tr class=\"" + (x[2] && has(r, x[2]) ? "bad" : "") + "\"><th>" + x[0] + "</th><td>" + x[1] + "</td></tr>"; }).join("") +
      "</table>" + (r.warnings.length ? "<ul class=\"warn\">" + r.warnings.map(function (w) { return "<li>" + esc(w) + "</li>"; }).join("") + "</ul>" : "") +
      (r.dub_text ? "<p class=\"text\"><b>dub_text</b> " + esc(r.dub_text) + "</p>" : "");
  }
  function show(i) {
    if (i < 0 || i >= view.length) return;
    stop();
    cur = i;
    highlight();
    var r = line = view[i], m = marks[r.id] || {};
    var dubMedia = r.preview
      ? "<video id=\"dubv\" controls preload=\"auto\" playsinline src=\"" + esc(r.preview) + "\"></video>"
      : (r.audio ? "<div class=\"noprev\">no preview rendered<br><code>dubtool review … --previews</code></div>"
        : "<div class=\"noprev\">dub file not found</div>");
    var srcMedia = r.video ? "<video id=\"srcv\" muted preload=\"auto\" playsinline src=\"" + esc(r.video) + "\"></video>"
      : "<div class=\"noprev\">no source video</div>";
    $("detail").innerHTML =
      "<div class=\"dhead\"><b>#" + r.line + " " + esc(r.name) + "</b> <span class=\"st " + r.status + "\">" + r.status + "</span> " +
      esc(r.lang) + " " + r.flags.map(function (x) { return "<span class=\"flag " + x + "\">" + x + "</span>"; }).join("") +
      "<div class=\"path\">" + esc(r.id) + "</div></div>" +
      (r.msg ? "<div class=\"err\">" + esc(r.msg) + "</div>" : "") +
      "<div class=\"media\"><figure><figcaption>Dub preview</figcaption>" + dubMedia + "</figure>" +
      "<figure><figcaption>Source, time-mapped onto the dub</figcaption>" + srcMedia + "</figure></div>" +
      "<div class=\"transport\"" + (r.preview || r.audio ? "" : " hidden") + "><button id=\"play\">▶ play <kbd>space</kbd></button>" +
      (!r.preview && r.audio ? "<audio id=\"duba\" controls preload=\"auto\" src=\"" + esc(r.audio) + "\"></audio>" : "") +
      "<span id=\"clock\"></span></div>" +
      "<div class=\"markbar\"><button id=\"bappr\" class=\"approve\">✓ approve <kbd>a</kbd></button>" +
      "<button id=\"bflag\" class=\"flagbtn\">⚑ flag <kbd>f</kbd></button><button id=\"bclear\">clear <kbd>u</kbd></button>" +
      "<input id=\"comment\" placeholder=\"comment (c)\" value=\"" + esc(m.comment || "") + "\"><span id=\"mstate\"></span></div>" +
      (r.status === "done" ? "<div class=\"plots\">" + curvesSvg(r) + timemapSvg(r) + "</div>" + figuresHtml(r) : "");
    master = $("dubv") || $("duba");
    srcv = $("srcv");
    if (master) {
      master.addEventListener("play", function () { $("play").textContent = "❚❚ pause"; loop(); });
      master.addEventListener("pause", function () { $("play").textContent = "▶ play"; });
      master.addEventListener("seeked", follow);
      master.addEventListener("timeupdate", drawHeads);
    }
    $("play").onclick = toggle;
    $("bappr").onclick = function () { setMark("approve"); };
    $("bflag").onclick = function () { setMark("flag"); };
    $("bclear").onclick = function () { setMark(""); };
    $("comment").addEventListener("input", function () { setComment(this.value); });
    $("comment").addEventListener("keydown", function (e) {
      if (e.key === "Enter") { this.blur(); move(1); }
      if (e.key === "Escape") this.blur();
      e.stopPropagation();
    });
    var cv = $("curves");
    if (cv) cv.addEventListener("click", function (e) {
      var b = cv.getBoundingClientRect();
      if (master && r.dur) master.currentTime = (e.clientX - b.left) / b.width * r.dur;
    });
    markState();
    drawHeads();
  }
  function drawHeads() {
    if (!line) return;
    var t = master ? master.currentTime : 0, dur = line.dur || 1;
    var x = (t / dur * 640).toFixed(1), p1 = $("ph1"), p2 = $("ph2");
    if (p1) { p1.setAttribute("x1", x); p1.setAttribute("x2", x); }
    if (p2) { p2.setAttribute("cx", (t / dur * 300).toFixed(1)); p2.setAttribute("cy", (150 - srcTime(t) / (line.src_dur || 1) * 150).toFixed(1)); }
    $("clock").textContent = t.toFixed(2) + " / " + f(line.dur, 2) + " s (source " + srcTime(t).toFixed(2) + " s)";
  }
  function follow() {  // the source video to the time-mapped position of the dub
    if (!srcv || !master) return;
    var target = srcTime(master.currentTime), drift = srcv.currentTime - target;
    if (master.paused || master.ended) {
      if (!srcv.paused) srcv.pause();
      if (Math.abs(drift) > 0.03) srcv.currentTime = target;
      return;
    }
    if (Math.abs(drift) > 0.25) srcv.currentTime = target;
    else srcv.playbackRate = Math.min(4, Math.max(0.25, slopeAt(master.currentTime) * (1 - 2 * drift)));
    if (srcv.paused) srcv.play().catch(function () {});
  }
  function loop() {
    cancelAnimationFrame(raf);
    (function tick() {
      follow();
      drawHeads();
      if (master && !master.paused && !master.ended) raf = requestAnimationFrame(tick);
      else follow();
    })();
  }
  function toggle() {
    if (!master) return;
    if (master.paused || master.ended) master.play().catch(function () {}); else master.pause();
  }
  function stop() {
    cancelAnimationFrame(raf);
    [master, srcv].forEach(function (m) { if (m) { m.pause(); m.removeAttribute("src"); m.load(); } });
    master = srcv = null;
  }
  function markState() {
    var m = marks[line.id] || {};
    $("mstate").innerHTML = m.mark ? "<span class=\"mk mk-" + m.mark + "\">" + (m.mark === "approve" ? "✓ approved" : "⚑ flagged") +
      "</span>" + (stale(line) ? " <span class=\"stalenote\">line re-run since this mark</span>" : "") : "unmarked";
  }
  function setMark(mark) {
    if (!line) return;
    var m = marks[line.id] || {};
    m.mark = mark;
    m.t = Date.now() / 1000;
    if (!m.mark && !m.comment) delete marks[line.id]; else marks[line.id] = m;
    saveMarks();
    markState();
    updateRow(cur);
  }
  function setComment(text) {
    var m = marks[line.id] || {mark: "", t: Date.now() / 1000};
    m.comment = text.replace(/[\r\n]+/g, " ");
    if (!m.mark && !m.comment) delete marks[line.id]; else marks[line.id] = m;
    saveMarks();
    updateRow(cur);
  }
  function move(d) {
    if (!view.length) return;
    show(cur < 0 ? 0 : Math.min(view.length - 1, Math.max(0, cur + d)));
  }

  // ---- export: a manifest of the marked lines (flagged ones are redone) ---------------------------
  function csvCell(v) {
    v = v == null ? "" : String(v);
    return /[",\r\n]/.test(v) ? "\"" + v.replace(/"/g, "\"\"") + "\"" : v;
  }
  function marksCsv() {
    var out = [MARK_COLUMNS.join(",")];
    L.slice().sort(function (a, b) { return a.line - b.line; }).forEach(function (r) {
      var m = marks[r.id];
      if (!m || !m.mark) return;
      out.push([r.source, r.dub, r.lang, r.id, r.dub_text, r.source_text, r.keyframes, m.mark, m.comment || ""].map(csvCell).join(","));
    });
    return out.join("\n") + "\n";
  }
  function exportCsv() {
    var blob = new Blob([marksCsv()], {type: "text/csv"}), a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = D.title + ".marks.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  window.dubtoolReview = {marksCsv: marksCsv};

  // ---- events --------------------------------------------------------------------------------------
  document.querySelector("#list thead").addEventListener("click", function (e) {
    var k = e.target.closest("th") && e.target.closest("th").dataset.k;
    if (!k) return;
    if (k === sortKey) sortDir = -sortDir; else { sortKey = k; sortDir = (k === "line" || k === "name" || k === "lang") ? 1 : -1; }
    refresh();
  });
  tbody.addEventListener("click", function (e) {
    var tr = e.target.closest("tr");
    if (tr && tr.dataset.v) show(+tr.dataset.v);
  });
  ["q", "flang", "fflag", "fmark", "ffig", "fop", "fval"].forEach(function (id) {
    $(id).addEventListener("input", function () { refresh(); });
  });
  $("export").onclick = exportCsv;
  $("helpbtn").onclick = function () { $("help").hidden = !$("help").hidden; };
  $("help").onclick = function () { $("help").hidden = true; };
  document.addEventListener("keydown", function (e) {
    var tag = e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var k = e.key, done = true;
    if (k === "j" || k === "ArrowDown") move(1);
    else if (k === "k" || k === "ArrowUp") move(-1);
    else if (k === "a") { setMark("approve"); move(1); }
    else if (k === "f") { setMark("flag"); if ($("comment")) $("comment").focus(); }
    else if (k === "u") setMark("");
    else if (k === "c") { if ($("comment")) $("comment").focus(); }
    else if (k === " ") toggle();
    else if (k === "ArrowLeft" && master) master.currentTime = Math.max(0, master.currentTime - 1);
    else if (k === "ArrowRight" && master) master.currentTime = master.currentTime + 1;
    else if (k === "e") exportCsv();
    else if (k === "/") $("q").focus();
    else if (k === "?") $("help").hidden = !$("help").hidden;
    else if (k === "Escape") $("help").hidden = true;
    else done = false;
    if (done) e.preventDefault();
  });
  refresh();
  window.dubtoolReviewScript = performance.now();
  // Ready once the first frame with the list is laid out and painted (what a user can act on).
  requestAnimationFrame(function () {
    setTimeout(function () {
      document.documentElement.dataset.ready = "1";
      window.dubtoolReviewReady = performance.now();
    }, 0);
  });
})();
