/** Checks that a JSON value from the daemon has exactly the shape of a generated protocol
 * type: every key the type has (camelCase), no other, each value of the type's kind. The key
 * lists are checked by the compiler against `src/protocol/generated.ts`, so a field added to or
 * renamed in the models breaks this file until the check covers it. */
import assert from 'node:assert/strict';

import type {
  Action,
  Activity,
  Announcement,
  AnnouncementList,
  Backup,
  BackupDetail,
  BackupEntry,
  BackupList,
  BackupStatus,
  ConnectResult,
  ContainerProfile,
  DaemonCatalog,
  DaemonStatus,
  Environment,
  EnvironmentsResult,
  Flavor,
  Hardware,
  HealthList,
  HealthRecord,
  LifespanChoice,
  LifespanPolicy,
  Notification,
  NotificationList,
  Refusal,
  RegionChoice,
  SetupItem,
  SyncConflict,
  SyncStatus,
} from '../../src/protocol/generated';

/** Checks one value; the phantom `type` makes `Checker<A>` and `Checker<B>` incompatible unless
 * A and B are the same type, so a spec cannot check a nullable field as non-null or back. */
export interface Checker<V> {
  (value: unknown, path: string): void;
  readonly type?: (value: V) => V;
}

type Spec<T> = { [K in keyof Required<T>]: Checker<T[K]> };

function checker<V>(check: (value: unknown, path: string) => void): Checker<V> {
  return check;
}

export const str = checker<string>((v, p) => assert.equal(typeof v, 'string', `${p} is a string`));
export const num = checker<number>((v, p) =>
  assert.ok(typeof v === 'number' && Number.isFinite(v), `${p} is a number, not ${String(v)}`),
);
export const bool = checker<boolean>((v, p) =>
  assert.equal(typeof v, 'boolean', `${p} is a boolean`),
);
export const time = checker<string>((v, p) =>
  assert.ok(
    typeof v === 'string' && !Number.isNaN(Date.parse(v)),
    `${p} is a timestamp: ${String(v)}`,
  ),
);

export function nullable<V>(inner: Checker<V>): Checker<V | null> {
  return checker<V | null>((v, p) => {
    if (v !== null) inner(v, p);
  });
}

export function oneOf<L extends string>(...values: L[]): Checker<L> {
  return checker<L>((v, p) =>
    assert.ok(values.includes(v as L), `${p} is one of ${values.join('|')}: ${String(v)}`),
  );
}

export function list<V>(inner: Checker<V>): Checker<V[]> {
  return checker<V[]>((v, p) => {
    assert.ok(Array.isArray(v), `${p} is an array`);
    (v as unknown[]).forEach((item, i) => inner(item, `${p}[${i}]`));
  });
}

export function object<T>(spec: Spec<T>): Checker<T> {
  return checker<T>((v, p) => {
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), `${p} is an object`);
    const record = v as Record<string, unknown>;
    assert.deepEqual(
      Object.keys(record).sort(),
      Object.keys(spec).sort(),
      `${p}: the keys of the generated type`,
    );
    for (const [key, check] of Object.entries(spec) as [string, Checker<unknown>][]) {
      check(record[key], `${p}.${key}`);
    }
  });
}

/** Asserts the shape and narrows the value to the type. */
export function expectShape<T>(
  check: Checker<T>,
  value: unknown,
  what: string,
): asserts value is T {
  check(value, what);
}

const kind = oneOf<Environment['kind']>('devserver', 'container');
const lifespan = oneOf<Environment['lifespan']>('temporary', 'permanent');
const environmentState = oneOf<Environment['state']>(
  'warm',
  'provisioning',
  'running',
  'migrating',
  'deleting',
  'deleted',
  'failed',
  'stopped',
);

export const hardware = object<Hardware>({ cpus: num, memoryGib: num, gpus: num });

const setupItem = object<SetupItem>({
  kind: oneOf<SetupItem['kind']>('feature', 'one-off', 'dotfiles'),
  name: str,
  state: oneOf<SetupItem['state']>('pending', 'installing', 'installed', 'failed'),
  detail: str,
  log: str,
  logPath: nullable(str),
  startedAt: nullable(time),
  finishedAt: nullable(time),
});

const refusal = object<Refusal>({
  path: str,
  code: oneOf<Refusal['code']>(
    'escapes-home',
    'symlink',
    'not-a-file',
    'too-large',
    'too-many-files',
    'profile-too-large',
    'secret',
    'binary',
    'bad-content',
  ),
  reason: str,
});

const syncStatus = object<SyncStatus>({
  version: num,
  syncedAt: nullable(time),
  conflicts: list(
    object<SyncConflict>({
      path: str,
      copyPath: str,
      otherEnvironment: nullable(str),
      version: num,
      at: time,
    }),
  ),
  refused: list(refusal),
  error: str,
});

const backupStatus = object<BackupStatus>({
  lastSuccessAt: nullable(time),
  lastBackup: nullable(num),
  intervalMinutes: num,
  running: bool,
  overdue: bool,
  message: str,
});

export const environment = object<Environment>({
  id: str,
  name: str,
  fqdn: str,
  kind,
  flavor: nullable(str),
  profile: nullable(str),
  hardware,
  region: str,
  host: nullable(str),
  address: nullable(str),
  sshPort: nullable(num),
  relayPort: nullable(num),
  migratingFrom: nullable(str),
  state: environmentState,
  statusMessage: str,
  owner: nullable(str),
  lifespan,
  expiresAt: nullable(time),
  createdAt: time,
  updatedAt: time,
  readyAt: nullable(time),
  lastSeenAt: nullable(time),
  setup: list(setupItem),
  sync: nullable(syncStatus),
  backup: nullable(backupStatus),
  movedTo: nullable(str),
  activity: nullable(
    object<Activity>({
      activeAt: nullable(time),
      deletesAt: nullable(time),
      keptBy: str,
      stoppedAt: nullable(time),
      stopsAt: nullable(time),
    }),
  ),
});

export const environmentsResult = object<EnvironmentsResult>({
  environments: list(environment),
  stale: bool,
  fetchedAt: nullable(time),
  reason: str,
});

export const daemonStatus = object<DaemonStatus>({
  version: str,
  fleetUrl: nullable(str),
  user: nullable(str),
  fleet: oneOf<DaemonStatus['fleet']>('connecting', 'connected', 'unreachable', 'signedOut'),
  reason: str,
  lastEventId: nullable(num),
  eventsReceived: num,
  resyncs: num,
  logFile: nullable(str),
});

const regionChoice = object<RegionChoice>({
  name: str,
  displayName: str,
  accepting: bool,
  hosts: num,
  free: hardware,
  largestFree: hardware,
  rttMs: nullable(num),
});

const flavor = object<Flavor>({
  name: str,
  kind: oneOf<Flavor['kind']>('vm', 'physical', 'gpu'),
  description: str,
  hardware,
  image: str,
});

const profile = object<ContainerProfile>({
  name: str,
  description: str,
  tools: list(str),
  hardware,
  warmPool: num,
  image: str,
});

const lifespanPolicy = object<LifespanPolicy>({
  devserverDefaultHours: num,
  devserverMaxHours: num,
  containerHours: num,
  containerMaxHours: num,
});

const lifespanChoice = object<LifespanChoice>({
  label: str,
  kind,
  lifespan,
  hours: nullable(num),
});

export const daemonCatalog = object<DaemonCatalog>({
  zone: str,
  regions: list(regionChoice),
  flavors: list(flavor),
  profiles: list(profile),
  lifespans: lifespanPolicy,
  lifespanChoices: list(lifespanChoice),
  defaultRegion: nullable(str),
});

export const healthRecord = object<HealthRecord>({
  environmentId: str,
  name: str,
  state: oneOf<HealthRecord['state']>(
    'connecting',
    'healthy',
    'degraded',
    'reconnecting',
    'unreachable',
  ),
  environmentState,
  rttMs: nullable(num),
  region: str,
  host: nullable(str),
  reason: str,
  fleetReachable: bool,
  sessions: num,
  route: nullable(str),
  dnsBypass: bool,
  since: time,
  checkedAt: nullable(time),
});

export const healthList = object<HealthList>({ records: list(healthRecord) });

export const connectResult = object<ConnectResult>({
  environment,
  hostAlias: str,
  remoteAuthority: str,
  remoteUri: str,
  sshConfig: str,
  remoteHome: str,
  certificateValidBefore: time,
  rttMs: num,
});

export const backup = object<Backup>({
  id: num,
  environment: str,
  environmentId: str,
  state: oneOf<Backup['state']>('running', 'succeeded', 'failed'),
  trigger: oneOf<Backup['trigger']>('schedule', 'request', 'move', 'decommission', 'delete'),
  message: str,
  snapshot: nullable(str),
  startedAt: time,
  finishedAt: nullable(time),
  progress: num,
  filesNew: num,
  filesChanged: num,
  filesUnmodified: num,
  totalFiles: num,
  totalBytes: num,
  dataAdded: num,
  seconds: num,
  warnings: list(str),
});

export const backupList = object<BackupList>({
  environment: str,
  status: backupStatus,
  backups: list(backup),
});

const backupEntry = object<BackupEntry>({
  path: str,
  type: str,
  size: num,
  mode: num,
  modifiedAt: time,
  target: nullable(str),
});

export const backupDetail = object<BackupDetail>({
  backup,
  path: str,
  entries: list(backupEntry),
});

const action = object<Action>({
  kind: oneOf<Action['kind']>('link', 'extend', 'move', 'backup-now', 'start'),
  label: str,
  url: nullable(str),
  environment: nullable(str),
  command: nullable(str),
});

export const announcement = object<Announcement>({
  id: num,
  text: str,
  severity: oneOf<Announcement['severity']>('info', 'warning', 'critical'),
  scope: object<Announcement['scope']>({
    regions: list(str),
    hosts: list(str),
    flavors: list(str),
    profiles: list(str),
    users: list(str),
  }),
  startsAt: time,
  endsAt: nullable(time),
  actions: list(action),
  revision: num,
  source: str,
  createdBy: str,
  createdAt: time,
  updatedAt: time,
  withdrawnAt: nullable(time),
  active: bool,
  dismissed: bool,
  environments: list(str),
});

export const announcementList = object<AnnouncementList>({ announcements: list(announcement) });

export const notificationList = object<NotificationList>({
  notifications: list(
    object<Notification>({
      id: num,
      user: str,
      kind: oneOf<Notification['kind']>(
        'expiry',
        'backup-failed',
        'decommission',
        'storm',
        'share',
        'setup-failed',
        'idle-stop',
        'dormant-delete',
      ),
      title: str,
      body: str,
      environment: nullable(str),
      actions: list(action),
      createdAt: time,
      seenAt: nullable(time),
      deliveries: list(
        object<Notification['deliveries'][number]>({
          sink: oneOf<Notification['deliveries'][number]['sink']>(
            'editor',
            'email',
            'chat',
            'tracker',
          ),
          state: oneOf<Notification['deliveries'][number]['state']>(
            'pending',
            'leased',
            'sent',
            'failed',
          ),
          attempts: num,
          nextAttemptAt: nullable(time),
          sentAt: nullable(time),
          reason: str,
        }),
      ),
    }),
  ),
});
