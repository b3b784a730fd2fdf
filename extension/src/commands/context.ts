/** What every command gets: the daemon, the store, the log, and this window's alias. */
import type * as vscode from 'vscode';

import type { DaemonApi } from '../common/daemonApi';
import type { EnvironmentStore } from '../common/environments';
import type { Announcements } from '../views/announcements';

export type Log = Pick<vscode.LogOutputChannel, 'info' | 'warn' | 'error' | 'show'>;

export interface CommandContext {
  daemon: DaemonApi;
  store: EnvironmentStore;
  log: Log;
  /** The ssh alias of this window when it is a Remote-SSH window on an environment. */
  windowAlias(): string | undefined;
  /** The fleet URL setting, for the sign-in prompt. */
  fleetUrlSetting(): string | undefined;
  now(): Date;
  /** The announcements the status bar shows (absent in tests that do not need them). */
  announcements?: Announcements;
}
