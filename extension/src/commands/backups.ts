/** `Leeward: Back Up Now`, `Restore into a New Devserver`, `Restore a Path` and `Move Devserver`.
 * From the tree they act on the item (a devserver, its Backups node, one backup); from the
 * palette the user picks a devserver, and a backup. */
import * as vscode from 'vscode';

import type { ProgressListener } from '../common/daemonApi';
import { backupLabel, sizeLabel } from '../common/format';
import type { Backup, DaemonCatalog, Environment, RestoreTarget } from '../protocol/generated';
import {
  BackupsListRequest,
  BackupsNowRequest,
  BackupsRestoreRequest,
  CatalogGetRequest,
  EnvironmentsMoveRequest,
} from '../protocol/methods';
import type { CommandContext } from './context';
import { quickPickPrompter } from './create';
import { flavorChoices, regionChoices, type Choice, type Prompter } from './createWizard';
import { resolveEnvironment } from './pick';

const devserver = (e: Environment): boolean => e.kind === 'devserver';
const runningDevserver = (e: Environment): boolean => devserver(e) && e.state === 'running';

/** A node under a devserver in the tree (its Backups node, a backup) stands for the devserver. */
function devserverArgument(argument: unknown): unknown {
  if (argument !== null && typeof argument === 'object' && 'parent' in argument) {
    return argument.parent;
  }
  return argument;
}

interface ChosenBackup {
  environment: string;
  backup: Backup;
}

/** A backup's tree node (`{ parent, type: 'backup', backup }`), else nothing. */
function backupArgument(argument: unknown): ChosenBackup | undefined {
  if (argument === null || typeof argument !== 'object') return undefined;
  const node = argument as Partial<{ parent: Environment; type: string; backup: Backup }>;
  if (node.type !== 'backup' || node.parent === undefined || node.backup === undefined) {
    return undefined;
  }
  return { environment: node.parent.name, backup: node.backup };
}

/** LSP percentages as a VS Code progress notification wants them (increments). */
export function progressReporter(
  progress: vscode.Progress<{ message?: string; increment?: number }>,
): ProgressListener {
  let done = 0;
  return (message, percentage) => {
    if (percentage !== undefined && percentage > done) {
      progress.report({ message, increment: percentage - done });
      done = percentage;
    } else if (message) {
      progress.report({ message });
    }
  };
}

export async function backUpNow(ctx: CommandContext, argument?: unknown): Promise<void> {
  const target = await resolveEnvironment(
    ctx,
    devserverArgument(argument),
    'Back up which devserver?',
    runningDevserver,
  );
  if (target === undefined) return;
  const backup = await vscode.window.withProgress(
    {
      location: vscode.ProgressLocation.Notification,
      title: `Backing up ${target.name}`,
      cancellable: false,
    },
    (progress) =>
      ctx.daemon.withProgress(
        BackupsNowRequest,
        { environment: target.name },
        progressReporter(progress),
      ),
  );
  if (backup.state !== 'succeeded') {
    throw new Error(
      `Backup ${backup.id} of ${backup.environment} ${backup.state}: ${backup.message || 'no reason given'}`,
    );
  }
  const what = `${backup.totalFiles.toLocaleString()} files, ${sizeLabel(backup.totalBytes)}`;
  ctx.log.info(`Backup ${backup.id} of ${backup.environment} succeeded: ${what}.`);
  void vscode.window.showInformationMessage(
    `Backed up ${backup.environment}: ${what} (backup ${backup.id}, ${sizeLabel(backup.dataAdded)} new).`,
  );
}

/** The backup a restore starts from: the tree's item, else one the user picks. */
async function resolveBackup(
  ctx: CommandContext,
  argument: unknown,
): Promise<ChosenBackup | undefined> {
  const given = backupArgument(argument);
  if (given !== undefined) return given;
  const target = await resolveEnvironment(
    ctx,
    devserverArgument(argument),
    'Restore a backup of which devserver?',
    devserver,
  );
  if (target === undefined) return undefined;
  const list = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Leeward: listing the backups' },
    () => ctx.daemon.request(BackupsListRequest, { environment: target.name }),
  );
  const restorable = list.backups.filter((b) => b.state === 'succeeded');
  if (restorable.length === 0) {
    void vscode.window.showInformationMessage(`${list.environment} has no backup to restore yet.`);
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    restorable.map((backup) => ({
      label: backupLabel(backup),
      description: `backup ${backup.id} · ${backup.trigger}`,
      backup,
    })),
    { placeHolder: `Which backup of ${list.environment}?`, ignoreFocusOut: true },
  );
  return picked && { environment: list.environment, backup: picked.backup };
}

const NAME = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;

/** Undefined when `text` is empty (the fleet names it) or a name the fleet takes. */
export function validateName(text: string): string | undefined {
  const name = text.trim();
  if (name === '' || NAME.test(name)) return undefined;
  return "2 to 32 lowercase letters, digits and '-', starting with a letter and not ending with '-'.";
}

/** Undefined when `text` is a path inside the home, as the daemon checks it. */
export function validateHomePath(text: string): string | undefined {
  const path = text.trim();
  if (path === '' || /^[/~]/.test(path) || /[\\\0]/.test(path)) {
    return 'A path relative to your home, like .bashrc or src/app.';
  }
  if (
    path
      .replace(/\/+$/, '')
      .split('/')
      .some((p) => p === '' || p === '.' || p === '..')
  ) {
    return 'It must stay inside the home: no `..`, `.` or empty parts.';
  }
  return undefined;
}

/** `Keep CURRENT` first (its value ''), then every choice. */
function keeping(current: string | null | undefined, choices: Choice<string>[]): Choice<string>[] {
  if (!current) return choices;
  const keep = { label: `Keep ${current}`, description: 'as it is now', value: '' };
  return [keep, ...choices.filter((c) => c.value !== current)];
}

function loadCatalog(ctx: CommandContext): Thenable<DaemonCatalog> {
  return vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'Leeward: loading the catalog' },
    () => ctx.daemon.request(CatalogGetRequest, {}),
  );
}

export async function restoreToNew(
  ctx: CommandContext,
  argument?: unknown,
  prompter: Prompter = quickPickPrompter,
): Promise<void> {
  const chosen = await resolveBackup(ctx, argument);
  if (chosen === undefined) return;
  const { environment, backup } = chosen;
  const source = ctx.store.find(environment);
  const title = `Restore Backup ${backup.id} of ${environment} into a New Devserver`;
  const catalog = await loadCatalog(ctx);
  const name = await vscode.window.showInputBox({
    title: `${title} (1/3)`,
    prompt: 'Its name (empty: the fleet picks one)',
    ignoreFocusOut: true,
    validateInput: validateName,
  });
  if (name === undefined) return;
  const step = (n: number, placeholder: string) => ({
    title: `${title} (${n}/3)`,
    placeholder,
    step: n,
    totalSteps: 3,
  });
  const flavor = await prompter.pick(
    keeping(source?.flavor, flavorChoices(catalog)),
    step(2, 'Which flavor?'),
  );
  if (flavor === undefined) return;
  const region = await prompter.pick(
    keeping(source?.region, regionChoices(catalog)),
    step(3, 'Which region?'),
  );
  if (region === undefined) return;
  const to: RestoreTarget = {
    ...(name.trim() ? { name: name.trim() } : {}),
    ...(flavor ? { flavor } : {}),
    ...(region ? { region } : {}),
  };
  const restore = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Restoring backup ${backup.id}…` },
    () => ctx.daemon.request(BackupsRestoreRequest, { environment, backup: backup.id, to }),
  );
  ctx.log.info(
    `Restoring backup ${backup.id} of ${environment} into ${restore.environment} (${restore.environmentId}).`,
  );
  void vscode.window.showInformationMessage(
    `Backup ${backup.id} of ${environment} goes into the new devserver ${restore.environment}; it is listed once it starts.`,
  );
}

export async function restorePath(ctx: CommandContext, argument?: unknown): Promise<void> {
  const chosen = await resolveBackup(ctx, argument);
  if (chosen === undefined) return;
  const { environment, backup } = chosen;
  const text = await vscode.window.showInputBox({
    title: `Restore a Path from Backup ${backup.id} of ${environment}`,
    prompt:
      'A file or directory, relative to the home; it is written under ~/.leeward-restore/, and nothing is overwritten',
    ignoreFocusOut: true,
    validateInput: validateHomePath,
  });
  if (text === undefined) return;
  const path = text.trim();
  const restore = await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `Restoring ${path}…` },
    () =>
      ctx.daemon.request(BackupsRestoreRequest, {
        environment,
        backup: backup.id,
        paths: [path],
      }),
  );
  const where = restore.destination ? `~/${restore.destination}` : 'its home';
  const what = `${restore.files.toLocaleString()} files, ${sizeLabel(restore.bytes)}`;
  ctx.log.info(`Restored ${path} of backup ${backup.id} into ${where} on ${restore.environment}.`);
  void vscode.window.showInformationMessage(
    `Restored ${path} (${what}) into ${where} on ${restore.environment}.`,
  );
}

export const MOVE = 'Move';

export async function move(
  ctx: CommandContext,
  argument?: unknown,
  prompter: Prompter = quickPickPrompter,
): Promise<void> {
  const target = await resolveEnvironment(
    ctx,
    devserverArgument(argument),
    'Move which devserver?',
    runningDevserver,
  );
  if (target === undefined) return;
  const current = target.environment;
  const catalog = await loadCatalog(ctx);
  const step = (n: number, placeholder: string) => ({
    title: `Move ${target.name} (${n}/2)`,
    placeholder,
    step: n,
    totalSteps: 2,
  });
  const flavor = await prompter.pick(
    keeping(current?.flavor, flavorChoices(catalog)),
    step(1, 'To which flavor?'),
  );
  if (flavor === undefined) return;
  const region = await prompter.pick(
    keeping(current?.region, regionChoices(catalog)),
    step(2, 'To which region?'),
  );
  if (region === undefined) return;
  if (!flavor && !region) {
    void vscode.window.showInformationMessage(`${target.name} stays as it is: nothing to move.`);
    return;
  }
  const where = flavor ? `a ${flavor} devserver${region ? ` in ${region}` : ''}` : region;
  const answer = await vscode.window.showWarningMessage(
    `Move ${target.name} to ${where}?`,
    {
      modal: true,
      detail:
        'Its home is backed up and restored into a new devserver, which then takes its name; the old one is deleted. It cannot be reached meanwhile, and nothing outside the home is carried over.',
    },
    MOVE,
  );
  if (answer !== MOVE) return;
  const moved = await vscode.window.withProgress(
    {
      location: vscode.ProgressLocation.Notification,
      title: `Moving ${target.name}`,
      cancellable: false,
    },
    (progress) =>
      ctx.daemon.withProgress(
        EnvironmentsMoveRequest,
        { environment: target.name, ...(flavor ? { flavor } : {}), ...(region ? { region } : {}) },
        progressReporter(progress),
      ),
  );
  if (moved.state !== 'done') {
    const why = moved.message.replace(`${moved.stage}: `, '') || 'no reason given';
    throw new Error(`The move of ${target.name} failed at ${moved.stage}: ${why}`);
  }
  ctx.log.info(`Moved ${target.name} to ${moved.flavor} in ${moved.region} (${moved.id}).`);
  void vscode.window.showInformationMessage(
    `${target.name} is now a ${moved.flavor} devserver in ${moved.region}.`,
  );
}
