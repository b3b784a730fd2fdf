import assert from 'node:assert/strict';
import { test } from 'node:test';

import type { NotificationType, RequestType } from 'vscode-jsonrpc';

import {
  CRASH_RESTARTS,
  CRASH_WINDOW_MS,
  Daemon,
  type DaemonClient,
  type DaemonLaunch,
  type DaemonProcessOptions,
} from '../../src/common/daemon';
import type { ProgressListener } from '../../src/common/daemonApi';
import { Emitter } from '../../src/common/events';
import type { DaemonState } from '../../src/common/status';
import type { Environment, HealthRecord } from '../../src/protocol/generated';
import { StatusGetRequest } from '../../src/protocol/methods';
import { daemonStatus, environment, health } from '../support/fixtures';

/** A client whose start the test releases, and which answers requests from `answers`. */
class FakeClient implements DaemonClient {
  isStopped = true;
  started = false;
  stops = 0;
  readonly sent: { method: string; params: unknown }[] = [];
  readonly answers = new Map<string, (params: unknown) => unknown>();
  private readonly handlers = new Map<string, (params: unknown) => void>();
  private readonly progress = new Map<string, ProgressListener>();
  private readonly states = new Emitter<'starting' | 'running' | 'stopped'>();
  private release!: (error?: Error) => void;
  readonly startGate = new Promise<void>((resolve, reject) => {
    this.release = (error) => (error ? reject(error) : resolve());
  });

  constructor(readonly options: DaemonProcessOptions) {}

  async start(): Promise<void> {
    this.states.fire('starting');
    await this.startGate;
    this.isStopped = false;
    this.started = true;
    this.states.fire('running');
  }
  finishStart(error?: Error): void {
    this.release(error);
  }
  stop(): Promise<void> {
    this.stops++;
    this.isStopped = true;
    this.states.fire('stopped');
    return Promise.resolve();
  }
  crash(): void {
    this.isStopped = true;
    this.states.fire('stopped');
  }
  async sendRequest<P, R>(type: RequestType<P, R, void>, params: P): Promise<R> {
    this.sent.push({ method: type.method, params });
    const answer = this.answers.get(type.method);
    if (answer === undefined) throw new Error(`no answer for ${type.method}`);
    return answer(params) as R;
  }
  onNotification<P>(type: NotificationType<P>, handler: (params: P) => void) {
    this.handlers.set(type.method, handler as (params: unknown) => void);
    return { dispose: () => this.handlers.delete(type.method) };
  }
  notify(method: string, params: unknown): void {
    this.handlers.get(method)?.(params);
  }
  onWorkDoneProgress(token: string, handler: ProgressListener) {
    this.progress.set(token, handler);
    return { dispose: () => this.progress.delete(token) };
  }
  reportProgress(token: string, message: string | undefined, percentage?: number): void {
    this.progress.get(token)?.(message, percentage);
  }
  get progressTokens(): string[] {
    return [...this.progress.keys()];
  }
  onDidChangeState(listener: (state: 'starting' | 'running' | 'stopped') => void) {
    return this.states.event(listener);
  }
}

const found: DaemonLaunch = {
  command: { found: true, command: '/venv/bin/leeward', source: 'setting' },
  settings: { logLevel: 'debug' },
  cwd: '/work/repo',
};

function harness(launch: () => DaemonLaunch = () => found, clock = { now: 0 }) {
  const clients: FakeClient[] = [];
  const logged: string[] = [];
  const states: DaemonState[] = [];
  const daemon = new Daemon(
    {
      info: (m) => logged.push(`info: ${m}`),
      warn: (m) => logged.push(`warn: ${m}`),
      error: (m) => logged.push(`error: ${m}`),
    },
    () => Promise.resolve(launch()),
    (options) => {
      const client = new FakeClient(options);
      clients.push(client);
      return client;
    },
    () => clock.now,
  );
  daemon.onDidChangeState((state) => states.push(state));
  return { daemon, clients, logged, states };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('starts `leeward daemon --stdio` with the settings as initializationOptions', async () => {
  const { daemon, clients, states } = harness();
  const started = daemon.restart();
  await tick();
  clients[0]?.finishStart();
  await started;
  assert.deepEqual(clients[0]?.options, {
    command: '/venv/bin/leeward',
    args: ['daemon', '--stdio'],
    cwd: '/work/repo',
    settings: { logLevel: 'debug' },
  });
  assert.equal(daemon.state, 'running');
  assert.deepEqual(states, ['starting', 'running']);
});

test('restarts are serialised: requests during one make one more, after it', async () => {
  const { daemon, clients } = harness();
  const first = daemon.restart();
  await tick();
  const second = daemon.restart();
  const third = daemon.restart();
  await tick();
  assert.equal(clients.length, 1, 'no second client while the first starts');
  clients[0]?.finishStart();
  await first;
  await tick();
  assert.equal(clients.length, 2);
  assert.equal(clients[0]?.stops, 1, 'the old daemon stops before the new one starts');
  clients[1]?.finishStart();
  await Promise.all([second, third]);
  assert.equal(clients.length, 2);
  assert.equal(daemon.state, 'running');
});

test('requests wait for a restart in flight, then go to the new daemon', async () => {
  const { daemon, clients } = harness();
  const started = daemon.restart();
  await tick();
  const status = daemonStatus();
  const answered = daemon.request(StatusGetRequest, {});
  await tick();
  clients[0]?.answers.set('leeward/status/get', () => status);
  clients[0]?.finishStart();
  await started;
  assert.deepEqual(await answered, status);
  assert.deepEqual(clients[0]?.sent, [{ method: 'leeward/status/get', params: {} }]);
});

test('no leeward executable: failed, with the reason, and requests say so in one sentence', async () => {
  const { daemon, clients, states } = harness(() => ({
    ...found,
    command: { found: false, reason: 'No leeward executable found: set leeward.daemonPath.' },
  }));
  await daemon.restart();
  assert.equal(clients.length, 0);
  assert.equal(daemon.state, 'failed');
  assert.deepEqual(states, ['starting', 'failed']);
  await assert.rejects(daemon.request(StatusGetRequest, {}), {
    message:
      'The Leeward daemon is not running (No leeward executable found: set leeward.daemonPath); see “Leeward: Show Logs”, then run “Leeward: Restart Daemon”.',
  });
});

test('a daemon that does not start, or stops, is failed until restarted', async () => {
  const { daemon, clients } = harness();
  const started = daemon.restart();
  await tick();
  clients[0]?.finishStart(new Error('spawn /venv/bin/leeward EACCES'));
  await started;
  assert.equal(daemon.state, 'failed');
  assert.equal(daemon.reason, 'spawn /venv/bin/leeward EACCES');

  const again = daemon.restart();
  await tick();
  clients[1]?.finishStart();
  await again;
  assert.equal(daemon.state, 'running');
  assert.equal(daemon.reason, '');

  // One that exits while it starts is not started again (it would only exit again).
  const third = daemon.restart();
  await tick();
  clients[2]?.crash();
  assert.equal(daemon.state, 'failed');
  assert.match(daemon.reason, /stopped while starting/);
  clients[2]?.finishStart(new Error('connection closed during initialize'));
  await third;
  assert.equal(clients.length, 3);
});

/** Started, running; the client of the daemon now running. */
async function running(h: ReturnType<typeof harness>): Promise<FakeClient> {
  const client = h.clients.at(-1);
  assert.ok(client);
  client.finishStart();
  for (let i = 0; i < 5 && h.daemon.state !== 'running'; i++) await tick();
  assert.equal(h.daemon.state, 'running');
  return client;
}

test('a daemon that exits on its own is started again, and fetched from anew', async () => {
  const h = harness();
  const started = h.daemon.restart();
  await tick();
  h.clients[0]?.finishStart();
  await started;
  h.states.length = 0;
  h.clients[0]?.crash();
  assert.equal(h.daemon.state, 'starting', 'not failed: it is being started again');
  await tick();
  assert.equal(h.clients.length, 2);
  await running(h);
  assert.deepEqual(h.states, ['starting', 'running']);
  assert.ok(h.logged.some((line) => line.startsWith('warn: The daemon exited unexpectedly')));
});

test(`at most ${CRASH_RESTARTS} restarts in ${CRASH_WINDOW_MS / 60_000} minutes, then failed with the reason, until restarted`, async () => {
  const clock = { now: 1_000_000 };
  const h = harness(() => found, clock);
  void h.daemon.restart();
  await tick();
  for (let exit = 1; exit <= CRASH_RESTARTS; exit++) {
    const client = await running(h);
    clock.now += 1000;
    client.crash();
    await tick();
  }
  assert.equal(h.clients.length, CRASH_RESTARTS + 1);
  const last = await running(h);
  clock.now += 1000;
  last.crash();
  await tick();
  assert.equal(h.clients.length, CRASH_RESTARTS + 1, 'no more restarts');
  assert.equal(h.daemon.state, 'failed');
  assert.equal(
    h.daemon.reason,
    `The daemon exited ${CRASH_RESTARTS + 1} times in 3 minutes, so it is not started again; its last words are in the Leeward log.`,
  );
  await assert.rejects(h.daemon.request(StatusGetRequest, {}), /not started again/);

  // Leeward: Restart Daemon gives it a new budget.
  void h.daemon.restart();
  await tick();
  const again = await running(h);
  again.crash();
  await tick();
  assert.equal(h.clients.length, CRASH_RESTARTS + 3, 'restarted after the crash');
});

test('exits spread over more than the window are all restarted', async () => {
  const clock = { now: 0 };
  const h = harness(() => found, clock);
  void h.daemon.restart();
  await tick();
  for (let exit = 1; exit <= 3 * CRASH_RESTARTS; exit++) {
    const client = await running(h);
    clock.now += CRASH_WINDOW_MS / CRASH_RESTARTS + 1;
    client.crash();
    await tick();
  }
  await running(h);
  assert.equal(h.clients.length, 3 * CRASH_RESTARTS + 1);
});

test("the daemon's notifications reach the listeners", async () => {
  const { daemon, clients } = harness();
  const started = daemon.restart();
  await tick();
  clients[0]?.finishStart();
  await started;
  const got: unknown[] = [];
  daemon.onHealth((record: HealthRecord) => got.push(record.state));
  daemon.onEnvironments((result) => got.push(result.environments.length));
  daemon.onStatus((status) => got.push(status.fleet));
  const box = environment();
  clients[0]?.notify('leeward/health', health(box));
  clients[0]?.notify('leeward/environments', {
    environments: [box],
    stale: false,
    fetchedAt: null,
    reason: '',
  });
  clients[0]?.notify('leeward/status', daemonStatus({ fleet: 'unreachable' }));
  assert.deepEqual(got, ['healthy', 1, 'unreachable']);
});

test('create sends a progress token of its own and passes on each message', async () => {
  const { daemon, clients } = harness();
  const started = daemon.restart();
  await tick();
  const client = clients[0];
  assert.ok(client);
  client.finishStart();
  await started;
  const box = environment();
  client.answers.set('leeward/environments/create', (params) => {
    const token = (params as { workDoneToken: string }).workDoneToken;
    assert.deepEqual(client.progressTokens, [token]);
    for (const message of ['placing', 'placing: north-h1', undefined, 'ready', 'box is ready']) {
      client.reportProgress(token, message);
    }
    return box;
  });
  const messages: string[] = [];
  const created: Environment = await daemon.create(
    { kind: 'devserver', flavor: 'small' },
    (message) => messages.push(message),
  );
  assert.equal(created, box);
  assert.deepEqual(messages, ['placing', 'placing: north-h1', 'ready', 'box is ready']);
  assert.deepEqual(client.progressTokens, [], 'the progress listener is gone afterwards');
  const sent = client.sent[0]?.params as { request: unknown; workDoneToken: string };
  assert.deepEqual(sent.request, { kind: 'devserver', flavor: 'small' });
  assert.match(sent.workDoneToken, /^leeward-create-/);
});

test('stop stops the client and says stopped', async () => {
  const { daemon, clients } = harness();
  const started = daemon.restart();
  await tick();
  clients[0]?.finishStart();
  await started;
  await daemon.stop();
  assert.equal(clients[0]?.stops, 1);
  assert.equal(daemon.state, 'stopped');
});
