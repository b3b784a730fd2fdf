/** The `leeward.environments` tree: one item per environment, with inline actions; under it,
 * its setup steps (features, one-offs, dotfiles) and its profile sync's conflicts and refusals. */
import * as vscode from 'vscode';

import type { EnvironmentStore } from '../common/environments';
import { expiryLabel, timeLabel } from '../common/format';
import { environmentTooltip } from '../common/status';
import type {
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
  | { readonly parent: Environment; readonly type: 'refused'; readonly refusal: Refusal };

export type EnvironmentsNode = Environment | EnvironmentDetail;

/** Setup steps in their order, then the sync's conflicts and refused files. */
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
  ];
}

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
  }
}

export class EnvironmentsTree
  implements vscode.TreeDataProvider<EnvironmentsNode>, vscode.Disposable
{
  private readonly changed = new vscode.EventEmitter<undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly subscription: vscode.Disposable;

  constructor(
    private readonly store: EnvironmentStore,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.subscription = store.onDidChange(() => this.changed.fire(undefined));
  }

  /** Redraws (the expiry labels age). */
  refresh(): void {
    this.changed.fire(undefined);
  }

  getTreeItem(node: EnvironmentsNode): vscode.TreeItem {
    if ('parent' in node) return detailItem(node);
    return environmentItem(node, this.store.healthOf(node), this.now());
  }

  getChildren(parent?: EnvironmentsNode): EnvironmentsNode[] {
    if (parent === undefined) return this.store.environments;
    return 'parent' in parent ? [] : environmentDetails(parent);
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
    this.changed.dispose();
  }
}
