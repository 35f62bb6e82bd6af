// app.js - the strata dashboard: one ES module, no framework, no build step.
//
// Pages are hash routes (#/ overview, #/vm/NAME, #/jobs, #/restores), each
// drawn from the hub's JSON API.  Everything that comes from the catalog
// (VM names are user input) goes into the page as text nodes through el();
// nothing is ever parsed as HTML.  The API token, when the hub asks for one
// (a 401 from any call), lives in sessionStorage only: it ends with the
// browser tab, and nothing but the login form is shown until it is given.
//
// A page that shows running work (the jobs page, a VM page with a running
// backup) polls every 2 s; a render whose route is no longer the current one
// is dropped, so a slow answer never draws over the page the user went to.

const API = '/api/v1';
const TOKEN_KEY = 'strata-api-token';
const POLL_MS = 2000;

class Unauthorized extends Error {}

class ApiError extends Error {
  constructor (status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ------------------------------------------------------------- API ----

// One API call; resolves to the parsed reply (null for an empty one).
// Throws Unauthorized on 401, ApiError on any other non-2xx reply.
async function api (method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(API + path, init);
  if (res.status === 401) throw new Unauthorized('the hub wants its API token');
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : {};
    throw new ApiError(res.status, e.code || 'http_' + res.status,
      e.message || res.status + ' ' + res.statusText);
  }
  return data;
}

const enc = encodeURIComponent;

// ------------------------------------------------------------- DOM ----

// el('tag#id.class', {attr...}, child...): an element; strings become
// text nodes, null/false children are skipped, arrays are flattened.
function el (spec, attrs, ...children) {
  const [tagId, ...classes] = spec.split('.');
  const [tag, id] = tagId.split('#');
  const e = document.createElement(tag || 'div');
  if (id) e.id = id;
  if (classes.length) e.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.classList.add(...String(v).split(' ').filter(Boolean));
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const $main = () => document.getElementById('main');

function setMain (...children) {
  $main().replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
}

function button (label, onclick, cls, attrs) {
  return el('button' + (cls ? '.' + cls : ''), { type: 'button', onclick, ...(attrs || {}) }, label);
}

// A notice box; kind is 'error', 'ok' or 'info'.
function notice (kind, ...text) {
  return el('div.notice.' + kind, { role: kind === 'error' ? 'alert' : 'status' }, ...text);
}

// ---------------------------------------------------------- format ----

function fmtBytes (n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
}

function fmtDuration (sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return sec + ' s';
  if (sec < 3600) return Math.floor(sec / 60) + ' min ' + (sec % 60) + ' s';
  if (sec < 86400) return Math.floor(sec / 3600) + ' h ' + Math.floor(sec % 3600 / 60) + ' min';
  return Math.floor(sec / 86400) + ' d ' + Math.floor(sec % 86400 / 3600) + ' h';
}

function fmtAge (iso) {
  if (!iso) return '';
  const sec = (Date.now() - Date.parse(iso)) / 1000;
  if (!isFinite(sec)) return '';
  if (sec < 0) return 'in ' + fmtDuration(-sec);
  if (sec < 5) return 'just now';
  return fmtDuration(sec).replace(/ \d+ (s|min)$/, '') + ' ago';
}

function fmtTime (iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' +
    p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}

// A time element: local time (the browser's), with its age; the UTC value
// in its title.
function timeEl (iso) {
  if (!iso) return el('span.muted', {}, 'never');
  return el('time', { datetime: iso, title: iso }, fmtTime(iso), ' ',
    el('span.age', {}, '(' + fmtAge(iso) + ')'));
}

// A status word as a badge: the class gives the colour, the text says it.
function badge (word, extra) {
  return el('span.badge.st-' + String(word).replace(/[^a-z]/g, ''), {}, word, extra || null);
}

// A verify state as a word: the API's 'none' is a point never checked.
function verifyBadge (v) {
  return v ? badge(v === 'none' ? 'unverified' : v) : el('span.muted', {}, '—');
}

function shortId (id) {
  // backup-NAME-20261125T230501-3fa9c2d1e0b4: the time and the hex tail say it
  const m = /-(\d{8}T\d{6})-([0-9a-f]{4,})$/.exec(id || '');
  return m ? m[1] + '…' + m[2].slice(0, 4) : id;
}

// Quote a word for a POSIX shell.
function shq (s) {
  return "'" + String(s).replace(/'/g, "'\\''") + "'";
}

// ---------------------------------------------------------- router ----

let renderSeq = 0;
let pollTimer = null;

function stopPolling () {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

// Run fn again in POLL_MS while the page drawn by render seq is current.
function pollAgain (seq, fn) {
  stopPolling();
  pollTimer = setTimeout(() => { if (seq === renderSeq) fn(seq); }, POLL_MS);
}

function current (seq) {
  return seq === renderSeq;
}

async function route () {
  stopPolling();
  const seq = ++renderSeq;
  const hash = location.hash || '#/';
  markNav(hash);
  try {
    if (hash === '#/' || hash === '#') await showOverview(seq);
    else if (hash.startsWith('#/vm/')) await showVm(seq, decodeURIComponent(hash.slice(5)));
    else if (hash === '#/jobs') await showJobs(seq);
    else if (hash === '#/restores') await showRestores(seq);
    else setMain(el('h1', {}, 'Not found'), el('p', {}, 'No page here. ', el('a', { href: '#/' }, 'Overview')));
  } catch (e) {
    failed(seq, e);
  }
}

// What every page does with an error: a 401 shows the login form only.
function failed (seq, e) {
  if (e instanceof Unauthorized) {
    showLogin();
    return;
  }
  if (!current(seq)) return;
  setMain(el('h1', {}, 'Something went wrong'), notice('error', errText(e)),
    el('p', {}, el('a', { href: '#/' }, 'Back to the overview')));
}

function errText (e) {
  if (e instanceof ApiError) return e.message + ' (HTTP ' + e.status + ')';
  return String(e && e.message ? e.message : e);
}

function markNav (hash) {
  const page = hash.startsWith('#/jobs') ? 'jobs' : hash.startsWith('#/restores') ? 'restores'
    : hash.startsWith('#/vm/') ? '' : 'overview';
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === page);
  }
}

function showChrome (on) {
  document.getElementById('nav').hidden = !on;
  document.getElementById('logout').hidden = !on || !sessionStorage.getItem(TOKEN_KEY);
}

// ----------------------------------------------------------- login ----

function showLogin (message) {
  stopPolling();
  renderSeq++;
  showChrome(false);
  const input = el('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off',
    required: true, 'aria-describedby': 'login-help' });
  const msg = el('p.login-error', { role: 'alert', id: 'login-error' },
    message || (sessionStorage.getItem(TOKEN_KEY) ? 'The hub refused the stored token.' : ''));
  const form = el('form#login.login', {},
    el('h1', {}, 'Sign in to strata'),
    el('p.muted', { id: 'login-help' }, 'This hub needs its API token: the first line of the file ' +
      'given to strata serve --api-token-file.  It is kept for this browser tab only.'),
    el('label', { for: 'token' }, 'API token'), input,
    el('button', { type: 'submit' }, 'Sign in'), msg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    msg.textContent = 'Checking…';
    try {
      await api('GET', '/contexts');
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      // A token with characters no HTTP header can carry fails in fetch itself.
      msg.textContent = e instanceof Unauthorized || e instanceof TypeError
        ? 'The hub refused this token.' : 'The hub could not be asked: ' + errText(e);
      input.select();
      return;
    }
    route();
  });
  setMain(form);
  sessionStorage.removeItem(TOKEN_KEY);
  input.focus();
}

// -------------------------------------------------------- overview ----

// The context's summary (the hub computes it); a hub without it gives
// what the context itself says.
function summaryOf (c) {
  if (c.summary) return c.summary;
  return {
    points: c.successful_backups, last_status: null, last_completed_at: c.last_backup_at,
    last_error: null, bytes_used: null, verify_state: null, overdue: false, overdue_reason: null
  };
}

async function showOverview (seq) {
  const [ctx, vms] = await Promise.all([api('GET', '/contexts'), api('GET', '/vms')]);
  if (!current(seq)) return;
  showChrome(true);
  const contexts = ctx.contexts.slice().sort((a, b) =>
    a.vm_name.localeCompare(b.vm_name) || a.repository_id.localeCompare(b.repository_id));
  const withContext = new Set(contexts.map(c => c.vm_name));
  const bare = vms.vms.filter(v => !withContext.has(v.vm_name));

  let nFailed = 0, nOverdue = 0;
  const rows = contexts.map(c => {
    const s = summaryOf(c);
    // A cancelled job was someone's choice; a failed one needs a look.
    const failedLast = s.last_status === 'failed';
    if (failedLast) nFailed++;
    if (s.overdue) nOverdue++;
    const flags = [];
    flags.push(s.last_status ? badge(s.last_status) : el('span.muted', {}, '—'));
    if (s.overdue) flags.push(' ', badge('overdue'));
    const notes = [];
    if (failedLast && s.last_error) notes.push(el('div.why', {}, s.last_error));
    if (s.overdue && s.overdue_reason) notes.push(el('div.why', {}, s.overdue_reason));
    return el('tr', {
      class: [failedLast ? 'row-failed' : '', s.overdue ? 'row-overdue' : ''].join(' '),
      data: { context: c.context_id, vm: c.vm_name }
    },
    el('td.vm', {}, el('a', { href: '#/vm/' + enc(c.vm_name) }, c.vm_name)),
    el('td', {}, c.repository_id),
    el('td', {}, timeEl(s.last_completed_at)),
    el('td.status', {}, flags, notes),
    el('td.num', {}, s.points === null || s.points === undefined ? '—' : String(s.points)),
    el('td.num', {}, fmtBytes(s.bytes_used)),
    el('td', {}, verifyBadge(s.verify_state)));
  });
  for (const v of bare) {
    rows.push(el('tr.row-none', { data: { vm: v.vm_name } },
      el('td.vm', {}, el('a', { href: '#/vm/' + enc(v.vm_name) }, v.vm_name)),
      el('td.muted', {}, '—'), el('td', {}, el('span.muted', {}, 'never')),
      el('td.status', {}, badge('no backups')), el('td.num', {}, '0'), el('td.num', {}, '—'),
      el('td', {}, verifyBadge(null))));
  }

  const counts = [contexts.length + ' context' + (contexts.length === 1 ? '' : 's')];
  if (nFailed) counts.push(nFailed + ' failing');
  if (nOverdue) counts.push(nOverdue + ' overdue');
  setMain(
    el('h1', {}, 'Overview'),
    el('p.counts', { id: 'counts' }, counts.join(' · ')),
    (nFailed || nOverdue)
      ? notice('error', [nFailed ? nFailed + ' VM' + (nFailed === 1 ? '' : 's') + ' whose last backup failed' : '',
        nOverdue ? nOverdue + ' overdue' : ''].filter(Boolean).join(', ') + '.')
      : null,
    rows.length
      ? el('table#overview.grid', {},
        el('thead', {}, el('tr', {}, ['VM', 'Repository', 'Last good backup', 'Last status',
          'Points', 'Used', 'Verify'].map(t => el('th', { scope: 'col' }, t)))),
        el('tbody', {}, rows))
      : el('p.muted', {}, 'No VMs and no backups yet.'));
}

// --------------------------------------------------------- VM page ----

// Backups (jobs) that delete along with `id`: those with a disk built on
// it, and so on down (parent links, never times).
function descendants (id, backups) {
  const gone = new Set([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const b of backups) {
      if (gone.has(b.backup_id)) continue;
      if (b.disks.some(d => d.parent_backup_id && gone.has(d.parent_backup_id))) {
        gone.add(b.backup_id);
        grew = true;
      }
    }
  }
  gone.delete(id);
  return backups.filter(b => gone.has(b.backup_id));
}

const RUNNING = new Set(['running', 'finishing']);
const POINT = new Set(['completed', 'removing']);

async function showVm (seq, name) {
  const q = '?vm_name=' + enc(name);
  const [vm, ctx, bl] = await Promise.all([
    api('GET', '/vms/' + enc(name)).catch(e => {
      if (e instanceof ApiError && e.status === 404) return null;
      throw e;
    }),
    api('GET', '/contexts' + q),
    api('GET', '/backups' + q + '&limit=1000')
  ]);
  if (!current(seq)) return;
  showChrome(true);
  const page = document.getElementById('vm-page');
  // Drawing the page again (a poll, an action's refresh) keeps its open
  // panels (restore, delete, prune) and the last action's outcome.
  const same = page && page.dataset.vm === name;
  const panels = same ? page.querySelector('#panels') : null;
  const backups = bl.backups;

  const head = el('section.vm-head', {},
    el('h1', {}, el('span.muted', {}, 'VM '), el('span#vm-name', {}, name)),
    vm
      ? el('p.muted', {},
        'Policy: ', vm.policy || 'none',
        vm.next_run_at ? ['  ·  next run ', timeEl(vm.next_run_at)] : '',
        '  ·  ', String(vm.disks.length), ' disk' + (vm.disks.length === 1 ? '' : 's') + ': ',
        vm.disks.map((d, i) => [i ? ', ' : '', 'disk ' + d.disk_index + ' ' + fmtBytes(d.size_bytes),
          d.source ? ' from ' + d.source : '']))
      : el('p.muted', {}, 'Not in the inventory (its backups remain).'));

  const hubDriven = vm && vm.disks.length && vm.disks.every(d => d.source);
  const actionsOut = (same && page.querySelector('#actions-out')) || el('div#actions-out');
  const startButtons = (repo) => hubDriven
    ? [button('Back up now', () => startBackup(name, repo, 'incremental', actionsOut), 'primary',
      { data: { action: 'backup' } }),
    button('Full backup', () => startBackup(name, repo, 'full', actionsOut), '', { data: { action: 'full' } })]
    : [el('span.muted', {}, 'Backups of this VM are made by an agent (strata backup).')];

  const sections = [];
  if (ctx.contexts.length === 0) {
    sections.push(el('section.ctx', {}, el('p.muted', {}, 'No backups yet.'),
      el('div.actions', {}, startButtons(null))));
  }
  const sortedCtx = ctx.contexts.slice().sort((a, b) => a.repository_id.localeCompare(b.repository_id));
  for (const c of sortedCtx) {
    sections.push(contextSection(c, backups.filter(b => b.context_id === c.context_id),
      backups, startButtons(c.repository_id)));
  }
  const root = el('div#vm-page', { data: { vm: name } }, head, actionsOut,
    panels || el('div#panels'), sections);
  setMain(root);
  if (backups.some(b => RUNNING.has(b.status))) pollAgain(seq, (s) => showVm(s, name).catch(e => failed(s, e)));
}

function contextSection (c, backups, all, startButtons) {
  const s = summaryOf(c);
  const disks = [...new Set(backups.flatMap(b => b.disks.map(d => d.disk_index)))].sort((a, b) => a - b);
  const points = backups.filter(b => POINT.has(b.status));
  const running = backups.filter(b => RUNNING.has(b.status));

  return el('section.ctx', { data: { context: c.context_id } },
    el('h2', {}, 'Repository ', el('span', {}, c.repository_id)),
    el('p.muted', {}, String(s.points ?? points.length), ' points · ', fmtBytes(s.bytes_used),
      ' used · last good backup ', timeEl(s.last_completed_at),
      s.verify_state ? [' · verify ', verifyBadge(s.verify_state)] : '',
      s.overdue ? [' · ', badge('overdue'), ' ', s.overdue_reason || ''] : ''),
    s.last_status === 'failed' && s.last_error ? notice('error', 'Last backup failed: ', s.last_error) : null,
    el('div.actions', {}, startButtons,
      button('Prune…', () => openPrune(c), '', { data: { action: 'prune' } }),
      button('Verify all points', () => startVerify('/contexts/' + enc(c.context_id) + '/verify',
        'every point of ' + c.repository_id), '', { data: { action: 'verify-context' } })),
    running.length ? el('div.running', {}, running.map(jobCard)) : null,
    disks.map(d => diskChain(d, backups)),
    pointTable(points, all));
}

// One disk's chain: each full starts a lane, its incrementals follow their
// parent (a second child of one point starts a lane of its own); failed and
// cancelled attempts get a lane apart.
function diskChain (index, backups) {
  const nodes = [];
  for (const b of backups) {
    const d = b.disks.find(x => x.disk_index === index);
    if (d) nodes.push({ b, d });
  }
  const points = nodes.filter(n => POINT.has(n.b.status) && n.d.status === 'completed');
  const byId = new Map(points.map(n => [n.b.backup_id, n]));
  const children = new Map();
  const roots = [];
  for (const n of points) {
    const p = n.d.parent_backup_id;
    if (p && byId.has(p)) {
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(n);
    } else roots.push(n);
  }
  const byTime = (x, y) => x.b.created_at.localeCompare(y.b.created_at);
  roots.sort(byTime);
  for (const list of children.values()) list.sort(byTime);

  const lanes = [];
  const walk = (n, lane) => {
    lane.push(n);
    const kids = children.get(n.b.backup_id) || [];
    kids.forEach((k, i) => {
      if (i === 0) walk(k, lane);
      else {
        const l = [];
        l.from = n.b.backup_id;
        lanes.push(l);
        walk(k, l);
      }
    });
  };
  for (const r of roots) {
    const l = [];
    lanes.push(l);
    walk(r, l);
  }

  const box = (n) => {
    const st = n.b.status === 'removing' ? 'removing' : n.d.verify_state === 'corrupt' ? 'corrupt' : '';
    return el('div.point', {
      class: [n.d.backup_type === 'full' ? 'full' : 'incr', st].join(' '),
      data: { backup: n.b.backup_id, parent: n.d.parent_backup_id || '' },
      title: n.b.backup_id + (n.d.parent_backup_id ? '\nbacked by ' + n.d.parent_backup_id : '')
    },
    el('div.kind', {}, n.d.backup_type === 'full' ? 'full' : 'incremental',
      n.b.protected ? ' · protected' : ''),
    el('div.when', {}, fmtTime(n.b.created_at)),
    el('div.size', {}, fmtBytes(n.d.bytes_transferred), ' written'),
    n.d.full_reason ? el('div.why', {}, n.d.full_reason) : null,
    st ? el('div', {}, badge(st)) : n.d.verify_state === 'ok' ? el('div', {}, badge('verified')) : null);
  };

  const attempts = nodes.filter(n => n.b.status === 'failed' || n.b.status === 'cancelled');
  attempts.sort(byTime);
  return el('div.disk', { data: { disk: index } },
    el('h3', {}, 'Disk ' + index),
    lanes.length
      ? lanes.map(l => el('div.lane', {},
        l.from ? el('div.lane-note', {}, 'branch from ' + shortId(l.from)) : null,
        l.map(box)))
      : el('p.muted', {}, 'No completed points.'),
    attempts.length
      ? el('div.lane.attempts', { 'aria-label': 'failed and cancelled attempts' },
        el('div.lane-label', {}, 'Failed and cancelled attempts'),
        attempts.map(n => el('div.point.attempt', { data: { backup: n.b.backup_id }, title: n.b.backup_id },
          el('div.kind', {}, badge(n.b.status), ' ', n.d.backup_type),
          el('div.when', {}, fmtTime(n.b.created_at)),
          el('div.why', {}, n.d.error || n.b.error || ''))))
      : null);
}

function pointTable (points, all) {
  if (!points.length) return null;
  const sorted = points.slice().sort((a, b) => b.created_at.localeCompare(a.created_at));
  return el('table.grid.points', {},
    el('thead', {}, el('tr', {}, ['Point', 'Type', 'Taken', 'Written', 'Verify', 'Actions']
      .map(t => el('th', { scope: 'col' }, t)))),
    el('tbody', {}, sorted.map(b => el('tr', { data: { backup: b.backup_id } },
      el('td.mono', { title: b.backup_id }, b.backup_id),
      el('td', {}, b.backup_type, b.protected ? ' (protected)' : ''),
      el('td', {}, timeEl(b.created_at)),
      el('td.num', {}, fmtBytes(b.disks.reduce((t, d) => t + (d.bytes_transferred || 0), 0))),
      el('td', {}, verifyBadge(b.verify_state)),
      el('td.row-actions', {},
        b.status === 'completed'
          ? [b.disks.map(d => button('Restore disk ' + d.disk_index, () => openRestore(b, d.disk_index), '',
            { data: { action: 'restore', disk: d.disk_index } })),
          button('Verify', () => startVerify('/backups/' + enc(b.backup_id) + '/verify', b.backup_id), '',
            { data: { action: 'verify' } }),
          button('Delete…', () => openDelete(b, all), 'danger', { data: { action: 'delete' } })]
          : badge(b.status))))));
}

function panel (id, title, ...body) {
  const old = document.getElementById(id);
  const p = el('section.panel', { id },
    el('div.panel-head', {}, el('h2', {}, title), button('Close', () => p.remove(), 'quiet', { 'aria-label': 'close ' + title })),
    ...body);
  const host = document.getElementById('panels');
  if (old) old.replaceWith(p);
  else host.prepend(p);
  p.scrollIntoView({ block: 'nearest' });
  return p;
}

async function startBackup (name, repo, type, out) {
  const body = { vm_name: name, backup_type: type };
  if (repo) body.repository_id = repo;
  try {
    const b = await api('POST', '/backups', body);
    out.replaceChildren(notice('ok', 'Backup ', el('span.mono', {}, b.backup_id), ' started (' +
      b.backup_type + '). ', el('a', { href: '#/jobs' }, 'Follow it on the jobs page'), '.'));
    route();
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    out.replaceChildren(notice('error', 'The backup did not start: ', errText(e)));
  }
}

// Commands that read a restore export, for the URI the hub gave.  With its
// credential (the answer that opened it), the first command saves the key as
// ./keys.psk, which libnbd (?tls-psk-file=) and qemu (dir=.) both read.
function restoreCommands (r) {
  if (!r.nbd_uri.startsWith('nbds://')) {
    const u = shq(r.nbd_uri);
    return [
      ['Copy it to a QCOW2 image', 'qemu-img convert -p -f raw -O qcow2 ' + u + ' restored.qcow2'],
      ['Copy it to a raw file or a block device', 'nbdcopy --progress ' + u + ' restored.raw'],
      ['See it as a local block device (read-only)', 'modprobe nbd && qemu-nbd --read-only --format=raw --connect=/dev/nbd0 ' + u],
      ['Mount it as a file with FUSE', 'mkdir -p /mnt/restore && nbdfuse --readonly /mnt/restore ' + u + ' &']
    ];
  }
  const key = r.nbd_tls ? 'keys.psk' : '/path/to/keys.psk';
  const uri = shq(r.nbd_uri + '?tls-psk-file=' + key);
  const m = /^nbds:\/\/([^@]+)@(\[[^\]]+\]|[^:/]+):(\d+)\/(.*)$/.exec(r.nbd_uri);
  const cmds = [];
  if (r.nbd_tls) {
    cmds.push(['Save the export\'s key (valid while the export is open)',
      '(umask 077 && printf \'%s\\n\' ' + shq(r.nbd_tls.identity + ':' + r.nbd_tls.psk) + ' > keys.psk)']);
  }
  if (m) {
    const obj = '--object tls-creds-psk,id=tls0,endpoint=client,dir=' +
      (r.nbd_tls ? '.' : '/path/to') + ',username=' + m[1];
    const opts = shq('driver=raw,file.driver=nbd,file.host=' + m[2].replace(/^\[|\]$/g, '') +
      ',file.port=' + m[3] + ',file.export=' + m[4] + ',file.tls-creds=tls0');
    cmds.push(['Copy it to a QCOW2 image', 'qemu-img convert -p ' + obj + ' --image-opts ' + opts +
      ' -O qcow2 restored.qcow2']);
  }
  cmds.push(['Copy it to a raw file or a block device', 'nbdcopy --progress ' + uri + ' restored.raw']);
  cmds.push(['Mount it as a file with FUSE', 'mkdir -p /mnt/restore && nbdfuse --readonly /mnt/restore ' + uri + ' &']);
  return cmds;
}

function restoreView (r, onClose) {
  return el('div.restore', { data: { restore: r.restore_id } },
    el('p', {}, 'Backup ', el('span.mono', {}, r.backup_id), ', disk ' + r.disk_index + ', ' +
      fmtBytes(r.size_bytes) + ', read-only, open since ', timeEl(r.created_at)),
    el('p', {}, 'NBD URI: ', el('code.uri', {}, r.nbd_uri)),
    r.nbd_uri.startsWith('nbds://') ? el('p.muted', {}, r.nbd_tls
      ? 'The export needs TLS with its own key, shown once here (the first command saves it).'
      : 'The export needs TLS with its own key, which the answer that opened it carried (GET /api/v1/restores/{id} gives it again).') : null,
    el('dl.commands', {}, restoreCommands(r).map(([what, cmd]) => [el('dt', {}, what), el('dd', {}, el('code', {}, cmd))])),
    el('div.actions', {}, button('Close the export', async (ev) => {
      ev.target.disabled = true;
      try {
        await api('DELETE', '/restores/' + enc(r.restore_id));
        onClose();
      } catch (e) {
        if (e instanceof Unauthorized) return showLogin();
        ev.target.after(notice('error', errText(e)));
      }
    }, 'danger', { data: { action: 'close-restore' } })));
}

async function openRestore (b, disk) {
  try {
    const r = await api('POST', '/restores', { backup_id: b.backup_id, disk_index: disk });
    const p = panel('restore-panel', 'Restore export');
    p.append(restoreView(r, () => p.replaceChildren(notice('ok', 'The export ' + r.restore_id + ' is closed.'))));
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    panel('restore-panel', 'Restore export', notice('error', 'The export did not open: ', errText(e)));
  }
}

function openDelete (b, all) {
  const deps = descendants(b.backup_id, all);
  const p = panel('delete-panel', 'Delete a backup',
    el('p', {}, 'Delete ', el('span.mono', {}, b.backup_id), ' (' + b.backup_type + ', ',
      fmtTime(b.created_at), ')?'),
    deps.length
      ? [el('p', {}, el('strong', {}, deps.length + ' backup' + (deps.length === 1 ? ' is' : 's are') +
        ' built on it and will be deleted with it:')),
      el('ul#cascade', {}, deps.map(d => el('li', { data: { backup: d.backup_id } },
        el('span.mono', {}, d.backup_id), ' ', badge(d.status), ' ' + d.backup_type + ', ', fmtTime(d.created_at))))]
      : el('p', {}, 'No other backup is built on it.'));
  const out = el('div');
  p.append(el('div.actions', {},
    button(deps.length ? 'Delete ' + (deps.length + 1) + ' backups' : 'Delete it', async (ev) => {
      ev.target.disabled = true;
      try {
        const r = await api('DELETE', '/backups/' + enc(b.backup_id) + (deps.length ? '?cascade=true' : ''));
        document.getElementById('actions-out')
          .replaceChildren(notice('ok', 'Deleted: ', r.deleted_backups.join(', ')));
        p.remove();
        route();
      } catch (e) {
        if (e instanceof Unauthorized) return showLogin();
        ev.target.disabled = false;
        out.replaceChildren(notice('error', 'Nothing was deleted: ', errText(e)));
      }
    }, 'danger', { data: { action: 'confirm-delete' } }),
    button('Cancel', () => p.remove(), 'quiet')), out);
}

// Follow a task (prune or verify) until it ends; calls done(task).
async function followTask (id, line, done) {
  try {
    const t = await api('GET', '/tasks/' + enc(id));
    line.replaceChildren('Task ', el('span.mono', {}, t.task_id), ': ', badge(t.status),
      t.steps_total ? ' ' + t.steps_done + '/' + t.steps_total + ' steps' : '',
      t.message ? ' — ' + t.message : '', t.error ? ' — ' + t.error : '');
    if (t.status === 'running') {
      setTimeout(() => { if (line.isConnected) followTask(id, line, done); }, POLL_MS);
    } else done(t);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    line.replaceChildren(notice('error', errText(e)));
  }
}

async function startVerify (path, what) {
  const p = panel('verify-panel', 'Verify');
  try {
    const r = await api('POST', path, {});
    const line = el('p.task');
    p.append(el('p', {}, 'Verifying ', what, ': every block of every file its chain needs is read and ' +
      'checked against the manifests.'), line);
    followTask(r.task_id, line, (t) => {
      const pts = t.result && t.result.points ? t.result.points : [];
      const bad = pts.filter(x => x.verify_state === 'corrupt');
      line.after(bad.length
        ? notice('error', bad.length + ' point(s) corrupt: ', bad.map(x => x.backup_id).join(', '))
        : notice(t.status === 'completed' ? 'ok' : 'error',
          t.status === 'completed' ? pts.length + ' point(s) verified, all good.' : 'The task failed.'));
      route();
    });
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin();
    p.append(notice('error', 'The verify did not start: ', errText(e)));
  }
}

function openPrune (c) {
  const rules = ['keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'];
  const inputs = Object.fromEntries(rules.map(r => [r, el('input', {
    type: 'number', min: 0, max: 100000, id: 'prune-' + r, name: r, placeholder: 'policy'
  })]));
  const out = el('div#prune-out');
  const body = () => {
    const b = {};
    for (const r of rules) if (inputs[r].value !== '') b[r] = Number(inputs[r].value);
    return b;
  };
  const dry = async () => {
    const b = body();
    try {
      const r = await api('POST', '/contexts/' + enc(c.context_id) + '/prune', { ...b, dry_run: true });
      out.replaceChildren(
        el('p', {}, 'Dry run: ' + r.keep.length + ' kept, ' + r.remove.length + ' to remove.'),
        el('div.cols', {},
          el('div', {}, el('h3', {}, 'Kept'), el('ul#prune-keep', {}, r.keep.map(id => el('li.mono', {}, id)))),
          el('div', {}, el('h3', {}, 'Removed'), el('ul#prune-remove', {}, r.remove.map(id => el('li.mono', {}, id))))),
        r.remove.length
          ? button('Prune ' + r.remove.length + ' backup' + (r.remove.length === 1 ? '' : 's'), async (ev) => {
            ev.target.disabled = true;
            try {
              const t = await api('POST', '/contexts/' + enc(c.context_id) + '/prune', b);
              const line = el('p.task');
              out.replaceChildren(line);
              if (t.task_id) followTask(t.task_id, line, () => route());
              else line.textContent = 'Nothing to remove.';
            } catch (e) {
              if (e instanceof Unauthorized) return showLogin();
              out.append(notice('error', errText(e)));
            }
          }, 'danger', { data: { action: 'confirm-prune' } })
          : el('p.muted', {}, 'Nothing to prune.'));
    } catch (e) {
      if (e instanceof Unauthorized) return showLogin();
      out.replaceChildren(notice('error', errText(e)));
    }
  };
  panel('prune-panel', 'Prune ' + c.vm_name + ' in ' + c.repository_id,
    el('p.muted', {}, 'Leave a rule empty to use the VM policy\'s retention. The newest point and protected points always stay.'),
    el('div.rules', {}, rules.map(r => el('label', {}, r.replace('keep_', 'keep '), inputs[r]))),
    el('div.actions', {}, button('Dry run', dry, 'primary', { data: { action: 'dry-run' } })), out);
  dry();
}

// ------------------------------------------------------------ jobs ----

function progressOf (d) {
  const p = d.progress;
  if (d.status === 'completed') return el('span', {}, badge('completed'), ' ', fmtBytes(d.bytes_transferred), ' written');
  if (d.status !== 'running') return badge(d.status);
  if (!p) return el('span.muted', {}, 'no progress reported yet');
  const pct = p.bytes_total > 0 ? Math.min(100, 100 * p.bytes_done / p.bytes_total) : 0;
  const eta = p.rate_bytes_per_sec > 0 && p.bytes_total > 0
    ? fmtDuration((p.bytes_total - p.bytes_done) / p.rate_bytes_per_sec) : '—';
  return el('div.progress', { data: { done: p.bytes_done, total: p.bytes_total } },
    el('progress', { max: 100, value: pct.toFixed(1) }),
    el('span.pct', {}, p.bytes_total > 0 ? pct.toFixed(1) + ' %' : 'mapping the source…'),
    el('span', {}, ' ' + fmtBytes(p.bytes_done) + ' of ' + fmtBytes(p.bytes_total)),
    el('span.rate', {}, ' · ' + fmtBytes(p.rate_bytes_per_sec) + '/s'),
    el('span.eta', {}, ' · ETA ' + eta));
}

function jobCard (b) {
  return el('article.job', { data: { backup: b.backup_id, status: b.status } },
    el('header', {},
      el('a.vm', { href: '#/vm/' + enc(b.vm_name) }, b.vm_name), ' ',
      badge(b.status), ' ', b.backup_type, ' · ', b.driver === 'hub' ? 'hub-driven' : 'agent',
      ' · ', b.repository_id, ' · started ', timeEl(b.created_at)),
    el('div.mono.muted', {}, b.backup_id),
    el('table.disks', {}, el('tbody', {}, b.disks.map(d => el('tr', { data: { disk: d.disk_index } },
      el('th', { scope: 'row' }, 'disk ' + d.disk_index), el('td', {}, d.backup_type),
      el('td.wide', {}, progressOf(d)))))));
}

async function showJobs (seq) {
  const [run, fin, recent] = await Promise.all([
    api('GET', '/backups?status=running&limit=1000'),
    api('GET', '/backups?status=finishing&limit=1000'),
    api('GET', '/backups?limit=10')
  ]);
  if (!current(seq)) return;
  showChrome(true);
  const jobs = run.backups.concat(fin.backups);
  const ended = recent.backups.filter(b => !RUNNING.has(b.status));
  setMain(
    el('h1', {}, 'Running jobs'),
    el('p.muted', { id: 'updated' }, 'Updated ', new Date().toLocaleTimeString(), ', every 2 s.'),
    jobs.length ? el('div#jobs', {}, jobs.map(jobCard)) : el('p#no-jobs.muted', {}, 'No backup is running.'),
    el('h2', {}, 'Recently ended'),
    ended.length
      ? el('table#recent.grid', {},
        el('thead', {}, el('tr', {}, ['VM', 'Backup', 'Status', 'Ended'].map(t => el('th', { scope: 'col' }, t)))),
        el('tbody', {}, ended.map(b => el('tr', { data: { backup: b.backup_id } },
          el('td', {}, el('a', { href: '#/vm/' + enc(b.vm_name) }, b.vm_name)),
          el('td.mono', {}, b.backup_id),
          el('td', {}, badge(b.status), b.error ? el('div.why', {}, b.error) : null),
          el('td', {}, timeEl(b.completed_at || b.created_at))))))
      : el('p.muted', {}, 'None.'));
  pollAgain(seq, (s) => showJobs(s).catch(e => failed(s, e)));
}

// -------------------------------------------------------- restores ----

async function showRestores (seq) {
  const r = await api('GET', '/restores');
  if (!current(seq)) return;
  showChrome(true);
  setMain(el('h1', {}, 'Restore exports'),
    el('p.muted', {}, 'Open read-only NBD exports of backed-up disks. Open one from a VM\'s page; ' +
      'they end when the hub stops.'),
    r.restores.length
      ? el('div#restores', {}, r.restores.map(x => el('section.panel', {},
        restoreView(x, () => route()))))
      : el('p#no-restores.muted', {}, 'No restore export is open.'));
}

// ------------------------------------------------------------ start ----

document.getElementById('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin('Signed out.');
});
window.addEventListener('hashchange', route);
route();
