/** Protocol values for unit tests, typed by the generated models, and a fake daemon. */
import type { RequestType } from 'vscode-jsonrpc';

import type { DaemonApi, ProgressListener, WorkDone } from '../../src/common/daemonApi';
import { EnvironmentStore, type Memento } from '../../src/common/environments';
import type { DaemonState } from '../../src/common/status';
import type { CommandContext } from '../../src/commands/context';
import type {
  Backup,
  BackupStatus,
  CreateContainer,
  CreateDevserver,
  DaemonCatalog,
  DaemonStatus,
  Environment,
  HealthRecord,
} from '../../src/protocol/generated';

export const NOW = new Date('2030-01-01T12:00:00Z');

export function environment(overrides: Partial<Environment> = {}): Environment {
  const name = overrides.name ?? 'box';
  const region = overrides.region ?? 'north';
  return {
    id: `e-${name}`,
    name,
    fqdn: `${name}.${region}.leeward.test`,
    kind: 'devserver',
    flavor: 'small',
    profile: null,
    hardware: { cpus: 2, memoryGib: 4, gpus: 0 },
    region,
    host: `${region}-h1`,
    address: '127.110.0.5',
    sshPort: 2222,
    relayPort: 2223,
    migratingFrom: null,
    state: 'running',
    statusMessage: '',
    owner: 'ada',
    lifespan: 'temporary',
    expiresAt: '2030-01-01T20:00:00Z',
    createdAt: '2030-01-01T11:00:00Z',
    updatedAt: '2030-01-01T11:00:00Z',
    readyAt: '2030-01-01T11:00:05Z',
    lastSeenAt: '2030-01-01T11:59:58Z',
    setup: [],
    sync: null,
    backup: null,
    movedTo: null,
    activity: null,
    ...overrides,
  };
}

export function backupStatus(overrides: Partial<BackupStatus> = {}): BackupStatus {
  return {
    lastSuccessAt: '2030-01-01T11:30:00Z',
    lastBackup: 3,
    intervalMinutes: 60,
    running: false,
    overdue: false,
    message: '',
    ...overrides,
  };
}

export function backup(overrides: Partial<Backup> = {}): Backup {
  return {
    id: 3,
    environment: 'box',
    environmentId: 'e-box',
    state: 'succeeded',
    trigger: 'request',
    message: '',
    snapshot: '4f2a9c1e',
    startedAt: '2030-01-01T11:29:50Z',
    finishedAt: '2030-01-01T11:30:00Z',
    progress: 1,
    filesNew: 12,
    filesChanged: 3,
    filesUnmodified: 1219,
    totalFiles: 1234,
    totalBytes: 5 * 1024 * 1024 + 300 * 1024,
    dataAdded: 48 * 1024,
    seconds: 2.5,
    warnings: [],
    ...overrides,
  };
}

export function health(env: Environment, overrides: Partial<HealthRecord> = {}): HealthRecord {
  return {
    environmentId: env.id,
    name: env.name,
    state: 'healthy',
    environmentState: env.state,
    rttMs: 12.4,
    region: env.region,
    host: env.host,
    reason: '',
    fleetReachable: true,
    sessions: 0,
    route: null,
    dnsBypass: false,
    since: '2030-01-01T11:00:05Z',
    checkedAt: '2030-01-01T11:59:59Z',
    ...overrides,
  };
}

export function daemonStatus(overrides: Partial<DaemonStatus> = {}): DaemonStatus {
  return {
    version: '0.1.0',
    fleetUrl: 'http://127.0.0.1:8470',
    user: 'ada',
    fleet: 'connected',
    reason: '',
    lastEventId: 3,
    eventsReceived: 3,
    resyncs: 0,
    logFile: null,
    ...overrides,
  };
}

export const CATALOG: DaemonCatalog = {
  zone: 'leeward.test',
  regions: [
    {
      name: 'north',
      displayName: 'North',
      accepting: true,
      hosts: 2,
      free: { cpus: 8, memoryGib: 32, gpus: 0 },
      largestFree: { cpus: 4, memoryGib: 16, gpus: 0 },
      rttMs: 3.2,
    },
    {
      name: 'south',
      displayName: 'South',
      accepting: true,
      hosts: 1,
      free: { cpus: 16, memoryGib: 64, gpus: 1 },
      largestFree: { cpus: 16, memoryGib: 64, gpus: 1 },
      rttMs: 41.7,
    },
    {
      name: 'west',
      displayName: 'West',
      accepting: false,
      hosts: 1,
      free: { cpus: 0, memoryGib: 0, gpus: 0 },
      largestFree: { cpus: 0, memoryGib: 0, gpus: 0 },
      rttMs: null,
    },
  ],
  flavors: [
    {
      name: 'small',
      kind: 'vm',
      description: 'For editing and light builds.',
      hardware: { cpus: 2, memoryGib: 4, gpus: 0 },
      image: 'base',
    },
    {
      name: 'gpu',
      kind: 'gpu',
      description: '',
      hardware: { cpus: 8, memoryGib: 32, gpus: 1 },
      image: 'base',
    },
  ],
  profiles: [
    {
      name: 'web',
      description: 'Node and browsers.',
      tools: ['node', 'chromium'],
      hardware: { cpus: 2, memoryGib: 4, gpus: 0 },
      warmPool: 2,
      image: 'web',
    },
  ],
  lifespans: {
    devserverDefaultHours: 8,
    devserverMaxHours: 720,
    containerHours: 36,
    containerMaxHours: 72,
  },
  lifespanChoices: [
    { label: '8 hours', kind: 'devserver', lifespan: 'temporary', hours: 8 },
    { label: '1 week', kind: 'devserver', lifespan: 'temporary', hours: 168 },
    { label: 'Permanent', kind: 'devserver', lifespan: 'permanent', hours: null },
    { label: '36 hours', kind: 'container', lifespan: 'temporary', hours: 36 },
  ],
  defaultRegion: 'south',
};

export class MemoryMemento implements Memento {
  private readonly values = new Map<string, unknown>();
  get<T>(key: string): T | undefined {
    return this.values.get(key) as T | undefined;
  }
  update(key: string, value: unknown): Promise<void> {
    this.values.set(key, value);
    return Promise.resolve();
  }
}

type Handler = (params: unknown) => unknown;

/** A daemon that answers from `handlers` (by method) and records every request. */
export class FakeDaemon implements DaemonApi {
  state: DaemonState = 'running';
  readonly requests: { method: string; params: unknown }[] = [];
  readonly creates: (CreateDevserver | CreateContainer)[] = [];
  restarts = 0;
  progress: string[] = ['placing on north-h1', 'starting the agent', 'certifying', 'ready'];

  constructor(readonly handlers: Record<string, Handler> = {}) {}

  async request<P, R>(type: RequestType<P, R, void>, params: P): Promise<R> {
    this.requests.push({ method: type.method, params });
    const handler = this.handlers[type.method];
    if (handler === undefined) throw new Error(`no fake for ${type.method}`);
    return handler(params) as R;
  }

  async create(
    request: CreateDevserver | CreateContainer,
    onProgress: (message: string) => void,
  ): Promise<Environment> {
    this.creates.push(request);
    for (const message of this.progress) onProgress(message);
    const handler = this.handlers['leeward/environments/create'];
    if (handler === undefined) throw new Error('no fake for leeward/environments/create');
    return Promise.resolve(handler({ request }) as Environment);
  }

  /** What `withProgress` reports before it answers: [message, percentage]. */
  workProgress: [string, number | undefined][] = [];

  async withProgress<P extends WorkDone, R>(
    type: RequestType<P, R, void>,
    params: Omit<P, 'workDoneToken'>,
    onProgress: ProgressListener,
  ): Promise<R> {
    this.requests.push({ method: type.method, params });
    const handler = this.handlers[type.method];
    if (handler === undefined) throw new Error(`no fake for ${type.method}`);
    for (const [message, percentage] of this.workProgress) onProgress(message, percentage);
    return handler(params) as R;
  }

  restart(): Promise<void> {
    this.restarts++;
    return Promise.resolve();
  }
}

export function commandContext(
  daemon: FakeDaemon,
  alias?: string,
): CommandContext & {
  logged: string[];
  shown: number;
} {
  const logged: string[] = [];
  const ctx = {
    daemon,
    store: new EnvironmentStore(new MemoryMemento()),
    logged,
    shown: 0,
    log: {
      info: (message: string) => void logged.push(`info: ${message}`),
      warn: (message: string) => void logged.push(`warn: ${message}`),
      error: (message: string | Error) => void logged.push(`error: ${String(message)}`),
      show: () => {
        ctx.shown++;
      },
    },
    windowAlias: () => alias,
    fleetUrlSetting: () => undefined,
    now: () => NOW,
  };
  return ctx;
}
