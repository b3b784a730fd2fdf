/** The `leeward.environments` tree: one item per environment, with inline actions. */
import * as vscode from 'vscode';

import type { EnvironmentStore } from '../common/environments';
import { expiryLabel, timeLabel } from '../common/format';
import { environmentTooltip } from '../common/status';
import type { Environment, HealthRecord } from '../protocol/generated';

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
  const item = new vscode.TreeItem(environment.name, vscode.TreeItemCollapsibleState.None);
  item.id = environment.id;
  item.description = environmentDescription(environment, now, health);
  item.tooltip = new vscode.MarkdownString(environmentTooltip(environment, health, now));
  item.contextValue = contextValue(environment);
  const icon = iconId(environment, health);
  const color = ICON_COLORS[icon];
  item.iconPath = new vscode.ThemeIcon(icon, color ? new vscode.ThemeColor(color) : undefined);
  return item;
}

export class EnvironmentsTree implements vscode.TreeDataProvider<Environment>, vscode.Disposable {
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

  getTreeItem(environment: Environment): vscode.TreeItem {
    return environmentItem(environment, this.store.healthOf(environment), this.now());
  }

  getChildren(parent?: Environment): Environment[] {
    return parent === undefined ? this.store.environments : [];
  }

  /** What the view says above its items: a stale list, or a fleet out of reach. */
  message(): string | undefined {
    const list = this.store.list;
    if (list?.stale) {
      const when = list.fetchedAt ? ` (as of ${timeLabel(list.fetchedAt)})` : '';
      return `The fleet cannot be reached${list.reason ? `: ${list.reason}` : ''}; this is the last list${when}.`;
    }
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
