/** What the status-bar item says: the shown environment's state and RTT, or the daemon's. */
import type { BackupStatus, DaemonStatus, Environment, HealthRecord } from '../protocol/generated';
import { expiryLabel, minutesLabel, rttLabel, timeLabel } from './format';

export type DaemonState = 'stopped' | 'starting' | 'running' | 'failed';

export interface StatusInput {
  daemon: DaemonState;
  /** Why the daemon failed, in one sentence. */
  daemonReason?: string;
  account: DaemonStatus | undefined;
  environment: Environment | undefined;
  health: HealthRecord | undefined;
  now: Date;
}

export interface StatusView {
  text: string;
  /** Markdown. */
  tooltip: string;
  background: 'warning' | 'error' | undefined;
  command: { command: string; arguments: unknown[] };
}

const BUSY = new Set(['connecting', 'reconnecting', 'provisioning', 'deleting']);

export function statusView(input: StatusInput): StatusView {
  const { environment, health, account } = input;
  if (input.daemon === 'failed') {
    return {
      text: '$(error) Leeward',
      tooltip: `**The Leeward daemon is not running.**\n\n${escape(input.daemonReason ?? '')}\n\nClick to show the logs.`,
      background: 'error',
      command: { command: 'leeward.showLogs', arguments: [] },
    };
  }
  if (input.daemon !== 'running') {
    return {
      text: '$(sync~spin) Leeward',
      tooltip: 'Starting the Leeward daemon…',
      background: undefined,
      command: { command: 'leeward.showLogs', arguments: [] },
    };
  }
  if (environment === undefined) {
    if (account?.fleet === 'connecting') {
      const where = account.fleetUrl ? ` at ${escape(account.fleetUrl)}` : '';
      return {
        text: '$(sync~spin) Leeward',
        tooltip: `Connecting to the fleet${where}…`,
        background: undefined,
        command: { command: 'leeward.showEnvironment', arguments: [] },
      };
    }
    const signedOut = account?.fleet === 'signedOut';
    return {
      text: '$(vm) Leeward',
      tooltip: signedOut
        ? 'Not signed in to a fleet. Click to sign in or create an environment.'
        : 'No environment yet. Click to create one.',
      background: account?.fleet === 'unreachable' ? 'warning' : undefined,
      command: { command: 'leeward.showEnvironment', arguments: [] },
    };
  }

  const state = stateOf(environment, health);
  const icon = BUSY.has(state) ? '$(sync~spin)' : '$(vm)';
  const parts = [environment.name, state];
  if (health?.rttMs !== null && health?.rttMs !== undefined) parts.push(rttLabel(health.rttMs));
  const background =
    state === 'degraded' || state === 'DNS bypass'
      ? 'warning'
      : state === 'unreachable' || state === 'failed'
        ? 'error'
        : undefined;
  return {
    text: `${icon} ${parts.join(' · ')}`,
    tooltip: environmentTooltip(environment, health, input.now),
    background,
    command: { command: 'leeward.showEnvironment', arguments: [environment.name] },
  };
}

/** The health state while the environment takes connections (running or migrating; "DNS
 * bypass" when that is why it is degraded), else the fleet's state of it. */
export function stateOf(environment: Environment, health: HealthRecord | undefined): string {
  const reachable = environment.state === 'running' || environment.state === 'migrating';
  if (!reachable || health === undefined) return environment.state;
  return health.dnsBypass && health.state === 'degraded' ? 'DNS bypass' : health.state;
}

/** Markdown: what the environment is, where, how it is, and why when it is not well. */
export function environmentTooltip(
  environment: Environment,
  health: HealthRecord | undefined,
  now: Date,
): string {
  const what = environment.kind === 'devserver' ? environment.flavor : environment.profile;
  const lines = [
    `**${escape(environment.name)}** — ${environment.kind}${what ? ` (${escape(what)})` : ''}`,
    `Region: ${escape(health?.region ?? environment.region)}`,
    `Host: ${escape(health?.host ?? environment.host ?? 'not placed')}`,
    `State: ${stateOf(environment, health)}${health?.rttMs != null ? ` · ${rttLabel(health.rttMs)}` : ''}`,
    `Lifespan: ${expiryLabel(environment, now)}`,
  ];
  const reason = health?.reason || environment.statusMessage;
  if (reason) lines.push(`Reason: ${escape(reason)}`);
  lines.push(...backupLines(environment.backup));
  if (health !== undefined && !health.fleetReachable) {
    lines.push('The fleet cannot be reached; this is the last known state.');
  }
  return lines.join('\n\n');
}

/** Markdown: when it was last backed up, and a warning when backups are overdue; nothing for
 * what is not backed up (containers). */
export function backupLines(backup: BackupStatus | null): string[] {
  if (backup === null) return [];
  const running = backup.running ? ' (one is running now)' : '';
  const lines = [`Last backup: ${escape(timeLabel(backup.lastSuccessAt))}${running}`];
  if (backup.overdue) {
    const why = backup.message ? ` The last one failed: ${escape(backup.message)}` : '';
    lines.push(
      `**Backups are overdue**: none succeeded in ${minutesLabel(2 * backup.intervalMinutes)}.${why}`,
    );
  }
  return lines;
}

/** Markdown special characters in text from the fleet shown as themselves. */
export function escape(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (c) => `\\${c}`);
}
