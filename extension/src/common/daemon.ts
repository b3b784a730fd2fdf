/** Runs `leeward daemon --stdio` as a language server (vscode-languageclient) and restarts it
 * when asked: one restart in flight, at most one queued. */
import { randomUUID } from 'node:crypto';

import type * as vscode from 'vscode';
import type { RequestParam, RequestType } from 'vscode-jsonrpc';
import {
  LanguageClient,
  RevealOutputChannelOn,
  State,
  WorkDoneProgress,
  type LanguageClientOptions,
  type ServerOptions,
} from 'vscode-languageclient/node';

import {
  EnvironmentsCreateRequest,
  EnvironmentsNotification,
  HealthNotification,
  StatusNotification,
} from '../protocol/methods';
import type {
  CreateContainer,
  CreateDevserver,
  DaemonSettings,
  DaemonStatus,
  Environment,
  EnvironmentsResult,
  HealthRecord,
} from '../protocol/generated';
import type { DaemonApi } from './daemonApi';
import type { DaemonCommand } from './daemonPath';
import { Emitter } from './events';
import { errorMessage } from './format';
import { RestartQueue } from './restart';
import type { DaemonState } from './status';

export interface DaemonLaunch {
  command: DaemonCommand;
  settings: DaemonSettings;
  cwd: string | undefined;
}

const STOP_TIMEOUT_MS = 2000;

export class Daemon implements DaemonApi, vscode.Disposable {
  private client: LanguageClient | undefined;
  private current: DaemonState = 'stopped';
  private why = '';
  private stopping = false;
  private readonly restarts = new RestartQueue(() => this.cycle());

  private readonly stateChanged = new Emitter<DaemonState>();
  private readonly environments = new Emitter<EnvironmentsResult>();
  private readonly health = new Emitter<HealthRecord>();
  private readonly status = new Emitter<DaemonStatus>();

  /** Fires on every change of state; `running` again after the client restarted a crashed
   * daemon, so listeners fetch what they show anew. */
  readonly onDidChangeState = this.stateChanged.event;
  readonly onEnvironments = this.environments.event;
  readonly onHealth = this.health.event;
  readonly onStatus = this.status.event;

  constructor(
    private readonly log: vscode.LogOutputChannel,
    private readonly launch: () => Promise<DaemonLaunch>,
  ) {}

  get state(): DaemonState {
    return this.current;
  }

  /** Why the daemon is not running, when it failed. */
  get reason(): string {
    return this.why;
  }

  restart(): Promise<void> {
    return this.restarts.request();
  }

  async request<P, R>(type: RequestType<P, R, void>, params: P): Promise<R> {
    const client = await this.ready();
    // RequestParam<P> is P for every params model (none is null); TypeScript cannot see that
    // for an unresolved P.
    return client.sendRequest(type, params as RequestParam<P>);
  }

  async create(
    request: CreateDevserver | CreateContainer,
    onProgress: (message: string) => void,
  ): Promise<Environment> {
    const client = await this.ready();
    const token = `leeward-create-${randomUUID()}`;
    const progress = client.onProgress(WorkDoneProgress.type, token, (value) => {
      if (value.message) onProgress(value.message);
    });
    try {
      return await client.sendRequest(EnvironmentsCreateRequest, {
        request,
        workDoneToken: token,
      });
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
    for (const emitter of [this.stateChanged, this.environments, this.health, this.status]) {
      emitter.dispose();
    }
  }

  private async ready(): Promise<LanguageClient> {
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
    const server: ServerOptions = {
      command,
      args: ['daemon', '--stdio'],
      options: launch.cwd !== undefined ? { cwd: launch.cwd } : {},
    };
    const options: LanguageClientOptions = {
      documentSelector: [],
      outputChannel: this.log,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: launch.settings,
      initializationFailedHandler: (error) => {
        this.log.error(`The daemon refused to initialise: ${errorMessage(error)}`);
        return false;
      },
    };
    const client = new LanguageClient('leeward', 'Leeward daemon', server, options);
    client.onNotification(EnvironmentsNotification, (result) => this.environments.fire(result));
    client.onNotification(HealthNotification, (record) => this.health.fire(record));
    client.onNotification(StatusNotification, (status) => this.status.fire(status));
    client.onDidChangeState(({ newState }) => {
      if (this.client !== client || this.stopping) return;
      if (newState === State.Running) this.setState('running');
      else if (newState === State.Starting) this.setState('starting');
      else this.fail('The daemon stopped; its last words are in the Leeward log.');
    });
    this.client = client;
    try {
      await client.start();
      this.setState('running');
    } catch (error) {
      this.fail(errorMessage(error));
    }
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
    this.stopping = true;
    try {
      if (client.state !== State.Stopped) await client.stop(STOP_TIMEOUT_MS);
    } catch (error) {
      this.log.warn(`Stopping the daemon: ${errorMessage(error)}`);
    } finally {
      this.stopping = false;
    }
  }

  private setState(state: DaemonState): void {
    if (state !== 'failed') this.why = state === 'running' ? '' : this.why;
    this.current = state;
    this.stateChanged.fire(state);
  }
}
