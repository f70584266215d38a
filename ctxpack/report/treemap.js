/* ctxpack size --html: the page's script (inlined by ctxpack/report/page.py).
 *
 * Reads the JSON embedded in #ctxpack-data (the same document as
 * `ctxpack size --json`, plus the tree), draws a squarified treemap of the
 * current directory with absolutely positioned <div class="cell"> elements
 * (one per drawn node, data-path = its context path), and the tables below.
 * No network, no libraries.  window.ctxpackReport exposes the state for tests.
 */
(function () {
  "use strict";
  var started = performance.now();
  var D = JSON.parse(document.getElementById("ctxpack-data").textContent);
  var S = D.size;

  // ---- numbers, as the CLI prints them (audit.format_size) -----------------
  function fmt(n) {
    var units = [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][1]) return (n / units[i][1]).toFixed(1) + " " + units[i][0];
    }
    return n + " B";
  }
  function count(n, noun) { return n.toLocaleString("en-US") + " " + noun + (n === 1 ? "" : "s"); }
  function pct(x) { return (x * 100).toFixed(x < 0.1 ? 1 : 0) + "%"; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- the tree ------------------------------------------------------------
  var nodes = [];
  var byPath = Object.create(null);
  function prep(n, parent, path, depth) {
    n.id = nodes.length;
    nodes.push(n);
    n.p = parent;
    n.depth = depth;
    n.s = n.s || 0; n.f = n.f || 0; n.xs = n.xs || 0; n.xf = n.xf || 0;
    if (n.k === "a") {
      n.label = n.xf ? count(n.xf, "small file") + " kept out" : count(n.f, "small file");
      n.path = (path ? path + "/" : "") + (n.xf ? "(small kept-out files)" : "(small files)");
    } else {
      n.label = n.n + (n.k ? "/" : "");
      n.path = path;
    }
    n.top = depth <= 1 ? (depth === 0 ? "" : (n.k === "d" || n.k === "c" ? n.n + "/" : "(files at the root)")) : parent.top;
    byPath[n.path] = n;
    if (n.c) {
      for (var i = 0; i < n.c.length; i++) {
        var c = n.c[i];
        prep(c, n, c.k === "a" ? path : (path ? path + "/" : "") + c.n, depth + 1);
      }
    }
  }
  prep(D.tree, null, "", 0);
  var root = D.tree;
  root.label = D.tree.n + "/";

  var findingsAt = Object.create(null);  // path -> [finding]
  var findingsBelow = Object.create(null);  // directory path -> worst severity of the findings under it
  D.findings.forEach(function (f) {
    if (!f.path) return;
    (findingsAt[f.path] = findingsAt[f.path] || []).push(f);
    for (var p = f.path; p.indexOf("/") > 0;) {
      p = p.slice(0, p.lastIndexOf("/"));
      if (findingsBelow[p] !== "error") findingsBelow[p] = f.severity === "error" ? "error" : "warning";
    }
  });

  // ---- state ---------------------------------------------------------------
  var state = { view: "sent", colour: "ext", zoom: root, highlight: null };
  function value(n) {
    return state.view === "sent" ? n.s : state.view === "out" ? n.xs : n.s + n.xs;
  }
  function files(n) {
    return state.view === "sent" ? n.f : state.view === "out" ? n.xf : n.f + n.xf;
  }
  function isDir(n) { return n.k === "d"; }
  function extOf(n) {
    if (n.k === "a" || n.k === "c") return n.e || "";
    var i = n.n.lastIndexOf(".");
    return i > 0 ? n.n.slice(i).toLowerCase() : "";
  }

  // ---- colours -------------------------------------------------------------
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                 "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6", "#d37295", "#a0cbe8"];
  var OTHER = "#bab0ac";
  var keys = {};  // colour key -> colour, rebuilt per view/colour mode
  var legendItems = [];
  function colourKey(n) {
    if (state.view === "out" || (n.xs && !n.s)) return "rule:" + (n.r === undefined ? -1 : n.r);
    return state.colour === "ext" ? "ext:" + extOf(n) : "top:" + n.top;
  }
  function rebuildColours() {
    var totals = Object.create(null);
    nodes.forEach(function (n) {
      if (n.k === "d" && n.c) return;  // only leaves carry colour
      var v = value(n);
      if (v > 0) { var k = colourKey(n); totals[k] = (totals[k] || 0) + v; }
    });
    var ranked = Object.keys(totals).sort(function (a, b) { return totals[b] - totals[a] || (a < b ? -1 : 1); });
    keys = {};
    legendItems = [];
    var shown = 0;
    ranked.forEach(function (k) {
      var c = OTHER;
      if (k.indexOf("rule:") === 0) {
        var r = +k.slice(5);
        c = r >= 0 ? ruleColour(r) : OTHER;
      } else if (k !== "ext:") {
        c = shown < PALETTE.length ? PALETTE[shown] : extraColour(shown);
        shown++;
      }
      keys[k] = c;
      if (legendItems.length < 12) legendItems.push([k, c, totals[k]]);
    });
    // A directory drawn as one rectangle takes its largest child's colour.
    for (var i = nodes.length - 1; i >= 0; i--) {
      var n = nodes[i];
      if (n.k !== "d" || !n.c) continue;
      var best = null, bv = 0;
      for (var j = 0; j < n.c.length; j++) {
        var v = value(n.c[j]);
        if (v > bv) { bv = v; best = n.c[j]; }
      }
      n.ck = best ? (best.k === "d" && best.c ? best.ck : colourKey(best)) : "";
    }
  }
  function ruleColour(r) { return r < PALETTE.length ? PALETTE[(r + 3) % PALETTE.length] : extraColour(r); }
  function extraColour(i) {
    // beyond the palette: hues spread by the golden angle, muted, as hex
    var h = (i * 137.508) % 360, s = 0.42, l = 0.66;
    var a = s * Math.min(l, 1 - l);
    function f(n) {
      var k = (n + h / 30) % 12;
      var c = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
      return ("0" + Math.round(c * 255).toString(16)).slice(-2);
    }
    return "#" + f(0) + f(8) + f(4);
  }
  function keyLabel(k) {
    var v = k.slice(k.indexOf(":") + 1);
    if (k.indexOf("rule:") === 0) return +v >= 0 ? S.rules[+v].rule : "several rules";
    if (k.indexOf("ext:") === 0) return v || "(no extension)";
    return v || "/";
  }
  function textColour(bg) {
    var r = parseInt(bg.slice(1, 3), 16), g = parseInt(bg.slice(3, 5), 16), b = parseInt(bg.slice(5, 7), 16);
    return (0.299 * r + 0.587 * g + 0.114 * b) > 150 ? "#1d2329" : "#ffffff";
  }

  // ---- squarified layout (Bruls, Huizing, van Wijk) -------------------------
  function squarify(items, x, y, w, h, out) {
    var total = 0, i;
    for (i = 0; i < items.length; i++) total += items[i][1];
    if (total <= 0 || w <= 0 || h <= 0) return;
    var scale = (w * h) / total;
    var start = 0;
    while (start < items.length) {
      var side = Math.min(w, h);
      var sum = 0, min = Infinity, max = 0, best = Infinity, end = start;
      while (end < items.length) {
        var a = items[end][1] * scale;
        var s2 = sum + a, mn = Math.min(min, a), mx = Math.max(max, a);
        var worst = Math.max((side * side * mx) / (s2 * s2), (s2 * s2) / (side * side * mn));
        if (worst > best && end > start) break;
        sum = s2; min = mn; max = mx; best = worst; end++;
      }
      var pos, thick;
      if (w >= h) {
        thick = sum / h; pos = y;
        for (i = start; i < end; i++) {
          var hh = (items[i][1] * scale) / thick;
          out.push([items[i][0], x, pos, thick, hh]);
          pos += hh;
        }
        x += thick; w -= thick;
      } else {
        thick = sum / w; pos = x;
        for (i = start; i < end; i++) {
          var ww = (items[i][1] * scale) / thick;
          out.push([items[i][0], pos, y, ww, thick]);
          pos += ww;
        }
        y += thick; h -= thick;
      }
      start = end;
    }
  }

  // ---- drawing -------------------------------------------------------------
  var map = document.getElementById("map");
  var tip = document.getElementById("tip");
  var HEADER = 18, PAD = 2, MAX_CELLS = 6000;
  var drawn = 0;
  var viewTotal = 0;

  function matchesHighlight(n) {
    var h = state.highlight;
    if (!h) return true;
    if (h.rule !== undefined) return n.r === h.rule || (n.r === -1 && n.xs > 0);
    if (h.read !== undefined) return !!(n.u && n.u.indexOf(h.read) >= 0);
    return true;
  }

  function cell(n, x, y, w, h, frame) {
    var d = el("div", "cell");
    d.dataset.id = n.id;
    d.dataset.path = n.path;
    d.style.left = x + "px"; d.style.top = y + "px";
    d.style.width = Math.max(0, w - 1) + "px"; d.style.height = Math.max(0, h - 1) + "px";
    var ghost = state.view !== "sent" && n.xs > 0 && !n.s;
    if (frame) {
      d.classList.add("dir");
      var head = el("div", "head");
      head.appendChild(el("span", "name", n.label));
      if (w > 120) head.appendChild(el("span", "size", fmt(value(n))));
      d.appendChild(head);
    } else {
      var bg = keys[n.k === "d" && n.c ? n.ck : colourKey(n)] || OTHER;
      d.classList.add(n.k === "a" ? "agg" : n.k === "c" ? "collapsed" : "leaf");
      d.style.background = bg;
      d.style.color = textColour(bg);
      if (w > 38 && h > 15) {
        d.appendChild(el("span", "name", n.label));
        if (h > 30 && w > 46) d.appendChild(el("span", "size", fmt(value(n))));
      }
    }
    if (ghost) d.classList.add("ghost");
    // a finding's badge: on its own rectangle, or on the drawn directory
    // that holds it when the path is too small to get a rectangle here
    var own = findingsAt[n.path], below = !frame && findingsBelow[n.path];
    if (own || below) {
      d.classList.add("flagged");
      var sev = (own && own.some(function (f) { return f.severity === "error"; })) || below === "error" ? "error" : "warning";
      d.appendChild(el("span", "badge " + sev, "!"));
    }
    if (!frame && !matchesHighlight(n)) d.classList.add("dim");
    map.appendChild(d);
    drawn++;
  }

  function layout(n, x, y, w, h) {
    var items = [];
    (n.c || []).forEach(function (c) { var v = value(c); if (v > 0) items.push([c, v]); });
    items.sort(function (a, b) { return b[1] - a[1] || (a[0].path < b[0].path ? -1 : 1); });
    var rects = [];
    squarify(items, x, y, w, h, rects);
    rects.forEach(function (r) {
      if (drawn >= MAX_CELLS) return;
      var c = r[0], cx = r[1], cy = r[2], cw = r[3], ch = r[4];
      if (cw < 1.5 || ch < 1.5) return;
      if (isDir(c) && c.c && cw > 44 && ch > HEADER + 16) {
        cell(c, cx, cy, cw, ch, true);
        layout(c, cx + PAD, cy + HEADER, cw - 2 * PAD - 1, ch - HEADER - PAD - 1);
      } else {
        cell(c, cx, cy, cw, ch, false);
      }
    });
  }

  function render() {
    var t = performance.now();
    map.textContent = "";
    drawn = 0;
    var z = state.zoom;
    viewTotal = value(root);
    var w = map.clientWidth, h = map.clientHeight;
    if (value(z) <= 0) {
      map.appendChild(el("div", "empty", state.view === "out" ? "Nothing here is kept out by the ignore rules." : "Nothing here is sent."));
    } else {
      layout(z, 0, 0, w, h);
    }
    renderCrumbs();
    renderLegend();
    api.cells = drawn;
    api.lastRenderMs = performance.now() - t;
  }

  function renderCrumbs() {
    var nav = document.getElementById("crumbs");
    nav.textContent = "";
    var chain = [];
    for (var n = state.zoom; n; n = n.p) chain.unshift(n);
    chain.forEach(function (n, i) {
      if (i) nav.appendChild(el("span", "sep", "\u203a"));
      var a = el(i === chain.length - 1 ? "span" : "a", "crumb", n.label);
      if (i < chain.length - 1) {
        a.href = "#" + encodeURIComponent(n.path);
      }
      nav.appendChild(a);
    });
    var z = state.zoom;
    nav.appendChild(el("span", "crumb-size", fmt(value(z)) + " \u00b7 " + count(files(z), "file") +
      (z !== root && viewTotal ? " \u00b7 " + pct(value(z) / viewTotal) + " of the total" : "")));
  }

  function renderLegend() {
    var lg = document.getElementById("legend");
    lg.textContent = "";
    legendItems.forEach(function (it) {
      var item = el("span", "key");
      var sw = el("i", "swatch");
      sw.style.background = it[1];
      item.appendChild(sw);
      // labels only: aggregated rectangles take their main extension's colour,
      // so colour totals would be close to, but not, the measured numbers
      item.appendChild(document.createTextNode(keyLabel(it[0])));
      lg.appendChild(item);
    });
  }

  // ---- tooltip, click, keys --------------------------------------------------
  function nodeAt(target) {
    var c = target && target.closest ? target.closest(".cell") : null;
    return c ? nodes[+c.dataset.id] : null;
  }
  function showTip(n, ev) {
    tip.textContent = "";
    tip.appendChild(el("div", "tip-path", n.path || "/"));
    var v = value(n), parent = n.p ? value(n.p) : 0;
    var line = fmt(v) + " \u00b7 " + count(files(n), "file");
    tip.appendChild(el("div", "", line));
    if (viewTotal) {
      tip.appendChild(el("div", "muted", pct(v / viewTotal) + " of the total" +
        (n.p && n.p !== root && parent ? ", " + pct(v / parent) + " of " + n.p.label : "")));
    }
    if (n.xs || n.xf) {
      var why = n.r === undefined || n.r < 0 ? "several rules" : S.rules[n.r].rule;
      tip.appendChild(el("div", "tip-out", "kept out: " + fmt(n.xs) + ", " + count(n.xf, "file") + " \u2014 " + why));
    }
    if (n.u && n.u.length) {
      tip.appendChild(el("div", "tip-read", "read by " + n.u.map(function (i) {
        var r = D.reads[i]; return r.instruction + " " + r.pattern + " (line " + r.line + ")";
      }).join(", ")));
    }
    (findingsAt[n.path] || []).forEach(function (f) {
      tip.appendChild(el("div", "tip-finding " + f.severity, f.severity + ": " + f.message));
    });
    if (isDir(n) && n !== state.zoom) tip.appendChild(el("div", "muted", "click to zoom in"));
    tip.style.display = "block";
    var x = ev.clientX + 14, y = ev.clientY + 14;
    var r = tip.getBoundingClientRect();
    if (x + r.width > window.innerWidth - 8) x = ev.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 8) y = ev.clientY - r.height - 14;
    tip.style.left = Math.max(4, x) + "px"; tip.style.top = Math.max(4, y) + "px";
  }
  map.addEventListener("mousemove", function (ev) {
    var n = nodeAt(ev.target);
    if (n) showTip(n, ev); else tip.style.display = "none";
  });
  map.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  map.addEventListener("click", function (ev) {
    var n = nodeAt(ev.target);
    if (!n) return;
    var target = isDir(n) ? n : n.p;
    if (target && target !== state.zoom) go(target);
  });
  document.addEventListener("keydown", function (ev) {
    if ((ev.key === "Escape" || ev.key === "Backspace") && state.zoom.p) { ev.preventDefault(); go(state.zoom.p); }
  });

  function go(n) {
    var h = n === root ? "" : "#" + encodeURIComponent(n.path);
    if (location.hash !== h) {
      if (h) location.hash = h; else history.pushState(null, "", location.pathname + location.search);
    }
    zoomTo(n);
  }
  function zoomTo(n) {
    state.zoom = n;
    tip.style.display = "none";
    render();
  }
  function deepest(path) {
    // the drawn node for a path, or its nearest kept ancestor (small files are folded)
    var p = path;
    while (p && !(byPath[p] && (byPath[p].k === "d" || byPath[p].k === "c" || !byPath[p].k))) {
      var i = p.lastIndexOf("/");
      p = i < 0 ? "" : p.slice(0, i);
    }
    return byPath[p] || root;
  }
  function reveal(path) {
    var n = deepest(path);
    var z = isDir(n) ? n : (n.p || root);
    if (n.xs && !n.s && state.view === "sent") setView("all");
    go(z);
    var c = map.querySelector('.cell[data-id="' + n.id + '"]');
    if (c) { c.classList.add("flash"); setTimeout(function () { c.classList.remove("flash"); }, 1600); }
  }
  window.addEventListener("hashchange", function () {
    var p = decodeURIComponent(location.hash.slice(1));
    var n = byPath[p];
    n = n && isDir(n) ? n : root;
    if (n !== state.zoom) zoomTo(n);  // go() already drew it: keep a flashing cell
  });
  window.addEventListener("popstate", function () {
    if (!location.hash) zoomTo(root);
  });
  var resizeTimer = 0;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 80);
  });

  // ---- controls ------------------------------------------------------------
  function setView(v) {
    state.view = v;
    document.querySelectorAll("[data-view]").forEach(function (b) { b.classList.toggle("on", b.dataset.view === v); });
    rebuildColours();
    var z = state.zoom;
    while (z.p && value(z) <= 0) z = z.p;
    state.zoom = z;
    render();
  }
  function setColour(c) {
    state.colour = c;
    document.querySelectorAll("[data-colour]").forEach(function (b) { b.classList.toggle("on", b.dataset.colour === c); });
    rebuildColours();
    render();
  }
  document.querySelectorAll("[data-view]").forEach(function (b) {
    b.addEventListener("click", function () { setView(b.dataset.view); });
  });
  document.querySelectorAll("[data-colour]").forEach(function (b) {
    b.addEventListener("click", function () { setColour(b.dataset.colour); });
  });
  function highlight(h) { state.highlight = h; render(); }

  // ---- summary and tables ----------------------------------------------------
  function summary() {
    document.getElementById("ctx").textContent = D.tree.n + "/";
    var meta = document.getElementById("ctx-meta");
    meta.textContent = S.context + " \u00b7 " + S.dialect + " \u00b7 " + (S.ignore_file || "no ignore file");
    meta.title = S.context;
    var box = document.getElementById("stats");
    function stat(big, small, cls) {
      var s = el("div", "stat " + (cls || ""));
      s.appendChild(el("div", "big", big));
      s.appendChild(el("div", "small", small));
      box.appendChild(s);
    }
    stat(fmt(S.bytes), "sent \u00b7 " + count(S.files, "file") + ", " + count(S.entries, "entry").replace("entrys", "entries"), "sent");
    stat(fmt(S.excluded.bytes), "kept out \u00b7 " + count(S.excluded.files, "file") + " by " + count(S.rules.length, "rule"), "out");
    if (S.full) {
      stat(fmt(S.full.bytes - S.bytes), "saved by --minimal \u00b7 full context " + fmt(S.full.bytes), "saved");
    }
    var errs = D.findings.filter(function (f) { return f.severity === "error"; }).length;
    if (D.findings.length) stat(String(D.findings.length), count(D.findings.length, "finding").replace(/^\S+ /, "") + (errs ? " \u00b7 " + errs + " error" + (errs === 1 ? "" : "s") : ""), errs ? "bad" : "");
  }

  function table(id, title, head, rows, note) {
    var sec = document.getElementById(id);
    if (!rows.length && !note) { sec.remove(); return; }
    sec.appendChild(el("h2", "", title));
    if (note) sec.appendChild(el("p", "note", note));
    if (!rows.length) return;
    var t = el("table");
    var tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", h[1] || "", h[0])); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr");
      r.cells.forEach(function (c, i) {
        var td = el("td", head[i][1] || "");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c;
        row.appendChild(td);
      });
      if (r.enter) { row.addEventListener("mouseenter", r.enter); row.addEventListener("mouseleave", function () { highlight(null); }); }
      if (r.click) { row.classList.add("clickable"); row.addEventListener("click", r.click); }
      t.appendChild(row);
    });
    sec.appendChild(t);
  }
  function bar(share, colour) {
    var b = el("span", "bar");
    var i = el("i");
    i.style.width = Math.max(1, Math.round(share * 100)) + "%";
    if (colour) i.style.background = colour;
    b.appendChild(i);
    return b;
  }
  function pathLink(p) {
    var a = el("a", "path", p);
    a.href = "#" + encodeURIComponent(p);
    a.addEventListener("click", function (ev) { ev.preventDefault(); reveal(p); });
    return a;
  }

  function tables() {
    var outTotal = S.excluded.bytes || 1;
    table("rules", "Kept out by the ignore rules", [["rule"], ["files", "num"], ["bytes saved", "num"], ["", "barcol"]],
      S.rules.map(function (r, i) {
        return {
          cells: [r.rule, r.files.toLocaleString("en-US"), fmt(r.bytes), bar(r.bytes / outTotal, ruleColour(i))],
          enter: function () { if (state.view !== "sent") highlight({ rule: i }); },
          click: function () { setView("out"); highlight({ rule: i }); },
        };
      }), S.rules.length ? "" : "No ignore rule keeps anything out" + (S.ignore_file ? "." : ": there is no ignore file."));
    var reads = D.reads.map(function (r, i) {
      return {
        cells: [r.instruction, String(r.line), r.pattern, r.stage, r.files.toLocaleString("en-US"), fmt(r.bytes), bar(S.bytes ? r.bytes / S.bytes : 0)],
        enter: function () { highlight({ read: i }); },
      };
    });
    var whole = D.whole_context.length ? "The build reads the whole context: " + D.whole_context.join("; ") : "";
    if (reads.length || whole) {
      table("reads", "What the Dockerfile reads (--minimal)", [["instruction"], ["line", "num"], ["source"], ["stage"], ["files", "num"], ["bytes", "num"], ["", "barcol"]], reads, whole);
    } else {
      document.getElementById("reads").remove();
    }
    table("findings", "Lint findings: size and secrets", [["severity"], ["kind"], ["path"], ["finding"]],
      D.findings.map(function (f) {
        return { cells: [el("span", "sev " + f.severity, f.severity), f.kind, f.path ? pathLink(f.path) : (f.file || ""), f.message + (f.fix ? " \u2014 fix: " + f.fix : "")] };
      }), D.findings.length ? "" : (D.lint === false ? "" : "No size or secret findings."));
    table("largest", "Largest files", [["path"], ["bytes", "num"], ["", "barcol"]],
      S.largest.map(function (f) { return { cells: [pathLink(f.path), fmt(f.bytes), bar(S.bytes ? f.bytes / S.bytes : 0)] }; }));
    table("exts", "By extension", [["extension"], ["files", "num"], ["bytes", "num"], ["", "barcol"]],
      S.extensions.map(function (x) { return { cells: [x.extension, x.files.toLocaleString("en-US"), fmt(x.bytes), bar(S.bytes ? x.bytes / S.bytes : 0)] }; }));
  }

  var api = {
    data: D, state: state, nodes: nodes, byPath: byPath, cells: 0, lastRenderMs: 0, renderMs: 0,
    zoom: function (p) { var n = byPath[p]; if (n && isDir(n)) go(n); return !!n; },
    view: setView, colour: setColour, reveal: reveal,
    current: function () { return state.zoom.path; },
  };
  window.ctxpackReport = api;

  summary();
  tables();
  rebuildColours();
  var initial = decodeURIComponent(location.hash.slice(1));
  if (initial && byPath[initial] && isDir(byPath[initial])) state.zoom = byPath[initial];
  render();
  api.renderMs = performance.now() - started;
  document.documentElement.dataset.ready = "1";
})();
