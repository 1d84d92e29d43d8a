"""The web terminal page the ``ttyd`` service answers at ``GET /`` (no external scripts).

A small xterm-compatible emulator in one HTML page: a screen buffer with
the cursor and scroll-region movements, erasing, inserting and deleting,
the alternate screen, SGR attributes with the 16, 256 and 24-bit colours,
the keys a shell and full-screen programs need, paste, and a resize sent
whenever the window changes.  It speaks the PTY protocol of
:mod:`bai.kernel.terminal` to ``pty`` next to the page's own URL (so it
also works behind a proxy that adds a path prefix), and pings every 30 s to
keep the session from idling out.
"""

from __future__ import annotations

from typing import Final

_HTML: Final = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Terminal</title>
<style>
html, body { margin: 0; height: 100%; background: #1d1f21; }
#t { position: absolute; inset: 0; padding: 4px; overflow: hidden; outline: none;
     color: #d0d0d0; white-space: pre; cursor: text;
     font: 14px/1.25 ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
#t div { height: 1.25em; }
#t .c { background: #d0d0d0; color: #1d1f21; }
#probe { position: absolute; visibility: hidden; white-space: pre;
         font: 14px/1.25 ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
#m { position: absolute; right: 8px; bottom: 6px; color: #f07070; font: 12px sans-serif; }
</style>
</head>
<body>
<div id="t" tabindex="0"></div><span id="probe">WWWWWWWWWW</span><div id="m"></div>
<script>
"use strict";
const el = document.getElementById("t"), note = document.getElementById("m");
const PAL = ["#1d1f21", "#cc6666", "#b5bd68", "#f0c674", "#81a2be", "#b294bb", "#8abeb7",
  "#c5c8c6", "#666666", "#d54e53", "#b9ca4a", "#e7c547", "#7aa6da", "#c397d8", "#70c0b1",
  "#eaeaea"];
for (let i = 0; i < 216; i++) {
  const v = n => n ? n * 40 + 55 : 0;
  PAL.push(`rgb(${v(Math.floor(i / 36))},${v(Math.floor(i / 6) % 6)},${v(i % 6)})`);
}
for (let i = 0; i < 24; i++) { const g = i * 10 + 8; PAL.push(`rgb(${g},${g},${g})`); }

let rows = 24, cols = 80, cx = 0, cy = 0, top = 0, bot = 23, wrap = false;
let pen = {fg: null, bg: null, b: false, u: false, i: false}, sty = "";
let main = null, saved = [0, 0], appKeys = false, showCursor = true, dirty = true;
let scr = blank(rows);
function row() { return {c: Array(cols).fill(" "), s: Array(cols).fill("")}; }
function blank(n) { const a = []; for (let i = 0; i < n; i++) a.push(row()); return a; }
function style() {
  let fg = pen.fg, bg = pen.bg;
  if (pen.b && typeof fg === "number" && fg < 8) fg += 8;
  if (pen.i) { [fg, bg] = [bg === null ? 0 : bg, fg === null ? 7 : fg]; }
  const col = c => typeof c === "number" ? PAL[c] : c;
  let s = "";
  if (fg !== null) s += `color:${col(fg)};`;
  if (bg !== null) s += `background:${col(bg)};`;
  if (pen.b) s += "font-weight:bold;";
  if (pen.u) s += "text-decoration:underline;";
  sty = s;
}
function clear(r, from, to) {
  const line = scr[r];
  for (let x = from; x < to; x++) { line.c[x] = " "; line.s[x] = sty; }
}
function scrollUp(n) {
  for (let k = 0; k < n; k++) {
    scr.splice(top, 1); scr.splice(bot, 0, row()); clear(bot, 0, cols);
  }
}
function scrollDown(n) {
  for (let k = 0; k < n; k++) {
    scr.splice(bot, 1); scr.splice(top, 0, row()); clear(top, 0, cols);
  }
}
function lineFeed() { if (cy === bot) scrollUp(1); else if (cy < rows - 1) cy++; }
function put(ch) {
  if (wrap) { cx = 0; lineFeed(); wrap = false; }
  scr[cy].c[cx] = ch; scr[cy].s[cx] = sty;
  if (cx === cols - 1) wrap = true; else cx++;
}
function clamp() {
  cx = Math.max(0, Math.min(cols - 1, cx)); cy = Math.max(0, Math.min(rows - 1, cy));
}
function sgr(p) {
  if (!p.length) p = [0];
  for (let k = 0; k < p.length; k++) {
    const n = p[k] || 0;
    if (n === 0) pen = {fg: null, bg: null, b: false, u: false, i: false};
    else if (n === 1) pen.b = true;
    else if (n === 4) pen.u = true;
    else if (n === 7) pen.i = true;
    else if (n === 22) pen.b = false;
    else if (n === 24) pen.u = false;
    else if (n === 27) pen.i = false;
    else if (n >= 30 && n <= 37) pen.fg = n - 30;
    else if (n === 39) pen.fg = null;
    else if (n >= 40 && n <= 47) pen.bg = n - 40;
    else if (n === 49) pen.bg = null;
    else if (n >= 90 && n <= 97) pen.fg = n - 82;
    else if (n >= 100 && n <= 107) pen.bg = n - 92;
    else if (n === 38 || n === 48) {
      let c = null;
      if (p[k + 1] === 5) { c = p[k + 2] & 255; k += 2; }
      else if (p[k + 1] === 2) {
        c = `rgb(${p[k + 2] | 0},${p[k + 3] | 0},${p[k + 4] | 0})`; k += 4;
      }
      if (n === 38) pen.fg = c; else pen.bg = c;
    }
  }
  style();
}
function mode(priv, p, on) {
  for (const n of p) {
    if (!priv) continue;
    if (n === 1) appKeys = on;
    else if (n === 25) showCursor = on;
    else if (n === 47 || n === 1047 || n === 1049) {
      if (on && !main) { main = {scr, cx, cy}; scr = blank(rows); }
      else if (!on && main) { scr = main.scr; cx = main.cx; cy = main.cy; main = null; clamp(); }
    }
  }
}
function csi(priv, p, f) {
  const a = p[0] || 1;
  wrap = false;
  switch (f) {
    case "A": cy = Math.max(cy < top ? 0 : top, cy - a); break;
    case "B": cy = Math.min(cy > bot ? rows - 1 : bot, cy + a); break;
    case "C": case "a": cx += a; break;
    case "D": cx -= a; break;
    case "E": cy += a; cx = 0; break;
    case "F": cy -= a; cx = 0; break;
    case "G": case "`": cx = a - 1; break;
    case "d": cy = a - 1; break;
    case "H": case "f": cy = (p[0] || 1) - 1; cx = (p[1] || 1) - 1; break;
    case "J": {
      const n = p[0] || 0;
      if (n === 0) { clear(cy, cx, cols); for (let r = cy + 1; r < rows; r++) clear(r, 0, cols); }
      else if (n === 1) { clear(cy, 0, cx + 1); for (let r = 0; r < cy; r++) clear(r, 0, cols); }
      else for (let r = 0; r < rows; r++) clear(r, 0, cols);
      break;
    }
    case "K": {
      const n = p[0] || 0;
      if (n === 0) clear(cy, cx, cols);
      else if (n === 1) clear(cy, 0, cx + 1);
      else clear(cy, 0, cols);
      break;
    }
    case "L": case "M":
      if (cy >= top && cy <= bot) {
        const t = top; top = cy;
        if (f === "L") scrollDown(a); else scrollUp(a);
        top = t;
      }
      break;
    case "@": case "P": case "X": {
      const line = scr[cy], n = Math.min(a, cols - cx);
      if (f === "@") {
        line.c.splice(cx, 0, ...Array(n).fill(" ")); line.s.splice(cx, 0, ...Array(n).fill(sty));
        line.c.length = cols; line.s.length = cols;
      } else if (f === "P") {
        line.c.splice(cx, n); line.s.splice(cx, n);
        while (line.c.length < cols) { line.c.push(" "); line.s.push(sty); }
      } else clear(cy, cx, cx + n);
      break;
    }
    case "S": scrollUp(a); break;
    case "T": scrollDown(a); break;
    case "r":
      top = (p[0] || 1) - 1; bot = (p[1] || rows) - 1;
      if (top >= bot || bot >= rows) { top = 0; bot = rows - 1; }
      cx = 0; cy = 0;
      break;
    case "m": if (!priv) sgr(p); break;
    case "h": mode(priv, p, true); break;
    case "l": mode(priv, p, false); break;
    case "s": saved = [cx, cy]; break;
    case "u": [cx, cy] = saved; break;
    case "n":
      if (p[0] === 6) send(`\x1b[${cy + 1};${cx + 1}R`);
      else if (p[0] === 5) send("\x1b[0n");
      break;
    case "c": if (!priv) send("\x1b[?1;2c"); break;
  }
  clamp();
}
let state = 0, params = "", oscBuf = "";
function feed(text) {
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (state === 0) {
      if (code >= 32 && code !== 127) put(ch);
      else if (code === 27) state = 1;
      else if (code === 13) { cx = 0; wrap = false; }
      else if (code === 10 || code === 11 || code === 12) { lineFeed(); wrap = false; }
      else if (code === 8) { if (cx > 0) cx--; wrap = false; }
      else if (code === 9) cx = Math.min(cols - 1, (Math.floor(cx / 8) + 1) * 8);
    } else if (state === 1) {
      state = 0;
      if (ch === "[") { state = 2; params = ""; }
      else if (ch === "]") { state = 3; oscBuf = ""; }
      else if (ch === "(" || ch === ")" || ch === "*" || ch === "+" || ch === "#") state = 5;
      else if (ch === "7") saved = [cx, cy];
      else if (ch === "8") { [cx, cy] = saved; clamp(); }
      else if (ch === "D") lineFeed();
      else if (ch === "E") { cx = 0; lineFeed(); }
      else if (ch === "M") { if (cy === top) scrollDown(1); else if (cy > 0) cy--; }
      else if (ch === "c") { reset(); }
    } else if (state === 2) {
      if (code >= 0x30 && code <= 0x3f || code >= 0x20 && code <= 0x2f) params += ch;
      else if (code >= 0x40 && code <= 0x7e) {
        state = 0;
        const priv = /^[?>=<]/.test(params) ? params[0] : "";
        const nums = params.replace(/^[?>=<]/, "").replace(/[ -\/]/g, "").split(";")
          .map(x => x === "" ? 0 : parseInt(x, 10) || 0);
        if (!params.replace(/^[?>=<]/, "").length) nums.length = 0;
        csi(priv, nums, ch);
      } else if (code === 24 || code === 26) state = 0;
    } else if (state === 3) {
      if (code === 7) { osc(); state = 0; }
      else if (code === 27) state = 4;
      else if (oscBuf.length < 4096) oscBuf += ch;
    } else if (state === 4) { if (ch === "\\") osc(); state = 0; }
    else state = 0;  // a charset designation's final character
  }
  dirty = true;
}
function osc() {
  const m = /^([02]);(.*)$/s.exec(oscBuf);
  if (m) document.title = m[2];
}
function reset() {
  pen = {fg: null, bg: null, b: false, u: false, i: false}; style();
  scr = blank(rows); main = null; cx = cy = 0; top = 0; bot = rows - 1; wrap = false;
}
function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function render() {
  if (dirty) {
    dirty = false;
    let html = "";
    for (let r = 0; r < rows; r++) {
      const line = scr[r];
      let out = "", run = "", cur = null;
      for (let x = 0; x < cols; x++) {
        const s = line.s[x], isCursor = showCursor && r === cy && x === cx;
        const key = isCursor ? "\u0000" : s;
        if (key !== cur) {
          if (run) out += cur === "\u0000" ? `<span class="c">${esc(run)}</span>`
            : cur ? `<span style="${cur}">${esc(run)}</span>` : esc(run);
          run = ""; cur = key;
        }
        run += line.c[x];
      }
      if (run) out += cur === "\u0000" ? `<span class="c">${esc(run)}</span>`
        : cur ? `<span style="${cur}">${esc(run)}</span>` : esc(run);
      html += `<div>${out}</div>`;
    }
    el.innerHTML = html;
  }
  requestAnimationFrame(render);
}
function resizeTo(r, c) {
  if (r === rows && c === cols) return;
  const grow = (line) => {
    while (line.c.length < c) { line.c.push(" "); line.s.push(""); }
    line.c.length = c; line.s.length = c;
  };
  for (const buf of main ? [scr, main.scr] : [scr]) {
    while (buf.length > r && (buf === scr ? cy : main.cy) < buf.length - 1) buf.pop();
    while (buf.length > r) { buf.shift(); if (buf === scr) cy--; else main.cy--; }
    while (buf.length < r) buf.push({c: Array(c).fill(" "), s: Array(c).fill("")});
    buf.forEach(grow);
  }
  rows = r; cols = c; top = 0; bot = r - 1; wrap = false; clamp();
  if (main) { main.cx = Math.min(main.cx, c - 1); main.cy = Math.max(0, Math.min(main.cy, r - 1)); }
  dirty = true;
}
const url = new URL("pty", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const sock = new WebSocket(url);
const decoder = new TextDecoder();
function send(text) {
  if (sock.readyState !== 1) return;
  const bytes = new TextEncoder().encode(text);
  let bin = "";
  for (let k = 0; k < bytes.length; k += 8192) {
    bin += String.fromCharCode.apply(null, bytes.subarray(k, k + 8192));
  }
  sock.send(JSON.stringify({type: "stdin", chars: btoa(bin)}));
}
function fit() {
  const probe = document.getElementById("probe").getBoundingClientRect();
  const w = probe.width / 10, h = probe.height;
  const r = Math.max(1, Math.min(1000, Math.floor((el.clientHeight - 8) / h)));
  const c = Math.max(1, Math.min(1000, Math.floor((el.clientWidth - 8) / w)));
  resizeTo(r, c);
  if (sock.readyState === 1) sock.send(JSON.stringify({type: "resize", rows: r, cols: c}));
}
sock.onopen = () => { fit(); el.focus(); };
sock.onmessage = (ev) => {
  const m = JSON.parse(ev.data);
  if (m.type === "out") {
    const bin = atob(m.data), bytes = new Uint8Array(bin.length);
    for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
    feed(decoder.decode(bytes, {stream: true}));
  } else if (m.type === "error") note.textContent = m.data;
};
sock.onclose = (ev) => {
  note.textContent = `disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
};
setInterval(() => { if (sock.readyState === 1) sock.send('{"type":"ping"}'); }, 30000);
let fitTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(fitTimer); fitTimer = setTimeout(fit, 100);
});
const KEYS = {Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Home: "\x1b[H",
  End: "\x1b[F", Insert: "\x1b[2~", Delete: "\x1b[3~", PageUp: "\x1b[5~", PageDown: "\x1b[6~",
  F1: "\x1bOP", F2: "\x1bOQ", F3: "\x1bOR", F4: "\x1bOS", F5: "\x1b[15~", F6: "\x1b[17~",
  F7: "\x1b[18~", F8: "\x1b[19~", F9: "\x1b[20~", F10: "\x1b[21~", F11: "\x1b[23~",
  F12: "\x1b[24~"};
const ARROWS = {ArrowUp: "A", ArrowDown: "B", ArrowRight: "C", ArrowLeft: "D"};
el.addEventListener("keydown", (ev) => {
  if (ev.isComposing || ev.metaKey || (ev.ctrlKey && ev.shiftKey)) return;
  let out = null;
  if (ev.key in ARROWS) out = (appKeys ? "\x1bO" : "\x1b[") + ARROWS[ev.key];
  else if (ev.key === "Tab" && ev.shiftKey) out = "\x1b[Z";
  else if (ev.key in KEYS) out = KEYS[ev.key];
  else if (ev.ctrlKey && ev.key.length === 1) {
    const k = ev.key.toUpperCase().charCodeAt(0);
    if (k >= 64 && k <= 95) out = String.fromCharCode(k - 64);
    else if (ev.key === " " || ev.key === "2") out = "\x00";
  } else if (ev.key.length === 1 || ev.key.length === 2 && ev.key.codePointAt(0) > 0xffff) {
    out = ev.key;
  }
  if (out === null) return;
  if (ev.altKey) out = "\x1b" + out;
  ev.preventDefault();
  send(out);
});
el.addEventListener("paste", (ev) => {
  ev.preventDefault();
  send(ev.clipboardData.getData("text").replace(/\r?\n/g, "\r"));
});
style();
render();
</script>
</body>
</html>
"""

#: The page, UTF-8 encoded, as served.
PAGE: Final = _HTML.encode("utf-8")
