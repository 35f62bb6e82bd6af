// tests/ops/dashboard.mjs - the dashboard in a real browser: Debian's
// chromium, headless, driven by playwright-core (no browser download).
//
//   node dashboard.mjs open|token FIXTURE.json
//
// tests/ops/test-dashboard.sh starts the hub, makes the backups, writes
// FIXTURE.json (the hub's URL, VM names, backup ids, the token) and turns
// what this prints into TAP:
//   PASS <tab> description
//   FAIL <tab> description <tab> details
// Screenshots go to $STRATA_BUILD/screenshots/.  Every wait is bounded and
// waits for what the page shows, never for a time.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const [phase, fixturePath] = process.argv.slice(2);
const fx = JSON.parse(fs.readFileSync(fixturePath, 'utf8'));
const npm = process.env.STRATA_NPM;
const shots = path.join(process.env.STRATA_BUILD, 'screenshots');
fs.mkdirSync(shots, { recursive: true });
const { chromium } = await import(path.join(npm, 'node_modules/playwright-core/index.mjs'));

const oneLine = (s) => String(s).replace(/\s+/g, ' ').slice(0, 2000);
const pass = (d) => console.log('PASS\t' + d);
const fail = (d, why) => console.log('FAIL\t' + d + '\t' + oneLine(why));
function check (cond, d, why) {
  if (cond) pass(d); else fail(d, why === undefined ? 'false' : why);
  return cond;
}
function is (got, want, d) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  return check(g === w, d, 'got ' + g + ', want ' + w);
}

// A step that throws (a wait that timed out) fails that step and goes on.
async function step (d, fn) {
  try {
    await fn();
  } catch (e) {
    fail(d, e && e.message ? e.message : e);
  }
}

async function apiGet (p, token) {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const r = await fetch(fx.hub + '/api/v1' + p, { headers });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true });
const problems = [];

async function newPage (context) {
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    // A 401 (the login form) and a 400 the page shows (a prune without a
    // retention) are expected; any other error, a CSP refusal included, is not.
    const expected = /Failed to load resource: the server responded with a status of 40[01] /;
    if (m.type() === 'error' && !expected.test(m.text())) problems.push('console: ' + m.text());
  });
  page.on('dialog', (d) => { problems.push('dialog opened: ' + d.message()); d.dismiss(); });
  return page;
}

const shot = (page, name) => page.screenshot({ path: path.join(shots, name + '.png') });
const vmUrl = (name) => fx.hub + '/#/vm/' + encodeURIComponent(name);

// Load the VM's page afresh and wait until it is drawn.
async function gotoVm (page, name) {
  await page.goto('about:blank');
  await page.goto(vmUrl(name));
  await page.waitForFunction((n) => document.getElementById('vm-page')?.dataset.vm === n, name);
}

async function phaseOpen () {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await newPage(context);

  // --- Overview -------------------------------------------------------
  await step('the overview loads', async () => {
    await page.goto(fx.hub + '/');
    await page.waitForSelector('#overview tbody tr');
    pass('the overview loads');
  });
  const rows = await page.$$eval('#overview tbody tr', (trs) => trs.map((tr) => ({
    vm: tr.dataset.vm,
    link: tr.querySelector('td.vm a')?.textContent,
    href: tr.querySelector('td.vm a')?.getAttribute('href'),
    cells: [...tr.cells].map((c) => c.textContent.trim()),
    cls: tr.className
  })));
  const row = (vm) => rows.find((r) => r.vm === vm) || { cells: [], cls: '' };
  is(rows.map((r) => r.vm).sort(), fx.vms.slice().sort(), 'the overview has a row for each VM');
  is(row(fx.web).cells[4], '3', fx.web + ': 3 points');
  check(/completed/.test(row(fx.web).cells[3]), fx.web + ': last status completed', row(fx.web).cells[3]);
  check(/\d/.test(row(fx.web).cells[2]) && /ago|just now/.test(row(fx.web).cells[2]),
    fx.web + ': the last backup with its age', row(fx.web).cells[2]);
  check(/MiB|KiB/.test(row(fx.web).cells[5]), fx.web + ': bytes used shown', row(fx.web).cells[5]);
  is(row(fx.web).cells[6], 'unverified', fx.web + ': not verified yet');
  check(/cancelled/.test(row(fx.del).cells[3]) && !/row-failed/.test(row(fx.del).cls),
    fx.del + ': a cancelled last job is said, not flagged as a failure', JSON.stringify(row(fx.del)));
  check(/failed/.test(row(fx.fail).cells[3]) && /row-failed/.test(row(fx.fail).cls),
    fx.fail + ': its failure stands out (class and the word)', JSON.stringify(row(fx.fail)));
  check(row(fx.fail).cells[3].includes(fx.failError), fx.fail + ': the failure says why', row(fx.fail).cells[3]);
  check(/overdue/.test(row(fx.late).cells[3]) && /row-overdue/.test(row(fx.late).cls),
    fx.late + ': overdue stands out (class and the word)', JSON.stringify(row(fx.late)));
  check(!/row-failed|row-overdue/.test(row(fx.web).cls) && !/overdue|failed/.test(row(fx.web).cells[3]),
    fx.web + ' does not stand out', JSON.stringify(row(fx.web)));
  is(row(fx.evil).link, fx.evil, 'a VM name with markup is shown as text, exactly');
  is(row(fx.evil).href, '#/vm/' + encodeURIComponent(fx.evil), 'and links to its page, encoded');
  const injected = await page.$$eval('main script, main img, [onerror]', (n) => n.length);
  is(injected, 0, 'no element came out of the catalog\'s text');
  const counts = await page.textContent('#counts');
  check(/2 failing/.test(counts) && /1 overdue/.test(counts), 'the overview counts the failing and overdue VMs', counts);
  await shot(page, 'overview');

  // --- VM page: the chain ---------------------------------------------
  await step('the VM page draws the chain', async () => {
    await gotoVm(page, fx.web);
    await page.waitForSelector('.disk[data-disk="0"] .lane .point');
    const lanes = await page.$$eval('.disk[data-disk="0"] .lane:not(.attempts)', (ls) => ls.map((l) =>
      [...l.querySelectorAll('.point')].map((p) => ({
        id: p.dataset.backup, parent: p.dataset.parent, kind: p.querySelector('.kind').textContent
      }))));
    is(lanes.length, 1, 'disk 0 of ' + fx.web + ' is one chain');
    is(lanes[0].map((p) => p.id), fx.webPoints, 'its points in chain order');
    is(lanes[0].map((p) => p.parent), ['', fx.webPoints[0], fx.webPoints[1]], 'each backed by the one before');
    is(lanes[0].map((p) => p.kind), ['full', 'incremental', 'incremental'], 'a full, then incrementals');
    is(await page.$$eval('.disk[data-disk="0"] .lane.attempts .point', (ps) => ps.map((p) => p.dataset.backup)),
      [fx.webFailed], 'its failed attempt is drawn apart');
    const sizes = await page.$$eval('.disk[data-disk="0"] .point .size', (s) => s.map((x) => x.textContent));
    check(sizes.length === 3 && sizes.every((s) => /\d.* written/.test(s)), 'each point shows its size', sizes.join('|'));
  });
  await shot(page, 'vm');

  await step('failed attempts in a lane apart', async () => {
    await gotoVm(page, fx.fail);
    await page.waitForSelector('.disk[data-disk="0"] .lane.attempts .point');
    const att = await page.$$eval('.lane.attempts .point', (ps) => ps.map((p) => ({ id: p.dataset.backup, t: p.textContent })));
    is(att.map((a) => a.id), [fx.failBackup], 'the failed job is in the attempts lane of ' + fx.fail);
    check(att[0] && att[0].t.includes('failed') && att[0].t.includes(fx.failError), 'with its status and error',
      att[0] && att[0].t);
    const chain = await page.$$eval('.lane:not(.attempts) .point', (ps) => ps.map((p) => p.dataset.backup));
    check(!chain.includes(fx.failBackup), 'and not in the chain', chain.join(' '));
  });

  await step('the page of the VM with markup in its name', async () => {
    await gotoVm(page, fx.evil);
    await page.waitForSelector('#vm-name');
    is(await page.textContent('#vm-name'), fx.evil, 'its name is shown as text');
    is(await page.$$eval('main script, main img, [onerror]', (n) => n.length), 0, 'nothing injected there either');
    is(await page.$$eval('.point', (ps) => ps.map((p) => p.dataset.backup)), [fx.evilBackup], 'its agent backup is drawn');
  });

  // --- A restore export ------------------------------------------------
  await step('open a restore export', async () => {
    await gotoVm(page, fx.web);
    const newest = fx.webPoints[2];
    await page.click(`tr[data-backup="${newest}"] button[data-action="restore"][data-disk="0"]`);
    const uri = await (await page.waitForSelector('#restore-panel code.uri')).textContent();
    check(/^nbds:\/\/restore-[A-Za-z0-9._-]+@127\.0\.0\.1:\d+\/strata-[0-9a-f]{32}$/.test(uri), 'the page shows the restore\'s NBD URI', uri);
    const listed = await apiGet('/restores');
    is(listed.body.restores.map((r) => r.nbd_uri + ' ' + r.backup_id), [uri + ' ' + newest], 'the hub has that export open');
    const cmds = await page.$$eval('#restore-panel dl.commands code', (c) => c.map((x) => x.textContent));
    const exp = uri.replace(/^.*\//, '');
    check(cmds.some((c) => c.startsWith('(umask 077') && c.includes('keys.psk')) &&
      cmds.some((c) => c.startsWith('qemu-img convert') && c.includes(exp)) &&
      cmds.some((c) => c.startsWith('nbdcopy') && c.includes(uri + '?tls-psk-file=keys.psk')),
    'with the commands that save its key and read it', cmds.join(' | '));
    // The commands as shown, run as they are (in a folder of the test's).
    const dir = fs.mkdtempSync(path.join(fx.tmp, 'restore-'));
    for (const c of cmds.filter((x) => /^(\(umask 077|qemu-img convert|nbdcopy) /.test(x))) {
      execFileSync('sh', ['-c', c], { cwd: dir, stdio: 'ignore' });
    }
    const size = execFileSync('nbdinfo', ['--size', uri + '?tls-psk-file=' + path.join(dir, 'keys.psk')]).toString().trim();
    is(size, String(fx.webSize), 'the URI serves the disk with the key shown (nbdinfo)');
    for (const [file, fmt] of [['restored.qcow2', 'qcow2'], ['restored.raw', 'raw']]) {
      let same = true;
      try {
        execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', fmt, fx.webLast, path.join(dir, file)]);
      } catch { same = false; }
      check(same, 'the command that writes ' + file + ' restores the point');
    }
    await shot(page, 'restore');

    await page.click('#nav a[data-page="restores"]');
    await page.waitForSelector('#restores code.uri');
    is(await page.textContent('#restores code.uri'), uri, 'the restores page lists it');
    await page.click('#restores button[data-action="close-restore"]');
    await page.waitForSelector('#no-restores');
    is((await apiGet('/restores')).body.restores.length, 0, 'closing it there removes the export');
  });

  // --- Verify and prune (dry run) --------------------------------------
  await step('verify every point', async () => {
    await gotoVm(page, fx.web);
    await page.click('button[data-action="verify-context"]');
    const t = await (await page.waitForSelector('#verify-panel .notice')).textContent();
    check(/3 point\(s\) verified, all good/.test(t), 'the verify task ends and says so', t);
    await page.click('#nav a[data-page="overview"]');
    const v = await (await page.waitForSelector(`#overview tr[data-vm="${fx.web}"] td:nth-child(7)`)).textContent();
    is(v, 'ok', 'the overview then shows ' + fx.web + ' verified ok');
  });
  await step('prune: the dry run first', async () => {
    await gotoVm(page, fx.web);
    await page.click('button[data-action="prune"]');
    const err = await (await page.waitForSelector('#prune-out .notice.error')).textContent();
    check(/retention/.test(err), 'without a policy retention the hub\'s reason is shown', err);
    await page.fill('#prune-keep_last', '1');
    await page.click('button[data-action="dry-run"]');
    await page.waitForSelector('#prune-remove li');
    is(await page.$$eval('#prune-remove li', (l) => l.map((x) => x.textContent)), [fx.webPoints[1], fx.webPoints[0]],
      'keep_last 1 would remove the two older points');
    is((await apiGet('/backups?status=completed&vm_name=' + encodeURIComponent(fx.web))).body.total, 3,
      'a dry run removes nothing');
  });

  // --- Start a backup, follow it live ----------------------------------
  await step('start a backup from the page', async () => {
    await gotoVm(page, fx.slow);
    await page.click('button[data-action="backup"]');
    const started = await (await page.waitForSelector('#actions-out .notice.ok')).textContent();
    const id = (/backup-\S+/.exec(started) || [''])[0];
    const job = await apiGet('/backups/' + id);
    is(job.body && job.body.driver + '/' + job.body.vm_name, 'hub/' + fx.slow, 'the page started a hub-driven backup');

    await page.click('#nav a[data-page="jobs"]');
    await page.evaluate(() => { window.stillThisPage = true; });
    const sel = `article.job[data-backup="${id}"] .progress`;
    await page.waitForFunction((s) => Number(document.querySelector(s)?.dataset.total) > 0, sel);
    const first = Number(await page.getAttribute(sel, 'data-done'));
    await page.waitForFunction(([s, f]) => {
      const p = document.querySelector(s);
      return p && Number(p.dataset.done) > f;
    }, [sel, first]);
    const text = await page.textContent(sel);
    check(/%/.test(text) && /\/s/.test(text) && /ETA \d/.test(text), 'the jobs page shows progress, rate and ETA', text);
    check(await page.evaluate(() => window.stillThisPage === true), 'and updates it without a reload');
    await shot(page, 'jobs');
    await page.waitForSelector(`#recent tr[data-backup="${id}"] .st-completed`, { timeout: 120000 });
    pass('the job is seen to complete on the jobs page');
    is((await apiGet('/backups/' + id)).body.status, 'completed', 'the hub says completed too');
  });

  // --- Delete with its cascade shown first -----------------------------
  await step('delete with the cascade shown first', async () => {
    await gotoVm(page, fx.del);
    await page.click(`tr[data-backup="${fx.delFull}"] button[data-action="delete"]`);
    await page.waitForSelector('#cascade li');
    is(await page.$$eval('#cascade li', (l) => l.map((x) => x.dataset.backup).sort()), fx.delDeps.slice().sort(),
      'the backups built on it are listed (by parent links)');
    is((await apiGet('/backups?vm_name=' + encodeURIComponent(fx.del))).body.total, 1 + fx.delDeps.length,
      'nothing is deleted before confirming');
    await shot(page, 'delete');
    await page.click('button[data-action="confirm-delete"]');
    const done = await (await page.waitForSelector('#actions-out .notice.ok')).textContent();
    check(fx.delDeps.every((d) => done.includes(d)) && done.includes(fx.delFull), 'the page says what was deleted', done);
    is((await apiGet('/backups?vm_name=' + encodeURIComponent(fx.del))).body.total, 0, 'the hub has none of them left');
  });

  is(problems, [], 'no script error, CSP violation or dialog in the page');
  await context.close();
}

async function phaseToken () {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await newPage(context);
  const apiCalls = [];
  page.on('response', (r) => {
    if (r.url().includes('/api/')) apiCalls.push(r.status() + ' ' + r.request().headers().authorization);
  });

  await page.goto(fx.hub + '/');
  await page.waitForSelector('form#login');
  pass('without a token the page shows the login form');
  is(await page.$$eval('#overview, .vm-head, #jobs', (n) => n.length), 0, 'and nothing else');
  check(!(await page.textContent('body')).includes(fx.web), 'no catalog data is in the page');
  check(apiCalls.length > 0 && apiCalls.every((c) => c.startsWith('401 ')), 'every API call it made was refused',
    apiCalls.join(', '));
  check(await page.isHidden('#nav'), 'the navigation is hidden');
  await shot(page, 'login');

  await page.fill('#token', 'not-the-token');
  await page.click('form#login button[type="submit"]');
  await page.waitForFunction(() => /refused/.test(document.getElementById('login-error')?.textContent));
  pass('a wrong token is refused');
  check(await page.isVisible('form#login'), 'the login form stays');
  is(await page.evaluate(() => sessionStorage.length), 0, 'and no token is kept');

  await page.fill('#token', fx.token);
  await page.click('form#login button[type="submit"]');
  await page.waitForSelector('#overview');
  check((await page.textContent('#overview')).includes(fx.web), 'the right token shows the overview');
  check(apiCalls.slice(-2).every((c) => c === '200 Bearer ' + fx.token), 'API calls carry the bearer token',
    apiCalls.slice(-2).join(', '));
  const stored = await page.evaluate(() => ({ s: Object.values(sessionStorage), l: localStorage.length }));
  is(stored, { s: [fx.token], l: 0 }, 'the token is in sessionStorage only');

  await page.reload();
  await page.waitForSelector('#overview');
  pass('a reload in the same tab stays signed in');

  const other = await browser.newContext();
  const page2 = await newPage(other);
  await page2.goto(fx.hub + '/');
  await page2.waitForSelector('form#login');
  pass('another browser session must sign in itself');
  await other.close();

  await page.click('#logout');
  await page.waitForSelector('form#login');
  is(await page.evaluate(() => sessionStorage.length), 0, 'signing out forgets the token');

  is(problems, [], 'no script error, CSP violation or dialog in the page');
  await context.close();
}

try {
  if (phase === 'open') await phaseOpen();
  else if (phase === 'token') await phaseToken();
  else throw new Error('unknown phase ' + phase);
} catch (e) {
  fail('the ' + phase + ' phase ran to its end', e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
