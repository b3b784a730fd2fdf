/** Runs `leeward daemon --stdio` and restarts it when asked (one restart in flight, at most one
 * queued) or when it exits on its own (at most CRASH_RESTARTS times in CRASH_WINDOW_MS, then it
 * stays failed with the reason). The JSON-RPC client itself comes from a factory
 * (vscode-languageclient in the extension, see languageClient.ts; a fake in tests). */
import { randomUUID } from 'node:crypto';

import type { NotificationType, RequestType } from 'vscode-jsonrpc';

import {
  AnnouncementsNotification,
  EnvironmentsCreateRequest,
  EnvironmentsNotification,
  HealthNotification,
  NotificationsNotification,
  StatusNotification,
} from '../protocol/methods';
import type {
  AnnouncementList,
  CreateContainer,
  CreateDevserver,
  DaemonSettings,
  DaemonStatus,
  Environment,
  EnvironmentsResult,
  HealthRecord,
  NotificationList,
} from '../protocol/generated';
import type { DaemonApi, ProgressListener, WorkDone } from './daemonApi';
import type { DaemonCommand } from './daemonPath';
import { Emitter, type Disposable } from './events';
import { errorMessage } from './format';
import { CrashBudget, RestartQueue } from './restart';
import type { DaemonState } from './status';

export interface DaemonLaunch {
  command: DaemonCommand;
  settings: DaemonSettings;
  cwd: string | undefined;
}

/** What the daemon needs of a JSON-RPC client over the daemon's stdio. */
export interface DaemonClient {
  start(): Promise<void>;
  stop(timeoutMs: number): Promise<void>;
  readonly isStopped: boolean;
  sendRequest<P, R>(type: RequestType<P, R, void>, params: P): Promise<R>;
  onNotification<P>(type: NotificationType<P>, handler: (params: P) => void): Disposable;
  /** LSP `$/progress` on `token`: begin, reports and end, each with an optional message (and
   * begin and reports with an optional percentage). */
  onWorkDoneProgress(token: string, handler: ProgressListener): Disposable;
  /** The client's own view; `stopped` when the daemon exits (the client does not restart it:
   * the Daemon does, within its budget). */
  onDidChangeState(listener: (state: 'starting' | 'running' | 'stopped') => void): Disposable;
}

export interface DaemonProcessOptions {
  command: string;
  args: string[];
  cwd: string | undefined;
  settings: DaemonSettings;
}

export type DaemonClientFactory = (options: DaemonProcessOptions) => DaemonClient;

export interface DaemonLog {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

const STOP_TIMEOUT_MS = 2000;

/** Restarts of a daemon that exits on its own, at most, in CRASH_WINDOW_MS. */
export const CRASH_RESTARTS = 5;
export const CRASH_WINDOW_MS = 3 * 60 * 1000;

export class Daemon implements DaemonApi, Disposable {
  private client: DaemonClient | undefined;
  private current: DaemonState = 'stopped';
  private why = '';
  private readonly restarts = new RestartQueue(() => this.cycle());
  private readonly crashes: CrashBudget;

  private readonly stateChanged = new Emitter<DaemonState>();
  private readonly environments = new Emitter<EnvironmentsResult>();
  private readonly health = new Emitter<HealthRecord>();
  private readonly status = new Emitter<DaemonStatus>();
  private readonly announcements = new Emitter<AnnouncementList>();
  private readonly notifications = new Emitter<NotificationList>();

  /** Fires on every change of state; `running` again after the client restarted a crashed
   * daemon, so listeners fetch what they show anew. */
  readonly onDidChangeState = this.stateChanged.event;
  readonly onEnvironments = this.environments.event;
  readonly onHealth = this.health.event;
  readonly onStatus = this.status.event;
  /** The active announcements that concern the user (dismissed ones flagged), when they change. */
  readonly onAnnouncements = this.announcements.event;
  /** New notifications for the user, each once per daemon (to be reported seen once shown). */
  readonly onNotifications = this.notifications.event;

  constructor(
    private readonly log: DaemonLog,
    private readonly launch: () => Promise<DaemonLaunch>,
    private readonly createClient: DaemonClientFactory,
    now: () => number = Date.now,
  ) {
    this.crashes = new CrashBudget(CRASH_RESTARTS, CRASH_WINDOW_MS, now);
  }

  get state(): DaemonState {
    return this.current;
  }

  /** Why the daemon is not running, when it failed. */
  get reason(): string {
    return this.why;
  }

  /** Asked for (a command, a change of settings): a new budget of crash restarts too. */
  restart(): Promise<void> {
    this.crashes.reset();
    return this.restarts.request();
  }

  async request<P, R>(type: RequestType<P, R, void>, params: P): Promise<R> {
    const client = await this.ready();
    return client.sendRequest(type, params);
  }

  create(
    request: CreateDevserver | CreateContainer,
    onProgress: (message: string) => void,
  ): Promise<Environment> {
    return this.withProgress(EnvironmentsCreateRequest, { request }, (message) => {
      if (message) onProgress(message);
    });
  }

  async withProgress<P extends WorkDone, R>(
    type: RequestType<P, R, void>,
    params: Omit<P, 'workDoneToken'>,
    onProgress: ProgressListener,
  ): Promise<R> {
    const client = await this.ready();
    const verb = type.method.slice(type.method.lastIndexOf('/') + 1);
    const token = `leeward-${verb}-${randomUUID()}`;
    const progress = client.onWorkDoneProgress(token, onProgress);
    try {
      // P is params plus the token: TypeScript cannot see that `Omit<P, K> & Pick<P, K>` is P.
      return await client.sendRequest(type, { ...params, workDoneToken: token } as P);
    } finally {
      progress.dispose();
    }
  }

  async stop(): Promise<void> {
    await this.restarts.idle();
    await this.stopClient();
    this.setState('stopped');
  }

  dispose(): void {
    void this.stop();
    for (const emitter of [
      this.stateChanged,
      this.environments,
      this.health,
      this.status,
      this.announcements,
      this.notifications,
    ]) {
      emitter.dispose();
    }
  }

  private async ready(): Promise<DaemonClient> {
    await this.restarts.idle();
    if (this.client !== undefined && this.current === 'running') return this.client;
    const why = this.why ? ` (${this.why.replace(/\.$/, '')})` : '';
    throw new Error(
      `The Leeward daemon is not running${why}; see “Leeward: Show Logs”, then run “Leeward: Restart Daemon”.`,
    );
  }

  private async cycle(): Promise<void> {
    await this.stopClient();
    this.setState('starting');
    let launch: DaemonLaunch;
    try {
      launch = await this.launch();
    } catch (error) {
      this.fail(errorMessage(error));
      return;
    }
    if (!launch.command.found) {
      this.fail(launch.command.reason);
      return;
    }
    const { command, source } = launch.command;
    this.log.info(
      `Starting the daemon: ${command} daemon --stdio (found in ${source}; settings ${JSON.stringify(launch.settings)})`,
    );
    const client = this.createClient({
      command,
      args: ['daemon', '--stdio'],
      cwd: launch.cwd,
      settings: launch.settings,
    });
    client.onNotification(EnvironmentsNotification, (result) => this.environments.fire(result));
    client.onNotification(HealthNotification, (record) => this.health.fire(record));
    client.onNotification(StatusNotification, (status) => this.status.fire(status));
    client.onNotification(AnnouncementsNotification, (list) => this.announcements.fire(list));
    client.onNotification(NotificationsNotification, (list) => this.notifications.fire(list));
    client.onDidChangeState((state) => {
      if (this.client !== client) return; // one being replaced or stopped on purpose
      if (state === 'running') this.setState('running');
      else if (state === 'starting') this.setState('starting');
      else this.exited();
    });
    this.client = client;
    try {
      await client.start();
      if (this.client === client) this.setState('running');
    } catch (error) {
      this.fail(errorMessage(error));
    }
  }

  /** The daemon exited without being asked to. Once it ran, it is started again, within the
   * budget; one that exits while starting fails (start() says why), else it would loop. */
  private exited(): void {
    if (this.current !== 'running') {
      this.fail('The daemon stopped while starting; its last words are in the Leeward log.');
      return;
    }
    const minutes = CRASH_WINDOW_MS / 60_000;
    if (!this.crashes.spend()) {
      this.fail(
        `The daemon exited ${this.crashes.spent} times in ${minutes} minutes, so it is not started again; its last words are in the Leeward log.`,
      );
      return;
    }
    this.log.warn(
      `The daemon exited unexpectedly; starting it again (restart ${this.crashes.spent} of at most ${CRASH_RESTARTS} in ${minutes} minutes).`,
    );
    this.setState('starting');
    this.restarts.request().catch((error: unknown) => this.fail(errorMessage(error)));
  }

  private fail(reason: string): void {
    this.why = reason;
    this.log.error(`The daemon is not running: ${reason}`);
    this.setState('failed');
  }

  private async stopClient(): Promise<void> {
    const client = this.client;
    if (client === undefined) return;
    this.client = undefined;
    try {
      if (!client.isStopped) await client.stop(STOP_TIMEOUT_MS);
    } catch (error) {
      this.log.warn(`Stopping the daemon: ${errorMessage(error)}`);
    }
  }

  private setState(state: DaemonState): void {
    if (state === 'running') this.why = '';
    if (state === this.current) return;
    this.current = state;
    this.stateChanged.fire(state);
  }
}
