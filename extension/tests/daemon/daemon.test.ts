/** The real daemon (`leeward daemon --stdio`), driven over vscode-jsonrpc as VS Code drives it,
 * against an embedded fleet (`leeward up`) in a sandboxed HOME: every result and notification
 * the extension reads is checked against the generated TypeScript types (camelCase, every key,
 * each value's kind). Runs when LEEWARD_DAEMON_TEST=1 (scripts/test sets it); it needs the
 * repository's .venv (scripts/setup). */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  createMessageConnection,
  ResponseError,
  StreamMessageReader,
  StreamMessageWriter,
  type MessageConnection,
} from 'vscode-jsonrpc/node';

import type {
  AnnouncementList,
  DaemonStatus,
  Environment,
  EnvironmentsResult,
  HealthRecord,
} from '../../src/protocol/generated';
import {
  AccountSignInRequest,
  AnnouncementsDismissRequest,
  AnnouncementsListRequest,
  AnnouncementsNotification,
  BackupsListRequest,
  BackupsNowRequest,
  BackupsShowRequest,
  CatalogGetRequest,
  EnvironmentsConnectRequest,
  EnvironmentsCreateRequest,
  EnvironmentsDeleteRequest,
  EnvironmentsExtendRequest,
  EnvironmentsListRequest,
  EnvironmentsNotification,
  HealthListRequest,
  HealthNotification,
  NotificationsListRequest,
  StatusGetRequest,
  StatusNotification,
} from '../../src/protocol/methods';
import * as wire from './wire';

const enabled = process.env.LEEWARD_DAEMON_TEST === '1';
const repo = path.resolve(__dirname, '..', '..', '..');
const venv = path.join(repo, '.venv', 'bin');
const leeward = path.join(venv, 'leeward');

interface Progress {
  kind: 'begin' | 'report' | 'end';
  message?: string;
  title?: string;
}

/** A sandboxed user: HOME and XDG_* in a temporary directory, nothing of the real user's. */
class Sandbox {
  readonly root = mkdtempSync(path.join(tmpdir(), 'leeward-daemon-test-'));
  readonly env: NodeJS.ProcessEnv;

  constructor() {
    const home = path.join(this.root, 'home');
    mkdirSync(home);
    this.env = Object.fromEntries(
      Object.entries(process.env).filter(([key]) => !/^(XDG_|LEEWARD_|SSH_AUTH_SOCK$)/.test(key)),
    );
    Object.assign(this.env, {
      HOME: home,
      XDG_CONFIG_HOME: path.join(this.root, 'config'),
      XDG_DATA_HOME: path.join(this.root, 'data'),
      XDG_STATE_HOME: path.join(this.root, 'state'),
      NO_COLOR: '1',
      COLUMNS: '200',
    });
  }

  run(...args: string[]): { code: number | null; stdout: string; stderr: string } {
    const result = spawnSync(leeward, args, {
      env: this.env,
      cwd: this.root,
      encoding: 'utf8',
      timeout: 120_000,
      input: '',
    });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  check(...args: string[]): string {
    const result = this.run(...args);
    assert.equal(
      result.code,
      0,
      `leeward ${args.join(' ')} exited ${result.code}\n${result.stdout}\n${result.stderr}`,
    );
    return result.stdout;
  }
}

/** The daemon as a child process with a JSON-RPC connection on its stdio, and everything it
 * sent unasked. */
class DaemonProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly connection: MessageConnection;
  readonly health: HealthRecord[] = [];
  readonly lists: EnvironmentsResult[] = [];
  readonly statuses: DaemonStatus[] = [];
  readonly announcements: AnnouncementList[] = [];
  readonly progress = new Map<string, Progress[]>();
  readonly logs: string[] = [];
  stderr = '';
  private waiters: (() => void)[] = [];

  constructor(sandbox: Sandbox) {
    this.child = spawn(leeward, ['daemon', '--stdio'], { env: sandbox.env, cwd: sandbox.root });
    this.child.stderr.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.connection = createMessageConnection(
      new StreamMessageReader(this.child.stdout),
      new StreamMessageWriter(this.child.stdin),
    );
    const c = this.connection;
    c.onNotification(HealthNotification, (record) => {
      wire.expectShape(wire.healthRecord, record, 'leeward/health');
      this.health.push(record);
      this.poke();
    });
    c.onNotification(EnvironmentsNotification, (result) => {
      wire.expectShape(wire.environmentsResult, result, 'leeward/environments');
      this.lists.push(result);
      this.poke();
    });
    c.onNotification(StatusNotification, (status) => {
      wire.expectShape(wire.daemonStatus, status, 'leeward/status');
      this.statuses.push(status);
      this.poke();
    });
    c.onNotification(AnnouncementsNotification, (list) => {
      wire.expectShape(wire.announcementList, list, 'leeward/announcements');
      this.announcements.push(list);
      this.poke();
    });
    c.onNotification('$/progress', (params: { token: string | number; value: Progress }) => {
      const token = String(params.token);
      this.progress.set(token, [...(this.progress.get(token) ?? []), params.value]);
      this.poke();
    });
    c.onNotification('window/logMessage', (params: { message: string }) => {
      this.logs.push(params.message);
    });
    c.onRequest('window/workDoneProgress/create', () => null);
    c.listen();
  }

  private poke(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Waits for notifications until `probe()` gives something. */
  async until<T>(what: string, probe: () => T | undefined | false, seconds = 60): Promise<T> {
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const found = probe();
      if (found !== undefined && found !== false) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  lastHealth(id: string): HealthRecord | undefined {
    return this.health.filter((r) => r.environmentId === id).at(-1);
  }

  async stop(): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', resolve));
    if (this.child.exitCode !== null) return this.child.exitCode;
    try {
      await withTimeout(this.connection.sendRequest('shutdown'), 15_000, 'shutdown');
      await this.connection.sendNotification('exit');
    } catch {
      this.child.kill('SIGTERM');
    }
    const code = await withTimeout(exited, 15_000, 'the daemon to exit').catch(() => {
      this.child.kill('SIGKILL');
      return null;
    });
    this.connection.dispose();
    return code;
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function errorOf(promise: Promise<unknown>): Promise<ResponseError> {
  try {
    const result = await promise;
    assert.fail(`expected an error, got ${JSON.stringify(result)}`);
  } catch (error) {
    assert.ok(error instanceof ResponseError, `a JSON-RPC error: ${String(error)}`);
    return error;
  }
}

/** One sentence for the user: no traceback, no Python reprs. */
function assertSentence(message: string): void {
  assert.doesNotMatch(message, /Traceback|File "|\n\s+at /);
  assert.ok(message.length > 0 && message.length < 400, message);
}

describe(
  'the daemon over vscode-jsonrpc',
  { skip: !enabled && 'set LEEWARD_DAEMON_TEST=1' },
  () => {
    let sandbox: Sandbox;
    let daemon: DaemonProcess;
    let fleetUrl: string;
    let box: Environment;

    before(() => {
      assert.ok(existsSync(leeward), `${leeward} is missing: run scripts/setup`);
      sandbox = new Sandbox();
      const config = path.join(sandbox.root, 'data', 'leeward', 'fleet', 'fleet.toml');
      const made = spawnSync(
        path.join(venv, 'python'),
        [path.join(__dirname, 'make_fleet_config.py'), config],
        { encoding: 'utf8' },
      );
      assert.equal(made.status, 0, made.stderr);
      fleetUrl = `http://127.0.0.1:${made.stdout.trim()}`;
      const up = sandbox.check('up');
      assert.match(up, /Signed in as/);
      daemon = new DaemonProcess(sandbox);
    });

    after(async () => {
      const code = await daemon?.stop();
      if (sandbox !== undefined) {
        const down = sandbox.run('down');
        if (down.code !== 0) console.error(`leeward down: ${down.stdout}${down.stderr}`);
        if (process.env.LEEWARD_KEEP_SANDBOX !== '1')
          rmSync(sandbox.root, { recursive: true, force: true });
      }
      assert.equal(code, 0, `the daemon exits 0 after shutdown and exit\n${daemon?.stderr ?? ''}`);
    });

    test('initialize takes the settings the extension sends', async () => {
      const result = await daemon.connection.sendRequest('initialize', {
        processId: process.pid,
        clientInfo: { name: 'leeward-extension-test' },
        rootUri: null,
        capabilities: { window: { workDoneProgress: true } },
        initializationOptions: { logLevel: 'debug', probeIntervalSeconds: 0.5 },
      });
      assert.ok(result !== null && typeof result === 'object');
      await daemon.connection.sendNotification('initialized', {});
      await daemon.until('the daemon to reach the fleet', () =>
        daemon.statuses.some((s) => s.fleet === 'connected'),
      );
    });

    test('status: signed in to the fleet', async () => {
      const status = await daemon.connection.sendRequest(StatusGetRequest, {});
      wire.expectShape(wire.daemonStatus, status, 'leeward/status/get');
      assert.equal(status.fleet, 'connected');
      assert.equal(status.fleetUrl?.replace(/\/$/, ''), fleetUrl);
      assert.ok(status.user);
    });

    test('catalog: regions nearest first with RTT and free capacity, lifespan choices', async () => {
      const catalog = await daemon.connection.sendRequest(CatalogGetRequest, {});
      wire.expectShape(wire.daemonCatalog, catalog, 'leeward/catalog/get');
      assert.deepEqual(catalog.regions.map((r) => r.name).sort(), ['north', 'south']);
      const rtts = catalog.regions.map((r) => r.rttMs ?? Infinity);
      assert.deepEqual(
        rtts,
        [...rtts].sort((a, b) => a - b),
        'nearest first',
      );
      assert.ok(catalog.regions.every((r) => r.free.cpus === 8 && r.free.memoryGib === 16));
      assert.deepEqual(
        catalog.flavors.map((f) => f.name),
        ['tiny'],
      );
      assert.deepEqual(
        catalog.profiles.map((p) => p.name),
        ['web'],
      );
      const labels = catalog.lifespanChoices.map((c) => `${c.kind}:${c.label}`);
      assert.ok(labels.includes('devserver:Permanent'), labels.join(', '));
      assert.ok(labels.includes('container:36 hours'), labels.join(', '));
      assert.ok(
        catalog.defaultRegion === null ||
          catalog.regions.some((r) => r.name === catalog.defaultRegion),
      );
    });

    test('create reports $/progress on the token the extension made, stage by stage', async () => {
      const token = 'extension-create-1';
      box = await daemon.connection.sendRequest(EnvironmentsCreateRequest, {
        request: {
          kind: 'devserver',
          flavor: 'tiny',
          region: 'north',
          lifespan: 'temporary',
          hours: 8,
        },
        workDoneToken: token,
      });
      wire.expectShape(wire.environment, box, 'leeward/environments/create');
      assert.equal(box.state, 'running');
      assert.equal(box.region, 'north');
      assert.equal(box.kind, 'devserver');
      assert.equal(box.flavor, 'tiny');
      assert.ok(box.expiresAt !== null);
      const steps = await daemon.until('the end of the progress', () => {
        const got = daemon.progress.get(token) ?? [];
        return got.at(-1)?.kind === 'end' && got;
      });
      assert.equal(steps[0]?.kind, 'begin');
      const stages = steps
        .filter((s) => s.kind === 'report')
        .map((s) => /^[a-z]+/.exec(s.message ?? '')?.[0]);
      assert.deepEqual(stages, ['placing', 'starting', 'certifying', 'ready']);
    });

    test('the list and its notification carry the new environment', async () => {
      const list = await daemon.connection.sendRequest(EnvironmentsListRequest, {});
      wire.expectShape(wire.environmentsResult, list, 'leeward/environments/list');
      assert.equal(list.stale, false);
      assert.deepEqual(
        list.environments.map((e) => e.id),
        [box.id],
      );
      await daemon.until('a leeward/environments notification with it', () =>
        daemon.lists.some((l) => l.environments.some((e) => e.id === box.id)),
      );
    });

    test('health: the new environment becomes healthy, with RTT, region and host', async () => {
      const healthy = await daemon.until('a healthy record', () => {
        const record = daemon.lastHealth(box.id);
        return record?.state === 'healthy' && record;
      });
      assert.equal(healthy.name, box.name);
      assert.equal(healthy.region, 'north');
      assert.ok(healthy.host);
      assert.ok(healthy.rttMs !== null && healthy.rttMs >= 0);
      const records = await daemon.connection.sendRequest(HealthListRequest, {});
      wire.expectShape(wire.healthList, records, 'leeward/health/list');
      const one = await daemon.connection.sendRequest(HealthListRequest, { environment: box.name });
      assert.deepEqual(
        one.records.map((r) => r.environmentId),
        [box.id],
      );
    });

    test('connect: the alias, the Remote-SSH authority and URI, and an ssh config that works', async () => {
      const result = await daemon.connection.sendRequest(EnvironmentsConnectRequest, {
        environment: box.name,
      });
      wire.expectShape(wire.connectResult, result, 'leeward/environments/connect');
      assert.equal(result.remoteAuthority, `ssh-remote+${result.hostAlias}`);
      assert.equal(
        result.remoteUri,
        `vscode-remote://ssh-remote+${result.hostAlias}${result.remoteHome}`,
      );
      assert.equal(result.environment.id, box.id);
      const config = readFileSync(result.sshConfig, 'utf8');
      assert.match(config, new RegExp(`^Host ${result.hostAlias}\\b`, 'm'));
      // what the extension's terminal runs: ssh -F CONFIG ALIAS
      const ssh = spawnSync(
        'ssh',
        [
          '-F',
          result.sshConfig,
          '-o',
          'BatchMode=yes',
          result.hostAlias,
          'echo',
          'hello',
          'from',
          box.name,
        ],
        { env: sandbox.env, encoding: 'utf8', timeout: 60_000, input: '' },
      );
      assert.equal(ssh.status, 0, ssh.stderr);
      assert.equal(ssh.stdout.trim(), `hello from ${box.name}`);
    });

    test('extend moves the expiry later', async () => {
      const extended = await daemon.connection.sendRequest(EnvironmentsExtendRequest, {
        environment: box.name,
        hours: 2,
      });
      wire.expectShape(wire.environment, extended, 'leeward/environments/extend');
      assert.ok(Date.parse(extended.expiresAt ?? '') > Date.parse(box.expiresAt ?? ''));
    });

    test('announcements and notifications, as the generated types', async () => {
      const posted = JSON.parse(
        sandbox.check('admin', 'announce', 'Wire check **now**', '--region', box.region, '--json'),
      ) as { id: number; revision: number };
      const shown = await daemon.until('the announcement in leeward/announcements', () =>
        daemon.announcements.at(-1)?.announcements.find((a) => a.id === posted.id),
      );
      assert.deepEqual(shown.environments, [box.name]);
      const listed = await daemon.connection.sendRequest(AnnouncementsListRequest, {});
      wire.expectShape(wire.announcementList, listed, 'leeward/announcements/list');
      const dismissed = await daemon.connection.sendRequest(AnnouncementsDismissRequest, {
        id: posted.id,
        revision: posted.revision,
      });
      wire.expectShape(wire.announcement, dismissed, 'leeward/announcements/dismiss');
      assert.equal(dismissed.dismissed, true);
      const mine = await daemon.connection.sendRequest(NotificationsListRequest, {});
      wire.expectShape(wire.notificationList, mine, 'leeward/notifications/list');
    });

    test('backups: list, back up now with $/progress, show, each as the generated types', async () => {
      const before = await daemon.connection.sendRequest(BackupsListRequest, {
        environment: box.name,
      });
      wire.expectShape(wire.backupList, before, 'leeward/backups/list');
      const token = 'extension-backup-1';
      const backup = await daemon.connection.sendRequest(BackupsNowRequest, {
        environment: box.name,
        workDoneToken: token,
      });
      wire.expectShape(wire.backup, backup, 'leeward/backups/now');
      assert.equal(backup.state, 'succeeded', backup.message);
      const steps = daemon.progress.get(token) ?? [];
      assert.equal(steps[0]?.kind, 'begin');
      assert.equal(steps.at(-1)?.kind, 'end');
      const after = await daemon.connection.sendRequest(BackupsListRequest, {
        environment: box.name,
      });
      wire.expectShape(wire.backupList, after, 'leeward/backups/list');
      assert.equal(after.backups[0]?.id, backup.id);
      assert.ok(after.status.lastSuccessAt !== null);
      const home = await daemon.connection.sendRequest(BackupsShowRequest, {
        environment: box.name,
        backup: backup.id,
      });
      wire.expectShape(wire.backupDetail, home, 'leeward/backups/show');
      assert.equal(home.path, '');
    });

    test('errors are one sentence the extension shows as is', async () => {
      const unknown = await errorOf(
        daemon.connection.sendRequest(EnvironmentsCreateRequest, {
          request: { kind: 'devserver', flavor: 'enormous', region: 'north' },
        }),
      );
      assert.match(unknown.message, /enormous/);
      assertSentence(unknown.message);
      const extra = await errorOf(
        daemon.connection.sendRequest(EnvironmentsConnectRequest, {
          environment: box.name,
          colour: 'blue',
        } as unknown as { environment: string }),
      );
      assert.match(extra.message, /colour/);
      assertSentence(extra.message);
      const missing = await errorOf(
        daemon.connection.sendRequest(EnvironmentsExtendRequest, { environment: 'nope', hours: 1 }),
      );
      assertSentence(missing.message);
      const refused = await errorOf(
        daemon.connection.sendRequest(AccountSignInRequest, {
          fleetUrl,
          token: 'not-a-token',
        }),
      );
      assertSentence(refused.message);
      const still = await daemon.connection.sendRequest(StatusGetRequest, {});
      assert.equal(still.fleet, 'connected', 'a refused sign-in keeps the account that worked');
    });

    test('delete: the environment leaves the list', async () => {
      const gone = await daemon.connection.sendRequest(EnvironmentsDeleteRequest, {
        environment: box.name,
      });
      wire.expectShape(wire.environment, gone, 'leeward/environments/delete');
      assert.ok(gone.state === 'deleting' || gone.state === 'deleted', gone.state);
      await daemon.until('a list without it', () =>
        daemon.lists.at(-1)?.environments.every((e) => e.id !== box.id || e.state === 'deleted'),
      );
    });

    test('nothing the daemon logged was a traceback', () => {
      assert.deepEqual(
        daemon.logs.filter((line) => line.includes('Traceback')),
        [],
      );
    });
  },
);
