/** The `leeward.environments` tree: one item per environment, with inline actions; under it,
 * its setup steps (features, one-offs, dotfiles), its profile sync's conflicts and refusals,
 * and for a devserver its Backups (listed when expanded). */
import * as vscode from 'vscode';

import type { BackupLists } from '../common/backups';
import type { EnvironmentStore } from '../common/environments';
import {
  backupLabel,
  errorMessage,
  expiryLabel,
  minutesLabel,
  sizeLabel,
  timeLabel,
} from '../common/format';
import { backupLines, environmentTooltip, escape } from '../common/status';
import type {
  Backup,
  BackupList,
  BackupState,
  BackupStatus,
  Environment,
  HealthRecord,
  Refusal,
  SetupItem,
  SetupState,
  SyncConflict,
} from '../protocol/generated';

/** `kind · region · state · expiry`. */
/** `kind · region · state · expiry`; while it runs but is not healthy, the health state
 * (`reconnecting`, `unreachable`...) stands in for `running`, which would say all is well. */
export function environmentDescription(
  environment: Environment,
  now: Date,
  health?: HealthRecord,
): string {
  const state =
    environment.state === 'running' && health && health.state !== 'healthy'
      ? health.state
      : environment.state;
  return [environment.kind, environment.region, state, expiryLabel(environment, now)].join(' · ');
}

/** Space-separated words that the menus' `viewItem =~ /\bWORD\b/` clauses match. */
export function contextValue(environment: Environment): string {
  const words = ['environment', environment.kind];
  const reachable = environment.state === 'running' || environment.state === 'migrating';
  if (reachable) words.push('connect', 'terminal');
  if (environment.lifespan === 'temporary' && reachable) words.push('extend');
  if (environment.state !== 'deleting') words.push('delete');
  if (environment.kind === 'devserver' && environment.state === 'running') {
    words.push('backUpNow', 'move');
  }
  return words.join(' ');
}

/** The icon says how it is: the health while it runs, else where it is in its life. */
export function iconId(environment: Environment, health: HealthRecord | undefined): string {
  switch (environment.state) {
    case 'provisioning':
    case 'deleting':
    case 'warm':
      return 'loading~spin';
    case 'failed':
      return 'error';
    case 'deleted':
      return 'circle-slash';
    case 'stopped':
      return 'debug-pause';
    case 'running':
    case 'migrating':
      break;
  }
  switch (health?.state) {
    case undefined:
    case 'healthy':
      return 'vm-running';
    case 'connecting':
    case 'reconnecting':
      return 'sync~spin';
    case 'degraded':
      return 'warning';
    case 'unreachable':
      return 'vm-outline';
    case 'stopped':
      return 'debug-pause';
  }
}

const ICON_COLORS: Record<string, string | undefined> = {
  error: 'errorForeground',
  warning: 'list.warningForeground',
  'vm-outline': 'errorForeground',
  'vm-running': 'testing.iconPassed',
};

export function environmentItem(
  environment: Environment,
  health: HealthRecord | undefined,
  now: Date,
): vscode.TreeItem {
  const item = new vscode.TreeItem(
    environment.name,
    environmentDetails(environment).length > 0
      ? vscode.TreeItemCollapsibleState.Collapsed
      : vscode.TreeItemCollapsibleState.None,
  );
  item.id = environment.id;
  item.description = environmentDescription(environment, now, health);
  item.tooltip = new vscode.MarkdownString(environmentTooltip(environment, health, now));
  item.contextValue = contextValue(environment);
  const icon = iconId(environment, health);
  const color = ICON_COLORS[icon];
  item.iconPath = new vscode.ThemeIcon(icon, color ? new vscode.ThemeColor(color) : undefined);
  return item;
}

/** A row under an environment. It has no `name` of its own, so that a command given one never
 * takes it for an environment. */
export type EnvironmentDetail =
  | { readonly parent: Environment; readonly type: 'setup'; readonly setup: SetupItem }
  | { readonly parent: Environment; readonly type: 'conflict'; readonly conflict: SyncConflict }
  | { readonly parent: Environment; readonly type: 'refused'; readonly refusal: Refusal }
  | { readonly parent: Environment; readonly type: 'backups' }
  | { readonly parent: Environment; readonly type: 'backup'; readonly backup: Backup }
  | {
      readonly parent: Environment;
      readonly type: 'backupNote';
      readonly text: string;
      readonly failed: boolean;
    };

export type EnvironmentsNode = Environment | EnvironmentDetail;

/** Setup steps in their order, then the sync's conflicts and refused files, then (devservers)
 * the Backups node. */
export function environmentDetails(environment: Environment): EnvironmentDetail[] {
  const parent = environment;
  return [
    ...environment.setup.map((setup) => ({ parent, type: 'setup' as const, setup })),
    ...(environment.sync?.conflicts ?? []).map((conflict) => ({
      parent,
      type: 'conflict' as const,
      conflict,
    })),
    ...(environment.sync?.refused ?? []).map((refusal) => ({
      parent,
      type: 'refused' as const,
      refusal,
    })),
    ...(environment.kind === 'devserver' ? [{ parent, type: 'backups' as const }] : []),
  ];
}

/** The Backups node's children: its backups, newest first, or a line that says why none. */
export function backupDetails(environment: Environment, list: BackupList): EnvironmentDetail[] {
  const parent = environment;
  if (list.backups.length === 0) {
    const every = `it is backed up every ${minutesLabel(list.status.intervalMinutes)}`;
    return [{ parent, type: 'backupNote', text: `No backups yet (${every})`, failed: false }];
  }
  return list.backups.map((backup) => ({ parent, type: 'backup' as const, backup }));
}

/** Markdown: everything the fleet says of one backup. */
export function backupTooltip(backup: Backup): string {
  const lines = [`**Backup ${backup.id}** of ${escape(backup.environment)} — ${backup.state}`];
  lines.push(`Why: ${TRIGGERS[backup.trigger]}`);
  const took = backup.finishedAt ? ` (${backup.seconds.toFixed(1)} s)` : '';
  lines.push(`Started ${escape(timeLabel(backup.startedAt))}${took}`);
  if (backup.state === 'succeeded') {
    lines.push(
      `${backup.totalFiles.toLocaleString()} files, ${sizeLabel(backup.totalBytes)}: ` +
        `${backup.filesNew} new, ${backup.filesChanged} changed, ` +
        `${backup.filesUnmodified} unchanged; ${sizeLabel(backup.dataAdded)} added to the store`,
    );
    if (backup.snapshot) lines.push(`Snapshot ${escape(backup.snapshot)}`);
  }
  if (backup.message)
    lines.push(`${backup.state === 'failed' ? 'Failed: ' : ''}${escape(backup.message)}`);
  if (backup.warnings.length > 0) {
    const more = backup.warnings.length > 5 ? `\n\n…and ${backup.warnings.length - 5} more` : '';
    lines.push(
      `Not read:\n\n${backup.warnings
        .slice(0, 5)
        .map((w) => `- ${escape(w)}`)
        .join('\n')}${more}`,
    );
  }
  return lines.join('\n\n');
}

const TRIGGERS: Record<Backup['trigger'], string> = {
  schedule: 'the schedule',
  request: 'asked for',
  move: 'before a move',
  decommission: 'before its host was decommissioned',
  delete: 'before it was deleted',
};

/** `last 1/1/2030, 11:30 AM`, `running…`, `none yet`; `overdue` first when it is. */
export function backupsDescription(status: BackupStatus | null): string {
  if (status === null) return '';
  const parts = status.overdue ? ['overdue'] : [];
  if (status.running) parts.push('running…');
  else parts.push(status.lastSuccessAt ? `last ${timeLabel(status.lastSuccessAt)}` : 'none yet');
  return parts.join(' · ');
}

const BACKUP_ICONS: Record<BackupState, [string, string | undefined]> = {
  running: ['loading~spin', undefined],
  succeeded: ['pass', 'testing.iconPassed'],
  failed: ['error', 'errorForeground'],
};

const SETUP_ICONS: Record<SetupState, [string, string | undefined]> = {
  pending: ['circle-outline', undefined],
  installing: ['loading~spin', undefined],
  installed: ['pass', 'testing.iconPassed'],
  failed: ['error', 'errorForeground'],
};

function icon(id: string, color: string | undefined): vscode.ThemeIcon {
  return new vscode.ThemeIcon(id, color ? new vscode.ThemeColor(color) : undefined);
}

export function detailItem(detail: EnvironmentDetail): vscode.TreeItem {
  const none = vscode.TreeItemCollapsibleState.None;
  const prefix = `${detail.parent.id}/${detail.type}`;
  switch (detail.type) {
    case 'setup': {
      const setup = detail.setup;
      const item = new vscode.TreeItem(setup.name, none);
      item.id = `${prefix}/${setup.kind}/${setup.name}`;
      item.description = setup.detail || setup.state;
      const log = setup.log.trimEnd();
      const where = setup.logPath ? `\n\n(the whole log: ${setup.logPath})` : '';
      item.tooltip =
        setup.state === 'failed' && log
          ? `${setup.detail}\n\n${log}${where}`
          : `${setup.kind} · ${setup.state}${setup.detail ? `: ${setup.detail}` : ''}`;
      item.contextValue = `setup ${setup.state}`;
      item.iconPath = icon(...SETUP_ICONS[setup.state]);
      return item;
    }
    case 'conflict': {
      const conflict = detail.conflict;
      const item = new vscode.TreeItem(`conflict: ${conflict.path} → ${conflict.copyPath}`, none);
      item.id = `${prefix}/${conflict.path}/${conflict.copyPath}`;
      const from = conflict.otherEnvironment ? ` from ${conflict.otherEnvironment}` : '';
      item.description = `profile version ${conflict.version}`;
      item.tooltip =
        `${conflict.path} was edited here while the profile changed it too. This ` +
        `environment's version stays at ${conflict.path}; the profile's${from} is at ` +
        `${conflict.copyPath}. Merge them, then delete the copy.`;
      item.contextValue = 'syncConflict';
      item.iconPath = icon('git-merge', 'list.warningForeground');
      return item;
    }
    case 'refused': {
      const refusal = detail.refusal;
      const item = new vscode.TreeItem(`not synced: ${refusal.path}`, none);
      item.id = `${prefix}/${refusal.path}`;
      item.description = refusal.reason;
      item.tooltip = refusal.reason;
      item.contextValue = 'syncRefused';
      item.iconPath = icon('circle-slash', undefined);
      return item;
    }
    case 'backups': {
      const status = detail.parent.backup;
      const item = new vscode.TreeItem('Backups', vscode.TreeItemCollapsibleState.Collapsed);
      item.id = prefix;
      item.description = backupsDescription(status);
      const every = status ? [`Backed up every ${minutesLabel(status.intervalMinutes)}.`] : [];
      item.tooltip = new vscode.MarkdownString(
        [...backupLines(status), ...every].join('\n\n') || 'Not backed up yet.',
      );
      const running = detail.parent.state === 'running';
      item.contextValue = running ? 'backups backUpNow' : 'backups';
      item.iconPath = status?.overdue
        ? icon('warning', 'list.warningForeground')
        : icon(status?.running ? 'loading~spin' : 'archive', undefined);
      return item;
    }
    case 'backup': {
      const backup = detail.backup;
      const item = new vscode.TreeItem(backupLabel(backup), none);
      item.id = `${prefix}/${backup.id}`;
      item.description = `${backup.trigger} · ${backup.state}`;
      item.tooltip = new vscode.MarkdownString(backupTooltip(backup));
      item.contextValue =
        backup.state === 'succeeded' ? 'backup succeeded restorable' : `backup ${backup.state}`;
      item.iconPath = icon(...BACKUP_ICONS[backup.state]);
      return item;
    }
    case 'backupNote': {
      const item = new vscode.TreeItem(detail.text, none);
      item.id = prefix;
      item.tooltip = detail.text;
      item.contextValue = 'backupNote';
      item.iconPath = detail.failed ? icon('error', 'errorForeground') : icon('info', undefined);
      return item;
    }
  }
}

export class EnvironmentsTree
  implements vscode.TreeDataProvider<EnvironmentsNode>, vscode.Disposable
{
  private readonly changed = new vscode.EventEmitter<undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subscription: vscode.Disposable;

  private readonly backupsChanged: vscode.Disposable | undefined;

  constructor(
    private readonly store: EnvironmentStore,
    private readonly now: () => Date = () => new Date(),
    private readonly backups?: BackupLists,
  ) {
    this.subscription = store.onDidChange(() => this.changed.fire(undefined));
    this.backupsChanged = backups?.onDidChange(() => this.changed.fire(undefined));
  }

  /** Redraws (the expiry labels age). */
  refresh(): void {
    this.changed.fire(undefined);
  }

  getTreeItem(node: EnvironmentsNode): vscode.TreeItem {
    if ('parent' in node) return detailItem(node);
    return environmentItem(node, this.store.healthOf(node), this.now());
  }

  async getChildren(parent?: EnvironmentsNode): Promise<EnvironmentsNode[]> {
    if (parent === undefined) return this.store.environments;
    if (!('parent' in parent)) return environmentDetails(parent);
    if (parent.type !== 'backups' || this.backups === undefined) return [];
    const environment = parent.parent;
    try {
      return backupDetails(environment, await this.backups.list(environment));
    } catch (error) {
      const text = `Cannot list the backups: ${errorMessage(error)}`;
      return [{ parent: environment, type: 'backupNote', text, failed: true }];
    }
  }

  /** What the view says above its items: a stale list, or a fleet out of reach. */
  message(): string | undefined {
    const list = this.store.list;
    if (list?.stale) {
      const when = list.fetchedAt ? ` (as of ${timeLabel(list.fetchedAt)})` : '';
      return `The fleet cannot be reached${list.reason ? `: ${list.reason}` : ''}; this is the last list${when}.`;
    }
    if (this.store.account?.fleet === 'connecting') return 'Connecting to the fleet…';
    if (this.store.account?.fleet === 'unreachable') {
      return `The fleet cannot be reached${this.store.account.reason ? `: ${this.store.account.reason}` : ''}.`;
    }
    return undefined;
  }

  dispose(): void {
    this.subscription.dispose();
    this.backupsChanged?.dispose();
    this.changed.dispose();
  }
}
