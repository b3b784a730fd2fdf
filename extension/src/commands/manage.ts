/** `Leeward: Extend`, `Leeward: Delete` and the details of one environment (the status bar's
 * click). */
import * as vscode from 'vscode';

import { expiryLabel, rttLabel, timeLabel } from '../common/format';
import { stateOf } from '../common/status';
import type { Environment } from '../protocol/generated';
import { EnvironmentsDeleteRequest, EnvironmentsExtendRequest } from '../protocol/methods';
import type { CommandContext } from './context';
import { resolveEnvironment } from './pick';

const MAX_HOURS = 24 * 365;

/** Undefined when `text` is a whole number of hours the daemon accepts, else why not. */
export function validateHours(text: string): string | undefined {
  const value = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value <= 0) {
    return 'A whole number of hours, 1 or more.';
  }
  if (value > MAX_HOURS) return `At most ${MAX_HOURS} hours (a year).`;
  return undefined;
}

const temporary = (e: Environment): boolean =>
  e.lifespan === 'temporary' && (e.state === 'running' || e.state === 'provisioning');

export async function extend(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target = await resolveEnvironment(ctx, argument, 'Extend which environment?', temporary);
  if (target === undefined) return;
  if (target.environment?.lifespan === 'permanent') {
    void vscode.window.showInformationMessage(
      `${target.name} is permanent: it has no expiry to extend.`,
    );
    return;
  }
  const now = target.environment ? ` (it ${expiryLabel(target.environment, ctx.now())})` : '';
  const text = await vscode.window.showInputBox({
    title: `Extend ${target.name}`,
    prompt: `Hours to add to its expiry${now}`,
    value: '8',
    ignoreFocusOut: true,
    validateInput: validateHours,
  });
  if (text === undefined) return;
  const hours = Number(text.trim());
  const environment = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Extending ${target.name}…` },
    () => ctx.daemon.request(EnvironmentsExtendRequest, { environment: target.name, hours }),
  );
  ctx.store.upsert(environment);
  ctx.log.info(`Extended ${environment.name} by ${hours} h: expires ${environment.expiresAt}.`);
  void vscode.window.showInformationMessage(
    `${environment.name} now expires ${timeLabel(environment.expiresAt)}.`,
  );
}

export const DELETE = 'Delete';

export async function remove(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target = await resolveEnvironment(
    ctx,
    argument,
    'Delete which environment?',
    (e) => e.state !== 'deleting',
  );
  if (target === undefined) return;
  const kind = target.environment?.kind ?? 'environment';
  const answer = await vscode.window.showWarningMessage(
    `Delete ${kind} ${target.name}?`,
    {
      modal: true,
      detail: 'Its disk and everything on it are lost; this cannot be undone.',
    },
    DELETE,
  );
  if (answer !== DELETE) return;
  const environment = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Deleting ${target.name}…` },
    () => ctx.daemon.request(EnvironmentsDeleteRequest, { environment: target.name }),
  );
  ctx.store.upsert(environment);
  ctx.log.info(`Deleted ${environment.name} (${environment.id}): ${environment.state}.`);
  void vscode.window.showInformationMessage(`Deleted ${environment.name}.`);
}

interface Action extends vscode.QuickPickItem {
  command?: string;
}

/** The status bar's click: what the environment is and what can be done with it; with no
 * environment, an offer to create one (or to sign in first). */
export async function showEnvironment(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target =
    argument === undefined && ctx.store.environments.length === 0
      ? undefined
      : await resolveEnvironment(ctx, argument, 'Show which environment?');
  const environment = target?.environment;
  const actions: Action[] = [];
  let title = 'Leeward';
  if (target === undefined) {
    if (!ctx.store.signedIn) {
      actions.push({ label: '$(sign-in) Sign In', command: 'leeward.signIn' });
    }
  } else {
    title = target.name;
    if (environment !== undefined) {
      const health = ctx.store.healthOf(environment);
      const rtt = health?.rttMs != null ? ` · ${rttLabel(health.rttMs)}` : '';
      title = `${environment.name} · ${stateOf(environment, health)}${rtt}`;
      actions.push(
        ...details(environment, health?.host ?? environment.host, health?.reason, ctx.now()),
      );
      actions.push({ label: '', kind: vscode.QuickPickItemKind.Separator });
    }
    // what the last list says decides what is offered; without it, everything is
    const state = environment?.state ?? 'running';
    if (state === 'running') {
      actions.push({ label: '$(remote) Connect to Environment', command: 'leeward.connect' });
      actions.push({ label: '$(terminal) Open Terminal', command: 'leeward.openTerminal' });
    }
    if ((environment?.lifespan ?? 'temporary') === 'temporary' && state === 'running') {
      actions.push({ label: '$(history) Extend', command: 'leeward.extend' });
    }
    if (state !== 'deleting') actions.push({ label: '$(trash) Delete', command: 'leeward.delete' });
  }
  actions.push({ label: '$(add) Create Environment', command: 'leeward.createEnvironment' });
  actions.push({ label: '$(output) Show Logs', command: 'leeward.showLogs' });
  const picked = await vscode.window.showQuickPick(actions, {
    title,
    placeHolder: 'Choose an action',
  });
  if (picked?.command === undefined) return;
  const forEnvironment = [
    'leeward.connect',
    'leeward.openTerminal',
    'leeward.extend',
    'leeward.delete',
  ];
  await vscode.commands.executeCommand(
    picked.command,
    ...(target !== undefined && forEnvironment.includes(picked.command) ? [target.name] : []),
  );
}

function details(
  environment: Environment,
  host: string | null,
  reason: string | undefined,
  now: Date,
): Action[] {
  const what = environment.kind === 'devserver' ? environment.flavor : environment.profile;
  const rows: Action[] = [
    {
      label: `$(vm) ${environment.kind}${what ? ` · ${what}` : ''}`,
      description: environment.fqdn,
    },
    {
      label: `$(globe) ${environment.region}`,
      description: host ? `host ${host}` : 'not placed yet',
    },
    {
      label: `$(clock) ${expiryLabel(environment, now)}`,
      description: environment.expiresAt ? timeLabel(environment.expiresAt) : '',
    },
  ];
  const why = reason || environment.statusMessage;
  if (why) rows.push({ label: `$(warning) ${why}` });
  return rows;
}
